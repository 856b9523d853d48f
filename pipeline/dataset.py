"""Find the DrVD-Bench files and stream their rows as validated Samples.

A bad row never stops the stream. A line that is not a row of one of the four kinds with its
fields (PROTOCOL §1.3) is reported as `DataError(FILE, LINE, what)` through `on_error`, and the
next line is read. A row whose image is missing or does not decode is yielded with `problem` set:
the official pipeline writes such rows as errors and scores them wrong (PROTOCOL §7), and so do
we. The file is read line by line, never loaded whole.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DataError
from pipeline.records import FILES, JOINT_LEVELS, Kind, Sample, row_kind

_MAX_DEPTH = 2  # Kaggle nests the files one level down, sometimes under a same-named folder
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20

_MCQ_FIELDS = ("image_paths", "question", "options", "answer")
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    "evidence": _MCQ_FIELDS,
    "independent": _MCQ_FIELDS,
    "joint": ("image_paths", "joint_prompt", *(f"{level}_answer" for level in JOINT_LEVELS)),
    "report": ("image_paths", "question", "answer"),
}


def present_files(root: Path) -> tuple[str, ...]:
    """Return the stems of FILES that exist in `root`, in run order."""
    return tuple(stem for stem in FILES if (root / f"{stem}.jsonl").is_file())


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            # scandir's is_dir uses the directory entry type: no stat per image file.
            found = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    return sorted(found)


def find_root(data_dir: Path) -> Path:
    """Return the folder holding the JSONL files: `data_dir` or up to two levels below."""
    if not data_dir.is_dir():
        msg = f"data directory {data_dir} does not exist; pass the folder holding the DrVD-Bench files"
        raise ConfigError(msg)
    level = [data_dir]
    for _ in range(_MAX_DEPTH + 1):
        found = [folder for folder in level if present_files(folder)]
        if found:
            # Prefer the most complete copy; ties go to the first in sorted order.
            return max(found, key=lambda folder: len(present_files(folder)))
        level = [sub for folder in level for sub in _subdirs(folder)]
    names = ", ".join(f"{stem}.jsonl" for stem in FILES)
    msg = f"no DrVD-Bench files ({names}) in {data_dir} or two levels below it"
    raise ConfigError(msg)


# root -> (base folder, leading parts of `rel` to drop) that resolved the last image.
_LAYOUTS: dict[Path, tuple[Path, int]] = {}


def _layouts(root: Path, rel: Path) -> Iterator[tuple[Path, int]]:
    yield root, 0
    if len(rel.parts) > 1:
        # Kaggle: the first folder is doubled on disk (root/images/images/...).
        yield root / rel.parts[0], 0
        # ...or the path names a folder layer that is not on disk.
        yield root, 1
    for sub in _subdirs(root):
        yield sub, 0
    yield root.parent, 0


def resolve_image(root: Path, rel: str) -> Path | None:
    """Return the existing file `rel` names under `root` (allowing Kaggle's layouts), or None."""
    rel_path = Path(rel)
    if not rel or rel_path.is_absolute() or ".." in rel_path.parts:
        return None
    known = _LAYOUTS.get(root)
    if known is not None:
        candidate = known[0].joinpath(*rel_path.parts[known[1] :])
        if candidate.is_file():
            return candidate
    tried = {known}
    for layout in _layouts(root, rel_path):
        if layout in tried:
            continue
        tried.add(layout)
        candidate = layout[0].joinpath(*rel_path.parts[layout[1] :])
        if candidate.is_file():
            _LAYOUTS[root] = layout
            return candidate
    return None


def count_rows(path: Path) -> int:
    """Return the number of non-blank lines in a file."""
    count = 0
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            count += sum(1 for line in lines if line.strip())
    return count + (1 if tail.strip() else 0)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _field_problem(row: Mapping[str, Any], kind: Kind) -> str | None:
    for name in _REQUIRED[kind]:
        if name not in row:
            return f"missing field {name!r}"
        value = row[name]
        if name == "options":
            want = f"field {name!r} must be a non-empty list of strings"
            if not isinstance(value, list):
                return f"{want}, got {_type_name(value)}"
            if not value:
                return f"{want}, got an empty list"
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    return f"{want}, got {_type_name(item)} at index {i}"
        elif not isinstance(value, str):
            return f"field {name!r} must be a string, got {_type_name(value)}"
    return None


def _check_image(root: Path, rel: str) -> Path | str:
    if not rel.strip():
        return "field 'image_paths' is empty"
    path = resolve_image(root, rel)
    if path is None:
        return f"image not found: {rel}"
    try:
        # Reads the header only; pixels are decoded later, off the event loop.
        with Image.open(path):
            pass
    except Image.DecompressionBombError:
        pass  # identifiable, just huge: the encoder falls back to raw bytes, as upstream
    except UnidentifiedImageError:
        return f"image does not decode: {rel} (cannot identify image file)"
    except Exception as exc:
        return f"image does not decode: {rel} ({exc})"
    return path


def _parse(raw: bytes) -> tuple[dict[str, Any], Kind] | str:
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(row, dict):
        return f"row must be a JSON object, got {_type_name(row)}"
    kind = row_kind(row)
    if kind is None:
        return "unknown row kind: no 'joint_prompt', 'task' or 'level' field"
    problem = _field_problem(row, kind)
    return problem if problem is not None else (row, kind)


def iter_samples(
    root: Path, stem: str, *, on_error: Callable[[DataError], None]
) -> Iterator[Sample]:
    """Yield the rows of `root/<stem>.jsonl` lazily; report each line that is no row to `on_error`."""
    path = root / f"{stem}.jsonl"
    if not path.is_file():
        msg = f"{path} not found; is {root} the DrVD-Bench folder?"
        raise ConfigError(msg)
    seen: Counter[str] = Counter()
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            raw = line[len(_BOM) :] if line_no == 1 and line.startswith(_BOM) else line
            if not raw.strip():
                continue
            parsed = _parse(raw)
            if isinstance(parsed, str):
                on_error(DataError(str(path), line_no, parsed))
                continue
            row, kind = parsed
            # Content key: reordering the file keeps every key; identical rows are told
            # apart by how many identical rows came before them.
            digest = hashlib.blake2b(
                orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=8
            ).hexdigest()
            key = f"{digest}#{seen[digest]}"
            seen[digest] += 1
            found = _check_image(root, row["image_paths"])
            if isinstance(found, str):
                yield Sample(stem, line_no, key, kind, root / row["image_paths"], row, found)
            else:
                yield Sample(stem, line_no, key, kind, found, row)
