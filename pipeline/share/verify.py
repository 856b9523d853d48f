"""`drvd verify BUNDLE_OR_RUN [--data DIR]`: re-score offline and check every number and hash.

Numbers are compared leaf by leaf over summary.json: integers, strings and null exactly, floats
within 1e-9 (relative): re-scoring sums in the same order, so an honest bundle agrees to the last
bit and the tolerance only absorbs a JSON round trip. A difference is one line naming its path.
The report bootstrap intervals are compared too: their resampling draws images in a fixed order,
not the order rows were scored in (scoring/intervals.py `bootstrap_ci`).
"""

from __future__ import annotations

import math
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from pipeline.scoring.samples import samples_section
from pipeline.scoring.summary import SUMMARY_NAME, score_run
from pipeline.share.manifest import MANIFEST_NAME, data_hashes, file_sha256

REL_TOL = 1e-9
_LIMIT = 2 << 30  # a member larger than this is not a run file


class BadBundle(Exception):
    """The archive or folder cannot be read as a bundle: one line says why."""


def _extract(bundle: Path, into: Path) -> Path:
    try:
        with tarfile.open(bundle, "r:*") as tar:
            roots: set[str] = set()
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or member.name.startswith("/") or ".." in parts:
                    msg = f"{bundle}: unexpected member {member.name!r}"
                    raise BadBundle(msg)
                if member.size > _LIMIT or len(parts) < 2:
                    msg = f"{bundle}: unexpected member {member.name!r}"
                    raise BadBundle(msg)
                roots.add(parts[0])
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        msg = f"{bundle}: not a readable bundle ({reason})"
        raise BadBundle(msg) from exc
    if len(roots) != 1:
        msg = f"{bundle}: expected one run folder, found {len(roots)}"
        raise BadBundle(msg)
    return into / roots.pop()


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        msg = f"{what}: missing or not JSON ({exc})"
        raise BadBundle(msg) from exc
    if not isinstance(data, dict):
        msg = f"{what}: not a JSON object"
        raise BadBundle(msg)
    return data


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return bool(a == b)
        if isinstance(a, int | float) and isinstance(b, int | float):
            return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
        return False
    return type(a) is type(b) and bool(a == b)


def summary_differences(run_dir: Path, stored: dict[str, Any]) -> list[str]:
    """Re-score the run's answers and return a line per number of `stored` that differs."""
    run = stored.get("run")
    fresh = score_run(
        run_dir, model=stored.get("model"), extra={"run": run} if run is not None else None
    )
    if isinstance(samples := stored.get("samples"), dict) and isinstance(samples.get("k"), int):
        fresh["samples"] = {
            **samples_section(run_dir, samples["k"]),
            **{k: v for k, v in samples.items() if k == "temperature_0"},
        }
    mine, theirs = dict(_leaves(stored, "")), dict(_leaves(fresh, ""))
    lines = []
    for path in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(path, "(absent)"), theirs.get(path, "(absent)")
        if not _same(a, b):
            lines.append(f"{SUMMARY_NAME} {path}: {a} in the bundle, {b} re-scored")
    return lines


def hash_differences(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Return a line per file whose SHA-256 differs from the manifest's (or that is missing)."""
    lines = []
    files = manifest.get("files")
    if not isinstance(files, dict):
        return [f"{MANIFEST_NAME}: no files section"]
    for name, digest in sorted(files.items()):
        path = run_dir / name
        what = "results" if name.endswith(".jsonl") else "file"
        if not path.is_file():
            lines.append(f"{what} {name}: missing")
        elif file_sha256(path) != digest:
            lines.append(f"{what} {name}: sha256 differs")
    return lines


def data_differences(data_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Return a line per data file or image whose SHA-256 differs from the manifest's."""
    recorded = manifest.get("data")
    if not isinstance(recorded, dict):
        return [f"{MANIFEST_NAME}: no data hashes to check --data against"]
    images = [str(n) for n in (recorded.get("images") or {})]
    fresh = data_hashes(data_dir, images)
    lines = []
    for section, what in (("files", "data"), ("images", "image"), ("images_sent", "image sent")):
        old, new = recorded.get(section) or {}, fresh[section]
        for name in sorted(old):
            if name not in new:
                lines.append(f"{what} {name}: missing")
            elif new[name] != old[name]:
                lines.append(f"{what} {name}: sha256 differs")
    return lines


def verify(target: Path, data_dir: Path | None = None) -> list[str]:
    """Return one line per difference between a bundle (or run folder) and its re-check."""
    with tempfile.TemporaryDirectory(prefix="drvd-verify-") as tmp:
        if target.is_dir():
            run_dir = target
        elif target.is_file():
            run_dir = _extract(target, Path(tmp))
        else:
            msg = f"{target}: no such bundle or run folder"
            raise BadBundle(msg)
        stored = _load(run_dir / SUMMARY_NAME, f"{target}: {SUMMARY_NAME}")
        if target.is_dir() and not (run_dir / MANIFEST_NAME).is_file():
            return summary_differences(run_dir, stored)  # a run folder: its numbers only
        manifest = _load(run_dir / MANIFEST_NAME, f"{target}: {MANIFEST_NAME}")
        lines = hash_differences(run_dir, manifest)
        lines += summary_differences(run_dir, stored)
        if data_dir is not None:
            lines += data_differences(data_dir, manifest)
        return lines
