"""The run: a producer streams rows into a bounded queue, workers answer them, one sink records.

    dataset ──▶ Queue(bounded) ──▶ N workers (model, judge) ──▶ Queue ──▶ sink: append + score

Only the sink writes results, and a row counts as done once its line is handed to the kernel.
A write that fails (disk full) stops the run and keeps what it can (pipeline/run/sink.py): exit 5.
Finished rows are skipped on a rerun; failed ones are tried again. The summary is built from
the rows alone, so the one written live equals the one `drvd score` rebuilds from the files.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import EvalConfig
from pipeline.data.dataset import ImageFolder, count_rows, dataset_files, samples_within
from pipeline.errors import INTERRUPTED, DataError, ExitCode, FatalAPIError, os_reason
from pipeline.model.batch.responder import BatchModel
from pipeline.model.budget import Budget, CostCapReached
from pipeline.model.cache import ResponseCache
from pipeline.model.factory import make_judge, make_responder
from pipeline.model.pacing import Clock
from pipeline.model.responder import Responder
from pipeline.records import ResultRow, Sample
from pipeline.results import ResultsFile
from pipeline.run.failures import FailureGroup, Failures
from pipeline.run.info import run_info
from pipeline.run.lock import make_run_dir
from pipeline.run.sink import Item, Sink
from pipeline.scoring.fate import result_row, unanswered
from pipeline.scoring.judge import Judge
from pipeline.scoring.summary import SUMMARY_NAME, Scorer, write_summary
from pipeline.views.progress import ProgressBoard, RunProgress

if TYPE_CHECKING:
    from pipeline.run.samples import SampledRun

BATCH_WORKERS = 50_000  # --batch: rows waiting at once (a batch's most lines)
CUT_WARNING = 10  # replies in a row with no answer (truncated, empty) before a warning
_DONE = None  # end-of-stream marker on the queues
# Writes the run's page from (run folder, summary, image cache or None): a note on failure.
PageWriter = Callable[[Path, Mapping[str, Any], Path | None], str | None]


@dataclass(slots=True)
class RunState:
    """What the sink and workers share while a run goes on."""

    scorer: Scorer
    done: set[tuple[str, str]] = field(default_factory=set)  # (file, key) answered
    invalid: list[str] = field(default_factory=list)  # `FILE:LINE: message` of lines not rows
    fatal: str | None = None
    capped: str | None = None  # the cost cap stopped the run: why (exit 4)
    streak: tuple[str, int] = ("", 0)  # (error signature, consecutive failed rows)
    failures: Failures = field(default_factory=Failures)  # failed rows by cause; server reached?
    cut: int = 0  # consecutive rows whose reply was truncated or empty
    warned: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    summary: dict[str, Any]
    exit_code: int
    fatal: str | None = None
    failures: tuple[FailureGroup, ...] = ()  # the failed rows by cause, largest first
    unreached: bool = False  # no request reached the server: `fatal` says so in one line


class Run:
    """One evaluation: build with a config and a responder, then `await run.execute()`."""

    def __init__(
        self,
        cfg: EvalConfig,
        responder: Responder,
        *,
        judge: Judge | None = None,
        show_progress: bool = True,
        on_invalid: Callable[[str], None] | None = None,
        board: ProgressBoard | None = None,
        budget: Budget | None = None,
        write_page: PageWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.write_page = write_page  # the run's page, drawn after the results (views.page)
        self.budget = budget  # the cost cap its responder and judge reserve in
        self.responder = responder
        self.judge = judge
        self.state = RunState(scorer=Scorer(official_quirks=cfg.official_quirks))
        self.show_progress = show_progress
        self.board = board  # a display shared with other runs (sweep): this run's line on it
        self.label = cfg.spec.alias + (f" sample {cfg.epoch}" if cfg.epoch else "")
        self.on_invalid = on_invalid or (lambda line: print(line, file=sys.stderr))
        self.root, self.stems, warnings = dataset_files(cfg.data, cfg.files)
        self.images = ImageFolder(self.root)  # one image layout for all of the dataset's files
        for warning in warnings:
            self.on_invalid(warning)
        self.outputs = {s: ResultsFile(cfg.run_dir / f"{s}.jsonl") for s in self.stems}
        self.sink = Sink(self.outputs, record=self._saved, stop=self._stop)
        self._workers = cfg.concurrency + max(2, cfg.concurrency // 4)

    def _load_finished(self) -> None:
        """Feed rows finished by an earlier run to the scorer and the done/failed sets.

        A row answered before a judge was set is sent again for what the judge adds; its
        answer then comes from the response cache.
        """
        for stem, output in self.outputs.items():
            for row in output.finished(self.on_invalid).values():
                self._account(stem, row)
                self.state.failures.note(stem, row)
                if self.judge is not None and self.judge.needs(row):
                    self.state.done.discard((stem, str(row.key)))

    def _account(self, stem: str, row: ResultRow) -> None:
        self.state.scorer.add(stem, row)
        if row.error is None:  # failed rows are counted by the scorer and sent again
            self.state.done.add((stem, str(row.key)))

    def _samples(self, stem: str) -> Iterator[Sample]:
        """Stream the rows among the first `--limit` lines of one file; report lines not rows."""

        def on_error(error: DataError) -> None:
            self.state.invalid.append(str(error))
            self.on_invalid(str(error))
            self._progress.advance(1, self.state.scorer.running())

        return samples_within(self.root, stem, self.cfg.limit, on_error, images=self.images)

    async def _produce(
        self, queue: asyncio.Queue[tuple[str, Sample] | None], sink: asyncio.Queue[Item]
    ) -> None:
        for stem in self.stems:
            for sample in self._samples(stem):
                if self.state.fatal or self.state.capped:
                    break
                if (stem, sample.key) in self.state.done:
                    continue
                if sample.problem is not None:
                    self.on_invalid(f"{self.root / stem}.jsonl:{sample.line}: {sample.problem}")
                    await sink.put((stem, unanswered(sample, sample.problem)))
                else:
                    await queue.put((stem, sample))
        # Not in `finally`: on cancellation the workers are gone and a full queue would block.
        for _ in range(self._workers):
            await queue.put(_DONE)
        await sink.put(_DONE)

    async def _work(
        self, queue: asyncio.Queue[tuple[str, Sample] | None], sink: asyncio.Queue[Item]
    ) -> None:
        while (item := await queue.get()) is not _DONE:
            stem, sample = item
            if self.state.fatal or self.state.capped:
                continue  # drain without answering: the run is stopping
            request = self.cfg.request(sample)
            try:
                outcome = await self.responder.respond(sample, request)
            except FatalAPIError as exc:
                self.state.fatal = self.state.fatal or str(exc)
                continue
            except CostCapReached as exc:
                self.state.capped = self.state.capped or str(exc)
                continue
            if outcome.unsaved is not None:  # paid, and in no cache: the sink must keep it
                self.sink.unsaved.add((stem, sample.key))
                self.sink.fail(outcome.unsaved)
            row = result_row(sample, request, outcome)
            if self.judge is not None and row.error is None:
                try:
                    row = await self.judge.grade(row)
                except FatalAPIError as exc:
                    self.state.fatal = self.state.fatal or f"judge: {exc}"
                    continue
                except CostCapReached as exc:  # the answer is cached: a rerun pays the judge only
                    self.state.capped = self.state.capped or f"judge: {exc}"
                    continue
            await sink.put((stem, row))
        await sink.put(_DONE)

    def _saved(self, stem: str, rows: list[ResultRow]) -> None:
        for row in rows:
            self._record(stem, row)
        self._progress.advance(len(rows), self.state.scorer.running())

    def _stop(self, reason: str) -> None:
        self.state.fatal = self.state.fatal or reason

    def _record(self, stem: str, row: ResultRow) -> None:
        self._account(stem, row)
        if (unreached := self.state.failures.record(stem, row)) and not self.state.fatal:
            self.state.fatal = unreached  # stop: not one request has reached the server
        if row.answer_source in ("truncated", "empty"):
            self._warn_if_cut(row)
            return  # the model's reply, not an API error: it never stops the run
        if row.error is None:
            self.state.streak = ("", 0)
            self.state.cut = 0
            return
        sig = f"{row.error_status}:{row.error_code}:{row.error[:80]}"
        last, count = self.state.streak
        self.state.streak = (sig, count + 1 if sig == last else 1)
        if self.state.streak[1] >= self.cfg.fail_streak and not self.state.fatal:
            self.state.fatal = (
                f"the same error failed {self.state.streak[1]} rows in a row "
                f"({row.error}); stopping: fix the cause, then rerun to resume"
            )

    def _warn_if_cut(self, row: ResultRow) -> None:
        """Say once when replies keep coming back with no answer (cut at the token limit)."""
        self.state.cut += 1
        if self.state.cut == CUT_WARNING and not self.state.warned:
            self.state.warned = True
            self.on_invalid(
                f"warning: {CUT_WARNING} replies in a row came back with no answer, e.g. "
                f"{row.error}; they are failed rows and will be sent again: stop now (Ctrl-C) "
                "to save calls"
            )

    def _capped_note(self, summary: dict[str, Any]) -> str:
        """Say how much the run spent when the cap stopped it, and how to go on."""
        spent, rows = summary["usage"]["cost_usd"], self.state.scorer.running()["rows"]
        return (
            f"{self.state.capped}; spent ${spent:.4f} of ${self.cfg.max_cost or 0:.2f} over "
            f"{rows} answered rows; rerun with a higher --max-cost to go on (it pays only for "
            "the rows left)"
        )

    def summary(self) -> dict[str, Any]:
        """Return the summary of everything recorded so far."""
        return self.state.scorer.summary(model=self.cfg.spec.alias, extra={"run": self.run_info()})

    def run_info(self) -> dict[str, Any]:
        """Return what only the run knows: its settings, bad input lines, and why it stopped."""
        stopped = self.state.fatal or self.state.capped
        return run_info(
            self.cfg, self.root, self.responder, self.judge, self.state.invalid, stopped
        )

    async def execute(self) -> RunResult:
        """Run to the end (or a fatal stop); results are in input order when it completes."""
        progress = await self._prepare()
        try:
            await self._pipeline()
        except asyncio.CancelledError:
            self.state.fatal = self.state.fatal or INTERRUPTED
            raise
        finally:
            progress.close()
            summary = await self._close()
        return await self._finish(summary)

    async def _prepare(self) -> RunProgress:
        """Load BERTScore and the finished rows, size the workers, and draw the progress."""
        make_run_dir(self.cfg.run_dir)  # the CLI's run lock has made it already
        bert = self.judge.bert if self.judge is not None else None
        if bert is not None and "report_generation" in self.stems:
            await asyncio.to_thread(bert.load)  # fails before any call if it cannot load
        self._load_finished()
        if self.budget is not None:  # the cap covers the run's earlier invocations too
            # +=: the K runs of --samples share one budget, each adds what it spent before
            self.budget.spent += self.state.scorer.running()["cost_usd"]
        total = sum(
            min(count_rows(self.root / f"{s}.jsonl"), self.cfg.limit or 10**12) for s in self.stems
        )
        batched = self.responder if isinstance(self.responder, BatchModel) else None
        if batched is not None:  # each worker awaits its row's batch: all rows wait at once
            self._workers = max(1, min(total, BATCH_WORKERS))
        progress = self._progress = RunProgress(
            total, enabled=self.show_progress, board=self.board, label=self.label,
            status=batched.status if batched is not None else None,
        )  # fmt: skip
        if batched is not None:
            batched.on_status = progress.refresh
        progress.advance(len(self.state.done), self.state.scorer.running())
        return progress

    async def _pipeline(self) -> None:
        """Producer, workers and sink in one task group, then the sink's last flush."""
        # More workers than slots, so image encoding overlaps the requests in flight.
        queue: asyncio.Queue[tuple[str, Sample] | None] = asyncio.Queue(self._workers * 2)
        sink: asyncio.Queue[Item] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._produce(queue, sink))
            for _ in range(self._workers):
                tg.create_task(self._work(queue, sink))
            tg.create_task(self.sink.drain(sink, self._workers + 1))
        await self.sink.flush(self.cfg.hold_seconds, self.on_invalid)

    async def _close(self) -> dict[str, Any]:
        """Close the results files and write the summary: on every exit, Ctrl-C included."""
        for output in self.outputs.values():
            await output.close()
        if self.state.fatal == INTERRUPTED:
            # An append the interrupt cut short may have reached the file before it was
            # recorded: the files decide what the partial summary counts.
            self.state.scorer = Scorer(official_quirks=self.cfg.official_quirks)
            for stem, output in self.outputs.items():
                for row in output.finished(self.on_invalid).values():
                    self.state.scorer.add(stem, row)
        summary = self.summary()
        try:
            write_summary(self.cfg.run_dir, summary)
        except OSError as exc:
            self.sink.fail(f"{self.cfg.run_dir / SUMMARY_NAME}: {os_reason(exc)}")
        return summary

    async def _finish(self, summary: dict[str, Any]) -> RunResult:
        """Put the results files in input order, write the page, and say how the run ended."""
        if not (self.state.fatal or self.state.capped):
            for output in self.outputs.values():
                try:
                    output.finalize()
                except OSError as exc:  # the file is left as it was: the rerun puts it in order
                    self.sink.fail(f"{output.path}: {os_reason(exc)}")
                    break
        cache = self.cfg.cache_dir if self.cfg.use_cache else None
        # Never changes the exit; not tried when a write already failed (disk full: said once).
        # In a thread: other runs of a sweep go on while this one draws its page.
        if (
            self.write_page is not None
            and self.cfg.page
            and not self.sink.failure
            and (note := await asyncio.to_thread(self.write_page, self.cfg.run_dir, summary, cache))
        ):
            self.on_invalid(note)
        if self.sink.failure:
            saved = self.state.scorer.running()["rows"]
            return RunResult(summary, ExitCode.WRITE, self.sink.report(saved))
        failures = self.state.failures  # another stop (a redirect, a 401...) says its own line
        if (not self.state.fatal or failures.stopped) and (unreached := failures.unreached_line()):
            return RunResult(summary, ExitCode.FATAL, unreached, unreached=True)
        if self.state.fatal:
            return RunResult(summary, ExitCode.FATAL, self.state.fatal)
        if self.state.capped:
            return RunResult(summary, ExitCode.COST, self._capped_note(summary))
        failed = summary["usage"]["failed_rows"] + len(self.state.invalid)
        code = ExitCode.FAILED_ROWS if failed else ExitCode.OK
        return RunResult(summary, code, failures=tuple(self.state.failures.groups()))


async def run_eval(
    cfg: EvalConfig,
    *,
    show_progress: bool = True,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Clock | None = None,
    write_page: PageWriter | None = None,
) -> RunResult:
    """Evaluate `cfg.spec` on the dataset.

    Args:
        cfg: the run's settings.
        show_progress: draw the progress bar (or print progress lines).
        sleep: replaces the retry backoff's sleeps (tests).
        clock: the clock pacing and 429 pauses run on (tests: a virtual one).
        write_page: draws the run's page when it ends (the CLI passes `views.page`'s).
    """
    async with AsyncExitStack() as stack:
        cache = ResponseCache(cfg.cache_dir) if cfg.use_cache else None  # the judge's too
        budget = Budget(cfg.max_cost)  # the model's and the judge's calls reserve in it
        responder = await make_responder(cfg, stack, cache, sleep, clock, budget)
        judge = await make_judge(cfg, stack, cache, sleep, clock, budget)
        kind: type[Run | SampledRun] = Run
        if cfg.samples > 1:
            from pipeline.run import samples  # it imports this module: loaded only when asked

            kind = samples.SampledRun
        run = kind(
            cfg, responder, judge=judge, show_progress=show_progress, budget=budget,
            write_page=write_page,
        )  # fmt: skip
        result = await run.execute()
        if cache is not None and (note := cache.damage_note()):
            print(note, file=sys.stderr)
        return result
