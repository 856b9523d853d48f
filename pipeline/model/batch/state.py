"""What `--batch` keeps in the run folder: input files being filled, and the pending batches.

RUN/batches/input-*.jsonl: one request per line, split by bytes (`--batch-max-mb`, else the
provider's limit) and by 50,000 lines; deleted once uploaded. RUN/batches.json: the batches the
provider may still be working on. It is written atomically (`cache.write_atomic`) before anything waits on a batch: first the intent
(the uploaded input file's id and the custom_ids, i.e. cache keys, of its lines), then the
batch id once it is created. A rerun reads it and collects those batches instead of submitting
their rows again; a batch whose id was never recorded is found by its input file id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline.errors import ConfigError
from pipeline.files import write_atomic

BATCHES_NAME = "batches.json"
MAX_LINES = 50_000  # requests per input file (OpenAI and DashScope)
PROVIDER_MB = {"openai": 200.0}  # MB per input file; DashScope (and the rest): 100
DEFAULT_MB = 100.0


def max_bytes(batch_max_mb: float | None, provider: str) -> int:
    """Return the largest input file: `--batch-max-mb`, else the provider's limit."""
    return int((batch_max_mb or PROVIDER_MB.get(provider, DEFAULT_MB)) * 1_000_000)


@dataclass(slots=True)
class InputFile:
    """An input file being filled."""

    path: Path
    file: BinaryIO
    keys: list[str] = field(default_factory=list)
    size: int = 0
    last: float = 0.0  # when its last line came (loop time)


class InputFiles:
    """The run's input files: lines go to the open one until it is full."""

    def __init__(self, folder: Path, limit: int, lines: int = MAX_LINES) -> None:
        self.folder, self.limit, self.lines = folder, limit, lines
        self.open: InputFile | None = None

    def add(self, key: str, line: bytes, now: float) -> InputFile | None:
        """Write one line (with its newline); return the file closed to make room, if any."""
        full = None
        opened = self.open
        if opened is not None and (
            opened.size + len(line) > self.limit or len(opened.keys) >= self.lines
        ):
            full, opened = self.take(), None
        if opened is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"input-{uuid.uuid4().hex[:12]}.jsonl"
            opened = self.open = InputFile(path, path.open("wb"))
        opened.file.write(line)
        opened.keys.append(key)
        opened.size += len(line)
        opened.last = now
        return full

    def take(self) -> InputFile | None:
        """Close the open file and return it (None when there is none)."""
        opened, self.open = self.open, None
        if opened is not None:
            opened.file.close()
        return opened

    def discard(self) -> None:
        """Delete the open file, never uploaded (its rows are sent again on a rerun)."""
        if (opened := self.take()) is not None:
            opened.path.unlink(missing_ok=True)


@dataclass(slots=True)
class BatchRecord:
    """One batch of a run, as RUN/batches.json records it."""

    keys: list[str]
    input: str  # the input file's name under RUN/batches/
    input_file_id: str | None = None
    batch_id: str | None = None
    created: float | None = None  # unix time
    resent: dict[str, int] = field(default_factory=dict)  # key → lines sent, where more than 1
    status: str = "writing"

    def to_json(self) -> dict[str, Any]:
        """Return the record of this batch."""
        return {
            "batch_id": self.batch_id,
            "input_file_id": self.input_file_id,
            "created": self.created,
            "status": self.status,
            "custom_ids": self.keys,
            "resent": self.resent,
        }


def save_records(path: Path, records: Iterable[BatchRecord]) -> None:
    """Write the records of every batch the provider has (its input file is uploaded)."""
    entries = [r.to_json() for r in records if r.input_file_id is not None]
    data = {"version": 1, "batches": entries}
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def load_records(path: Path) -> list[BatchRecord]:
    """Return the batches RUN/batches.json lists (none when it does not exist)."""
    try:
        data = orjson.loads(path.read_bytes())
        entries = [
            BatchRecord(
                keys=[str(k) for k in e["custom_ids"]],
                input=f"collected-{i}",
                input_file_id=str(e["input_file_id"]),
                batch_id=_opt(e.get("batch_id")),
                created=e.get("created"),
                resent={str(k): int(n) for k, n in (e.get("resent") or {}).items()},
                status="pending",
            )
            for i, e in enumerate(data["batches"])
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = (
            f"{path}: unreadable ({exc}); it lists batches pending at the provider: repair it, "
            "or delete it to send those rows again (paying twice)"
        )
        raise ConfigError(msg) from exc
    return entries


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
