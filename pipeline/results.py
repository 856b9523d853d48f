"""Results files: one JSONL per dataset file, appended as rows finish, put in input order at the end.

A line is a `ResultRow` (the input row unchanged plus `model_response`, `raw_response`, `error`
and `_meta`). Appends go straight to the kernel, so a `kill -9` loses at most a torn last line,
which the next run cuts off; an append that fails (disk full) is cut back, so the file always
ends on a whole line. On resume the latest line for a key wins, so a retried failure
supersedes itself. Every reader goes through `_lines`: a torn last line is skipped, an
unparseable line before the end is damage and stops with `FILE:LINE`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.cache import write_atomic
from pipeline.errors import DataError
from pipeline.records import FILES, ResultRow


def _lines(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield (offset, length, object) per line; skip blank lines and a torn last line."""
    torn: int | None = None
    with path.open("rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            if torn is not None:
                # Only the last line can be torn by a crash mid-write; anything else is damage.
                msg = "unparseable JSON before the end of the file; repair or delete that line"
                raise DataError(str(path), torn, msg)
            if raw.strip():
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    torn = lineno
                else:
                    if not isinstance(data, dict):
                        msg = "a results line must be a JSON object; repair or delete that line"
                        raise DataError(str(path), lineno, msg)
                    yield offset, len(raw), data
            offset += len(raw)


def read_rows(path: Path) -> Iterator[ResultRow]:
    """Yield the rows of one results file, in file order."""
    for _, _, data in _lines(path):
        yield ResultRow.from_json(data)


def read_run(run_dir: Path) -> Iterator[tuple[str, ResultRow]]:
    """Yield (stem, row) from each results file present in a run folder."""
    for stem in FILES:
        path = run_dir / f"{stem}.jsonl"
        if path.is_file():
            for row in read_rows(path):
                yield stem, row


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
        self._fd: int | None = None
        self._lock = threading.Lock()  # one write at a time; close waits for a write in flight

    def finished(self) -> dict[str, ResultRow]:
        """Return the latest row per key already on disk, after cutting a torn tail."""
        if not self.path.exists():
            return {}
        _cut_torn_tail(self.path)
        return {row.key: row for row in read_rows(self.path) if row.key is not None}

    async def append(self, rows: list[ResultRow]) -> None:
        """Append rows and hand them to the kernel before returning, all of them or none.

        An OSError (disk full, quota, read-only, I/O error) propagates once the file is cut back
        to its size before this append: it still ends on a whole line.
        """
        await asyncio.to_thread(self._append, b"".join(r.to_json() + b"\n" for r in rows))

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            start = os.fstat(self._fd).st_size
            view = memoryview(data)
            try:
                while view:  # a write may take only part of the data
                    view = view[os.write(self._fd, view) :]
            except BaseException:
                os.ftruncate(self._fd, start)
                raise

    async def close(self) -> None:
        """Close the append handle, if open."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def finalize(self) -> None:
        """Rewrite the file in input order with one line per key (the latest), atomically."""
        if not self.path.exists():
            return
        latest: dict[str, tuple[int, int, int]] = {}
        for offset, length, data in _lines(self.path):
            meta = data.get("_meta")
            if isinstance(meta, dict) and isinstance(key := meta.get("key"), str):
                latest[key] = (int(meta.get("line") or 0), offset, length)
        order = sorted(latest.values())
        with self.path.open("rb") as f:

            def lines() -> Iterator[bytes]:  # streamed: the file is never held in memory
                for _, offset, length in order:
                    f.seek(offset)
                    yield f.read(length).rstrip(b"\n") + b"\n"

            write_atomic(self.path, lines())
