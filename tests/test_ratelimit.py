"""Throttle: even request pacing, shared pauses, token pacing.

Pacing and pauses run on the virtual clock (exact times, no waiting); the token bucket is
aiolimiter's, which keeps the loop's own clock, so that test holds lower bounds on real time.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import VirtualClock

from pipeline.model.pacing import MARGIN, Throttle

SLACK = 0.005  # timer granularity; the loop may wake a hair early


async def stamped(throttle: Throttle, clock: VirtualClock | None = None) -> float:
    await throttle.acquire()
    return clock() if clock is not None else asyncio.get_running_loop().time()


async def test_rpm_paces_requests_evenly(clock: VirtualClock) -> None:
    throttle = Throttle(
        rpm=6000 / MARGIN, clock=clock
    )  # one every 10 ms: a known limit is paced under
    start = clock()
    times = sorted(await asyncio.gather(*(stamped(throttle, clock) for _ in range(21))))
    # Evenly, never a burst: the i-th request leaves exactly i intervals after the first.
    assert times == pytest.approx([start + i * 0.01 for i in range(21)])


async def test_an_idle_gap_is_not_banked_as_a_burst(clock: VirtualClock) -> None:
    throttle = Throttle(rpm=60 / MARGIN, clock=clock)  # one a second
    await throttle.acquire()
    clock.now += 10  # idle for ten intervals
    start = clock()
    times = [await stamped(throttle, clock) for _ in range(3)]
    assert times == pytest.approx([start, start + 1, start + 2])


async def test_no_limits_means_no_waiting_on_tokens(clock: VirtualClock) -> None:
    throttle = Throttle(clock=clock)
    for _ in range(1000):
        await throttle.acquire(10**9)  # would take forever if anything were paced
    assert clock.sleeps == []


async def test_pause_holds_every_acquirer_until_it_ends(clock: VirtualClock) -> None:
    throttle = Throttle(clock=clock)
    start = clock()
    throttle.pause(2.0)
    times = await asyncio.gather(*(stamped(throttle, clock) for _ in range(5)))
    assert times == pytest.approx([start + 2.0] * 5)


async def test_a_later_pause_extends_the_wait_of_those_already_waiting(
    clock: VirtualClock,
) -> None:
    throttle = Throttle(rpm=60_000 / MARGIN, clock=clock)  # one every millisecond
    start = clock()
    throttle.pause(0.05)
    waiters = [asyncio.create_task(stamped(throttle, clock)) for _ in range(3)]
    await clock.sleep(0.02)
    throttle.pause(0.1)  # a second 429 while they sleep: now until start + 0.12
    throttle.pause(0.01)  # a shorter pause never shortens the current one
    times = await asyncio.gather(*waiters)
    assert times == pytest.approx([start + 0.12, start + 0.121, start + 0.122], abs=1e-9)


async def test_request_larger_than_token_bucket_completes_and_is_paced() -> None:
    throttle = Throttle(tpm=6000)  # 100 tokens per second; the bucket holds one second's worth
    loop = asyncio.get_running_loop()
    start = loop.time()
    await throttle.acquire(120)  # more than the bucket holds: must not raise or hang
    assert loop.time() - start >= 0.2 - SLACK  # the 20 tokens beyond the bucket wait 0.2 s
    # The budget is spent: a small request now waits for tokens to drain. Measured from the
    # start, so a late wake-up (which lets the bucket leak meanwhile) cannot hide it.
    await throttle.acquire(10)
    assert loop.time() - start >= 0.3 - SLACK
