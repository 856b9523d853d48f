"""Results files: one JSONL per dataset file, appended as rows finish, put in input order at the end.

A line is a `ResultRow` (the input row unchanged plus `model_response`, `raw_response`, `error`
and `_meta`). Appends go straight to the kernel, so a `kill -9` loses at most a torn last line,
which the next run cuts off; an append that fails (disk full) is cut back, so the file always
ends on a whole line. On resume the latest line for a key wins, so a retried failure supersedes
itself. Every reader goes through `_lines`: a torn last line (no newline: the row a crash cut
short) is skipped quietly; any other line that is not a JSON object is damage, skipped and
reported by line number. `eval` drops damage from the file (its rows are run again), `score`
skips it with a warning.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiofiles
import orjson
from aiofiles.threadpool.binary import AsyncFileIO

from pipeline.files import write_atomic
from pipeline.records import FILES, ResultRow

_SHOWN = 10  # damaged line numbers listed in a note


def _lines(path: Path, damaged: list[int]) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Yield (offset, line, object) per row; add damaged line numbers to `damaged`.

    Blank lines and a torn last line are skipped; any other line that is not a JSON object
    (unparseable, or another JSON value) is damage.
    """
    with path.open("rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    data = None
                if isinstance(data, dict):
                    yield offset, raw, data
                elif raw.endswith(b"\n"):  # only the last line can lack it: torn by a crash
                    damaged.append(lineno)
            offset += len(raw)


def damage_note(path: Path, damaged: list[int], what: str) -> str:
    """Say in one line which lines of `path` were damaged, and `what` became of them."""
    shown = ", ".join(map(str, damaged[:_SHOWN]))
    more = f" and {len(damaged) - _SHOWN} more" if len(damaged) > _SHOWN else ""
    if len(damaged) == 1:
        return f"1 damaged line in {path} (line {shown}) was {what}"
    return f"{len(damaged)} damaged lines in {path} (lines {shown}{more}) were {what}"


def read_rows(path: Path, damaged: list[int]) -> Iterator[ResultRow]:
    """Yield the rows of one results file, in file order; add damaged line numbers to `damaged`."""
    for _, _, data in _lines(path, damaged):
        yield ResultRow.from_json(data)


def read_run(
    run_dir: Path, on_damage: Callable[[str], None] | None = None
) -> Iterator[tuple[str, ResultRow]]:
    """Yield (stem, row) from each results file present in a run folder; skip damaged lines."""
    for stem in FILES:
        path = run_dir / f"{stem}.jsonl"
        if path.is_file():
            damaged: list[int] = []
            for row in read_rows(path, damaged):
                yield stem, row
            if damaged and on_damage is not None:
                on_damage(damage_note(path, damaged, "skipped: run eval to re-run them"))


def latest_rows(run_dir: Path) -> dict[str, dict[str, ResultRow]]:
    """Return per results file the latest row of each key (a retried row's last line counts)."""
    out: dict[str, dict[str, ResultRow]] = {}
    for stem, row in read_run(run_dir):
        if row.key is not None:
            out.setdefault(stem, {})[row.key] = row
    return out


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline: the row that was being written at a crash."""
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        chunk = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            cut = data.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


class ResultsFile:
    """The results of one dataset file in one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: AsyncFileIO | None = None
        self._write: asyncio.Future[None] | None = None  # the last append's write

    def finished(self, on_damage: Callable[[str], None] | None = None) -> dict[str, ResultRow]:
        """Return the latest row per key already on disk, after cutting a torn tail.

        Damaged lines are dropped: the file is rewritten atomically with every other line, in
        order, and `on_damage` is told which (their rows are then run again).
        """
        if not self.path.exists():
            return {}
        _cut_torn_tail(self.path)
        damaged: list[int] = []
        done = {row.key: row for row in read_rows(self.path, damaged) if row.key is not None}
        if damaged:
            write_atomic(self.path, (raw for _, raw, _ in _lines(self.path, [])))
            if on_damage is not None:
                on_damage(damage_note(self.path, damaged, "dropped and will be re-run"))
        return done

    async def append(self, rows: list[ResultRow]) -> None:
        """Append rows and hand them to the kernel before returning, all of them or none.

        An OSError (disk full, quota, read-only, I/O error) propagates once the file is cut back
        to its size before this append: it still ends on a whole line. The write is shielded:
        a cancelled run (Ctrl-C) still completes or cuts back the write in flight, and `close`
        waits for it.
        """
        self._write = asyncio.ensure_future(
            self._append(b"".join(r.to_json() + b"\n" for r in rows))
        )
        await asyncio.shield(self._write)

    async def _append(self, data: bytes) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = await aiofiles.open(self.path, "ab", buffering=0)  # straight to the OS
        start = os.fstat(self._handle.fileno()).st_size
        view = memoryview(data)
        try:
            while view:  # a write may take only part of the data
                view = view[await self._handle.write(view) :]
        except OSError:
            await self._handle.truncate(start)
            raise

    async def close(self) -> None:
        """Close the append handle, if open, once the write in flight (if any) has ended."""
        if self._write is not None:
            await asyncio.wait([self._write])
            self._write = None
        if self._handle is not None:
            await self._handle.close()
            self._handle = None

    def finalize(self) -> None:
        """Rewrite the file in input order with one line per key (the latest), atomically."""
        if not self.path.exists():
            return
        latest: dict[str, tuple[int, int, int]] = {}
        for offset, raw, data in _lines(self.path, []):
            meta = data.get("_meta")
            if isinstance(meta, dict) and isinstance(key := meta.get("key"), str):
                latest[key] = (int(meta.get("line") or 0), offset, len(raw))
        order = sorted(latest.values())
        with self.path.open("rb") as f:

            def lines() -> Iterator[bytes]:  # streamed: the file is never held in memory
                for _, offset, length in order:
                    f.seek(offset)
                    yield f.read(length).rstrip(b"\n") + b"\n"

            write_atomic(self.path, lines())
