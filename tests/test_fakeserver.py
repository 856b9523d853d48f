from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fakeserver import FakeConfig, config_from_args, default_answer, parse_args, running

JOINT = (
    "1. Modality?\nA. CT\nB. MRI\nC. X-ray\n"
    "2. Organ?\nA. Liver\nB. Lung\n"
    "3. Lesion?\nA. Mass\nB. Cyst\nC. Stone\nD. None\n"
    "4. Diagnosis?\nA. HCC\nB. Metastasis\nC. Hemangioma\nD. Cyst\nE. Abscess\n"
)


def _payload(text: str, system: str = "Only respond with one capital letter.") -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            },
        ],
    }


async def _post(
    session: aiohttp.ClientSession, url: str, text: str = "hello", **headers: str
) -> tuple[int, Mapping[str, str], bytes]:
    async with session.post(f"{url}/chat/completions", json=_payload(text), headers=headers) as r:
        return r.status, r.headers, await r.read()


def test_default_answer_picks_an_offered_letter_deterministically():
    text = "Question: q\nOptions:\nA. CT\nB. MRI\nC. PET\n\nProvide only the letter."
    answers = {default_answer(_payload(text)) for _ in range(3)}
    assert len(answers) == 1
    assert answers <= {"A", "B", "C"}
    # across many questions every offered letter shows up, and no other
    seen = {default_answer(_payload(f"Q{i}\nA. x\nB. y\nC. z")) for i in range(60)}
    assert seen == {"A", "B", "C"}


def test_default_answer_chain_has_one_valid_letter_per_question():
    system = "Respond with four or five capital letters (A-H), separated by commas."
    letters = default_answer(_payload(JOINT, system)).split(",")
    assert len(letters) == 4
    for letter, offered in zip(letters, ["ABC", "AB", "ABCD", "ABCDE"], strict=True):
        assert letter in offered
    # a comma system prompt with no option lines still gets a four-letter chain
    assert len(default_answer(_payload("no options", system)).split(",")) == 4


def test_default_answer_without_options_is_a_report():
    answer = default_answer(_payload("Describe the findings in this image."))
    assert len(answer.split()) > 5


async def test_answer_fn_and_served_model_override():
    cfg = FakeConfig(answer_fn=lambda p: "custom", served_model="served-1")
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        status, headers, body = await _post(session, server.url)
    data = orjson.loads(body)
    assert status == 200
    assert data["choices"][0]["message"]["content"] == "custom"
    assert data["model"] == "served-1"
    assert headers["x-request-id"] == "req-1"
    assert data["usage"]["total_tokens"] == sum(
        data["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )


async def test_rpm_window_with_an_injected_clock():
    now = [1000.0]
    cfg = FakeConfig(rpm=2, clock=lambda: now[0])
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        assert (await _post(session, server.url))[0] == 200
        now[0] += 10
        assert (await _post(session, server.url))[0] == 200
        status, headers, _ = await _post(session, server.url)
        assert status == 429
        assert headers["Retry-After"] == "50"  # the first request leaves the window at +60 s
        now[0] += 50
        assert (await _post(session, server.url))[0] == 200
    assert [e.outcome for e in server.ledger.entries] == ["ok", "ok", "429", "ok"]
    assert [e.received for e in server.ledger.entries] == [1000, 1010, 1010, 1060]


async def test_fault_rate_is_reproducible_with_a_seed():
    async def outcomes(seed: int) -> list[str]:
        cfg = FakeConfig(fault_rate=0.5, fault_kinds=("500", "503"), seed=seed)
        async with running(cfg) as server, aiohttp.ClientSession() as session:
            for i in range(20):
                await _post(session, server.url, f"row {i}")
        return [e.outcome for e in server.ledger.entries]

    first, again = await outcomes(7), await outcomes(7)
    assert first == again
    assert {"ok", "500", "503"} <= set(first)


async def test_content_faults_hit_only_the_marked_row(fake_server):
    fake_server.config.content_faults = {"ROW-13": "400_inspection"}
    async with aiohttp.ClientSession() as session:
        statuses = [(await _post(session, fake_server.url, f"ROW-{i}"))[0] for i in (12, 13, 14)]
        fake_server.config.content_faults = lambda text: "503" if "14" in text else None
        late = (await _post(session, fake_server.url, "ROW-14"))[0]
    assert statuses == [200, 400, 200]
    assert late == 503


async def test_script_runs_before_random_faults_and_then_ok(fake_server):
    fake_server.config.script = ["500", "blank_json"]
    async with aiohttp.ClientSession() as session:
        results = [await _post(session, fake_server.url) for _ in range(3)]
    assert [r[0] for r in results] == [500, 200, 200]
    assert results[1][2].startswith(b"\n\n\n{")
    assert fake_server.ledger.paid == 2
    assert fake_server.ledger.duplicates() == 1  # same messages answered twice
    assert fake_server.ledger.duplicates(paid_only=False) == 2


async def test_wrong_key_gets_openai_style_401_and_no_key_is_recorded(fake_server):
    fake_server.config.expected_key = "sk-right"
    async with aiohttp.ClientSession() as session:
        bad = await _post(session, fake_server.url, Authorization="Bearer sk-wrong")
        good = await _post(session, fake_server.url, Authorization="Bearer sk-right")
        missing = await _post(session, fake_server.url)
    assert [bad[0], good[0], missing[0]] == [401, 200, 401]
    assert orjson.loads(bad[2])["error"]["code"] == "invalid_api_key"
    assert [e.has_auth for e in fake_server.ledger.entries] == [True, True, False]
    assert "sk-wrong" not in repr(fake_server.ledger)


async def test_concurrency_counters(fake_server):
    fake_server.config.latency = 0.05
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_post(session, fake_server.url, f"r{i}") for i in range(4)))
    assert fake_server.ledger.max_in_flight == 4
    assert fake_server.ledger.in_flight == 0


async def test_an_answer_the_client_never_got_is_not_paid(fake_server):
    fake_server.config.latency = 0.3
    timeout = aiohttp.ClientTimeout(total=0.05)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(TimeoutError):
            await _post(session, fake_server.url)
    for _ in range(100):  # until the server notices the closed connection
        if not fake_server.ledger.in_flight:
            break
        await asyncio.sleep(0.005)
    [entry] = fake_server.ledger.entries
    assert (entry.outcome, entry.status, entry.paid) == ("ok", None, False)
    assert fake_server.ledger.paid == 0


async def test_shutdown_releases_a_hung_request_quickly():
    async with aiohttp.ClientSession() as session:
        async with running(FakeConfig(script=["hang"])) as server:
            task = asyncio.create_task(_post(session, server.url))
            for _ in range(400):  # until the request is being held
                if server.ledger.in_flight:
                    break
                await asyncio.sleep(0.005)
            start = time.monotonic()
        assert time.monotonic() - start < 0.5
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await task
    assert server.ledger.in_flight == 0
    assert server.ledger.entries[0].status is None


async def test_runs_as_its_own_process(tmp_path: Path) -> None:
    script = Path(__file__).with_name("fakeserver.py")
    ledger_out = tmp_path / "ledger.jsonl"
    cmd = [sys.executable, str(script), "--port", "0", "--script", "503"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--ledger-out", str(ledger_out), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        root = line.removeprefix("listening on ")
        async with aiohttp.ClientSession() as session:
            assert (await _post(session, root + "/v1"))[0] == 503
            assert (await _post(session, root + "/v1"))[0] == 200
            async with session.get(root + "/_ledger") as r:
                summary = await r.json()
        assert summary["requests"] == 2
        assert summary["paid"] == 1
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    lines = ledger_out.read_bytes().splitlines()
    assert [orjson.loads(x)["outcome"] for x in lines] == ["503", "ok"]


def test_cli_flags_build_the_config_and_reject_unknown_outcomes():
    args = parse_args(
        shlex.split(
            "--latency 0.5 --jitter 0.1 --fault-rate 0.2 --fault-kinds 429,drop --script 500,ok"
            " --content-fault ROW-7=400_inspection --rpm 60 --expected-key k --served-model s"
            " --retry-after 2 --seed 3"
        )
    )
    cfg = config_from_args(args)
    assert (cfg.latency, cfg.jitter, cfg.fault_rate, cfg.seed) == (0.5, 0.1, 0.2, 3)
    assert (cfg.fault_kinds, cfg.script) == (("429", "drop"), ["500", "ok"])
    assert cfg.content_faults == {"ROW-7": "400_inspection"}
    assert (cfg.rpm, cfg.expected_key, cfg.served_model, cfg.retry_after) == (60, "k", "s", 2)
    with pytest.raises(SystemExit, match="teapot"):
        config_from_args(parse_args(["--script", "ok,teapot"]))
