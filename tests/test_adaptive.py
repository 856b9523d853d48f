"""The learned rate: a limit nobody told us, found from 429s against the real fake server.

The server counts its 1 s window and the throttle paces on the same virtual clock, which stands
still while a request is on the wire, and the server answers at once: times are exact and a run
of 300 rows takes a second or two of real time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from conftest import VirtualClock
from fakeserver import FakeConfig, running
from test_models import api_model, load_samples, throttle_of

from pipeline.data.prompts import build_request
from pipeline.model.pacing import MARGIN, Throttle

LIMIT = 600  # requests per minute, enforced as 10 in any 1 s


def on_the_wire(clock: VirtualClock) -> list[aiohttp.TraceConfig]:
    """Return aiohttp hooks that hold the virtual clock while any request awaits its answer."""
    wire = [0]

    async def sent(*_: object) -> None:
        wire[0] += 1

    async def back(*_: object) -> None:
        wire[0] -= 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(sent)
    trace.on_request_end.append(back)
    trace.on_request_exception.append(back)
    clock.busy = lambda: wire[0] > 0
    return [trace]


async def limited_run(
    tmp_path: Path, clock: VirtualClock, *, retry_after: bool = True, headers: bool = False, **flags
) -> tuple[float, float, Throttle, int]:
    """Answer 300 rows at C=32 against the limit; return (share of the limit reached, share of
    requests answered 429, the throttle, rows answered)."""
    samples = load_samples(tmp_path, total=300)
    cfg = FakeConfig(
        rpm=LIMIT,
        rpm_window=1.0,
        retry_after_header=retry_after,
        ratelimit_headers=headers,
        clock=clock,
    )
    async with (
        running(cfg) as server,
        api_model(
            server,
            tmp_path,
            clock=clock,
            sleep=clock.sleep,
            use_cache=False,
            trace_configs=on_the_wire(clock),
            **flags,
        ) as model,
    ):
        outcomes = await asyncio.gather(*(model.respond(s, build_request(s)) for s in samples))
        throttle = throttle_of(model)
    answered = sum(o.completion is not None for o in outcomes)
    entries = server.ledger.entries
    accepted = [e.received for e in entries if e.status == 200]
    limited = sum(e.status == 429 for e in entries)
    # Rows per second of the run, one interval of the limit added for the last one's share.
    rate = len(accepted) / (max(accepted) - min(e.received for e in entries) + 60 / LIMIT)
    return rate / (LIMIT / 60), limited / len(entries), throttle, answered


@pytest.mark.parametrize("retry_after", [True, False], ids=["retry-after", "no-retry-after"])
async def test_an_unknown_limit_is_found_and_kept_just_under(
    tmp_path: Path, clock: VirtualClock, retry_after: bool
) -> None:
    reached, limited, throttle, answered = await limited_run(
        tmp_path, clock, retry_after=retry_after, concurrency=32
    )
    assert answered == 300
    assert reached >= 0.85
    assert limited <= 0.15
    assert throttle.rate is not None
    # Learned: about the limit (a run may end in its growth past it, before the next cut).
    assert 0.85 * LIMIT / 60 <= throttle.rate <= 1.05 * LIMIT / 60
    assert throttle.report()["rate_limited"] == round(limited * throttle.requests)


async def test_a_given_rpm_is_paced_just_under_with_no_429(
    tmp_path: Path, clock: VirtualClock
) -> None:
    reached, limited, throttle, answered = await limited_run(
        tmp_path, clock, concurrency=32, rpm=LIMIT
    )
    assert answered == 300
    assert limited == 0
    # Measured on the server's ledger, against the number given (not against MARGIN, which a
    # bug could lower): the limit binds, so a pace of 80% or 50% of --rpm is a slow run.
    assert 0.95 <= reached <= 1.0
    assert reached == pytest.approx(MARGIN, abs=0.005)
    assert throttle.rate == pytest.approx(LIMIT / 60 * MARGIN)


async def test_stated_limit_headers_pace_before_the_first_429(
    tmp_path: Path, clock: VirtualClock
) -> None:
    # One in flight: the first answer carries the limit before a second request leaves.
    _, limited, throttle, _ = await limited_run(tmp_path, clock, headers=True, concurrency=1)
    assert limited == 0
    assert throttle.rate == pytest.approx(LIMIT / 60 * MARGIN)
    # Without the headers the same run only learns the limit from its 429s.
    _, without, _, _ = await limited_run(tmp_path / "b", clock, concurrency=1)
    assert without > 0


async def test_a_429_spends_none_of_the_rows_retries(
    fake_server, tmp_path: Path, clock: VirtualClock
) -> None:
    s = load_samples(tmp_path)[0]
    fake_server.config.clock = clock
    fake_server.config.script = ["429", "429_bare", "429", "ok"]
    async with api_model(
        fake_server, tmp_path, clock=clock, sleep=clock.sleep, max_retries=0
    ) as model:
        outcome = await model.respond(s, build_request(s))
        throttle = throttle_of(model)
    assert outcome.completion is not None  # with no retries at all, three 429s did not fail it
    assert outcome.usage.api_calls == 4
    assert (throttle.limited, throttle.cuts) == (3, 3)


async def test_only_a_429_for_a_request_sent_after_the_last_cut_cuts_again(
    clock: VirtualClock,
) -> None:
    throttle = Throttle(clock=clock)
    burst = [await throttle.acquire() for _ in range(5)]
    for ticket in burst[:2]:
        throttle.answered(ticket)
    for ticket in burst[2:]:  # three 429s of one burst: one congestion event
        throttle.limited_by(ticket, 2.0)
    assert throttle.cuts == 1
    later = await throttle.acquire()  # after the 2 s pause: 2 accepted over 2 s, times 0.95
    assert later.sent == pytest.approx(1002.0)
    assert throttle.rate == pytest.approx(0.95)
    throttle.limited_by(later, None)
    assert throttle.cuts == 2


async def test_limit_headers_set_the_ceiling_and_pause_when_spent(clock: VirtualClock) -> None:
    throttle = Throttle(rpm=6000, clock=clock)
    throttle.read_headers({"x-ratelimit-limit-requests": "600"})
    assert throttle.rate == pytest.approx(10 * MARGIN)  # the lower of ours and theirs
    throttle.read_headers({"x-ratelimit-limit-requests": "60000"})
    assert throttle.rate == pytest.approx(10 * MARGIN)  # a higher stated limit raises nothing
    start = clock()
    throttle.read_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    )
    # One request's share of the refill, not all of it.
    assert (await throttle.acquire()).sent == pytest.approx(start + 1 / (10 * MARGIN))
    start = clock()
    throttle.read_headers({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s"})
    assert (await throttle.acquire()).sent >= start + 1.5
