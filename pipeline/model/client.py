"""Send one chat request to an OpenAI-compatible endpoint and return a `Completion` or raise.

Every failure leaves as an `APIError` subclass (see `pipeline.errors`): transport problems and
unusable bodies as `RetryableError`, HTTP errors as `retry.classify` decides, a redirect as a
`FatalAPIError` (it is never followed: it would re-send the image and prompt elsewhere).

Credentials go only in headers: the key as `Authorization: Bearer`; the base URL's "user:password"
as `Authorization: Basic` when there is no key, else as `Proxy-Authorization: Basic` (a gateway in
front of the server). Every secret is masked (`pipeline.redact`) in the body before it is parsed,
and again in every string that leaves: error messages and the completion's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

import orjson

from pipeline.errors import APIError, FatalAPIError, RetryableError
from pipeline.model.retry import classify, classify_transport
from pipeline.providers.registry import DEFAULT_TIMEOUT
from pipeline.records import ChatRequest, Completion
from pipeline.redact import Redactor, basic_token

if TYPE_CHECKING:  # aiohttp (~0.2 s to import) loads with the first session: offline runs,
    import aiohttp  # `plan` and `score` never load it

_KEEPALIVE = 30.0
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


class ChatClient(Protocol):
    """Anything that can answer a `ChatRequest` whose image (if any) is already a URL."""

    async def complete(self, request: ChatRequest, image_url: str | None) -> Completion:
        """Return the model's reply or raise an `APIError` subclass."""
        ...


def build_payload(
    model: str,
    request: ChatRequest,
    image_url: str | None,
    extra_body: Mapping[str, Any] | None = None,
    token_param: str = "max_tokens",
) -> dict[str, Any]:
    """Return the OpenAI chat-completions body: system, then user text before the image.

    A text-only request (no image URL) sends its text as a plain string: text-only models such
    as DeepSeek's reject content parts of type image_url.
    """
    user: str | list[dict[str, Any]] = request.text
    if image_url is not None:
        user = [
            {"type": "text", "text": request.text},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": user})
    payload: dict[str, Any] = {"model": model, "messages": messages}
    # Unset sampling fields stay out of the body so the provider default applies (official
    # protocol for visual_evidence_qa sends neither).
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.max_tokens is not None:
        payload[token_param] = request.max_tokens  # o-series and GPT-5: max_completion_tokens
    if extra_body:
        payload.update(extra_body)
    return payload


def auth_headers(api_key: str, url_auth: str | None) -> tuple[dict[str, str], Redactor]:
    """Return the credential headers of a request, and the redactor that masks those secrets."""
    headers: dict[str, str] = {}
    basic = basic_token(url_auth) if url_auth else None
    # Self-hosted servers often need no key; sending "Bearer " would be malformed.
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if basic:
        headers["Proxy-Authorization" if api_key else "Authorization"] = basic
    password = url_auth.partition(":")[2] if url_auth else None
    return headers, Redactor(api_key, password, basic.removeprefix("Basic ") if basic else None)


def make_session(
    concurrency: int, trace_configs: list[aiohttp.TraceConfig] | None = None
) -> aiohttp.ClientSession:
    """Return a session pooling `concurrency` connections; call it inside the running loop."""
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, keepalive_timeout=_KEEPALIVE
    )
    # No session-wide total timeout: each request sets its own, so one deadline covers one attempt.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=trace_configs,
    )


class OpenAIClient:
    """`ChatClient` for OpenAI, DashScope compatible mode, DeepSeek and self-hosted servers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str,
        url_auth: str | None = None,
        provider: str = "openai",
        timeout: float = DEFAULT_TIMEOUT,
        extra_body: Mapping[str, Any] | None = None,
        token_param: str = "max_tokens",
        on_headers: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self.on_headers = on_headers  # sees every answer's headers (the throttle's limit headers)
        self.base_url = base_url.rstrip("/")
        self.token_param = token_param
        self.model = model
        self.provider = provider
        self.timeout = timeout
        self._session = session
        self._url = f"{self.base_url}/chat/completions"
        self._extra_body = dict(extra_body or {})
        self._headers, self._redact = auth_headers(api_key, url_auth)
        self._headers.update({"Content-Type": "application/json", "Accept": "application/json"})

    def __repr__(self) -> str:
        return (
            f"OpenAIClient(provider={self.provider!r}, base_url={self.base_url!r}, "
            f"model={self.model!r}, timeout={self.timeout!r})"
        )

    async def complete(self, request: ChatRequest, image_url: str | None) -> Completion:
        """POST one chat completion; return the reply or raise an `APIError` subclass."""
        try:
            done = await self._exchange(request, image_url)
        except APIError as exc:
            # The original may quote a secret; the masked copy replaces it, chain included.
            raise self._redact.error(exc) from None
        mask, maybe = self._redact.text, self._redact.maybe
        return replace(
            done,
            text=mask(done.text),
            reasoning=maybe(done.reasoning),
            model=maybe(done.model),
            request_id=maybe(done.request_id),
            finish_reason=maybe(done.finish_reason),
        )

    async def _exchange(self, request: ChatRequest, image_url: str | None) -> Completion:
        body = build_payload(self.model, request, image_url, self._extra_body, self.token_param)
        data = orjson.dumps(body)
        where = f"{self.provider} {self._url}"
        import aiohttp  # loaded by make_session already: a lookup

        try:
            async with self._session.post(
                self._url,
                data=data,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise classify_transport(exc, where=where, timeout=self.timeout) from exc
        if self.on_headers is not None:
            self.on_headers(headers)

        raw = self._redact.bytes(raw)  # a misbehaving gateway may echo a secret
        if 300 <= status < 400:
            raise _redirected(where, status, self._url, headers.get("Location"))
        if status >= 400:
            raise classify(self.provider, status, raw, headers)
        request_id = headers.get("x-request-id")
        return parse_completion(self.provider, raw, status, headers, request_id, where)


def parse_completion(
    provider: str,
    raw: bytes,
    status: int,
    headers: Mapping[str, str],
    request_id: str | None,
    where: str,
) -> Completion:
    """Turn a 2xx body into a `Completion`; an unusable body is retryable."""
    # DeepSeek's queue sends blank lines before the JSON; only blank lines means it gave up.
    text = raw.strip()
    if not text:
        msg = f"{where}: HTTP {status} with an empty body (queue gave up?)."
        raise RetryableError(msg, status=status, request_id=request_id)
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        snippet = text[:120].decode("utf-8", "replace")
        msg = f"{where}: HTTP {status} body is not JSON: {snippet!r}"
        raise RetryableError(msg, status=status, request_id=request_id) from exc
    if not isinstance(body, dict):
        msg = f"{where}: HTTP {status} body is not a JSON object."
        raise RetryableError(msg, status=status, request_id=request_id)
    request_id = request_id or _opt_str(body.get("id"))
    if ("error" in body or body.get("object") == "error") and not body.get("choices"):
        # Some gateways wrap a provider error in a 200 (vLLM: the fields at the top level,
        # with the real status as `code`); classify it like any other error.
        code = body.get("code")
        real = code if isinstance(code, int) and 400 <= code < 600 else status
        raise classify(provider, real, body, headers)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        msg = f"{where}: HTTP {status} answer has no choices."
        raise RetryableError(msg, status=status, request_id=request_id)
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("completion_tokens_details")
    message = choices[0].get("message")
    answer, reasoning = read_message(message if isinstance(message, dict) else {})
    return Completion(
        text=answer,
        model=_opt_str(body.get("model")),
        request_id=request_id,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        reasoning=reasoning,
        finish_reason=_opt_str(choices[0].get("finish_reason")),
        reasoning_tokens=_int(details.get("reasoning_tokens") if isinstance(details, dict) else 0),
    )


def _redirected(where: str, status: int, url: str, location: str | None) -> FatalAPIError:
    """Return the error for a redirect: a configuration error naming where the API really is."""
    if not location:
        msg = f"{where}: HTTP {status} redirect with no Location: a configuration error"
        return FatalAPIError(msg, status=status)
    target = urljoin(url, location)
    msg = (
        f"{where}: HTTP {status} redirects to {target}, not followed (it would re-send the request "
        f"there): a configuration error: set --base-url (the judge's: --judge-base-url) to "
        f"{target.removesuffix('/chat/completions')}"
    )
    return FatalAPIError(msg, status=status)


def read_message(message: Mapping[str, Any]) -> tuple[str, str | None]:
    """Split an assistant message into (visible answer, thoughts or None).

    The answer is `content` (a string, a list of text parts, or null → ""). Thoughts come from
    `reasoning_content` (DeepSeek, DashScope, vLLM's reasoning parsers), `reasoning` (OpenRouter)
    or a `<think>…</think>` block opening the content; a block the token limit cut before its
    end holds the whole content, so the answer is "". An answer is never read from thoughts.
    """
    content = message.get("content")
    if isinstance(content, list):  # content parts, even for plain text
        text = "".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type", "text") in ("text", "output_text")
        )
    else:
        text = content if isinstance(content, str) else ""
    thoughts = [
        value
        for name in ("reasoning_content", "reasoning")
        if isinstance(value := message.get(name), str) and value.strip()
    ]
    answer, inline = _split_think(text)
    if inline is not None:
        thoughts.append(inline)
    return answer, "\n\n".join(thoughts) if thoughts else None


def _split_think(text: str) -> tuple[str, str | None]:
    """Return (answer, inline thoughts) for content that may open with a think block."""
    head = text.lstrip()
    if head.startswith(_THINK_OPEN):
        inner = head[len(_THINK_OPEN) :]
        thoughts, closed, rest = inner.partition(_THINK_CLOSE)
        return (rest.strip(), thoughts.strip()) if closed else ("", inner.strip())
    # Chat templates that open the block themselves leave only its end in the reply.
    thoughts, closed, rest = text.partition(_THINK_CLOSE)
    if closed and _THINK_OPEN not in thoughts:
        return rest.strip(), thoughts.strip()
    return text, None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
