"""Pacing shared by every worker on one endpoint: requests and tokens per minute, plus pauses.

Requests are paced strictly evenly on an absolute schedule (each caller reserves the next free
slot, 60/rpm seconds after the previous one), so any window of T seconds sees at most rpm·T/60 + 1
requests and timer lateness never accumulates: a run neither bursts a minute's allowance at once
(DashScope enforces RPM/60 per second) nor falls behind it. Tokens are paced per second of TPM
budget.
A 429 pauses the whole throttle, not just the task that saw it. `pace_problem` refuses, before
any work, a pace the process cannot keep.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol

from aiolimiter import AsyncLimiter

from pipeline.prompts import DISCRETE_MAX_TOKENS, SYSTEM_DISCRETE

MAX_CONCURRENCY = 4096  # requests in flight: far beyond any provider's limit
_FD_MARGIN = 64  # files open besides the connections: results, cache entries, images, the loop

IMAGE_TOKENS = 800  # rough prompt tokens of one image
REPLY_TOKENS = 300  # a request that sets no max_tokens: the reply it is assumed to cost
_CHARS_PER_TOKEN = 3


def request_tokens(text_chars: int, *, image: bool, max_tokens: int | None) -> int:
    """Estimate one request's tokens for TPM pacing: its text, its image and its longest reply."""
    return (
        text_chars // _CHARS_PER_TOKEN
        + (IMAGE_TOKENS if image else 0)
        + (max_tokens or REPLY_TOKENS)
    )


class Clock(Protocol):
    """Seconds, monotonic, and a way to wait for them (tests drive a virtual one)."""

    def __call__(self) -> float:
        """Return the current time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class LoopClock:
    """The running event loop's clock."""

    def __call__(self) -> float:
        """Return the loop's time."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the loop."""
        await asyncio.sleep(seconds)


def _open_files() -> int | None:
    """Return the soft limit on this process's open files (None: unlimited, or not POSIX)."""
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def pace_problem(
    concurrency: int, judge_concurrency: int, tpm: float | None, max_tokens: int | None
) -> tuple[str, str] | None:
    """Return the setting ("concurrency" or "tpm") the run cannot keep and why, with the fix."""
    need, files = concurrency + judge_concurrency + _FD_MARGIN, _open_files()
    if concurrency > MAX_CONCURRENCY:
        return "concurrency", f"is more than {MAX_CONCURRENCY} requests in flight: lower it"
    if files is not None and need > files:
        lower = max(1, concurrency - need + files)
        why = f"needs about {need} open files but this process may open {files}"
        return "concurrency", f"{why}: raise the limit (ulimit -n {need}) or lower it to {lower}"
    # The smallest request: the shortest prompt, an image, the protocol's shortest reply.
    smallest = request_tokens(
        len(SYSTEM_DISCRETE), image=True, max_tokens=max_tokens or DISCRETE_MAX_TOKENS
    )
    if tpm is not None and tpm < smallest:
        why = f"is less than one request (about {smallest} tokens with its image)"
        return "tpm", f"{why}: set it to at least {smallest}, or leave it out"
    return None


def _bucket(per_minute: float, capacity: float) -> AsyncLimiter:
    return AsyncLimiter(max_rate=capacity, time_period=capacity * 60 / per_minute)


class Throttle:
    """Per-attempt pacing: wait out any pause, then take one request and `tokens` tokens."""

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Pace at `rpm` requests and `tpm` tokens per minute (None: unpaced).

        Args:
            rpm: requests per minute, counted per attempt.
            tpm: estimated tokens per minute (aiolimiter's bucket, on the loop's own clock).
            clock: the clock pauses and request pacing run on; default the running loop's.
        """
        # Built inside the running loop: aiolimiter binds to the loop that first uses it.
        self._interval = 60.0 / rpm if rpm else 0.0
        self._next_slot = 0.0  # clock time of the next free request slot
        self._tpm = _bucket(tpm, max(1.0, tpm / 60)) if tpm else None
        self._paused_until = 0.0
        self._clock: Clock = clock or LoopClock()

    def pause(self, seconds: float) -> None:
        """Hold every later acquire for `seconds` from now (a 429 told us to back off)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of `tokens` estimated tokens may be sent."""
        # A loop, not an Event: another 429 may extend the pause while we sleep.
        while (delay := self._paused_until - self._clock()) > 0:
            await self._clock.sleep(delay)
        if self._interval:
            now = self._clock()
            slot = max(self._next_slot, now)  # an idle gap is not banked as a burst
            self._next_slot = slot + self._interval
            if slot > now:
                await self._clock.sleep(slot - now)
        if self._tpm is not None:
            # A request may need more tokens than the bucket holds: take them in bucket-sized
            # bites, so the long-run rate still honours TPM.
            left = float(tokens)
            while left > 0:
                bite = min(left, self._tpm.max_rate)
                await self._tpm.acquire(bite)
                left -= bite
