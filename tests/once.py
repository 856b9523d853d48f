"""Expensive test inputs (whole runs) built once per test session, shared by every xdist worker.

A session-scoped fixture is built once per worker: with four workers, a run every test of a
module reads could be made four times. `built_once` makes it once, in a folder of the session
that all workers see (the parent of each worker's temporary folder), under a file lock: the
first worker to ask builds it, the others wait for it and then read the same folder. What it
holds is read-only for the tests; a test that changes a run works on `copy_of` it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def session_folder(factory: pytest.TempPathFactory) -> Path:
    """Return the temporary folder of the whole session (shared by its xdist workers)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """Return the folder `name` of this session, filled by `build(folder)` the first time asked.

    `build` runs at most once per session across the workers unless it fails (then the next
    asker tries again, from an empty folder). The folder is complete when returned.
    """
    root = session_folder(factory) / "once"
    root.mkdir(exist_ok=True)
    folder = root / name
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if build fails
        done = root / f"{name}.done"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def copy_of(source: Path, target: Path) -> Path:
    """Copy the folder `source` to `target` as it is: hard links stay links, times stay."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)
    return target
