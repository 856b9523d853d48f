from __future__ import annotations

import asyncio
import re
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
from fakereplies import PARTIAL, REFUSAL
from fakeserver import (
    FakeConfig,
    LedgerEntry,
    config_from_args,
    default_answer,
    parse_args,
    running,
)

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


async def test_a_one_second_window_enforces_rpm_per_second_and_reports_it_in_headers():
    now = [1000.0]
    cfg = FakeConfig(rpm=120, rpm_window=1.0, ratelimit_headers=True, clock=lambda: now[0])
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        first = await _post(session, server.url)
        now[0] += 0.25
        second = await _post(session, server.url)
        status, headers, _ = await _post(session, server.url)
        now[0] += 0.75  # the first request leaves the 1 s window
        fourth = await _post(session, server.url)
    assert [first[0], second[0], status, fourth[0]] == [200, 200, 429, 200]
    assert first[1]["x-ratelimit-limit-requests"] == "120"
    assert first[1]["x-ratelimit-remaining-requests"] == "1"  # 2 a second, 1 taken
    assert first[1]["x-ratelimit-reset-requests"] == "1000ms"
    assert second[1]["x-ratelimit-reset-requests"] == "1000ms"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1000ms"  # until the allowance is whole
    assert headers["Retry-After"] == "1"
    assert "x-ratelimit-limit-requests" not in (await _headers_without_flag())


async def _headers_without_flag() -> dict[str, str]:
    async with running(FakeConfig(rpm=60)) as server, aiohttp.ClientSession() as session:
        return dict((await _post(session, server.url))[1])


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


# --- reply shapes

QUESTION = (
    "Question: Which modality?\nOptions:\nA. CT\nB. MRI\nC. PET\nD. US\n\nProvide the letter."
)
ANSWER = default_answer(_payload(QUESTION))
JOINT_SYSTEM = "Respond with four capital letters (A-H), separated by commas."
_LONE_LETTER = re.compile(r"\b([A-H])\b")


async def _shape(
    outcome: str, text: str = QUESTION, system: str | None = None, fields: Mapping[str, Any] = {}
) -> tuple[int, Mapping[str, str], Any, LedgerEntry]:
    """Serve one request whose outcome is `outcome`; return status, headers, JSON, ledger entry."""
    payload = {**(_payload(text) if system is None else _payload(text, system)), **fields}
    async with (
        running(FakeConfig(script=[outcome])) as server,
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/chat/completions", json=payload) as r,
    ):
        status, headers, body = r.status, r.headers, await r.read()
    [entry] = server.ledger.entries
    return status, headers, orjson.loads(body), entry


def _usage(data: dict[str, Any], completion: int, reasoning: int | None = None) -> dict[str, Any]:
    """Return the usage block the reply must carry, given its own prompt_tokens."""
    prompt = data["usage"]["prompt_tokens"]
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _completion(data: dict[str, Any], message: dict[str, Any], finish: str) -> dict[str, Any]:
    """Return the whole body the reply must be, taking only id, created and usage from it."""
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    body = {k: data[k] for k in ("id", "created")}
    body |= {"object": "chat.completion", "model": "m", "choices": [choice]}
    return body | ({"usage": data["usage"]} if "usage" in data else {})


def _misleads(thoughts: str, answer: str = ANSWER) -> None:
    """Assert the thoughts name letters, none of them the answer."""
    letters = set(_LONE_LETTER.findall(thoughts))
    assert letters
    assert answer not in letters


def test_the_answer_is_a_letter_for_the_shape_tests() -> None:
    assert ANSWER in "ABCD"
    assert len(ANSWER) == 1


@pytest.mark.parametrize(
    ("outcome", "field"), [("reasoning", "reasoning_content"), ("reasoning_field", "reasoning")]
)
async def test_reasoning_in_a_message_field(outcome: str, field: str) -> None:
    status, _, data, entry = await _shape(outcome)
    assert status == 200
    thoughts = data["choices"][0]["message"][field]
    _misleads(thoughts)
    assert data == _completion(data, {"content": ANSWER, field: thoughts}, "stop")
    spent = data["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert spent >= len(thoughts) // 4
    assert data["usage"] == _usage(data, spent + 1, spent)
    assert (entry.outcome, entry.shape, entry.paid) == (outcome, outcome, True)


async def test_think_inline() -> None:
    status, _, data, entry = await _shape("think_inline")
    content = data["choices"][0]["message"]["content"]
    match = re.fullmatch(r"<think>\n(.+)\n</think>\n\n([A-H])", content, re.DOTALL)
    assert match
    assert match[2] == ANSWER
    _misleads(match[1])
    assert data == _completion(data, {"content": content}, "stop")
    spent = data["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert data["usage"] == _usage(data, spent + 1, spent)
    assert (status, entry.paid) == (200, True)


async def test_reasoning_hidden_only_counts_its_tokens() -> None:
    _, _, data, entry = await _shape("reasoning_hidden")
    assert data == _completion(data, {"content": ANSWER}, "stop")
    spent = data["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert spent > 0
    assert data["usage"] == _usage(data, spent + 1, spent)
    assert entry.paid


async def test_think_unclosed_is_cut_by_the_token_limit() -> None:
    status, _, data, entry = await _shape("think_unclosed", fields={"max_tokens": 50})
    content = data["choices"][0]["message"]["content"]
    assert content.startswith("<think>\n")
    assert "</think>" not in content
    _misleads(content)
    assert data == _completion(data, {"content": content}, "length")
    assert data["usage"] == _usage(data, 50, 50)
    assert (status, entry.shape, entry.paid) == (200, "think_unclosed", True)


@pytest.mark.parametrize(
    ("outcome", "content", "limit"),
    [
        ("length_empty", "", {"max_tokens": 50}),
        ("length_empty_null", None, {"max_tokens": 50}),
        ("length_empty", "", {"max_completion_tokens": 80}),
        ("length_empty", "", {"max_tokens": 300, "max_completion_tokens": 80}),
    ],
)
async def test_length_empty_spends_the_whole_budget_thinking(
    outcome: str, content: str | None, limit: dict[str, int]
) -> None:
    status, _, data, entry = await _shape(outcome, fields=limit)
    thoughts = data["choices"][0]["message"]["reasoning_content"]
    _misleads(thoughts)
    assert data == _completion(data, {"content": content, "reasoning_content": thoughts}, "length")
    spent = min(limit.values())
    assert data["usage"] == _usage(data, spent, spent)
    assert (status, entry.outcome, entry.paid) == (200, outcome, True)


async def test_length_partial_stops_before_any_letter() -> None:
    _, _, data, entry = await _shape("length_partial", fields={"max_tokens": 50})
    assert data == _completion(data, {"content": PARTIAL}, "length")
    assert not _LONE_LETTER.search(PARTIAL)
    assert data["usage"] == _usage(data, 50)
    assert entry.paid


@pytest.mark.parametrize(
    ("outcome", "content", "tokens"),
    [("content_filter", None, 0), ("content_filter_text", "The image shows", 3)],
)
async def test_content_filter(outcome: str, content: str | None, tokens: int) -> None:
    status, _, data, entry = await _shape(outcome)
    assert data == _completion(data, {"content": content}, "content_filter")
    assert data["usage"] == _usage(data, tokens)
    assert (status, entry.paid) == (200, True)


async def test_refusal() -> None:
    _, _, data, entry = await _shape("refusal")
    assert REFUSAL == "I'm sorry, but I can't help with interpreting this medical image."
    assert data == _completion(data, {"content": REFUSAL}, "stop")
    assert data["usage"] == _usage(data, len(REFUSAL) // 4)
    assert entry.paid


async def test_null_content() -> None:
    _, _, data, entry = await _shape("null_content")
    assert data == _completion(data, {"content": None}, "stop")
    assert data["usage"] == _usage(data, 0)
    assert entry.paid


async def test_list_content_parts_concatenate_to_the_answer() -> None:
    _, _, data, _ = await _shape("list_content")
    assert data == _completion(data, {"content": [{"type": "text", "text": ANSWER}]}, "stop")
    chain = default_answer(_payload(JOINT, JOINT_SYSTEM))
    _, _, data, entry = await _shape("list_content", JOINT, JOINT_SYSTEM)
    parts = data["choices"][0]["message"]["content"]
    assert [p["type"] for p in parts] == ["text", "text"]
    assert "".join(p["text"] for p in parts) == chain
    assert data == _completion(data, {"content": parts}, "stop")
    assert data["usage"] == _usage(data, len(chain) // 4)
    assert entry.paid


async def test_no_usage() -> None:
    _, _, data, entry = await _shape("no_usage")
    assert "usage" not in data
    assert data == _completion(data, {"content": ANSWER}, "stop")
    assert entry.paid


async def test_joint_thoughts_guess_a_wrong_letter_for_every_question() -> None:
    chain = default_answer(_payload(JOINT, JOINT_SYSTEM)).split(",")
    _, _, data, _ = await _shape("reasoning", JOINT, JOINT_SYSTEM)
    assert data["choices"][0]["message"]["content"] == ",".join(chain)
    thoughts = data["choices"][0]["message"]["reasoning_content"]
    guess = re.search(r"Answer: ([A-H](?:,[A-H]){3})", thoughts)
    assert guess
    assert all(g != c for g, c in zip(guess[1].split(","), chain, strict=True))


@pytest.mark.parametrize(
    ("outcome", "body"),
    [
        (
            "error_200",
            {
                "error": {
                    "message": "Upstream provider returned an error; please retry.",
                    "type": "server_error",
                    "code": "upstream_error",
                }
            },
        ),
        (
            "error_200_object",
            {
                "object": "error",
                "message": "Internal server error: the engine failed to process the request.",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            },
        ),
    ],
)
async def test_error_body_with_status_200_is_not_paid(outcome: str, body: dict[str, Any]) -> None:
    status, headers, data, entry = await _shape(outcome)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert data == body
    assert (entry.outcome, entry.status, entry.paid) == (outcome, 200, False)


async def test_429_bare_has_no_retry_after() -> None:
    status, headers, data, entry = await _shape("429_bare")
    assert status == 429
    assert not {"retry-after", "retry-after-ms"} & {h.lower() for h in headers}
    assert data["error"]["code"] == "rate_limit_exceeded"
    assert not entry.paid


async def test_no_retry_after_flag_strips_it_from_rpm_429s() -> None:
    now = [1000.0]
    cfg = config_from_args(parse_args(["--rpm", "1", "--no-retry-after", "--script", "ok,429"]))
    cfg.clock = lambda: now[0]
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        first = await _post(session, server.url)
        window = await _post(session, server.url)  # the RPM window is full
        now[0] += 60
        scripted = await _post(session, server.url)
    assert [first[0], window[0], scripted[0]] == [200, 429, 429]
    assert "Retry-After" not in window[1]
    assert "Retry-After" not in scripted[1]
    assert [e.outcome for e in server.ledger.entries] == ["ok", "429", "429"]


async def test_shapes_work_as_content_faults_fault_kinds_and_default_outcome() -> None:
    cfg = FakeConfig(
        content_faults={"ROW-1": "null_content"},
        script=["refusal"],
        fault_rate=1.0,
        fault_kinds=("length_partial",),
    )
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        for row in ("ROW-1", "ROW-2", "ROW-3"):
            await _post(session, server.url, row)
        server.config.fault_rate = 0.0
        server.config.default_outcome = "list_content"
        await _post(session, server.url, "ROW-4")
    outcomes = [e.outcome for e in server.ledger.entries]
    assert outcomes == ["null_content", "refusal", "length_partial", "list_content"]
    assert server.ledger.paid == 4
    assert server.ledger.summary()["shapes"] == dict.fromkeys(outcomes, 1)


# --- the reasoning-model mode


async def _mode(cfg: FakeConfig, *requests: dict[str, Any]) -> tuple[list[Any], list[LedgerEntry]]:
    replies = []
    async with running(cfg) as server, aiohttp.ClientSession() as session:
        for fields in requests:
            text, system = fields.pop("text", QUESTION), fields.pop("system", None)
            payload = _payload(text) if system is None else _payload(text, system)
            async with session.post(
                f"{server.url}/chat/completions", json={**payload, **fields}
            ) as r:
                assert r.status == 200
                replies.append(await r.json())
    return replies, server.ledger.entries


@pytest.mark.parametrize(
    ("style", "field", "shapes"),
    [
        ("field", "reasoning_content", ("length_empty", "reasoning")),
        ("openrouter", "reasoning", ("length_empty", "reasoning_field")),
        ("inline", None, ("think_unclosed", "think_inline")),
        ("none", None, ("length_empty", "reasoning_hidden")),
    ],
)
async def test_reasoning_mode_truncates_at_the_official_max_tokens_and_answers_with_more(
    style: str, field: str | None, shapes: tuple[str, str]
) -> None:
    chain = default_answer(_payload(JOINT, JOINT_SYSTEM))
    replies, entries = await _mode(
        FakeConfig(reasoning=style, think_tokens=120),
        {"max_tokens": 50},  # the official independent budget
        {"max_tokens": 100, "text": JOINT, "system": JOINT_SYSTEM},  # the official joint one
        {"max_tokens": 2048},
        {"max_completion_tokens": 2048, "text": JOINT, "system": JOINT_SYSTEM},
    )
    for data, limit in zip(replies[:2], (50, 100), strict=True):
        [choice] = data["choices"]
        content = choice["message"]["content"]
        assert choice["finish_reason"] == "length"
        assert data["usage"] == _usage(data, limit, limit)
        if style == "inline":
            assert content.startswith("<think>\n")
            assert "</think>" not in content
            thoughts = content
        else:
            assert content == ""
            thoughts = choice["message"].get(field, "") if field else ""
        assert set(choice["message"]) == {"role", "content"} | ({field} if field else set())
        if thoughts:
            assert len(thoughts) >= limit * 4
            _misleads(thoughts, ANSWER if limit == 50 else "")
    for data, answer in zip(replies[2:], (ANSWER, chain), strict=True):
        [choice] = data["choices"]
        content = choice["message"]["content"]
        assert choice["finish_reason"] == "stop"
        tokens = max(1, len(answer) // 4)
        assert data["usage"] == _usage(data, 120 + tokens, 120)
        if style == "inline":
            assert content.endswith(f"\n</think>\n\n{answer}")
            assert len(content) > 120 * 4
        else:
            assert content == answer
        if field:
            assert len(choice["message"][field]) == 120 * 4
    assert [e.outcome for e in entries] == ["ok"] * 4
    assert [e.shape for e in entries] == [shapes[0]] * 2 + [shapes[1]] * 2
    assert all(e.paid for e in entries)


async def test_reasoning_style_without_think_tokens_never_truncates() -> None:
    replies, entries = await _mode(FakeConfig(reasoning="field"), {"max_tokens": 5}, {})
    for data in replies:
        message = data["choices"][0]["message"]
        assert (message["content"], data["choices"][0]["finish_reason"]) == (ANSWER, "stop")
        _misleads(message["reasoning_content"])
    assert [e.shape for e in entries] == ["reasoning", "reasoning"]


async def test_no_reasoning_mode_answers_plainly() -> None:
    replies, entries = await _mode(FakeConfig(), {"max_tokens": 1})
    assert replies[0] == _completion(replies[0], {"content": ANSWER}, "stop")
    assert replies[0]["usage"] == _usage(replies[0], 1)
    assert entries[0].shape == "ok"


def test_an_unknown_reasoning_style_is_refused() -> None:
    with pytest.raises(ValueError, match="reasoning must be one of"):
        FakeConfig(reasoning="hidden")


def test_cli_flags_for_reply_shapes_and_the_reasoning_mode() -> None:
    defaults = config_from_args(parse_args([]))
    assert (defaults.reasoning, defaults.think_tokens) == ("none", 0)
    assert (defaults.retry_after_header, defaults.default_outcome) == (True, "ok")
    args = parse_args(
        shlex.split(
            "--reasoning inline --think-tokens 300 --no-retry-after --default-outcome no_usage"
            " --script reasoning,error_200,429_bare --fault-kinds length_empty,refusal"
            " --content-fault ROW-1=think_unclosed"
        )
    )
    cfg = config_from_args(args)
    assert (cfg.reasoning, cfg.think_tokens) == ("inline", 300)
    assert (cfg.retry_after_header, cfg.default_outcome) == (False, "no_usage")
    assert cfg.script == ["reasoning", "error_200", "429_bare"]
    assert cfg.fault_kinds == ("length_empty", "refusal")
    assert cfg.content_faults == {"ROW-1": "think_unclosed"}
    with pytest.raises(SystemExit, match="nope"):
        config_from_args(parse_args(["--default-outcome", "nope"]))
    with pytest.raises(SystemExit):
        parse_args(["--reasoning", "nope"])
