"""Locks between processes: one process per run folder, and one payment per cached request.

Both are kernel locks on an open file, so they die with their process (a `kill -9` included):
no stale pid file to clean up. POSIX only (Linux, macOS).

    run_lock(RUN)      `flock` on RUN/.lock for the whole command; a second process stops at
                       once, told which process holds it (exit 2)
    RequestClaims      byte-range locks on one file in the response cache, one byte per
                       request key: a process about to pay for a request another process is
                       already paying for waits, then reads the answer from the cache
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
CLAIMS_NAME = ".claims"
_KEY_SPACE = 1 << 40  # bytes of the claims file a key's lock byte is drawn from (sparse)
_OPEN: dict[Path, list[int]] = {}  # claims file → [its descriptor or -1, claims held]


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


class RequestClaims:
    """Cross-process claims on request keys, so concurrent processes pay for a request once.

    POSIX record locks belong to the process: requests of one process never wait for each
    other (the model's in-process dedupe handles those), and closing any descriptor of the
    file drops every claim of the process on it, so the file is closed only when the process
    holds no claim on it (all `RequestClaims` on one folder share the descriptor).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / CLAIMS_NAME

    @staticmethod
    def _byte(key: str) -> int:
        return int(key[-10:], 16) % _KEY_SPACE  # keys end in hex digits of a hash

    def try_claim(self, key: str) -> bool:
        """Claim `key`; False when another process holds it (then wait and look again).

        Where claims cannot be taken (a file system without locks, no room for the file),
        every claim succeeds: concurrent processes may then pay twice, as without claims.
        Each True must be followed by one `release(key)`.
        """
        held = _OPEN.get(self.path)
        if held is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                fd = -1  # claims unavailable here
            held = _OPEN[self.path] = [fd, 0]
        if held[0] >= 0:
            try:
                fcntl.lockf(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._byte(key))
            except (BlockingIOError, PermissionError):  # EAGAIN/EACCES: another process has it
                self._close_if_unused(held)
                return False
            except OSError:
                pass  # no locks on this file system: go ahead unclaimed
        held[1] += 1
        return True

    def release(self, key: str) -> None:
        """Release one claim on `key` taken by `try_claim`."""
        held = _OPEN[self.path]
        if held[0] >= 0:
            with contextlib.suppress(OSError):
                fcntl.lockf(held[0], fcntl.LOCK_UN, 1, self._byte(key))
        held[1] -= 1
        self._close_if_unused(held)

    def _close_if_unused(self, held: list[int]) -> None:
        if held[1] == 0:
            del _OPEN[self.path]
            if held[0] >= 0:
                os.close(held[0])
