"""Replicas: one model served by several endpoints, against real fake servers (some down)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import orjson
import pytest
from conftest import VirtualClock
from fakeserver import FakeConfig, FakeServer, running
from procs import drvd, server_process
from test_models import api_model, load_samples

from pipeline.data.prompts import build_request
from pipeline.model.responder import APIModel
from pipeline.records import Outcome, Sample

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)


def closed_port_url() -> str:
    """Return the URL of a local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def servers(*configs: FakeConfig) -> AsyncIterator[list[FakeServer]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(c)) for c in configs]


async def answer(model: APIModel, samples: list[Sample]) -> list[Outcome]:
    return await asyncio.gather(*(model.respond(s, build_request(s)) for s in samples))


async def test_requests_spread_over_two_replicas(tmp_path: Path) -> None:
    samples = load_samples(tmp_path, total=120)
    async with servers(FakeConfig(latency=0.02), FakeConfig(latency=0.02)) as (a, b):
        base_url = f"{a.url},{b.url}"
        async with api_model(a, tmp_path, base_url=base_url, concurrency=8) as model:
            outcomes = await answer(model, samples)
            report = model.replicas.report()
    assert all(o.completion is not None for o in outcomes)
    counts = [a.ledger.count(), b.ledger.count()]
    assert sum(counts) == len(samples)
    assert min(counts) >= 0.35 * len(samples)  # least in flight shares them out
    assert [r["url"] for r in report] == [a.url, b.url]
    assert [r["requests"] for r in report] == counts
    assert all(r["mean_latency_s"] >= 0.02 for r in report)


@pytest.mark.parametrize("down", ["503", "closed"])
async def test_every_row_completes_while_one_replica_lives(tmp_path: Path, down: str) -> None:
    samples = load_samples(tmp_path, total=120)
    async with servers(FakeConfig(latency=0.02), FakeConfig(default_outcome="503")) as (a, b):
        bad = b.url if down == "503" else closed_port_url()
        # No retries at all: the rows the bad replica failed were re-sent to the good one, free.
        async with api_model(
            a, tmp_path, base_url=f"{a.url},{bad}", concurrency=8, max_retries=0
        ) as model:
            outcomes = await answer(model, samples)
            good, dead = model.replicas.report()
    assert all(o.completion is not None for o in outcomes), [o.error for o in outcomes]
    assert a.ledger.count() == len(samples)
    assert dead["benched"] >= 1
    assert dead["errors"] >= 1
    # Benched after a refused connection, or a streak of 5xx: it got little of the work.
    assert dead["requests"] == dead["errors"] <= 8 + 5
    if down == "503":
        assert dead["requests"] == b.ledger.count()
    assert good["errors"] == 0


async def test_a_benched_replica_is_probed_and_put_back(
    tmp_path: Path, clock: VirtualClock
) -> None:
    samples = load_samples(tmp_path, total=80)
    async with servers(FakeConfig(latency=0.01), FakeConfig(latency=0.01)) as (a, b):
        b.config.script = ["503"] * 5  # down for its first five requests, then healthy
        async with api_model(
            a, tmp_path, base_url=f"{a.url},{b.url}", concurrency=4, clock=clock, use_cache=False
        ) as model:
            await answer(model, samples[:40])
            benched = b.ledger.count()
            assert model.replicas.replicas[1].benched_until > clock()  # cooling down
            await answer(model, samples[40:50])
            assert b.ledger.count() == benched  # not before its cool-down is over
            clock.now += 60  # past any cool-down: the next request to it is a probe
            await answer(model, samples[50:])
            report = model.replicas.report()
    assert b.ledger.count() - benched >= 0.35 * 30  # back in the rotation after the probe
    assert report[1]["benched"] == 1


async def test_a_row_every_replica_fails_stops_after_its_retries(tmp_path: Path) -> None:
    s = load_samples(tmp_path)[0]
    marker = {s.row["question"][:30]: "500"}
    async with servers(FakeConfig(content_faults=marker), FakeConfig(content_faults=marker)) as (
        a,
        b,
    ):

        async def no_wait(_seconds: float) -> None:
            return None

        async with api_model(
            a, tmp_path, base_url=f"{a.url},{b.url}", max_retries=1, sleep=no_wait
        ) as model:
            outcome = await model.respond(s, build_request(s))
            report = model.replicas.report()
    assert outcome.error is not None
    # Each of its two attempts (one retry) tries each replica once, the second for free: four
    # sends, not a loop.
    assert (a.ledger.count(), b.ledger.count()) == (2, 2)
    assert [r["benched"] for r in report] == [0, 0]  # one bad row benches nobody


async def test_every_replica_down_fails_the_row_at_once(tmp_path: Path) -> None:
    s = load_samples(tmp_path)[0]
    async with servers(FakeConfig()) as (a,):
        urls = f"{closed_port_url()},{closed_port_url()}"
        async with api_model(a, tmp_path, base_url=urls, max_retries=0) as model:
            outcome = await asyncio.wait_for(model.respond(s, build_request(s)), 10)
    assert outcome.error is not None
    assert "ClientConnectorError" in str(outcome.error)


@pytest.mark.parametrize("replicas", [1, 2])
async def test_rows_of_a_dead_endpoint_fail_after_their_retries_not_waiting_on_probes(
    tmp_path: Path, replicas: int
) -> None:
    rows = load_samples(tmp_path)[:6]
    urls = ",".join(closed_port_url() for _ in range(replicas))

    async def no_wait(_seconds: float) -> None:
        return None

    async with (
        servers(FakeConfig()) as (a,),
        api_model(a, tmp_path, base_url=urls, max_retries=2, sleep=no_wait, concurrency=2) as model,
    ):
        # Benched replicas are still tried when none is up: each row spends its retries at once
        # (and the run's failure streak can stop it), instead of queueing for probes.
        outcomes = await asyncio.wait_for(answer(model, rows), 10)
        report = model.replicas.report()
    assert all(o.error is not None for o in outcomes)
    # Three attempts each; an attempt fails over (free) only while another replica is up.
    assert all(3 <= o.usage.api_calls <= 3 * replicas for o in outcomes)
    sends = sum(o.usage.api_calls for o in outcomes)
    assert sum(r["requests"] for r in report) == sum(r["errors"] for r in report) == sends


def test_the_cli_spreads_a_run_and_records_each_replica(tmp_path: Path) -> None:
    from pipeline.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", total=40, images=4, sizes=(32,))
    common: list[str | Path] = [
        "--model",
        "openai:m",
        "--data",
        tmp_path / "data",
        "--judge",
        "none",
    ]
    env = {"DRVD_CACHE_DIR": str(tmp_path / "cache"), "DRVD_API_KEY": "k"}
    with server_process("--latency", "0.05") as a, server_process("--latency", "0.05") as b:
        done = drvd(
            "eval", *common, "--base-url", f"{a.url},{b.url}", "--out", tmp_path / "o1", env=env
        )
        assert done.returncode == 0, done.stderr
        counts = [a.ledger()["requests"], b.ledger()["requests"]]
        # The cache key names the model and the first URL, not the replica that answered:
        # the same model on the first replica alone reuses every answer.
        again = drvd("eval", *common, "--base-url", a.url, "--out", tmp_path / "o2", env=env)
        assert again.returncode == 0, again.stderr
        assert a.ledger()["requests"] == counts[0]
    assert min(counts) > 0
    assert sum(counts) == 40
    summary = orjson.loads((tmp_path / "o1" / "openai-m" / "summary.json").read_bytes())
    endpoints = summary["run"]["endpoints"]
    assert [e["url"] for e in endpoints] == [a.url, b.url]
    assert [e["requests"] for e in endpoints] == counts
    assert f"endpoint {b.url}: {counts[1]} requests" in done.stdout


def test_a_bad_entry_in_the_url_list_is_one_line(tmp_path: Path) -> None:
    done = drvd(
        "eval",
        "--model",
        "openai:m",
        "--data",
        tmp_path,
        "--base-url",
        "http://u:Pw-secret@h1/v1,ftp://h2/v1",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "entry 2 of the list must start with http://" in done.stderr
    assert "Pw-secret" not in done.stderr
