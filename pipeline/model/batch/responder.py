"""Rows answered through the provider's Batch API (`--batch`): half price, within 24 hours.

    respond(row) ─▶ pending in this run (or in RUN/batches.json)? wait for it
                 ─▶ response cache hit? answered
                 ─▶ reserve the cost bound ─▶ one JSONL line into the open input file
    input file full (--batch-max-mb, 50,000 lines) or no new line for a moment
                 ─▶ upload ─▶ RUN/batches.json: file id + keys ─▶ create ─▶ RUN/batches.json: id
                 ─▶ poll ─▶ download output and error files ─▶ cache each answer ─▶ rows resolve

Each line is the online request exactly (`client.build_payload`, same model id, extra body and
token field); its custom_id is the request's cache key, so answers land in the same cache the
online path reads. RUN/batches.json is written (atomically) before anything is awaited on a
batch, and the intent (input file id and keys) before the batch is created: a rerun after a
crash or `kill -9` finds the batch by its input file id (the list route) and collects it instead
of submitting again. A line that fails in a transient way (a 5xx, an expired or cancelled batch)
goes into a new batch, or online with `--batch-retry online`, until `--max-retries`; a permanent
failure fails its row; 401, 404 and billing errors stop the run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import orjson

from pipeline.config import EvalConfig
from pipeline.data.images import file_digest
from pipeline.errors import (
    APIError,
    FatalAPIError,
    RetryableError,
    RowError,
    os_reason,
)
from pipeline.model.batch.api import ENDPOINT, TERMINAL, BatchClient, BatchInfo, read_line
from pipeline.model.batch.state import (
    BATCHES_NAME,
    BatchRecord,
    InputFile,
    InputFiles,
    load_records,
    max_bytes,
    save_records,
)
from pipeline.model.budget import Budget
from pipeline.model.client import build_payload
from pipeline.model.responder import APIModel
from pipeline.providers.prices import request_cost
from pipeline.records import ChatRequest, Completion, Outcome, Sample, Usage

_IDLE = 2.0  # seconds without a new line before the open file is submitted


@dataclass(frozen=True, slots=True)
class _Again:
    """A line failed in a transient way: the row sends it again (online when `online`)."""

    error: APIError
    online: bool


_Result = Outcome | _Again | FatalAPIError


@dataclass(slots=True)
class _Line:
    """A cache key the run waits on; its row (the first one to claim it) owns it."""

    future: asyncio.Future[_Result]
    done: asyncio.Future[None]  # set once the owner is finished with the key
    sent: int = 0  # batch lines sent for it, this attempt included
    reserved: float = 0.0  # its share of the budget until it settles
    claimed: bool = False


class BatchModel:
    """A `Responder` whose answers come from the provider's Batch API."""

    def __init__(
        self,
        cfg: EvalConfig,
        client: BatchClient,
        online: APIModel,
        *,
        budget: Budget | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.name = cfg.spec.model
        self.cfg, self.client, self.online, self.budget = cfg, client, online, budget
        self.note = note or (lambda text: print(text, file=sys.stderr))
        self.folder = cfg.run_dir / "batches"
        self.record = cfg.run_dir / BATCHES_NAME
        self.inputs = InputFiles(self.folder, max_bytes(cfg.batch_max_mb, cfg.spec.provider))
        self.idle = min(_IDLE, cfg.batch_poll)
        self.stopped: FatalAPIError | None = None
        self.on_status: Callable[[], None] = lambda: None  # the progress line's refresh
        self._lines: dict[str, _Line] = {}
        self._pending: list[BatchRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._answered = 0  # lines answered by batches in this process

    def start(self) -> None:
        """Collect the batches an earlier invocation left pending (RUN/batches.json)."""
        for entry in load_records(self.record):
            self._pending.append(entry)
            for key in entry.keys:
                self._line(key).sent = entry.resent.get(key, 1)
            self._spawn(self._drive(entry))
        if not any(t.get_name() == "idle" for t in self._tasks):
            self._spawn(self._flush_idle(), name="idle")

    async def close(self) -> None:
        """Stop polling (the batches go on at the provider) and say how to collect them."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.inputs.discard()
        if running := [p for p in self._pending if p.input_file_id]:
            self.note(
                f"{len(running)} batch(es) still pending at the provider (ids in {self.record}): "
                "rerun the same command to collect them; nothing is submitted again"
            )

    def status(self) -> str:
        """Return the batches' states and line counts, for the progress line."""
        states = Counter(p.status for p in self._pending)
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none pending"
        waiting = sum(len(p.keys) for p in self._pending)
        return f"batches: {shown}; lines waiting {waiting}, answered {self._answered}"

    async def respond(self, sample: Sample, request: ChatRequest) -> Outcome:
        """Answer one row from a batch (or the cache); fatal errors and the cost cap propagate."""
        if self.stopped is not None:
            raise self.stopped
        try:
            digest = await asyncio.to_thread(file_digest, sample.image)
        except OSError as exc:
            return Outcome(None, RowError(f"image could not be read: {exc}"))
        key = self.online.cache_key(request, digest)
        while (line := self._lines.get(key)) is not None and line.claimed:
            await asyncio.wait([line.done])  # a duplicate row: paid once, then a cache hit
        new = line is None  # else a line of a batch an earlier invocation left pending
        if line is None:
            if (hit := self.online.cached(key)) is not None:
                return hit
            line = self._line(key)
        line.claimed = True
        try:  # a CostCapReached from `_add` propagates: the run stops taking rows
            if new and (failed := await self._add(key, line, request, reserve=True)):
                return failed
            return await self._follow(key, line, sample, request)
        finally:
            self._release(key, line)

    def _line(self, key: str) -> _Line:
        loop = asyncio.get_running_loop()
        line = self._lines[key] = _Line(loop.create_future(), loop.create_future())
        return line

    def _release(self, key: str, line: _Line) -> None:
        if self._lines.get(key) is line:
            del self._lines[key]
        if not line.done.done():
            line.done.set_result(None)

    async def _follow(self, key: str, line: _Line, sample: Sample, request: ChatRequest) -> Outcome:
        """Wait for the key's answer; send it again while its failures are transient."""
        while True:
            result = await line.future
            if isinstance(result, Outcome):
                return result
            if isinstance(result, FatalAPIError):
                raise result
            if result.online:
                self._settle(line, 0.0)
                outcome = await self.online.respond(sample, request)
                tried = Usage(api_calls=line.sent, retries=line.sent, batch_calls=line.sent)
                return replace(outcome, usage=outcome.usage + tried)
            line.future = asyncio.get_running_loop().create_future()
            if (failed := await self._add(key, line, request, reserve=False)) is not None:
                return failed

    async def _add(
        self, key: str, line: _Line, request: ChatRequest, *, reserve: bool
    ) -> Outcome | None:
        """Write the key's line into the open input file; return the row's outcome if it cannot."""
        cfg = self.cfg
        budget = self.budget
        if reserve and budget is not None and budget.cap is not None and cfg.price is not None:
            cost = request_cost(cfg.price, request, cfg.spec.model, cfg.spec.provider, batch=True)
            line.reserved = budget.reserve(cost)  # CostCapReached stops the run
        image_url = None
        if request.image is not None:
            images = self.online.images
            try:
                image_url = await asyncio.to_thread(
                    images.data_url, request.image, legacy_mime=cfg.legacy_mime
                )
            except OSError as exc:
                return self._give_up(line, RowError(f"image could not be encoded: {exc}"))
        model, token_param = cfg.spec.model, cfg.spec.token_param
        body = build_payload(model, request, image_url, self.online.extra_body, token_param)
        data = orjson.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body})
        if len(data) + 1 > self.inputs.limit:
            msg = (
                f"this row's request is {len(data) / 1e6:.1f} MB, more than a batch input file "
                f"may hold ({self.inputs.limit / 1e6:g} MB): raise --batch-max-mb or run it online"
            )
            return self._give_up(line, RowError(msg))
        try:
            self._write(key, data + b"\n")
        except OSError as exc:
            return self._give_up(line, RowError(f"{self.folder}: {os_reason(exc)}"))
        line.sent += 1
        return None

    def _write(self, key: str, data: bytes) -> None:
        if (full := self.inputs.add(key, data, asyncio.get_running_loop().time())) is not None:
            self._submit(full)

    def _submit(self, full: InputFile | None) -> None:
        """Send a closed input file as a batch."""
        if full is None:
            return
        resent = {k: n for k in full.keys if (n := self._lines[k].sent) > 1}
        entry = BatchRecord(full.keys, full.path.name, resent=resent)
        self._pending.append(entry)
        self._spawn(self._drive(entry))

    async def _flush_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.idle)
            opened = self.inputs.open
            if opened is not None and loop.time() - opened.last >= self.idle:
                try:
                    self._submit(self.inputs.take())
                except OSError as exc:  # its lines never reached the disk
                    self._fail_keys(opened.keys, RowError(f"{opened.path}: {os_reason(exc)}"))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, entry: BatchRecord) -> None:
        """Upload, create, poll and collect one batch."""
        try:
            if entry.batch_id is None:
                look = entry.input_file_id is not None  # a rerun: it may have been created
                if entry.input_file_id is None:
                    entry.status = "uploading"
                    entry.input_file_id = await self.client.upload(self.folder / entry.input)
                    self._save()  # the intent, before the batch exists
                    (self.folder / entry.input).unlink(missing_ok=True)
                info = await self.client.submit(entry.input_file_id, look_first=look)
                entry.batch_id, entry.created = info.id, time.time()
                self._save()  # before waiting on it
            while True:
                info = await self.client.get(entry.batch_id)
                entry.status = info.status
                self.on_status()
                if info.status in TERMINAL:
                    break
                await asyncio.sleep(self.cfg.batch_poll)
            await self._collect(entry, info)
        except FatalAPIError as exc:
            self._stop(exc)
        except (APIError, OSError) as exc:
            error = exc if isinstance(exc, APIError) else RowError(os_reason(exc))
            if entry.input_file_id is not None:  # it may run at the provider: keep its record
                error = RowError(f"{error}; batch kept in {self.record}: rerun to collect it")
                self._fail_keys(entry.keys, error)
                return
            self._end(entry, error)

    async def _collect(self, entry: BatchRecord, info: BatchInfo) -> None:
        """Resolve every key of a finished batch from its output and error files."""
        if info.status == "failed":
            msg = f"batch {info.id} failed validation: {info.errors or 'no reason given'}"
            self._end(entry, FatalAPIError(msg))
            return
        seen: set[str] = set()
        for file_id in (info.output_file_id, info.error_file_id):
            if file_id is None:
                continue
            for raw in (await self.client.download(file_id)).splitlines():
                try:
                    item = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                key = item.get("custom_id") if isinstance(item, dict) else None
                if isinstance(key, str) and key in entry.keys and key not in seen:
                    seen.add(key)
                    self._resolve(key, item, info.id)
        missing = RetryableError(f"batch {info.id} ended {info.status} without this line")
        for key in entry.keys:
            if key not in seen:
                self._failed(key, missing)
        self._end(entry, None)

    def _resolve(self, key: str, item: dict[str, Any], batch_id: str) -> None:
        """Resolve one key from its output or error line."""
        found = read_line(self.cfg.spec.provider, item, f"batch {batch_id} line {key}")
        if isinstance(found, Completion):
            self._succeeded(key, found)
        else:
            self._failed(key, found)

    def _succeeded(self, key: str, completion: Completion) -> None:
        line, cache, price = self._lines.get(key), self.online.cache, self.cfg.price
        if line is None or line.future.done():
            return
        unsaved = None
        if cache is not None and completion.keep:
            try:
                cache.put(key, completion)  # durable before the row can count as done
            except OSError as exc:
                unsaved = f"{cache.dir}: {os_reason(exc)}"
        prompt, out = completion.prompt_tokens, completion.completion_tokens
        cost = price.cost(prompt, out, batch=True) if price is not None else 0.0
        self._settle(line, cost)
        self._answered += 1
        usage = replace(
            self._usage(line),
            prompt_tokens=prompt,
            completion_tokens=out,
            reasoning_tokens=completion.reasoning_tokens,
            cost_usd=cost,
        )
        line.future.set_result(Outcome(completion, usage=usage, unsaved=unsaved))

    def _failed(self, key: str, error: APIError) -> None:
        line = self._lines.get(key)
        if line is None or line.future.done():
            return
        if isinstance(error, FatalAPIError):
            self._stop(error)
        elif isinstance(error, RetryableError) and line.sent <= self.cfg.max_retries:
            line.future.set_result(_Again(error, online=self.cfg.batch_retry == "online"))
        else:
            line.future.set_result(self._give_up(line, error))

    def _fail_keys(self, keys: list[str], error: APIError) -> None:
        for key in keys:
            if (line := self._lines.get(key)) is not None and not line.future.done():
                line.future.set_result(self._give_up(line, error))

    def _give_up(self, line: _Line, error: APIError) -> Outcome:
        self._settle(line, 0.0)
        return Outcome(None, error, usage=self._usage(line))

    def _usage(self, line: _Line) -> Usage:
        n = line.sent
        return Usage(api_calls=n, retries=max(n - 1, 0), batch_calls=n)

    def _settle(self, line: _Line, paid: float) -> None:
        if self.budget is not None:
            self.budget.settle(line.reserved, paid)
        line.reserved = 0.0

    def _end(self, entry: BatchRecord, error: APIError | None) -> None:
        """Forget a batch: collected, or failed before the provider had it."""
        if error is not None:
            if isinstance(error, FatalAPIError):
                self._stop(error)
            self._fail_keys(entry.keys, error)
        self._pending.remove(entry)
        (self.folder / entry.input).unlink(missing_ok=True)
        if entry.input_file_id is not None:
            self._save()
        self.on_status()

    def _stop(self, error: FatalAPIError) -> None:
        self.stopped = self.stopped or error
        for line in self._lines.values():
            if not line.future.done():
                line.future.set_result(error)

    def _save(self) -> None:
        save_records(self.record, self._pending)


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
