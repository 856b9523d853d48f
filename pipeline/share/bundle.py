"""`drvd bundle RUN`: one reproducible .tar.gz of a run's results, summary, page and manifest.

The archive is byte-stable (sorted names, zero times and owners) so the same run bundles to the
same bytes. Nothing secret enters it: the bundle is refused if any file holds the value of a
secret-looking environment variable (an API key) or a URL password.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path

import orjson

from pipeline.errors import ConfigError
from pipeline.files import write_atomic
from pipeline.scoring.summary import SUMMARY_NAME, read_summary
from pipeline.share.manifest import MANIFEST_NAME, build_manifest, env_secrets, sha256
from pipeline.share.parquet import PARQUET_NAME

# What a bundle holds, relative to the run folder: files, then folders taken whole.
_FILES = (SUMMARY_NAME, "report.html", PARQUET_NAME, "controls.json")
_FOLDERS = ("samples", "report", "plots", "controls")
_URL_PASSWORD = re.compile(rb"(?i)\b[a-z][a-z0-9+.-]*://[^\s/'\"<>@:]+:[^\s/'\"<>@*]+@")


def bundle_files(run_dir: Path) -> dict[str, bytes]:
    """Return the bundled files of a run, by their path in the archive."""
    out: dict[str, bytes] = {}
    for path in sorted(run_dir.glob("*.jsonl")):
        out[path.name] = path.read_bytes()
    for name in _FILES:
        if (run_dir / name).is_file():
            out[name] = (run_dir / name).read_bytes()
    for folder in _FOLDERS:
        for path in sorted((run_dir / folder).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                out[path.relative_to(run_dir).as_posix()] = path.read_bytes()
    return out


def _check_secrets(files: dict[str, bytes]) -> None:
    secrets = [s.encode() for s in env_secrets()]
    for name, data in files.items():
        if any(s in data for s in secrets) or _URL_PASSWORD.search(data):
            msg = f"{name} holds a secret (an API key or a URL password): not bundled"
            raise ConfigError(msg)


def make_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the bundle of `run_dir` (default `RUN.tar.gz` beside it) and return its path."""
    summary = read_summary(run_dir)
    if not summary:
        msg = f"{run_dir}: no {SUMMARY_NAME}; run `drvd score {run_dir}` first"
        raise ConfigError(msg)
    files = bundle_files(run_dir)
    manifest = build_manifest(run_dir, summary, {n: sha256(d) for n, d in files.items()})
    files[MANIFEST_NAME] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    _check_secrets(files)
    target = out or run_dir.parent / f"{run_dir.resolve().name}.tar.gz"
    write_atomic(target, _archive(files, run_dir.resolve().name))
    return target


def _archive(files: dict[str, bytes], root: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)
