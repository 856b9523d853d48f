"""HTTP calls of the providers' Batch API (OpenAI's; DashScope's OpenAI-compatible copy).

    upload(file) ──▶ file id ──▶ create(file id) ──▶ batch ──▶ get(batch id) … ──▶ download(file id)

Credentials go in the same headers as online calls (`client.auth_headers`), and every body is
masked before it is read. A failed call is classified as online ones are (`retry.classify`) and
transient failures are retried with the same backoff; 401, 404 (no Batch API at this URL) and
billing errors stop the run. An input file (up to 200 MB of base64 images) is streamed from
disk; output files hold only answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from tenacity import AsyncRetrying

from pipeline.errors import APIError, FatalAPIError, RetryableError
from pipeline.model.client import auth_headers, parse_completion
from pipeline.model.retry import classify, classify_transport, retrying
from pipeline.records import Completion

if TYPE_CHECKING:  # aiohttp loads with the session (client.make_session): a run that makes
    import aiohttp  # no HTTP call never loads it

ENDPOINT = "/v1/chat/completions"  # every line's url, and the batch's endpoint
WINDOW = "24h"  # the only completion window OpenAI and DashScope accept
TERMINAL = ("completed", "expired", "cancelled", "failed")
_RETRYABLE_LINE = ("batch_expired", "batch_cancelled", "server_error", "internal_error")
_CHUNK = 1 << 20
_LIST_PAGES = 10  # pages of the batch list searched for a batch adopted on a rerun
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the provider says about one batch."""

    id: str
    status: str  # validating, in_progress, finalizing, completed, expired, cancelling, …
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str = ""  # why a `failed` batch failed (its validation errors)

    @classmethod
    def from_json(cls, data: Any) -> BatchInfo:
        """Read a batch object; a body without an id is a retryable garbage answer."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            msg = "batch API answer is not a batch object"
            raise RetryableError(msg)
        counts = _dict(data.get("request_counts"))
        listed = _dict(data.get("errors")).get("data")
        listed = listed if isinstance(listed, list) else []
        said = "; ".join(
            f"line {e.get('line')}: {e.get('message')}" for e in listed if isinstance(e, dict)
        )
        return cls(
            id=data["id"],
            status=str(data.get("status") or ""),
            input_file_id=str(data.get("input_file_id") or ""),
            output_file_id=_opt(data.get("output_file_id")),
            error_file_id=_opt(data.get("error_file_id")),
            total=_count(counts.get("total")),
            completed=_count(counts.get("completed")),
            failed=_count(counts.get("failed")),
            errors=said,
        )


class BatchClient:
    """The Batch API of one OpenAI-compatible base URL."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        url_auth: str | None = None,
        provider: str = "openai",
        timeout: float = 60.0,
        max_attempts: int = 7,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.timeout = timeout
        self._session = session
        self._headers, self._redact = auth_headers(api_key, url_auth)
        import aiohttp

        # A long answer (an upload, a download) may take long; a silent socket may not.
        self._slow = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._retry = retrying(max_attempts=max_attempts, max_seconds=3600.0, sleep=sleep)

    def __repr__(self) -> str:
        return f"BatchClient(provider={self.provider!r}, base_url={self.base_url!r})"

    async def upload(self, path: Path) -> str:
        """Upload a JSONL input file with purpose=batch; return its file id."""

        async def call() -> str:
            import aiohttp

            with path.open("rb") as f:
                form = aiohttp.FormData()
                form.add_field("purpose", "batch")
                form.add_field("file", f, filename=path.name, content_type="application/jsonl")
                data = await self._call("POST", "/files", data=form, slow=True)
            file_id = _dict(data).get("id")
            if not isinstance(file_id, str):
                msg = f"{self._where('/files')}: upload answer has no file id"
                raise RetryableError(msg)
            return file_id

        return await self._retried(call)

    async def submit(self, input_file_id: str, *, look_first: bool = False) -> BatchInfo:
        """Return the batch of an uploaded file: the one already made of it, else a new one.

        A create whose answer was lost may have made the batch, so every attempt after the
        first (and the first too with `look_first`, on a rerun) looks for it before creating.
        """
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": WINDOW}
        looked = [look_first]

        async def call() -> BatchInfo:
            if looked[0] and (found := await self.find(input_file_id)) is not None:
                return found
            looked[0] = True
            return BatchInfo.from_json(await self._call("POST", "/batches", json=body))

        return await self._retried(call)

    async def get(self, batch_id: str) -> BatchInfo:
        """Return the batch's status and counts."""

        async def call() -> BatchInfo:
            return BatchInfo.from_json(await self._call("GET", f"/batches/{batch_id}"))

        return await self._retried(call)

    async def find(self, input_file_id: str) -> BatchInfo | None:
        """Return the newest batch made of `input_file_id`, or None (the list, page by page)."""
        after: str | None = None
        for _ in range(_LIST_PAGES):
            route = "/batches?limit=100" + (f"&after={after}" if after else "")
            page = _dict(await self._retried(lambda r=route: self._call("GET", r)))  # type: ignore[misc]
            items = page.get("data")
            if not isinstance(items, list):
                return None
            for item in items:
                if isinstance(item, dict) and item.get("input_file_id") == input_file_id:
                    return BatchInfo.from_json(item)
            if not page.get("has_more") or not items:
                return None
            after = _opt(page.get("last_id")) or _opt(items[-1].get("id"))
        return None

    async def download(self, file_id: str) -> bytes:
        """Return an output or error file's content (answers only, no images: small)."""
        route = f"/files/{file_id}/content"
        data = await self._retried(lambda: self._call("GET", route, slow=True, raw=True))
        return bytes(data)

    async def _retried(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async for attempt in AsyncRetrying(**self._retry):
            with attempt:
                return await call()
        msg = "unreachable: AsyncRetrying re-raises the last error"
        raise AssertionError(msg)

    def _where(self, route: str) -> str:
        return f"{self.provider} batch API {self.base_url}{route.split('?')[0]}"

    async def _call(
        self, method: str, route: str, *, slow: bool = False, raw: bool = False, **kw: Any
    ) -> Any:
        """Send one call; return the parsed JSON (or the bytes) or raise a classified error."""
        url, where = f"{self.base_url}{route}", self._where(route)
        import aiohttp

        timeout = self._slow if slow else aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._session.request(
                method, url, headers=self._headers, timeout=timeout, allow_redirects=False, **kw
            ) as resp:
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._redact.error(
                classify_transport(exc, where=where, timeout=self.timeout)
            ) from None
        data = self._redact.bytes(bytes(body))
        if 300 <= status < 400:  # never followed: it would send the file elsewhere
            msg = f"{where}: HTTP {status} redirect, not followed: check the base URL"
            raise FatalAPIError(msg, status=status)
        if status >= 400:
            error = classify(self.provider, status, data, headers)
            error.message = f"{where}: {error.message}"
            raise self._redact.error(error)
        if raw:
            return data
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = f"{where}: HTTP {status} body is not JSON"
            raise RetryableError(msg, status=status) from None


def read_line(provider: str, item: dict[str, Any], where: str) -> Completion | APIError:
    """Return the answer of an output file line, or the error of an error file line.

    A line with a response carries the HTTP status the online call would have had, classified
    the same way; a line with only an `error` {code, message} is transient when the batch ran
    out of time or was cancelled (or the code says server error), else a failure of the row.
    """
    response, error = item.get("response"), item.get("error")
    if isinstance(response, dict) and isinstance(status := response.get("status_code"), int):
        body = response.get("body") if isinstance(response.get("body"), dict) else None
        if status != 200 or body is None:
            return classify(provider, status if status != 200 else 500, body)
        try:
            raw = orjson.dumps(body)
            return parse_completion(provider, raw, 200, {}, _opt(response.get("request_id")), where)
        except APIError as exc:
            return exc
    err = error if isinstance(error, dict) else {}
    code = str(err.get("code") or "")
    return classify(provider, 500 if code in _RETRYABLE_LINE else 400, {"error": err})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
