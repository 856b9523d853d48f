"""Answering rows: the seeded random baseline, and APIModel against the real fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import VirtualClock
from fakeserver import FakeServer, LedgerEntry
from PIL import Image

from pipeline.config import load_config
from pipeline.data.dataset import iter_samples
from pipeline.data.images import ImageCache
from pipeline.data.prompts import build_request
from pipeline.data.synthetic import write_dataset
from pipeline.errors import FatalAPIError, RowError
from pipeline.model.cache import ResponseCache
from pipeline.model.client import make_session
from pipeline.model.pacing import Throttle
from pipeline.model.replicas import make_replicas
from pipeline.model.responder import NORMAL_REPORT, APIModel, RandomModel
from pipeline.records import FILES, Completion, Outcome, Sample, Usage

Sleep = Callable[[float], Awaitable[None]]


def load_samples(tmp_path: Path, total: int = 60) -> list[Sample]:
    root = tmp_path / "data"
    if not root.exists():
        write_dataset(root, total=total, images=4, sizes=(32,))
    found: list[Sample] = []
    for stem in FILES:
        found += iter_samples(root, stem, on_error=lambda e: pytest.fail(str(e)))
    return found


def sample(kind: str, key: str, **row: Any) -> Sample:
    return Sample(file="f", line=1, key=key, kind=kind, image=Path("/nowhere.png"), row=row)  # type: ignore[arg-type]


# ---------------------------------------------------------------- RandomModel


def test_random_is_deterministic_per_seed_and_key(tmp_path: Path) -> None:
    rows = load_samples(tmp_path)
    first = [RandomModel(seed=0).answer(s) for s in rows]
    assert first == [RandomModel(seed=0).answer(s) for s in rows]
    assert first == [RandomModel(seed=0).answer(s) for s in reversed(rows)][::-1]  # no state
    assert first != [RandomModel(seed=1).answer(s) for s in rows]


def test_random_depends_on_the_key_not_the_position() -> None:
    options = ["A. a", "B. b", "C. c", "D. d", "E. e", "F. f"]
    model = RandomModel(seed=5)
    answers = {model.answer(sample("independent", f"k{i}", options=options)) for i in range(60)}
    assert len(answers) > 1
    one = sample("independent", "same", options=options)
    assert len({model.answer(one) for _ in range(20)}) == 1


def test_random_mcq_answers_only_offered_letters(tmp_path: Path) -> None:
    for s in load_samples(tmp_path):
        if s.kind in ("evidence", "independent"):
            offered = {opt[0] for opt in s.row["options"]}
            assert RandomModel(seed=3).answer(s) in offered
    three = ["A. liver", "B. lung", "C. bone"]
    seen = {
        RandomModel(seed=0).answer(sample("evidence", f"k{i}", options=three)) for i in range(80)
    }
    assert seen == {"A", "B", "C"}  # uniform over what is offered, and nothing else
    six = [*three, "D. x", "E. y", "F. z"]
    seen = {
        RandomModel(seed=0).answer(sample("evidence", f"k{i}", options=six)) for i in range(200)
    }
    assert seen == set("ABCDEF")


JOINT_ABC = (
    "Answer the four questions.\n\n"
    "1. Which modality?\nA. CT\nB. MRI\nC. X-ray\n\n"
    "2. Which organ?\n(A) liver\n(B) lung\n(C) heart\n\n"
    "3. Which lesion?\nA) cyst\nB) mass\nC) none\n\n"
    "4. Diagnosis?\nA: benign\nB: malignant\nC: normal\n\n"
    "A reply like B,C,A,A is expected."
)


def test_random_joint_answers_four_offered_letters(tmp_path: Path) -> None:
    seen: set[str] = set()
    for i in range(80):
        answer = RandomModel(seed=0).answer(sample("joint", f"k{i}", joint_prompt=JOINT_ABC))
        letters = answer.split(",")
        assert len(letters) == 4
        seen.update(letters)
    assert seen == {"A", "B", "C"}
    for s in load_samples(tmp_path):
        if s.kind == "joint":
            letters = RandomModel(seed=2).answer(s).split(",")
            assert len(letters) == 4
            assert set(letters) <= set("ABCD")


def test_random_joint_without_option_lines_falls_back_to_abcd() -> None:
    answers = {
        RandomModel(seed=0).answer(sample("joint", f"k{i}", joint_prompt="Name four things."))
        for i in range(40)
    }
    letters = {x for a in answers for x in a.split(",")}
    assert letters == set("ABCD")


async def test_random_report_is_fixed_and_respond_is_offline(tmp_path: Path) -> None:
    reports = [s for s in load_samples(tmp_path) if s.kind == "report"]
    assert reports
    for seed in (0, 9):
        model = RandomModel(seed=seed)
        for s in reports:
            outcome = await model.respond(s, build_request(s))
            assert outcome.completion == Completion(text=NORMAL_REPORT, model="random")
            assert outcome.error is None
            assert outcome.usage.cache_hits == 0


# ---------------------------------------------------------------- APIModel


async def no_sleep(_seconds: float) -> None:
    """Backoff waits are injected away."""


@asynccontextmanager
async def api_model(
    server: FakeServer,
    tmp_path: Path,
    *,
    api_key: str = "",
    sleep: Sleep = no_sleep,
    use_cache: bool = True,
    clock: VirtualClock | None = None,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
    **flags: Any,
) -> AsyncIterator[APIModel]:
    """Yield an APIModel on the fake server; its connection pool never limits concurrency."""
    base = {"model": "openai:test-model", "data": tmp_path / "data", "base_url": server.url}
    env = {"DRVD_CACHE_DIR": str(tmp_path / "cache"), "DRVD_API_KEY": api_key}
    cfg = load_config({**base, **flags}, env)
    async with make_session(64, trace_configs) as session:
        yield APIModel(
            cfg,
            make_replicas(cfg, session, clock=clock),
            cache=ResponseCache(cfg.cache_dir) if use_cache else None,
            images=ImageCache(cfg.cache_dir),
            sleep=sleep,
            clock=clock,
        )


def throttle_of(model: APIModel) -> Throttle:
    """Return the throttle of the model's only replica."""
    return model.replicas.replicas[0].throttle


def cached_entries(tmp_path: Path) -> int:
    return ResponseCache(tmp_path / "cache").stats()["entries"]


async def wait_for_requests(server: FakeServer, n: int) -> None:
    async def seen() -> None:
        # The ledger has no event to wait on: poll it.
        while not (len(server.ledger.entries) >= n and server.ledger.entries[n - 1].status):  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    await asyncio.wait_for(seen(), 5)


async def test_success_is_cached_and_a_hit_needs_no_request_slot_or_throttle(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    async with api_model(fake_server, tmp_path, concurrency=2) as model:
        first = await model.respond(s, build_request(s))
        assert first.completion is not None
        assert first.usage.cache_hits == 0
        assert fake_server.ledger.count() == 1
        assert cached_entries(tmp_path) == 1
        assert first.usage.api_calls == 1
        assert first.usage.prompt_tokens > 0
        # Take every slot and pause the throttle for a minute: only a free hit can answer now.
        throttle_of(model).pause(60)
        for _ in range(2):
            await model.replicas.slots.acquire()
        hit = await asyncio.wait_for(model.respond(s, build_request(s)), 5)
        for _ in range(2):
            model.replicas.slots.release()
    assert hit.usage.cache_hits == 1
    assert hit.completion == first.completion
    assert hit.error is None
    assert fake_server.ledger.count() == 1
    assert hit.usage == Usage(cache_hits=1)


async def test_identical_requests_in_flight_are_paid_once(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    fake_server.config.latency = 0.05
    async with api_model(fake_server, tmp_path, concurrency=4) as model:
        outcomes = await asyncio.gather(*(model.respond(s, build_request(s)) for _ in range(3)))
    assert fake_server.ledger.count() == 1
    assert sorted(o.usage.cache_hits for o in outcomes) == [0, 1, 1]
    assert len({o.completion for o in outcomes}) == 1
    paid = next(o.usage for o in outcomes if o.usage.api_calls)
    assert paid.prompt_tokens > 0
    # The two that waited read the answer from the cache: no call, and no tokens billed again.
    assert [o.usage for o in outcomes if o.usage.cache_hits] == [Usage(cache_hits=1)] * 2


async def test_a_failed_duplicate_is_not_shared(fake_server: FakeServer, tmp_path: Path) -> None:
    s = load_samples(tmp_path)[0]
    fake_server.config.script = ["400_inspection"]
    fake_server.config.latency = 0.05
    async with api_model(fake_server, tmp_path, concurrency=4) as model:
        outcomes = await asyncio.gather(*(model.respond(s, build_request(s)) for _ in range(3)))
    errors = [o for o in outcomes if o.error is not None]
    assert len(errors) == 1
    assert isinstance(errors[0].error, RowError)
    # The next waiter asks again and succeeds; the last one reads that answer from the cache.
    assert [e.outcome for e in fake_server.ledger.entries] == ["400_inspection", "ok"]
    assert sum(o.usage.cache_hits for o in outcomes) == 1


async def test_without_cache_every_call_is_sent(fake_server: FakeServer, tmp_path: Path) -> None:
    s = load_samples(tmp_path)[0]
    async with api_model(fake_server, tmp_path, no_cache=True, use_cache=False) as model:
        for _ in range(2):
            outcome = await model.respond(s, build_request(s))
            assert outcome.completion is not None
            assert outcome.usage.cache_hits == 0
    assert fake_server.ledger.count() == 2
    assert cached_entries(tmp_path) == 0


async def test_cache_key_ignores_key_timeout_retries_and_concurrency(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    request = build_request(s)

    async def key_of(**kw: Any) -> str:
        async with api_model(fake_server, tmp_path, **kw) as model:
            assert model.cfg.api_key == (kw.get("api_key") or None)  # the key is in the config
            return model.cache_key(request, "digest")

    base = await key_of()
    assert base == await key_of(api_key="sk-other", timeout=5.0, max_retries=0, concurrency=1)
    assert base == await key_of(rpm=10.0, tpm=100_000.0)
    assert base != await key_of(legacy_mime=True)
    assert base != await key_of(model="openai:other-model")
    assert base != await key_of(base_url=fake_server.url + "/other")


async def test_row_error_is_an_outcome_and_is_not_cached(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    fake_server.config.script = ["400_inspection"]
    async with api_model(fake_server, tmp_path) as model:
        failed = await model.respond(s, build_request(s))  # returned, not raised
        assert failed.completion is None
        assert isinstance(failed.error, RowError)
        assert failed.usage == Usage(api_calls=1)  # moderation is never retried
        assert cached_entries(tmp_path) == 0
        again = await model.respond(s, build_request(s))
    assert again.completion is not None
    assert again.usage.cache_hits == 0
    assert fake_server.ledger.count() == 2
    assert cached_entries(tmp_path) == 1
    assert model.stopped is None


async def test_fatal_error_propagates_and_stops_every_other_row(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    rows = load_samples(tmp_path)[:9]
    fake_server.config.expected_key = "sk-right"
    secret = "sk-wrong-0123456789"
    async with api_model(fake_server, tmp_path, api_key=secret, concurrency=2) as model:
        outcomes = await asyncio.wait_for(  # a stop that hangs a row is a failure too
            asyncio.gather(
                *(model.respond(s, build_request(s)) for s in rows[:8]), return_exceptions=True
            ),
            10,
        )
        assert all(isinstance(o, FatalAPIError) for o in outcomes), outcomes
        assert isinstance(model.stopped, FatalAPIError)
        sent = fake_server.ledger.count()
        assert 1 <= sent <= 2  # only what was already in flight; nobody sends after the stop
        with pytest.raises(FatalAPIError):
            await model.respond(rows[8], build_request(rows[8]))
    assert fake_server.ledger.count() == sent
    assert all(secret not in str(o) for o in outcomes)
    assert cached_entries(tmp_path) == 0


async def rate_limited_pair(
    server: FakeServer, tmp_path: Path, clock: VirtualClock
) -> tuple[tuple[Outcome, Outcome], list[LedgerEntry], list[float]]:
    """Row A meets one 429; row B starts once it has. Both run on the virtual clock.

    Returns both outcomes, the ledger, and the waits of the rows' own backoff (none: a 429
    is re-sent by the endpoint's pause, not by the row's retry budget).
    """
    first, second = load_samples(tmp_path)[:2]
    server.config.clock = clock  # the ledger's times are virtual too
    backoffs: list[float] = []

    async def backoff(seconds: float) -> None:
        backoffs.append(seconds)
        await clock.sleep(seconds)

    async with api_model(server, tmp_path, sleep=backoff, clock=clock, concurrency=4) as model:
        a_task = asyncio.create_task(model.respond(first, build_request(first)))
        await wait_for_requests(server, 1)  # answered 429
        b = await asyncio.wait_for(model.respond(second, build_request(second)), 5)
        a = await asyncio.wait_for(a_task, 5)
    return (a, b), server.ledger.entries, backoffs


async def test_retry_after_pauses_every_worker_and_spends_no_retry(
    fake_server: FakeServer, tmp_path: Path, clock: VirtualClock
) -> None:
    fake_server.config.script = ["429"]
    fake_server.config.retry_after = 2.0
    (a, b), (limited, *later), backoffs = await rate_limited_pair(fake_server, tmp_path, clock)
    assert a.completion is not None
    assert b.completion is not None
    assert (a.usage.api_calls, b.usage.api_calls) == (2, 1)
    assert limited.outcome == "429"
    assert len(later) == 2
    assert backoffs == []  # the row's own backoff never ran: no retry of its budget was spent
    # Both the re-send of A and row B, started after the 429, waited for the server's 2 s.
    assert min(e.received for e in later) == pytest.approx(limited.received + 2.0)


async def test_retry_after_zero_pauses_nobody(
    fake_server: FakeServer, tmp_path: Path, clock: VirtualClock
) -> None:
    fake_server.config.script = ["429"]
    fake_server.config.retry_after = 0.0
    (a, b), (limited, *later), backoffs = await rate_limited_pair(fake_server, tmp_path, clock)
    assert a.completion is not None
    assert b.completion is not None
    # The server's word beats any pause or pace of ours: "retry now" holds nobody and cuts
    # nothing.
    assert [e.received - limited.received for e in later] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert backoffs == []


async def test_a_first_429_without_retry_after_pauses_one_second(
    fake_server: FakeServer, tmp_path: Path, clock: VirtualClock
) -> None:
    fake_server.config.script = ["429_bare"]
    (a, b), (limited, *later), backoffs = await rate_limited_pair(fake_server, tmp_path, clock)
    assert a.completion is not None
    assert b.completion is not None
    assert backoffs == []
    # No Retry-After, the rate still unknown: the endpoint waits one second, then paces.
    assert min(e.received for e in later) == pytest.approx(limited.received + 1.0)


async def test_two_images_with_the_same_question_are_two_requests(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    other = tmp_path / "other.png"
    other.write_bytes(s.image.read_bytes())
    same_bytes = replace(s, image=other)  # another path, the same bytes: the same request
    with Image.open(s.image) as img:
        Image.new(img.mode, img.size).save(tmp_path / "black.png")
    different = replace(s, image=tmp_path / "black.png")  # the same text, another image
    async with api_model(fake_server, tmp_path) as model:
        outcomes = [await model.respond(x, build_request(x)) for x in (s, same_bytes, different)]
    assert [o.usage.cache_hits for o in outcomes] == [0, 1, 0]
    assert fake_server.ledger.count() == 2


async def test_server_error_backs_off_only_its_own_row(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    fake_server.config.script = ["500"]
    throttle_free: list[bool] = []

    async def check(_seconds: float) -> None:
        probe = asyncio.create_task(throttle_of(model).acquire())
        await asyncio.sleep(0)  # an unpaused, unlimited throttle lets it through at once
        throttle_free.append(probe.done())
        probe.cancel()

    async with api_model(fake_server, tmp_path, sleep=check) as model:
        outcome = await model.respond(s, build_request(s))
    assert outcome.completion is not None
    assert throttle_free == [True]


async def test_in_flight_never_exceeds_concurrency(fake_server: FakeServer, tmp_path: Path) -> None:
    rows = load_samples(tmp_path)[:24]
    fake_server.config.latency = 0.02
    fake_server.config.script = ["500", "503", "ok", "500"]  # retried attempts need slots too
    async with api_model(fake_server, tmp_path, concurrency=3) as model:
        outcomes = await asyncio.gather(*(model.respond(s, build_request(s)) for s in rows))
    assert all(o.completion is not None for o in outcomes)
    assert fake_server.ledger.max_in_flight == 3
    assert fake_server.ledger.count() == len(rows) + 3
    total = sum((o.usage for o in outcomes), Usage())
    assert total.api_calls == len(rows) + 3
    assert total.retries == 3


async def test_slot_is_free_during_backoff(fake_server: FakeServer, tmp_path: Path) -> None:
    first, second = load_samples(tmp_path)[:2]
    fake_server.config.script = ["500"]
    other_done = asyncio.Event()

    async def wait_for_other_row(_seconds: float) -> None:
        await other_done.wait()  # A's backoff lasts until B has been answered

    async with api_model(fake_server, tmp_path, sleep=wait_for_other_row, concurrency=1) as model:
        a = asyncio.create_task(model.respond(first, build_request(first)))
        await wait_for_requests(fake_server, 1)

        async def run_b() -> Any:
            outcome = await model.respond(second, build_request(second))
            other_done.set()
            return outcome

        # With the only slot held across A's backoff, B could never run: a deadlock.
        outcome_a, outcome_b = await asyncio.wait_for(asyncio.gather(a, run_b()), 5)
    assert outcome_a.completion is not None
    assert outcome_b.completion is not None
    assert [e.outcome for e in fake_server.ledger.entries] == ["500", "ok", "ok"]


async def test_unreadable_image_fails_the_row_without_a_request(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    s = load_samples(tmp_path)[0]
    s.image.unlink()  # gone (unmounted, deleted) after the dataset was read
    async with api_model(fake_server, tmp_path) as model:
        outcome = await model.respond(s, build_request(s))
    assert isinstance(outcome.error, RowError)
    assert outcome.completion is None
    assert fake_server.ledger.count() == 0
    assert cached_entries(tmp_path) == 0
