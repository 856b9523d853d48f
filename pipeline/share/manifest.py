"""`manifest.json`: what produced a run's numbers, as hashes, ids, versions and prices.

Every hash is SHA-256 of the bytes. Images are hashed as stored and as sent (after the official
resize and JPEG re-encoding the request applies), so a reader can check either.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.data.images import IMAGE_VERSION, encode_bytes
from pipeline.data.prompts import (
    ANALYSIS_IMAGE,
    DISCRETE_IMAGE,
    NOTEBOOK_IMAGE,
    PROTOCOL_VERSION,
)
from pipeline.records import FILES, ImageSpec
from pipeline.redact import show_url
from pipeline.results import read_run

MANIFEST_NAME = "manifest.json"
FORMAT = "drvd-bundle-1"
PACKAGES = ("drvd-pipeline", "aiohttp", "orjson", "Pillow", "numpy", "pyarrow", "bert-score")
# Environment variables whose values are secrets: never let them into a bundle.
_SECRET_NAME = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)")


def sha256(data: bytes) -> str:
    """Return the hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the values of the environment's secret-looking variables (8 characters or more)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 8]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _ids(run_dir: Path) -> tuple[list[str], list[str]]:
    models: set[str] = set()
    judges: set[str] = set()
    for _, row in read_run(run_dir):
        if row.model:
            models.add(row.model)
        judge = row.judge_model or (row.keywords.judge_model if row.keywords else None)
        if judge:
            judges.add(judge)
    return sorted(models), sorted(judges)


def data_hashes(data_dir: Path, images: Iterable[str]) -> dict[str, Any]:
    """Return the SHA-256 of each data file and of each image, as stored and as sent."""
    files = {
        f"{stem}.jsonl": file_sha256(data_dir / f"{stem}.jsonl")
        for stem in FILES
        if (data_dir / f"{stem}.jsonl").is_file()
    }
    stored: dict[str, str] = {}
    sent: dict[str, str] = {}
    for name in sorted(set(images)):
        path = data_dir / name
        if not path.is_file():
            continue
        stored[name] = file_sha256(path)
        for max_dim, quality in _SPECS:
            data, _ = encode_bytes(ImageSpec(path, max_dim, quality))
            sent[f"{name}@{max_dim}q{quality}"] = sha256(data)
    return {"files": files, "images": stored, "images_sent": sent}


_SPECS = tuple(sorted({ANALYSIS_IMAGE, DISCRETE_IMAGE, NOTEBOOK_IMAGE}))


def image_names(run_dir: Path) -> list[str]:
    """Return the image paths the run's rows name (relative to the data folder)."""
    names: set[str] = set()
    for _, row in read_run(run_dir):
        value = row.row.get("image_paths")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item:
                names.add(item)
    return sorted(names)


def build_manifest(
    run_dir: Path, summary: Mapping[str, Any], contents: Mapping[str, str]
) -> dict[str, Any]:
    """Return the manifest of a run whose bundled files have the SHA-256 in `contents`."""
    run = summary.get("run") or {}
    models, judges = _ids(run_dir)
    data_dir = Path(run["data"]) if isinstance(run.get("data"), str) else None
    data = (
        data_hashes(data_dir, image_names(run_dir))
        if data_dir is not None and data_dir.is_dir()
        else None
    )
    endpoint = run.get("endpoint")
    return {
        "format": FORMAT,
        "protocol": run.get("protocol"),
        "protocol_version": PROTOCOL_VERSION,
        "image_version": IMAGE_VERSION,
        "model": summary.get("model"),
        "model_ids": models,
        "judge_ids": judges,
        "endpoint": show_url(endpoint) if isinstance(endpoint, str) else endpoint,
        "price": run.get("price"),
        "judge": run.get("judge"),
        "packages": _versions(),
        "command": _command(run),
        "results": {n: h for n, h in contents.items() if n.endswith(".jsonl")},
        "files": dict(contents),
        "data": data,
    }


def _command(run: Mapping[str, Any]) -> str:
    """Return the eval command that reproduces the run, without secrets (keys come from env)."""
    parts = ["python -m pipeline eval"]
    if run.get("protocol"):
        parts.append(f"--protocol {run['protocol']}")
    if isinstance(run.get("endpoint"), str):
        parts.append(f"--base-url {show_url(run['endpoint'])}")
    if run.get("data"):
        parts.append(f"--data {run['data']}")
    return " ".join(parts)
