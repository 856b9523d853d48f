"""Pacing shared by every worker on one endpoint: a request rate it learns, tokens, and pauses.

Requests are paced strictly evenly on an absolute schedule (each caller reserves the next free
slot, one interval after the previous one), so any window of T seconds sees at most rate·T + 1
requests and timer lateness never accumulates: a run neither bursts a minute's allowance at once
(DashScope enforces RPM/60 per second) nor falls behind it. Tokens are paced per second of TPM
budget (aiolimiter).

The rate is learned (AIMD, as TCP does for its window): unpaced until the endpoint answers 429,
or at `--rpm` when given (a ceiling it never passes). A 429 pauses the endpoint for its
Retry-After; once the pause is over the rate becomes `_BETA` times the requests the endpoint accepted
over that span, and grows back by `_GROWTH` of itself per second while the pace, not the work,
holds requests back. One cut per congestion event: a 429 for a request sent before the last cut
changes nothing. OpenAI's `x-ratelimit-*` headers, where sent, lower the ceiling to the stated
limit and pause before the budget runs dry.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiolimiter import AsyncLimiter

_BETA = 0.95  # a cut keeps this share of the accepted rate
_GROWTH = 0.005  # then the rate grows by this share of itself per second of paced sends
_MIN_RATE = 0.1  # requests per second: never slower
_MIN_GROWTH = 0.02  # requests per second, per second
# A known limit is paced at this share of it: a send that leaves late by a few milliseconds
# while the next leaves on time must not put one request too many in a strict 1 s window.
MARGIN = 0.99
_WINDOW = 5.0  # seconds of sends before a cut that measure the accepted rate
_FIRST_PAUSE = 1.0  # seconds, after a first 429 that gave no Retry-After
_MEMORY = 120.0  # seconds of sends kept to measure the accepted rate
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


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


def _bucket(per_minute: float, capacity: float) -> AsyncLimiter:
    return AsyncLimiter(max_rate=capacity, time_period=capacity * 60 / per_minute)


@dataclass(slots=True)
class Ticket:
    """One request sent through the throttle: when, whether the pace held it, how it ended."""

    sent: float
    paced: bool  # it waited for its slot: the pace, not the work, set the rate
    limited: bool = False  # answered 429


class Throttle:
    """Per-attempt pacing: wait out any pause, then take one request slot and `tokens` tokens."""

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Pace at most `rpm` requests and `tpm` tokens per minute (None: learned, unpaced).

        Args:
            rpm: requests per minute, counted per attempt: the ceiling of the learned rate,
                paced at `MARGIN` of it.
            tpm: estimated tokens per minute (aiolimiter's bucket, on the loop's own clock).
            clock: the clock pauses and request pacing run on; default the running loop's.
        """
        # Built inside the running loop: aiolimiter binds to the loop that first uses it.
        self.ceiling = rpm / 60 * MARGIN if rpm else math.inf  # requests per second
        self.rate: float | None = self.ceiling if rpm else None  # the pace; None: unpaced
        self._next_slot = 0.0  # clock time of the next free request slot
        self._tpm = _bucket(tpm, max(1.0, tpm / 60)) if tpm else None
        self._paused_until = 0.0
        self._clock: Clock = clock or LoopClock()
        self._sent: deque[Ticket] = deque()
        self._cut_at = -math.inf  # when the last 429 cut the rate
        self._pending: tuple[float, float] | None = None  # (cut at, span) to measure once paused
        self._epoch = 0  # counts the times the slots handed out were voided
        self._measured_to = -math.inf  # the last cut: sends before it measured the one before
        self._growth = 0.0  # requests per second gained per second of paced sends
        self.requests = self.limited = self.cuts = 0

    def pause(self, seconds: float) -> None:
        """Hold every later acquire for `seconds` from now (a 429 told us to back off)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._void_slots(until)

    def _void_slots(self, start: float) -> None:
        """Void the slots handed out: their holders queue again for slots from `start` on."""
        self._epoch += 1
        self._next_slot = start

    async def acquire(self, tokens: int = 0) -> Ticket:
        """Wait until a request of `tokens` estimated tokens may be sent; return its ticket."""
        paced = False
        while True:
            # A loop: another 429 may extend the pause, or begin one while we wait for a slot.
            while (delay := self._paused_until - self._clock()) > 0:
                await self._clock.sleep(delay)
            if self._pending is not None:
                self._settle(*self._pending)
            if self.rate is None:
                break
            now, epoch = self._clock(), self._epoch
            slot = max(self._next_slot, now)  # an idle gap is not banked as a burst
            self._next_slot = slot + 1 / self.rate
            if slot > now:
                paced = True
                await self._clock.sleep(slot - now)
            if epoch == self._epoch:  # no pause or cut voided the slot meanwhile
                break
        if self._tpm is not None:
            # A request may need more tokens than the bucket holds: take them in bucket-sized
            # bites, so the long-run rate still honours TPM.
            left = float(tokens)
            while left > 0:
                bite = min(left, self._tpm.max_rate)
                await self._tpm.acquire(bite)
                left -= bite
        ticket = Ticket(self._clock(), paced)
        self._sent.append(ticket)
        while self._sent[0].sent < ticket.sent - _MEMORY:
            self._sent.popleft()
        return ticket

    def answered(self, ticket: Ticket) -> None:
        """Count an answer other than 429 (success or error), and grow the rate."""
        self.requests += 1
        rate = self.rate
        if ticket.paced and rate is not None and rate < self.ceiling:
            # Successes arrive about `rate` a second: each adds 1/rate of the growth per second.
            self.rate = min(self.ceiling, rate + self._growth / rate)

    def limited_by(self, ticket: Ticket, retry_after: float | None) -> None:
        """Count a 429: pause the endpoint, and cut the rate once per congestion event.

        "Retry-After: 0" is the server's "send it again now": a refusal that asks for no pause
        and no slower pace (random 429s of an overloaded server would otherwise cut the rate
        on every event, down to nothing).
        """
        ticket.limited = True
        self.requests += 1
        self.limited += 1
        if retry_after == 0:
            return
        pause = retry_after
        if pause is None and self.rate is None:
            pause = _FIRST_PAUSE  # a first 429 with no word on when: measure over a second
        if pause is not None:
            self.pause(pause)
        if ticket.sent < self._cut_at or self._pending is not None:
            return  # sent before the last cut took effect: that cut answers it
        self._cut_at = self._clock()
        self.cuts += 1
        # Measured once the pause is over, when the requests still in flight have been answered.
        self._pending = (self._cut_at, max(1.0, pause or 0.0))

    def _settle(self, cut_at: float, span: float) -> None:
        """Set the rate from what the endpoint accepted before the cut.

        Counted over `_WINDOW` seconds since the last cut (fewer after a recent one), and divided
        by at least `span`, the pause: a burst the endpoint cut short tells its allowance per
        pause.
        """
        self._pending = None
        start = max(cut_at - max(span, _WINDOW), self._measured_to)
        window = [t for t in self._sent if start <= t.sent <= cut_at]
        accepted = sum(1 for t in window if not t.limited)
        first = window[0].sent if window else cut_at  # idle time before it is not measured
        measured = max(accepted, 1) / max(cut_at - first, span)
        base = measured if self.rate is None else min(self.rate, measured)
        self.rate = min(self.ceiling, max(_MIN_RATE, _BETA * base))
        self._growth = max(_GROWTH * self.rate, _MIN_GROWTH)
        self._cut_at = self._measured_to = now = self._clock()
        nxt = (self._sent[-1].sent if self._sent else now) + 1 / self.rate  # paced from the last
        if self._paused_until >= cut_at:  # ...but never later than the pause asked
            nxt = min(nxt, self._paused_until)
        self._void_slots(max(now, nxt))

    def read_headers(self, headers: Mapping[str, str]) -> None:
        """Take OpenAI's stated request limit as the ceiling; pause when a budget is spent."""
        limit = _number(headers.get("x-ratelimit-limit-requests"))
        if limit:
            self.ceiling = min(self.ceiling, limit / 60 * MARGIN)
            if self.rate is None or self.rate > self.ceiling:
                self.rate = self.ceiling
                if self._sent:  # paced from the last request sent, not from now
                    self._void_slots(max(self._clock(), self._sent[-1].sent + 1 / self.rate))
        for kind in ("requests", "tokens"):
            if _number(headers.get(f"x-ratelimit-remaining-{kind}")) == 0:
                reset = _duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:  # the time to refill it all; one request needs a slot's worth of it
                    share = 1 / self.ceiling if kind == "requests" else math.inf
                    self.pause(min(reset, share))

    def report(self) -> dict[str, float | int | None]:
        """Return what the endpoint taught: the rate it ran at (per minute), 429s and cuts."""
        rpm = None if self.rate is None else round(self.rate * 60, 1)
        return {"rpm": rpm, "rate_limited": self.limited, "cuts": self.cuts}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _duration(value: str | None) -> float | None:
    """Read OpenAI's reset durations ("12ms", "1s", "6m0s", "1.5s"), or plain seconds."""
    if not value:
        return None
    if (plain := _number(value)) is not None:
        return plain
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNITS[u] for n, u in parts) if parts else None
