from __future__ import annotations

import asyncio
import socket
import traceback
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakeserver import FakeServer, running
from tenacity import AsyncRetrying

from pipeline.errors import FatalAPIError, RetryableError, RowError
from pipeline.model.client import OpenAIClient, build_payload, make_session, read_message
from pipeline.model.retry import retrying
from pipeline.records import ChatRequest, Completion, ImageSpec

IMAGE = "data:image/jpeg;base64,/9j/AAAA"
MCQ = "Question: Which modality?\nOptions:\nA. CT\nB. MRI\nC. X-ray\n\nProvide only the letter."


def _request(text: str = MCQ, **kw: Any) -> ChatRequest:
    spec = ImageSpec(path=Path("img.jpg"), max_dim=1024, quality=85)
    return ChatRequest(system="You are a helpful assistant.", text=text, image=spec, **kw)


@pytest.fixture
async def session():
    async with make_session(4) as s:
        yield s


def _client(session: aiohttp.ClientSession, server: FakeServer, **kw: Any) -> OpenAIClient:
    kw.setdefault("api_key", "sk-test-0000")
    return OpenAIClient(session, base_url=server.url, model="qwen-vl-max", **kw)


def test_build_payload_puts_text_before_image_and_omits_unset_sampling():
    payload = build_payload("m", _request(), IMAGE)
    system, user = payload["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    assert [p["type"] for p in user["content"]] == ["text", "image_url"]
    assert user["content"][0]["text"] == MCQ
    assert user["content"][1]["image_url"] == {"url": IMAGE}
    assert "temperature" not in payload
    assert "max_tokens" not in payload


def test_build_payload_sends_zero_temperature_and_extra_body():
    payload = build_payload(
        "m", _request(temperature=0, max_tokens=50), IMAGE, {"vl_high_resolution_images": True}
    )
    assert payload["temperature"] == 0
    assert payload["max_tokens"] == 50
    assert payload["vl_high_resolution_images"] is True


async def test_success_parses_text_usage_model_and_request_id(session, fake_server):
    fake_server.config.served_model = "qwen-vl-max-2025-08-13"
    done = await _client(session, fake_server).complete(_request(), IMAGE)
    assert isinstance(done, Completion)
    assert done.text in {"A", "B", "C"}
    assert done.model == "qwen-vl-max-2025-08-13"
    assert done.request_id == "req-1"
    assert done.prompt_tokens > 0
    assert done.completion_tokens > 0
    [entry] = fake_server.ledger.entries
    assert (entry.path, entry.model, entry.has_auth, entry.status) == (
        "/v1/chat/completions",
        "qwen-vl-max",
        True,
        200,
    )


async def test_payload_as_the_server_sees_it(session, fake_server):
    client = _client(session, fake_server)
    await client.complete(_request(), IMAGE)
    await client.complete(_request(temperature=0, max_tokens=50), IMAGE)
    unset, set_ = fake_server.ledger.entries
    assert unset.content_types == ("text", "image_url")
    assert unset.user_text == MCQ
    assert unset.system == "You are a helpful assistant."
    assert unset.params == {"model": "qwen-vl-max"}
    assert set_.params == {"model": "qwen-vl-max", "temperature": 0, "max_tokens": 50}


async def test_base_url_without_v1_and_with_trailing_slash(session, fake_server):
    client = OpenAIClient(session, base_url=fake_server.root + "/", model="m", api_key="")
    assert (await client.complete(_request(), IMAGE)).text
    [entry] = fake_server.ledger.entries
    assert entry.path == "/chat/completions"
    assert entry.has_auth is False  # no key, no header (self-hosted servers)


async def test_deepseek_blank_lines_then_json_is_a_success(session, fake_server):
    fake_server.config.script = ["blank_json"]
    done = await _client(session, fake_server, provider="deepseek").complete(_request(), IMAGE)
    assert done.text in {"A", "B", "C"}
    assert fake_server.ledger.paid == 1


@pytest.mark.parametrize(
    ("provider", "fault", "expected", "status"),
    [
        ("openai", "429", RetryableError, 429),
        ("openai", "500", RetryableError, 500),
        ("openai", "503", RetryableError, 503),
        ("openai", "drop", RetryableError, None),
        ("openai", "garbage", RetryableError, 200),
        ("deepseek", "empty", RetryableError, 200),
        ("deepseek", "blank", RetryableError, 200),
        ("openai", "empty_choices", RetryableError, 200),
        ("openai", "401", FatalAPIError, 401),
        ("deepseek", "402", FatalAPIError, 402),
        ("openai", "429_quota", FatalAPIError, 429),
        ("dashscope", "429_throttle", RetryableError, 429),
        ("dashscope", "400_inspection", RowError, 400),
        ("dashscope", "400_arrearage", FatalAPIError, 400),
        ("dashscope", "400_too_large", RowError, 400),
    ],
)
async def test_each_fault_maps_to_its_error_class(
    session, fake_server, provider, fault, expected, status
):
    fake_server.config.script = [fault]
    client = _client(session, fake_server, provider=provider)
    with pytest.raises(expected) as info:
        await client.complete(_request(), IMAGE)
    assert type(info.value) is expected
    assert info.value.status == status
    assert fake_server.ledger.entries[0].outcome == fault


async def test_429_carries_retry_after_and_request_id_from_the_answer(session, fake_server):
    fake_server.config.script = ["429"]
    fake_server.config.retry_after = 2.5
    with pytest.raises(RetryableError) as info:
        await _client(session, fake_server).complete(_request(), IMAGE)
    assert info.value.retry_after == 2.5
    assert info.value.request_id == "req-1"
    assert info.value.code == "rate_limit_exceeded"
    assert "Rate limit reached" in str(info.value)


async def test_hang_hits_the_per_attempt_timeout(session, fake_server):
    fake_server.config.script = ["hang"]
    client = _client(session, fake_server, timeout=0.2)
    with pytest.raises(RetryableError, match=r"no complete answer within 0\.2 s"):
        await client.complete(_request(), IMAGE)
    # the next attempt on the same session gets its own fresh deadline and succeeds
    assert (await client.complete(_request(), IMAGE)).text
    # The deadline is the one given: an answer after 0.5 s misses 0.2 s and makes 2 s.
    fake_server.config.latency = 0.5
    with pytest.raises(RetryableError, match="per-attempt timeout"):
        await client.complete(_request(), IMAGE)
    assert (await _client(session, fake_server, timeout=2.0).complete(_request(), IMAGE)).text


async def test_connection_refused_is_retryable(session):
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpenAIClient(session, base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key="k")
    with pytest.raises(RetryableError, match="ClientConnectorError"):
        await client.complete(_request(), IMAGE)


async def test_wrong_key_is_fatal_and_the_key_is_nowhere(session, fake_server):
    secret = "sk-live-SECRET-9f8e7d6c5b4a"
    fake_server.config.expected_key = "sk-right-key"
    client = _client(session, fake_server, api_key=secret)
    with pytest.raises(FatalAPIError) as info:
        await client.complete(_request(), IMAGE)
    exc = info.value
    assert exc.status == 401
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + repr(client)
    assert secret not in text
    assert secret not in repr(fake_server.ledger)
    assert fake_server.ledger.entries[0].has_auth is True


async def test_right_key_is_accepted(session, fake_server):
    fake_server.config.expected_key = "sk-right-key"
    client = _client(session, fake_server, api_key="sk-right-key")
    assert (await client.complete(_request(), IMAGE)).text


async def test_a_key_echoed_by_the_server_is_scrubbed(session, fake_server):
    secret = "sk-echo-1234567890"
    # a gateway that repeats the caller's key in its error message
    fake_server.config.error_bodies["echo"] = (400, "invalid_request_error", None, f"bad {secret}")
    fake_server.config.script = ["echo"]
    with pytest.raises(RowError) as info:
        await _client(session, fake_server, api_key=secret).complete(_request(), IMAGE)
    assert secret not in str(info.value)
    assert "bad ***" in str(info.value)


async def test_retried_call_succeeds_after_500_and_429(session, fake_server):
    fake_server.config.script = ["500", "429", "ok"]
    fake_server.config.retry_after = 7
    client = _client(session, fake_server)
    sleeps: list[float] = []
    retried: list[tuple[BaseException, float]] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kwargs = retrying(
        max_attempts=5,
        max_seconds=300,
        backoff_base=0.01,
        sleep=fake_sleep,
        on_retry=lambda exc, wait: retried.append((exc, wait)),
    )
    async for attempt in AsyncRetrying(**kwargs):
        with attempt:
            done = await client.complete(_request(), IMAGE)
    assert done.text
    assert [e.outcome for e in fake_server.ledger.entries] == ["500", "429", "ok"]
    assert len(fake_server.ledger.entries) == 3
    assert [type(e) for e, _ in retried] == [RetryableError, RetryableError]
    assert sleeps[1] >= 7  # the 429's Retry-After beats the small jitter
    assert fake_server.ledger.duplicates() == 0  # only one paid answer


async def test_session_limits_connections_in_flight(fake_server):
    fake_server.config.latency = 0.05
    async with make_session(2) as session:
        client = _client(session, fake_server)
        done = await asyncio.gather(*(client.complete(_request(f"q{i}"), IMAGE) for i in range(5)))
    assert len(done) == 5
    assert fake_server.ledger.max_in_flight == 2


def test_text_only_request_sends_a_plain_string_and_no_system_when_unset():
    request = ChatRequest(system=None, text="extract keywords", image=None, temperature=0.0)
    payload = build_payload("judge", request, None, {"thinking": {"type": "disabled"}})
    assert payload["messages"] == [{"role": "user", "content": "extract keywords"}]
    assert payload["temperature"] == 0.0
    assert payload["thinking"] == {"type": "disabled"}


# --- Reply anatomy: the answer apart from the thoughts, finish_reason, reasoning tokens ------------

# outcome → (answer the client reads, thoughts present, finish_reason)
SHAPES = [
    ("ok", "A", False, "stop"),
    ("reasoning", "A", True, "stop"),  # message.reasoning_content
    ("reasoning_field", "A", True, "stop"),  # message.reasoning (OpenRouter)
    ("reasoning_hidden", "A", False, "stop"),  # only reasoning_tokens (OpenAI o-series)
    ("think_inline", "A", True, "stop"),  # <think>…</think> then the answer
    ("think_unclosed", "", True, "length"),  # the token limit cut the thoughts
    ("length_empty", "", True, "length"),
    ("length_empty_null", "", True, "length"),
    ("length_partial", "The image shows an axial section of the abdomen with a", False, "length"),
    ("content_filter", "", False, "content_filter"),
    ("content_filter_text", "The image shows", False, "content_filter"),
    ("null_content", "", False, "stop"),
    ("list_content", "A", False, "stop"),
    ("no_usage", "A", False, "stop"),
]


@pytest.mark.parametrize(("shape", "answer", "thoughts", "finish"), SHAPES)
async def test_reply_anatomy(session, fake_server, shape, answer, thoughts, finish):
    fake_server.config.script = [shape]
    got = await _client(session, fake_server).complete(_request(max_tokens=50), IMAGE)
    assert got.text == answer
    assert got.finish_reason == finish
    assert (got.reasoning is not None) is thoughts
    if thoughts:
        # The thoughts name other letters; they never reach the answer.
        assert got.reasoning is not None
        assert "Option" in got.reasoning
        assert "<think>" not in got.text
    assert got.reasoning_tokens > 0 or shape not in ("reasoning", "think_inline", "length_empty")
    assert (got.prompt_tokens == 0) is (shape == "no_usage")


async def test_reasoning_tokens_are_read_from_usage(session, fake_server):
    fake_server.config.reasoning = "field"
    fake_server.config.think_tokens = 120
    got = await _client(session, fake_server).complete(_request(max_tokens=2048), IMAGE)
    assert (got.text, got.reasoning_tokens) == ("A", 120)
    assert got.completion_tokens > 120  # billed with the answer


@pytest.mark.parametrize(
    ("content", "answer", "thoughts"),
    [
        ("<think>B? no.</think>\n\nC", "C", "B? no."),
        ("  <think>\nB or D\n</think>C", "C", "B or D"),
        ("<think>still thinking about A", "", "still thinking about A"),
        ("B? no.</think>\nC", "C", "B? no."),  # the template opened the block itself
        ("C. The <think> tag is text here", "C. The <think> tag is text here", None),
    ],
)
def test_inline_think_blocks_are_split(content, answer, thoughts):
    assert read_message({"content": content}) == (answer, thoughts)


def test_both_thought_fields_and_an_inline_block_are_kept_together():
    message = {"content": "<think>two</think>C", "reasoning_content": "one"}
    assert read_message(message) == ("C", "one\n\ntwo")


@pytest.mark.parametrize("shape", ["error_200", "error_200_object"])
async def test_an_error_inside_a_200_is_an_error(session, fake_server, shape):
    fake_server.config.script = [shape]
    with pytest.raises(RetryableError, match=r"Upstream provider|Internal server error"):
        await _client(session, fake_server).complete(_request(), IMAGE)


async def test_max_completion_tokens_for_models_that_require_it(session, fake_server):
    client = _client(session, fake_server, token_param="max_completion_tokens")
    await client.complete(_request(max_tokens=2048), IMAGE)
    [entry] = fake_server.ledger.entries
    assert entry.params["max_completion_tokens"] == 2048
    assert "max_tokens" not in entry.params


SECRET_KEY = "sk-live/9f8e7d6c5b4a"
URL_AUTH = "user:Pa55-w0rd-7c1e"


@pytest.mark.parametrize(
    ("api_key", "auth", "proxy_auth"), [(SECRET_KEY, "Bearer", "Basic"), ("", "Basic", "")]
)
async def test_url_credentials_go_in_a_basic_header(
    session, fake_server, api_key, auth, proxy_auth
):
    fake_server.config.expected_basic = URL_AUTH  # anything else is refused (407 or 401)
    client = _client(session, fake_server, api_key=api_key, url_auth=URL_AUTH)
    assert (await client.complete(_request(), IMAGE)).text
    [entry] = fake_server.ledger.entries
    assert (entry.auth, entry.proxy_auth, entry.status) == (auth, proxy_auth, 200)
    assert "Pa55" not in repr(client)


async def test_credentials_the_server_echoes_escaped_are_masked(session, fake_server):
    client = _client(session, fake_server, api_key=SECRET_KEY, url_auth=URL_AUTH)
    fake_server.config.script = ["echo_auth", "echo_auth_401"]
    done = await client.complete(_request(), IMAGE)
    with pytest.raises(FatalAPIError) as info:
        await client.complete(_request(), IMAGE)
    exc = info.value
    said = (repr(done) + repr(exc) + str(exc) + "".join(traceback.format_exception(exc))).replace(
        "\\\\", "\\"
    )
    for secret in (SECRET_KEY, "Pa55-w0rd-7c1e", "dXNlcjpQYTU1", "u0073", "u006B", "\\/"):
        assert secret not in said, secret
    echoed = "*** *** user:***"  # the key, the Basic token, then user:password
    assert done.text == f"A. You sent {echoed}"
    assert (done.reasoning, done.model, done.request_id) == (echoed, echoed, "***")
    assert exc.request_id == "***"


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("http://u:Hop-pw@elsewhere.test/v2/chat/completions", "http://u:***@elsewhere.test/v2"),
        ("/v2/chat/completions", "{root}/v2"),  # relative: resolved against the request
    ],
)
async def test_a_redirect_is_fatal_and_not_followed(session, fake_server, location, target):
    async with running() as other:
        fake_server.config.redirect = 307
        fake_server.config.redirect_to = location.replace("elsewhere.test", other.root[7:])
        with pytest.raises(FatalAPIError) as info:
            await _client(session, fake_server).complete(_request(), IMAGE)
        assert other.ledger.count() == 0
        assert fake_server.ledger.count() == 1  # the redirect itself, nothing after it
    target = target.format(root=fake_server.root).replace("elsewhere.test", other.root[7:])
    assert info.value.status == 307
    assert str(info.value).endswith(f"to {target}")
    assert "Hop-pw" not in str(info.value)
