"""Classify provider failures into retry / fail row / stop run, and build the one retry loop.

`classify` is pure: status + body (+ headers) → a `RetryableError`, `RowError` or `FatalAPIError`
instance, following docs/PROVIDERS.md §1-§5. `retrying` returns the
keyword arguments for `tenacity.AsyncRetrying`; only `RetryableError` is ever retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypedDict

import orjson
from tenacity import RetryCallState, retry_base, retry_if_exception_type

from pipeline.errors import APIError, FatalAPIError, RetryableError, RowError
from pipeline.providers.registry import PROVIDERS

_MAX_MESSAGE = 300

# Markers are matched against code + type + message squashed to [a-z0-9], so DashScope's snake
# (`data_inspection_failed`), native (`DataInspectionFailed`) and `<400> InternalError.Algo.…`
# spellings all become the same substring. Each marker is unique enough to apply to any provider.
_MODERATION = "datainspectionfailed"
_ACCOUNT = (
    "arrearage",
    "prepaidbilloverdue",
    "postpaidbilloverdue",
    "commoditynotpurchased",
    "freeallocatedquotaexceeded",
    "allocationquotafreetieronly",
)
# Configuration mistakes that every later row would repeat: stop the run, fix the config
# (PROVIDERS §2, §3, §5).
_CONFIG = (
    "unknownvariantimageurl",  # DeepSeek text-only model sent an image
    "enablethinkingmustbesettofalse",  # DashScope thinking in a non-streaming call
    "onlysupportstreammode",
    "imagesmaybeprovidedinonerequest",  # vLLM --limit-mm-per-prompt
)
# OpenAI `insufficient_quota` and its spend-cap codes: waiting does not help.
_OPENAI_QUOTA = (
    "insufficientquota",
    "creditbalanceexhausted",
    "spendlimitexceeded",
    "usagelimitexceeded",
)
CONNECT = "connect"  # `RetryableError.code` of a connection that could not be made
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)


class RetryKwargs(TypedDict):
    """Keyword arguments for `tenacity.AsyncRetrying`, as built by `retrying`."""

    stop: Callable[[RetryCallState], bool]
    wait: Callable[[RetryCallState], float]
    retry: retry_base
    sleep: Callable[[float], Awaitable[None]]
    before_sleep: Callable[[RetryCallState], None]
    reraise: bool


def classify(
    provider: str,
    status: int,
    body: bytes | str | dict[str, Any] | None,
    headers: Mapping[str, str] | None = None,
) -> APIError:
    """Return the error a failed HTTP answer means: retry, fail this row, or stop the run.

    Args:
        provider: "openai", "dashscope", "deepseek" or "generic" (vLLM, SGLang, Ollama).
        status: HTTP status code of the answer.
        body: raw or decoded response body; anything unparsable is kept as the message.
        headers: response headers, for `retry-after-ms` / `Retry-After` and `x-request-id`.
    """
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    code, etype, message, body_id = _error_fields(body)
    ids = _squash(f"{code or ''} {etype or ''}")
    hay = ids + _squash(message)
    retry_after = _retry_after(hdrs, message)
    request_id = hdrs.get("x-request-id") or hdrs.get("request-id") or body_id
    kind = provider if provider in PROVIDERS else "generic"

    def make(cls: type[APIError], advice: str) -> APIError:
        said = message.rstrip(". ") or "(no message)"
        text = f"{provider}: {said}. {advice}"
        return cls(text, status=status, code=code, retry_after=retry_after, request_id=request_id)

    # OpenAI's flagged-prompt code is too plain a phrase to look for in free text.
    if _MODERATION in hay or "invalidprompt" in ids:
        return make(RowError, "Content moderation refused this row; it is not retried.")
    if any(m in hay for m in _ACCOUNT):
        return make(FatalAPIError, "The account cannot pay for calls; fix billing, then resume.")
    if any(m in hay for m in _CONFIG):
        return make(FatalAPIError, "Every row would fail the same way; fix the model or options.")
    if kind == "deepseek" and status == 400 and "invalidformat" in hay:
        return make(FatalAPIError, "DeepSeek rejected the request body; this is a client bug.")
    if status == 407:
        return make(FatalAPIError, "The proxy refused the user:password in the base URL.")
    if status in (401, 403):
        hint = " (DashScope keys differ per region)" if kind == "dashscope" else ""
        return make(FatalAPIError, f"Check the API key and base URL{hint}.")
    if status == 402:
        return make(FatalAPIError, "The account balance is empty; top up, then resume.")
    if status == 404:
        return make(FatalAPIError, "Check the model name and the base URL.")
    if status == 429:
        return _classify_429(kind, hay, make)
    if status in (408, 409) or status >= 500:
        return make(RetryableError, "Transient (retryable).")
    if 400 <= status < 500:
        return make(RowError, "The request for this row was rejected; it is not retried.")
    return make(RetryableError, "Unexpected status (retryable).")


def classify_transport(exc: BaseException, *, where: str, timeout: float | None = None) -> APIError:
    """Return the error a failed exchange means when no HTTP answer arrived.

    Args:
        exc: the aiohttp or timeout exception raised by the request.
        where: provider and URL, for the message.
        timeout: the per-attempt timeout in seconds, for the message.
    """
    import aiohttp  # loaded by the session that raised `exc` (client.make_session)

    if isinstance(exc, aiohttp.InvalidURL):
        return FatalAPIError(f"{where}: invalid URL {exc}; check the base URL.")
    if isinstance(exc, TimeoutError):  # asyncio's total timeout and aiohttp's socket timeouts
        limit = f" within {timeout:g} s" if timeout is not None else ""
        return RetryableError(f"{where}: no complete answer{limit} (per-attempt timeout).")
    if isinstance(exc, aiohttp.ClientError):  # refused, reset, disconnected, truncated payload
        detail = str(exc) or "(no detail)"
        # Not connected at all (refused, no route, DNS): the replica is down, not just slow.
        code = CONNECT if isinstance(exc, aiohttp.ClientConnectorError) else None
        return RetryableError(f"{where}: {type(exc).__name__}: {detail}", code=code)
    return FatalAPIError(f"{where}: unexpected {type(exc).__name__}: {exc}")


def _classify_429(kind: str, hay: str, make: Callable[[type[APIError], str], APIError]) -> APIError:
    """Split a 429 into throttle (retry), billing (stop) and oversized request (fail row)."""
    # DashScope reuses OpenAI's `insufficient_quota` wording for its TPM throttle (PROVIDERS §2), so
    # only OpenAI-style servers treat it as billing.
    if kind != "dashscope" and any(m in hay for m in _OPENAI_QUOTA):
        return make(FatalAPIError, "The account is out of quota; fix billing, then resume.")
    if kind != "dashscope" and "requesttoolarge" in hay:
        return make(RowError, "This row alone exceeds the token-per-minute limit.")
    return make(RetryableError, "Rate limited (retryable).")


def _error_fields(
    body: bytes | str | dict[str, Any] | None,
) -> tuple[str | None, str | None, str, str | None]:
    """Return (code, type, message, body request id) from any provider's error body."""
    data: Any = body
    if isinstance(body, bytes | str):
        raw = body.strip()
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            return None, None, _clip(text), None
    if not isinstance(data, dict):
        return None, None, _clip(str(data)) if data is not None else "", None
    body_id = data.get("request_id") or data.get("id")
    err = data.get("error", data)  # vLLM/SGLang put the fields at top level
    if not isinstance(err, dict):  # Ollama: {"error": "server busy, …"}
        return None, None, _clip(str(err)), _str(body_id)
    message = err.get("message") or err.get("msg") or ""
    return _str(err.get("code")), _str(err.get("type")), _clip(str(message)), _str(body_id)


def _str(value: Any) -> str | None:
    # vLLM repeats the HTTP status as an integer `code`; only string codes carry meaning.
    return value if isinstance(value, str) and value else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _retry_after(headers: Mapping[str, str], message: str) -> float | None:
    """Return the server's requested wait in seconds, if it gave one."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - time.time())
    # OpenAI states the wait only in prose: "Please try again in 644ms."
    if match := _TRY_AGAIN.search(message):
        amount = float(match.group(1))
        return amount / 1000 if match.group(2).lower() == "ms" else amount
    return None


def retrying(
    *,
    max_attempts: int,
    max_seconds: float,
    backoff_base: float = 1.0,
    backoff_cap: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> RetryKwargs:
    """Build `tenacity.AsyncRetrying` kwargs that retry only `RetryableError`.

    Args:
        max_attempts: give up after this many attempts.
        max_seconds: give up rather than start a wait that would end past this budget.
        backoff_base: first backoff ceiling; doubles per attempt (full jitter).
        backoff_cap: largest backoff ceiling.
        sleep: awaitable sleep; tests pass a recording no-op.
        on_retry: called with (exception, wait seconds) before each wait.
    """
    if max_attempts < 1:
        msg = f"max_attempts must be at least 1, got {max_attempts}"
        raise ValueError(msg)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ceiling = min(backoff_cap, backoff_base * 2 ** (state.attempt_number - 1))
        jitter = random.uniform(0, ceiling)
        hint = exc.retry_after if isinstance(exc, APIError) else None
        return max(hint or 0.0, jitter)

    def stop(state: RetryCallState) -> bool:
        # idle_for (the sum of waits so far) stands in for elapsed time when `sleep` is a
        # no-op, so the deadline is testable without a fake clock; in real runs elapsed ≥ idle_for.
        elapsed = max(state.seconds_since_start or 0.0, state.idle_for)
        return state.attempt_number >= max_attempts or (
            elapsed + state.upcoming_sleep > max_seconds
        )

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and exc is not None:
            on_retry(exc, state.upcoming_sleep)

    return RetryKwargs(
        stop=stop,
        wait=wait,
        retry=retry_if_exception_type(RetryableError),
        sleep=sleep or asyncio.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
