"""The run: a producer streams rows into a bounded queue, workers answer them, one sink records.

    reader ──▶ Queue(bounded) ──▶ N workers (responder) ──▶ Queue ──▶ sink: append + score

Only the sink writes results, and a row counts as done once its line is handed to the kernel.
Finished rows are skipped on a rerun; failed ones are tried again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from pipeline.cache import ResponseCache
from pipeline.client import OpenAIClient, make_session
from pipeline.config import EvalConfig
from pipeline.dataset import count_rows, find_root, iter_samples
from pipeline.engine import APIModel, Counters, Outcome, RandomModel, Responder
from pipeline.errors import APIError, ConfigError, DataError, FatalAPIError
from pipeline.extract import extract_chain, extract_choice
from pipeline.grading import Grader
from pipeline.images import ImageCache
from pipeline.keywords import BertScore, KeywordCache
from pipeline.progress import RunProgress
from pipeline.prompts import build_request
from pipeline.providers import JUDGE_BODY
from pipeline.ratelimit import Throttle
from pipeline.records import Sample
from pipeline.report import write_summary
from pipeline.results import ResultsFile
from pipeline.scoring import Scorer

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3
_DONE = None  # end-of-stream marker on the queues
NO_JUDGE = (
    "no judge: unreadable replies are scored as given (wrong, as official) and report keywords "
    "and BERTScore are not computed; set DEEPSEEK_API_KEY or pass --judge"
)


@dataclass(slots=True)
class RunState:
    """What the sink and workers share while a run goes on."""

    scorer: Scorer = field(default_factory=Scorer)
    counters: Counters = field(default_factory=Counters)
    done: set[tuple[str, str]] = field(default_factory=set)  # (file, key) answered
    failed: set[tuple[str, str]] = field(default_factory=set)  # (file, key) latest is an error
    invalid: list[str] = field(default_factory=list)  # `FILE:LINE: message` of bad input rows
    fatal: str | None = None
    streak: tuple[str, int] = ("", 0)  # (error signature, consecutive failed rows)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    summary: dict[str, Any]
    exit_code: int
    fatal: str | None = None


def answer_fields(sample: Sample, outcome: Outcome) -> tuple[dict[str, Any], str | None]:
    """Return `model_response`, `raw_response` and `error`, and how the answer was obtained."""
    if outcome.completion is None:
        fields = {"model_response": None, "raw_response": None, "error": str(outcome.error)}
        return fields, None
    raw = outcome.completion.text
    answer: str | None = None
    if sample.kind in ("evidence", "independent"):
        answer = extract_choice(raw, sample.row["options"])
    elif sample.kind == "joint":
        answer = extract_chain(raw)
    source = "extracted" if answer is not None else "none"
    if sample.kind == "report":
        answer, source = raw.strip(), "text"
    # Unreadable replies keep the official behaviour: the stripped reply, scored as is.
    fields = {
        "model_response": answer if answer is not None else raw.strip(),
        "raw_response": raw,
        "error": None,
    }
    return fields, source


def result_row(sample: Sample, outcome: Outcome) -> dict[str, Any]:
    """Build one results line: the input row unchanged plus the answer fields and `_meta`."""
    fields, source = answer_fields(sample, outcome)
    completion = outcome.completion
    meta = {
        "key": sample.key,
        "line": sample.line,
        "kind": sample.kind,
        "answer_source": source,
        "model": completion.model if completion else None,
        "request_id": completion.request_id if completion else None,
        "prompt_tokens": completion.prompt_tokens if completion else 0,
        "completion_tokens": completion.completion_tokens if completion else 0,
        "cached": outcome.cached,
    }
    row = {**sample.row, **fields, "_meta": meta}
    if outcome.error is not None:
        fail_row(row, outcome.error)
    return row


def fail_row(row: dict[str, Any], error: APIError, what: str = "") -> None:
    """Mark a results row failed (scored wrong, retried on the next run)."""
    row["error"] = f"{what}{error}"
    row["_meta"]["error_status"] = error.status
    row["_meta"]["error_code"] = error.code


class Run:
    """One evaluation: build with a config and a responder, then `await run.execute()`."""

    def __init__(
        self,
        cfg: EvalConfig,
        responder: Responder,
        *,
        counters: Counters | None = None,
        grader: Grader | None = None,
        show_progress: bool = True,
        on_invalid: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.responder = responder
        self.grader = grader
        self.state = RunState(
            scorer=Scorer(official_quirks=cfg.official_quirks), counters=counters or Counters()
        )
        self.show_progress = show_progress
        self.on_invalid = on_invalid or (lambda line: print(line, file=sys.stderr))
        self.root = find_root(cfg.data)
        self.stems = [s for s in cfg.files if (self.root / f"{s}.jsonl").exists()]
        if not self.stems:
            msg = f"{cfg.data}: none of {', '.join(cfg.files)} (.jsonl) found"
            raise ConfigError(msg)
        self.outputs = {s: ResultsFile(cfg.run_dir / f"{s}.jsonl") for s in self.stems}

    def _load_finished(self) -> None:
        """Feed rows finished by an earlier run to the scorer and the done/failed sets.

        A row answered before a judge was set is sent again for what the judge adds; its
        answer then comes from the response cache.
        """
        for stem, output in self.outputs.items():
            for row in output.finished().values():
                self._account(stem, row)
                if self.grader is not None and self.grader.needs(row):
                    self.state.done.discard((stem, row["_meta"]["key"]))

    def _account(self, stem: str, row: dict[str, Any]) -> None:
        self.state.scorer.add(stem, row)
        item = (stem, row["_meta"]["key"])
        if row.get("error") is None:
            self.state.done.add(item)
            self.state.failed.discard(item)
        else:
            self.state.failed.add(item)

    def _samples(self, stem: str) -> Iterator[Sample]:
        """Stream the valid rows among the first `--limit` rows of one file."""
        limit, seen = self.cfg.limit, 0

        def on_error(error: DataError) -> None:
            nonlocal seen
            seen += 1
            if limit is None or seen <= limit:
                self.state.invalid.append(str(error))
                self.on_invalid(str(error))
                self._progress.advance(1, self._stats())

        for sample in iter_samples(self.root, stem, on_error=on_error):
            seen += 1
            if limit is not None and seen > limit:
                return
            yield sample

    async def _produce(self, queue: asyncio.Queue[tuple[str, Sample] | None]) -> None:
        for stem in self.stems:
            for sample in self._samples(stem):
                if self.state.fatal:
                    break
                if (stem, sample.key) not in self.state.done:
                    await queue.put((stem, sample))
        # Not in `finally`: on cancellation the workers are gone and a full queue would block.
        for _ in range(self._workers):
            await queue.put(_DONE)

    async def _work(
        self,
        queue: asyncio.Queue[tuple[str, Sample] | None],
        sink: asyncio.Queue[tuple[str, dict[str, Any]] | None],
    ) -> None:
        while (item := await queue.get()) is not _DONE:
            stem, sample = item
            if self.state.fatal:
                continue  # drain without answering: the run is stopping
            request = build_request(sample, self.cfg.protocol)
            try:
                outcome = await self.responder.respond(sample, request)
                row = result_row(sample, outcome)
                if self.grader is not None and row["error"] is None:
                    await self._grade(sample, row)
            except FatalAPIError as exc:
                self.state.fatal = self.state.fatal or str(exc)
                continue
            await sink.put((stem, row))
        await sink.put(_DONE)

    async def _grade(self, sample: Sample, row: dict[str, Any]) -> None:
        assert self.grader is not None
        try:
            await self.grader.grade(sample.kind, row)
        except FatalAPIError as exc:
            self.state.fatal = self.state.fatal or f"judge: {exc}"
            raise
        except APIError as exc:
            fail_row(row, exc, "judge: ")

    async def _sink(
        self, sink: asyncio.Queue[tuple[str, dict[str, Any]] | None], progress: RunProgress
    ) -> None:
        open_workers = self._workers
        while open_workers:
            batch: dict[str, list[dict[str, Any]]] = {}
            item = await sink.get()
            while True:
                if item is _DONE:
                    open_workers -= 1
                else:
                    batch.setdefault(item[0], []).append(item[1])
                if sink.empty() or not open_workers:
                    break
                item = sink.get_nowait()
            count = 0
            for stem, rows in batch.items():
                await self.outputs[stem].append(rows)  # durable before it counts as done
                for row in rows:
                    self._record(stem, row)
                count += len(rows)
            if count:
                progress.advance(count, self._stats())

    def _record(self, stem: str, row: dict[str, Any]) -> None:
        self._account(stem, row)
        if row.get("error") is None:
            self.state.streak = ("", 0)
            return
        meta = row["_meta"]
        sig = f"{meta.get('error_status')}:{meta.get('error_code')}:{row['error'][:80]}"
        last, count = self.state.streak
        self.state.streak = (sig, count + 1 if sig == last else 1)
        if self.state.streak[1] >= self.cfg.fail_streak and not self.state.fatal:
            self.state.fatal = (
                f"the same error failed {self.state.streak[1]} rows in a row "
                f"({row['error']}); stopping: fix the cause, then rerun to resume"
            )

    def _stats(self) -> dict[str, Any]:
        c = self.state.counters
        return {
            **self.state.scorer.running(),
            "cache_hits": c.cache_hits,
            "retries": c.retries,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
        }

    def summary(self) -> dict[str, Any]:
        """Return the summary of everything recorded so far."""
        c = self.state.counters
        usage = {
            "api_calls": c.api_calls,
            "cache_hits": c.cache_hits,
            "retries": c.retries,
            "failed_rows": len(self.state.failed) + len(self.state.invalid),
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
        }
        extra = {
            "run": {
                "protocol": self.cfg.protocol,
                "model_id": self.cfg.spec.model,
                "endpoint": self.cfg.spec.base_url,
                "invalid_rows": self.state.invalid,
                "stopped": self.state.fatal,
                "judge": self._judge_summary(),
            }
        }
        return self.state.scorer.summary(model=self.cfg.spec.alias, usage=usage, extra=extra)

    def _judge_summary(self) -> dict[str, Any]:
        if self.grader is None:
            return {"model": None, "note": NO_JUDGE}
        judge = self.grader.judge
        c = judge.counters
        return {
            "model": judge.cfg.spec.alias,
            "model_id": judge.name,
            "models_returned": sorted(judge.models_seen),  # the API's own names (aliases move)
            "endpoint": judge.cfg.spec.base_url,
            "keyword_prompt": self.grader.variant,
            "bertscore_model": self.grader.bert.model if self.grader.bert else None,
            "api_calls": c.api_calls,
            "cache_hits": c.cache_hits,
            "retries": c.retries,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
        }

    async def execute(self) -> RunResult:
        """Run to the end (or a fatal stop); results are in input order when it completes."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        bert = self.grader.bert if self.grader is not None else None
        if bert is not None and "report_generation" in self.stems:
            await asyncio.to_thread(bert.load)  # fails before any call if it cannot load
        self._load_finished()
        total = sum(
            min(count_rows(self.root / f"{s}.jsonl"), self.cfg.limit or 10**12) for s in self.stems
        )
        progress = self._progress = RunProgress(total, enabled=self.show_progress)
        progress.advance(len(self.state.done), self._stats())
        # More workers than slots, so image encoding overlaps the requests in flight.
        self._workers = self.cfg.concurrency + max(2, self.cfg.concurrency // 4)
        queue: asyncio.Queue[tuple[str, Sample] | None] = asyncio.Queue(self._workers * 2)
        sink: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._produce(queue))
                for _ in range(self._workers):
                    tg.create_task(self._work(queue, sink))
                tg.create_task(self._sink(sink, progress))
        finally:
            progress.close()
            for output in self.outputs.values():
                await output.close()
        if not self.state.fatal:
            for output in self.outputs.values():
                output.finalize()
        summary = self.summary()
        write_summary(self.cfg.run_dir, summary)
        if self.state.fatal:
            return RunResult(summary, EXIT_FATAL, self.state.fatal)
        failed = len(self.state.failed) + len(self.state.invalid)
        return RunResult(summary, EXIT_FAILED_ROWS if failed else EXIT_OK)


async def run_eval(
    cfg: EvalConfig,
    *,
    show_progress: bool = True,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> RunResult:
    """Evaluate `cfg.spec` on the dataset; `sleep` replaces backoff sleeps (tests)."""
    counters = Counters()
    async with AsyncExitStack() as stack:
        responder: Responder = RandomModel(seed=cfg.seed)
        if cfg.spec.remote:
            responder = await _api_model(cfg, stack, counters, sleep)
        grader = None
        if (judge_cfg := cfg.judge_config()) is not None:
            judge = await _api_model(
                judge_cfg, stack, Counters(), sleep, JUDGE_BODY.get(judge_cfg.spec.provider)
            )
            bert = BertScore(cfg.bert_model, cfg.bert_layers) if cfg.bert_model else None
            if bert is not None:
                stack.callback(bert.close)
            keywords = KeywordCache(cfg.cache_dir, judge=judge.name) if cfg.use_cache else None
            grader = Grader(judge, variant=cfg.keyword_prompt, keywords=keywords, bert=bert)
        run = Run(cfg, responder, counters=counters, grader=grader, show_progress=show_progress)
        return await run.execute()


async def _api_model(
    cfg: EvalConfig,
    stack: AsyncExitStack,
    counters: Counters,
    sleep: Callable[[float], Awaitable[None]] | None,
    extra_body: Mapping[str, Any] | None = None,
) -> APIModel:
    """Return `cfg.spec` behind its own connection pool (closed with `stack`), cache and pace."""
    session = await stack.enter_async_context(make_session(cfg.concurrency))
    client = OpenAIClient(
        session,
        base_url=cfg.spec.base_url or "",
        model=cfg.spec.model,
        api_key=cfg.api_key or "",
        provider=cfg.spec.provider,
        timeout=cfg.timeout,
        extra_body=extra_body,
    )
    return APIModel(
        cfg,
        client,
        throttle=Throttle(rpm=cfg.rpm, tpm=cfg.tpm),
        cache=ResponseCache(cfg.cache_dir) if cfg.use_cache else None,
        images=ImageCache(cfg.cache_dir),
        counters=counters,
        sleep=sleep,
        extra_body=extra_body,
    )
