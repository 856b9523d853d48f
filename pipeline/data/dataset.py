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
import shlex
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DataError, os_reason
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


class ImageFolder:
    """A dataset's images: each row's `image_paths` found under its root (Kaggle's layouts too).

    The layout (base folder, leading parts of the path to drop) is decided by the first image
    found and kept for the dataset, so a row can never borrow an image from outside the dataset
    folder (the parent-folder fallback) while the others resolve inside it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout: tuple[Path, int] | None = None

    def resolve(self, rel: str) -> Path | None:
        """Return the existing file `rel` names, or None.

        Raises OSError when the path cannot be looked up at all (e.g. a name too long).
        """
        rel_path = Path(rel)
        if not rel or rel_path.is_absolute() or ".." in rel_path.parts:
            return None
        if self.layout is not None:
            candidate = self.layout[0].joinpath(*rel_path.parts[self.layout[1] :])
            return candidate if candidate.is_file() else None
        for layout in dict.fromkeys(_layouts(self.root, rel_path)):
            candidate = layout[0].joinpath(*rel_path.parts[layout[1] :])
            if candidate.is_file():
                self.layout = layout
                return candidate
        return None


def _first_byte(path: Path) -> bytes:
    """Return the first byte of the file that is not blank (nor a BOM); b"" when there is none."""
    with path.open("rb") as f:
        if f.read(len(_BOM)) != _BOM:
            f.seek(0)
        while chunk := f.read(_CHUNK):
            if text := chunk.lstrip():
                return text[:1]
    return b""


def files_with_rows(root: Path, stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return the stems whose files hold something, and one warning per empty file.

    Raises ConfigError, before any work, for a file that is a JSON array rather than JSON Lines,
    and when every file is empty.
    """
    kept, warnings = [], []
    for stem in stems:
        path = root / f"{stem}.jsonl"
        first = _first_byte(path)
        if first == b"[":
            lines, json = shlex.quote(str(path)), shlex.quote(str(path.with_suffix(".json")))
            msg = (
                f"{path} is a JSON array, not JSON Lines (one row object per line): convert it "
                f"with `mv {lines} {json} && jq -c '.[]' {json} > {lines}`"
            )
            raise ConfigError(msg)
        if first:
            kept.append(stem)
        else:
            warnings.append(f"warning: {path} is empty: skipped (leave it out with --files)")
    if not kept:
        names = ", ".join(f"{stem}.jsonl" for stem in stems)
        msg = f"nothing to evaluate: {names} in {root} are empty; download the dataset again"
        raise ConfigError(msg)
    return kept, warnings


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


def _check_image(images: ImageFolder, rel: str) -> Path | str:
    if not rel.strip():
        return "field 'image_paths' is empty"
    try:
        path = images.resolve(rel)
    except OSError as exc:  # e.g. ENAMETOOLONG: this row's problem, not the run's
        return f"image path cannot be used: {_shorten(rel)} ({os_reason(exc)})"
    if path is None:
        return f"image not found: {_shorten(rel)}"
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


def _shorten(text: str, keep: int = 200) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


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
    root: Path,
    stem: str,
    *,
    on_error: Callable[[DataError], None],
    check_images: bool = True,
    images: ImageFolder | None = None,
) -> Iterator[Sample]:
    """Yield the rows of `root/<stem>.jsonl` lazily; report each line that is no row to `on_error`.

    `check_images=False` (a quick count) leaves each image unresolved: `image` is the path the
    row names under `root`, never looked up. `images` keeps one layout over a dataset's files.
    """
    images = images or ImageFolder(root)
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
            if not check_images:
                yield Sample(stem, line_no, key, kind, root / row["image_paths"], row)
                continue
            found = _check_image(images, row["image_paths"])
            if isinstance(found, str):
                yield Sample(stem, line_no, key, kind, root / row["image_paths"], row, found)
            else:
                yield Sample(stem, line_no, key, kind, found, row)


def dataset_files(data_dir: Path, files: Sequence[str]) -> tuple[Path, list[str], list[str]]:
    """Return the dataset's root, which of `files` (stems) hold rows, and a warning per other one.

    Raises ConfigError, before any work, when none of them is in the folder.
    """
    root = find_root(data_dir)
    present = [s for s in files if (root / f"{s}.jsonl").exists()]
    if not present:
        msg = f"{data_dir}: none of {', '.join(files)} (.jsonl) found"
        raise ConfigError(msg)
    stems, warnings = files_with_rows(root, present)
    return root, stems, warnings


def samples_within(
    root: Path,
    stem: str,
    limit: int | None,
    on_error: Callable[[DataError], None],
    *,
    check_images: bool = True,
    images: ImageFolder | None = None,
) -> Iterator[Sample]:
    """Yield the rows among the first `limit` lines of a file (`--limit`; None: all of them).

    `on_error` hears of the lines within the limit that are no rows, as `eval` reports them.
    """
    seen = 0

    def counted(error: DataError) -> None:
        nonlocal seen
        seen += 1
        if limit is None or seen <= limit:
            on_error(error)

    samples = iter_samples(root, stem, on_error=counted, check_images=check_images, images=images)
    for sample in samples:
        seen += 1
        if limit is not None and seen > limit:
            return
        yield sample
