"""The sink: the one writer of results files, and what a full disk does to a run.

Rows are appended whole or not at all (`ResultsFile.append`), so nothing already written is
damaged. The first of our writes that fails (disk full, quota, read-only, I/O error: a results
append, a response-cache entry, the summary, the final reordering) stops the run as a fatal
error does: no new row is taken, the requests in flight finish, and every row that arrives from
then on is held in memory. At the end the held rows are written once more. If that fails too and
some of them carry a paid answer the response cache could not store, the run says so and tries
again every `RETRY_EVERY` seconds for `hold_seconds`: space freed in time saves them, else the
rerun pays for them again. Held rows whose answers are cached are not waited for: the rerun
takes them from the cache free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pipeline.errors import os_reason
from pipeline.records import ResultRow
from pipeline.results import ResultsFile

RETRY_EVERY = 2.0  # seconds between tries to write held rows
Item = tuple[str, ResultRow] | None  # (file stem, row), or None: one sender is done


class Sink:
    """Appends finished rows to their files; holds them in memory once a write has failed."""

    def __init__(
        self,
        outputs: dict[str, ResultsFile],
        *,
        record: Callable[[str, list[ResultRow]], None],
        stop: Callable[[str], None],
    ) -> None:
        self.outputs = outputs
        self.record = record  # called with rows once they are in their file
        self.stop = stop  # called once, with the first failed write
        self.failure: str | None = None  # "PATH: why" of the first write that failed
        self.held: dict[str, list[ResultRow]] = {}
        self.unsaved: set[tuple[str, str | None]] = set()  # rows whose paid answer is uncached

    def fail(self, where: str) -> None:
        """Note a failed write ("PATH: why"); the first one stops the run."""
        if self.failure is None:
            self.failure = where
            self.stop(f"cannot write {where}")

    async def drain(self, queue: asyncio.Queue[Item], senders: int) -> None:
        """Write rows from `queue`, a batch of what is waiting at a time, until every sender is done."""
        while senders:
            batch: dict[str, list[ResultRow]] = {}
            item = await queue.get()
            while True:
                if item is None:
                    senders -= 1
                else:
                    batch.setdefault(item[0], []).append(item[1])
                if queue.empty() or not senders:
                    break
                item = queue.get_nowait()
            for stem, rows in batch.items():
                if self.failure is None:
                    await self._write(stem, rows)
                else:
                    self.held.setdefault(stem, []).extend(rows)

    async def _write(self, stem: str, rows: list[ResultRow]) -> bool:
        output = self.outputs[stem]
        try:
            await output.append(rows)  # durable before it counts as done
        except OSError as exc:
            self.fail(f"{output.path}: {os_reason(exc)}")
            self.held.setdefault(stem, []).extend(rows)
            return False
        self.record(stem, rows)
        return True

    async def _write_held(self) -> bool:
        """Try to write every held row; return whether none is left."""
        for stem in list(self.held):
            if not await self._write(stem, self.held.pop(stem)):
                return False
        return True

    def paid_unsaved(self) -> int:
        """Count held rows whose paid answer is in no file and no cache."""
        return sum((s, row.key) in self.unsaved for s, rows in self.held.items() for row in rows)

    async def flush(self, hold_seconds: float, say: Callable[[str], None]) -> None:
        """Write the held rows; while some carry an answer lost otherwise, wait for space."""
        if await self._write_held() or not (paid := self.paid_unsaved()):
            return
        folder = next(iter(self.outputs.values())).path.parent  # the run folder
        say(
            f"disk full: holding {paid} paid answers in memory; free space in {folder} "
            f"within {hold_seconds:g} s to keep them"
        )
        deadline = time.monotonic() + hold_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(RETRY_EVERY, max(deadline - time.monotonic(), 0)))
            if await self._write_held():
                return

    def report(self, saved: int) -> str:
        """Return the one line that ends the run: what failed, what is kept, what to do."""
        held = sum(len(rows) for rows in self.held.values())
        lost = ""
        if paid := self.paid_unsaved():
            lost = f", {held} not: {paid} paid answers lost (the rerun pays for them again)"
        elif held:
            lost = f", {held} not (the rerun takes their answers from the cache)"
        return (
            f"cannot write {self.failure}; {saved} rows saved{lost}; "
            "free space, then rerun the same command to resume"
        )
