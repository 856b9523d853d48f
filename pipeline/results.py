"""Results files: one JSONL per dataset file, appended as rows finish, put in input order at the end.

A line is the input row unchanged plus `model_response`, `raw_response`, `error` and `_meta`.
Appends go straight to the kernel (a `kill -9` loses at most a torn last line, which the next
run cuts off); on resume the latest line for a key wins, so a retried failure supersedes itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiofiles
import orjson

from pipeline.cache import write_atomic


def _entries(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield (offset, length, row) for each parseable line; skip a torn or foreign line."""
    with path.open("rb") as f:
        offset = 0
        for raw in f:
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("_meta"), dict):
                yield offset, len(raw), row
            offset += len(raw)


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
        self._handle: Any = None

    def finished(self) -> dict[str, dict[str, Any]]:
        """Return the latest row per key already on disk, after cutting a torn tail."""
        if not self.path.exists():
            return {}
        _cut_torn_tail(self.path)
        return {row["_meta"]["key"]: row for _, _, row in _entries(self.path)}

    async def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and hand them to the kernel before returning."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = await aiofiles.open(self.path, "ab")
        await self._handle.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        await self._handle.flush()

    async def close(self) -> None:
        """Close the append handle, if open."""
        if self._handle is not None:
            await self._handle.close()
            self._handle = None

    def finalize(self) -> None:
        """Rewrite the file in input order with one line per key (the latest), atomically."""
        if not self.path.exists():
            return
        latest: dict[str, tuple[int, int, int]] = {}
        for offset, length, row in _entries(self.path):
            meta = row["_meta"]
            latest[meta["key"]] = (int(meta.get("line", 0)), offset, length)
        order = sorted(latest.values())
        with self.path.open("rb") as f:

            def lines() -> Iterator[bytes]:  # streamed: the file is never held in memory
                for _, offset, length in order:
                    f.seek(offset)
                    yield f.read(length).rstrip(b"\n") + b"\n"

            write_atomic(self.path, lines())
