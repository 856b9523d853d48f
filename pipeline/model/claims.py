"""One payment per cached request across processes: byte-range locks on one file in the cache.

One byte per request key: a process about to pay for a request another process is already paying
for waits, then reads the answer from the cache. Kernel locks on an open file die with their
process (a `kill -9` included). POSIX only (Linux, macOS).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

CLAIMS_NAME = ".claims"
_KEY_SPACE = 1 << 40  # bytes of the claims file a key's lock byte is drawn from (sparse)
_OPEN: dict[Path, list[int]] = {}  # claims file → [its descriptor or -1, claims held]


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
