from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence

import aiohttp
import pytest
from multidict import CIMultiDict
from tenacity import AsyncRetrying

from pipeline.errors import APIError, FatalAPIError, RetryableError, RowError
from pipeline.model.retry import RetryKwargs, classify, classify_transport, retrying

R, ROW, STOP = RetryableError, RowError, FatalAPIError


def _err(code: str | None, message: str, etype: str | None = None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "type": etype, "param": None}}


# (provider, status, body, expected class) — one row per line of docs/PROVIDERS.md's tables.
DASHSCOPE = [
    (429, _err("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."), R),
    (429, _err("LimitRequests", "You exceeded your current requests list"), R),
    (429, _err("Throttling.AllocationQuota", "Allocated quota exceeded, please increase."), R),
    (
        429,
        _err(
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details. "
            "error-code#token-limit",
            "insufficient_quota",
        ),
        R,
    ),
    (429, _err(None, "Request rate increased too quickly"), R),
    (429, _err("Throttling.AllocationQuota", "Free allocated quota exceeded."), STOP),
    (
        403,
        _err("AllocationQuota.FreeTierOnly", "The free tier of the model has been exhausted"),
        STOP,
    ),
    (
        400,
        _err("Arrearage", "Access denied, please make sure your account is in good standing."),
        STOP,
    ),
    (429, _err("PrepaidBillOverdue", "The prepaid bill is overdue."), STOP),
    (429, _err("PostpaidBillOverdue", "The postpaid bill is overdue."), STOP),
    (429, _err("CommodityNotPurchased", "Commodity has not purchased yet."), STOP),
    (401, _err("InvalidApiKey", "Invalid API-key provided."), STOP),
    (401, _err("invalid_api_key", "Incorrect API key provided"), STOP),
    (403, _err("Model.AccessDenied", "Model access denied."), STOP),
    (403, _err("Workspace.AccessDenied", "Workspace access denied."), STOP),
    (404, _err("ModelNotFound", "Model not exist."), STOP),
    (
        400,
        _err("DataInspectionFailed", "Input or output data may contain inappropriate content."),
        ROW,
    ),
    (400, _err("data_inspection_failed", "Input data may contain inappropriate content."), ROW),
    (400, _err("invalid_parameter_error", "<400> InternalError.Algo.DataInspectionFailed: x"), ROW),
    (500, _err("InternalError", "<500> InternalError.Algo.DataInspectionFailed"), ROW),
    (
        400,
        _err(
            "InternalError.Algo.InvalidParameter",
            "The image length and width do not meet the model restrictions. "
            "[height:1 or width:1 must be larger than 10]",
        ),
        ROW,
    ),
    (400, _err(None, "Exceeded limit on max bytes per data-uri item : 10485760"), ROW),
    (400, _err("invalid_parameter_error", "Multimodal file size is too large"), ROW),
    (413, _err("BadRequest.TooLarge", "Payload Too Large"), ROW),
    (400, _err("InvalidParameter", "Range of input length should be [1, 30720]"), ROW),
    (
        400,
        _err(
            "InvalidParameter",
            "parameter.enable_thinking must be set to false for non-streaming calls",
        ),
        STOP,
    ),
    (
        400,
        _err("InvalidParameter", "This model only support stream mode, please enable stream"),
        STOP,
    ),
    (408, _err("RequestTimeOut", "Request timed out, please try again later."), R),
    (500, _err("InternalError", "An internal error has occured, please try again later."), R),
    (500, _err("InternalError.Algo", "Algorithm process error."), R),
    (503, _err("ModelUnavailable", "Model is unavailable, please try again later."), R),
]
DEEPSEEK = [
    (400, _err("invalid_request_error", "Invalid Format"), STOP),
    (
        400,
        _err(
            "invalid_request_error",
            "Failed to deserialize the JSON body into the target type: messages[1]: "
            "unknown variant `image_url`, expected `text`",
        ),
        STOP,
    ),
    (401, _err("invalid_request_error", "Authentication Fails, Your api key is invalid"), STOP),
    (402, _err("invalid_request_error", "Insufficient Balance", "unknown_error"), STOP),
    (422, _err("invalid_request_error", "Invalid Parameters"), ROW),
    (429, _err("rate_limit_reached", "Rate Limit Reached"), R),
    (500, _err("server_error", "Server Error"), R),
    (503, _err("server_error", "Server Overloaded"), R),
]
OPENAI = [
    (
        429,
        _err(
            "rate_limit_exceeded",
            "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used 29937, "
            "Requested 385. Please try again in 644ms.",
            "tokens",
        ),
        R,
    ),
    (
        429,
        _err(
            "rate_limit_exceeded",
            "Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 31538.",
            "tokens",
        ),
        ROW,
    ),
    (
        429,
        _err("insufficient_quota", "You exceeded your current quota", "insufficient_quota"),
        STOP,
    ),
    (429, _err("credit_balance_exhausted", "You exceeded your quota", "insufficient_quota"), STOP),
    (429, _err("organization_spend_limit_exceeded", "Spend limit hit", "insufficient_quota"), STOP),
    (429, _err("project_spend_limit_exceeded", "Spend limit hit", "insufficient_quota"), STOP),
    (429, _err("organization_usage_limit_exceeded", "Usage limit hit", "insufficient_quota"), STOP),
    (401, _err("invalid_api_key", "Incorrect API key provided: sk-ab***cd."), STOP),
    (
        403,
        _err("unsupported_country_region_territory", "Country, region, or territory not supported"),
        STOP,
    ),
    (404, _err("model_not_found", "The model `gpt-5o` does not exist"), STOP),
    (
        400,
        _err("context_length_exceeded", "This model's maximum context length is 128000 tokens."),
        ROW,
    ),
    (
        400,
        _err("invalid_prompt", "Your prompt was flagged as potentially violating our policy."),
        ROW,
    ),
    (409, _err(None, "Conflict"), R),
    (500, _err(None, "The server had an error while processing your request."), R),
    (503, _err("server_is_overloaded", "The server is overloaded"), R),
]
_VLLM_CTX = (
    b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens. However, '
    b'you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}'
)
GENERIC = [
    (400, _VLLM_CTX, ROW),
    (
        400,
        b'{"object":"error","message":"At most 1 image(s) may be provided in one request.",'
        b'"type":"BadRequestError","param":null,"code":400}',
        STOP,
    ),
    (503, b'{"object":"error","message":"queue full","type":"ServiceUnavailable","code":503}', R),
    (500, b"Internal Server Error", R),
    (
        400,
        b'{"object":"error","message":"The input (61709 tokens) is longer than the model\'s '
        b'context length (40960 tokens).","type":"BadRequestError","param":null,"code":400}',
        ROW,
    ),
    (503, b'{"error":"server busy, please try again.  maximum pending requests exceeded"}', R),
    (429, None, R),
    (502, "<html>Bad Gateway</html>", R),
    (404, b"404 page not found", STOP),
]
TABLE = [
    *(("dashscope", *row) for row in DASHSCOPE),
    *(("deepseek", *row) for row in DEEPSEEK),
    *(("openai", *row) for row in OPENAI),
    *(("generic", *row) for row in GENERIC),
]


@pytest.mark.parametrize(("provider", "status", "body", "expected"), TABLE)
def test_classify_follows_the_provider_facts(provider, status, body, expected):
    err = classify(provider, status, body)
    assert type(err) is expected
    assert err.status == status


@pytest.mark.parametrize("status", [401, 403, 429, 500])
def test_dashscope_quota_wording_is_a_throttle_but_openai_billing(status):
    body = _err("insufficient_quota", "You exceeded your current quota", "insufficient_quota")
    if status == 429:
        assert isinstance(classify("dashscope", status, body), RetryableError)
        assert isinstance(classify("openai", status, body), FatalAPIError)
        assert isinstance(classify("generic", status, body), FatalAPIError)
    else:  # status decides for everything but 429
        assert type(classify("dashscope", status, body)) is type(classify("openai", status, body))


def test_markers_match_case_insensitively_in_any_field():
    for body in (
        _err(None, "Blocked: DATAINSPECTIONFAILED"),
        _err(None, "x", "Data_Inspection_Failed"),
        _err("DATA_INSPECTION_FAILED", "x"),
    ):
        assert isinstance(classify("dashscope", 400, body), RowError)
    assert isinstance(
        classify("dashscope", 429, _err(None, "FREE ALLOCATED QUOTA EXCEEDED")), FatalAPIError
    )
    assert isinstance(classify("openai", 429, _err("Insufficient_Quota", "x")), FatalAPIError)


def test_error_fields_are_carried_and_the_message_is_clipped():
    long = "quota " * 200
    err = classify(
        "dashscope",
        429,
        {"error": {"code": "Throttling.RateQuota", "message": long}, "request_id": "rid-body"},
        {"Retry-After": "7"},
    )
    assert err.code == "Throttling.RateQuota"
    assert err.retry_after == 7.0
    assert err.request_id == "rid-body"
    assert "quota quota" in err.message
    assert len(err.message) < 420
    assert str(err).startswith("429 Throttling.RateQuota: dashscope: quota")


def test_header_request_id_wins_and_bytes_str_dict_bodies_agree():
    raw = b'  \n{"error": {"code": "ModelNotFound", "message": "no such model"}}'
    forms = (raw, raw.decode(), {"error": {"code": "ModelNotFound", "message": "no such model"}})
    for body in forms:
        err = classify("dashscope", 404, body, {"X-Request-Id": "rid-hdr"})
        assert (type(err), err.code, err.request_id) == (FatalAPIError, "ModelNotFound", "rid-hdr")
        assert "no such model" in err.message


@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({"retry-after-ms": "1500", "Retry-After": "9"}, "", 1.5),
        ({"Retry-After": "9"}, "", 9.0),
        (CIMultiDict({"RETRY-AFTER": "3"}), "", 3.0),
        ({"Retry-After": "soon"}, "", None),
        ({}, "Please try again in 644ms.", 0.644),
        ({}, "Please try again in 1.5s.", 1.5),
        ({}, "Please wait", None),
    ],
)
def test_retry_after_sources(headers, message, expected):
    err = classify("openai", 429, _err("rate_limit_exceeded", message), headers)
    if expected is None:
        assert err.retry_after is None
    else:
        assert err.retry_after == pytest.approx(expected)


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    err = classify("openai", 503, None, {"Retry-After": when})
    assert 25 <= (err.retry_after or 0) <= 31


def _key() -> aiohttp.client_reqrep.ConnectionKey:
    return aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), R),
        (aiohttp.ClientPayloadError("Response payload is not completed"), R),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), R),
        (aiohttp.ClientConnectorError(_key(), ConnectionRefusedError(111, "refused")), R),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), R),
        (aiohttp.ConnectionTimeoutError("Connection timeout"), R),
        (TimeoutError(), R),
        (aiohttp.InvalidURL("htp:/bad"), STOP),
    ],
)
def test_classify_transport_with_real_aiohttp_exceptions(exc, expected):
    err = classify_transport(exc, where="openai http://h/v1/chat/completions", timeout=0.5)
    assert type(err) is expected
    assert err.message.startswith("openai http://h/v1/chat/completions")


# --- retrying -------------------------------------------------------------------------------


class Recorder:
    """A no-op sleep that records what it was asked to wait, plus on_retry calls."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[BaseException, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, exc: BaseException, wait: float) -> None:
        self.retries.append((exc, wait))


async def _run(
    kwargs: RetryKwargs, failures: Sequence[BaseException], result: str = "done"
) -> tuple[str, int]:
    """Call a function that raises `failures` in turn, then returns `result`."""
    calls = 0
    async for attempt in AsyncRetrying(**kwargs):
        with attempt:
            calls += 1
            if calls <= len(failures):
                raise failures[calls - 1]
            return result, calls
    msg = "unreachable"
    raise AssertionError(msg)


async def test_retrying_stops_after_max_attempts_and_reraises():
    rec = Recorder()
    kwargs = retrying(max_attempts=4, max_seconds=1e9, sleep=rec.sleep, on_retry=rec.on_retry)
    errors = [RetryableError(f"boom {i}") for i in range(10)]
    with pytest.raises(RetryableError, match="boom 3"):
        await _run(kwargs, errors)
    assert len(rec.sleeps) == 3
    assert [w for _, w in rec.retries] == rec.sleeps
    assert [e for e, _ in rec.retries] == errors[:3]


async def test_retrying_stops_before_a_wait_would_pass_max_seconds():
    rec = Recorder()
    kwargs = retrying(max_attempts=100, max_seconds=10, backoff_base=1e-6, sleep=rec.sleep)
    errors = [RetryableError("slow down", status=429, retry_after=4) for _ in range(100)]
    with pytest.raises(RetryableError):
        await _run(kwargs, errors)
    # waits 4 + 4 fit the 10 s budget; a third 4 s wait would end at 12 s
    assert rec.sleeps == [4, 4]


async def test_retrying_honours_retry_after_over_jitter():
    rec = Recorder()
    kwargs = retrying(
        max_attempts=6, max_seconds=1e9, backoff_base=1, backoff_cap=60, sleep=rec.sleep
    )
    errors = [RetryableError("x", retry_after=5) for _ in range(6)]
    with pytest.raises(RetryableError):
        await _run(kwargs, errors)
    ceilings = [1, 2, 4, 8, 16]
    assert all(5 <= w <= max(5, c) for w, c in zip(rec.sleeps, ceilings, strict=True))


async def test_retrying_backoff_is_capped_full_jitter():
    rec = Recorder()
    kwargs = retrying(
        max_attempts=40, max_seconds=1e9, backoff_base=0.5, backoff_cap=3, sleep=rec.sleep
    )
    with pytest.raises(RetryableError):
        await _run(kwargs, [RetryableError("x") for _ in range(40)])
    ceilings = [min(3, 0.5 * 2**n) for n in range(39)]
    assert all(0 <= w <= c for w, c in zip(rec.sleeps, ceilings, strict=True))
    assert max(rec.sleeps[5:]) > 1  # the ceiling really grows (39 draws all ≤ 1 is ~impossible)
    assert min(rec.sleeps[5:]) < 2.5  # and the wait is drawn below it (chance to fail: 6^-34)


@pytest.mark.parametrize(
    "exc",
    [RowError("bad image", status=400), FatalAPIError("bad key", status=401), ValueError("bug")],
)
async def test_retrying_never_retries_row_fatal_or_bugs(exc):
    rec = Recorder()
    kwargs = retrying(max_attempts=5, max_seconds=100, sleep=rec.sleep, on_retry=rec.on_retry)
    with pytest.raises(type(exc)) as info:
        await _run(kwargs, [exc])
    assert info.value is exc
    assert rec.sleeps == []
    assert rec.retries == []


async def test_retrying_returns_after_transient_failures():
    rec = Recorder()
    kwargs = retrying(max_attempts=5, max_seconds=100, backoff_base=0.01, sleep=rec.sleep)
    result = await _run(kwargs, [RetryableError("a"), RetryableError("b")], result="ok")
    assert result == ("ok", 3)
    assert len(rec.sleeps) == 2


def test_retrying_rejects_zero_attempts():
    with pytest.raises(ValueError, match="max_attempts"):
        retrying(max_attempts=0, max_seconds=1)


def test_every_classified_error_is_an_api_error():
    for provider, status, body, _ in TABLE:
        assert isinstance(classify(provider, status, body), APIError)


@pytest.mark.parametrize("provider", ["openai", "generic"])
def test_a_proxy_refusing_the_url_credentials_stops_the_run(provider):
    err = classify(provider, 407, "<html>Proxy Authentication Required</html>")
    assert type(err) is FatalAPIError  # every later row would be refused the same way
    assert "user:password in the base URL" in str(err)
