"""One process per run folder: `run_lock(RUN)` takes `flock` on RUN/.lock for the whole command.

A second process stops at once, told which process holds it (exit 2). The lock is a kernel lock
on an open file, so it dies with its process (a `kill -9` included): no stale pid file to clean
up. POSIX only (Linux, macOS). Request claims across processes are `pipeline.model.claims`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError, WriteError, os_reason

LOCK_NAME = ".lock"


class RunLocked(ConfigError):
    """Another process works in this run folder."""


@contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[None]:
    """Hold the run folder's lock for the `with` block, or raise `RunLocked` at once."""
    make_run_dir(run_dir)
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _cannot_create(run_dir / LOCK_NAME, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            msg = (
                f"{run_dir} is in use by {holder}: wait for it to end or stop it "
                "(two processes in one run folder would lose rows), or pass another --run-name"
            )
            raise RunLocked(msg) from None
        # Who holds it, for the message above; never the command line (it may hold a URL).
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        who = f"`drvd {command}` (pid {os.getpid()} on {socket.gethostname()}, since {started})"
        with contextlib.suppress(OSError):  # only informative: a full disk must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, who.encode() + b"\n", 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder (and its parents), or raise `WriteError` naming what failed."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_create(run_dir, exc) from exc


def _cannot_create(path: Path, exc: OSError) -> WriteError:
    where = exc.filename or path  # the parent folder that failed, when it is one
    return WriteError(f"cannot create {where}: {os_reason(exc)}; free space or pick another --out")
