"""The OpenAI Batch API on the fake server: files, batches, and lines answered like online chat.

`FakeServer.app()` adds the routes with `BatchAPI(server).add_routes(app)`:

    POST /v1/files (multipart: purpose=batch, file)    GET /v1/files/{id}/content
    POST /v1/batches {input_file_id, endpoint, completion_window}
    GET  /v1/batches/{id}    GET /v1/batches (newest first; ?after=ID&limit=N)
    POST /v1/batches/{id}/cancel

A batch is `validating`, then `in_progress`, and ends `delay` seconds after it was created, on the
server's clock (`FakeConfig.clock`): its lines are answered when a client first looks at it after
that, by the online chat code (`FakeServer._reply`/`_completion`, so usage comes back), each one
recorded in the ledger under the path `/v1/batches/{id}` (so `duplicates()` and `paid` count batch
lines as they count chat requests). Output and error lines come back shuffled. `BatchConfig` sets
the delay, the share of lines that fail on their first sight (chosen by a hash of the custom_id:
half as `response.status_code` 500, half as a line `error` {code, message}), batches that end
`expired` with half their lines unanswered, the largest upload (413 above it), and creates
whose answer is lost (a 500 after the batch was made). A user-text
marker of `FakeConfig.content_faults` naming an error outcome (e.g. 400_inspection) fails its
line with that error every time.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from fakeserver import FakeServer

ENDPOINT = "/v1/chat/completions"
_VALIDATING = 0.1  # share of the delay a new batch spends `validating`


@dataclass
class BatchConfig:
    """How the Batch API behaves; mutable like FakeConfig."""

    delay: float = 0.2  # seconds from creation to the end, on the server's clock
    fail_rate: float = 0.0  # share of custom_ids whose line fails the first time it is seen
    expire: int = 0  # the first N batches end `expired`, only their first half answered
    max_file_bytes: int = 200_000_000  # a larger upload gets 413
    lose_creates: int = 0  # the first N creates make the batch, then answer 500 (answer lost)


@dataclass
class Batch:
    """One batch and what became of it."""

    id: str
    input_file_id: str
    created: float  # server clock
    created_at: int  # unix seconds, as the API reports it
    expire: bool
    status: str = "validating"
    cancelled: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    errors: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        """Return the batch object as the API sends it."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "request_counts": dict(self.counts),
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
        }


class BatchAPI:
    """The Batch API state of one fake server: uploaded files, batches, lines failed once."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.failed_once: set[str] = set()  # custom_ids that already failed their first sight

    @property
    def config(self) -> BatchConfig:
        """Return the server's batch settings."""
        return self.server.config.batch

    def add_routes(self, app: web.Application) -> None:
        """Add the Batch API routes to the server's app."""
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    def _refused(self, request: web.Request) -> web.Response | None:
        key = self.server.config.expected_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        purpose, data, size = "", bytearray(), 0
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                while chunk := await part.read_chunk(1 << 20):
                    size += len(chunk)
                    if size <= self.config.max_file_bytes:
                        data += chunk  # past the limit: read on, keep nothing
        if purpose != "batch":
            return _error(400, "invalid_purpose", f"purpose must be 'batch', not {purpose!r}")
        if size > self.config.max_file_bytes:
            limit = self.config.max_file_bytes
            return _error(413, "file_too_large", f"File of {size} bytes exceeds {limit} bytes.")
        file_id = f"file-batch-{uuid.uuid4().hex[:20]}"
        self.files[file_id] = bytes(data)
        body = {"id": file_id, "object": "file", "bytes": size, "purpose": "batch"}
        return web.json_response(body)

    async def _content(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, "file_not_found", "No such file.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        try:
            params = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            return _error(400, "invalid_request", "body is not a JSON object")
        file_id = params.get("input_file_id")
        if file_id not in self.files:
            return _error(404, "file_not_found", f"No such file: {file_id!r}")
        if params.get("endpoint") != ENDPOINT or params.get("completion_window") != "24h":
            return _error(400, "invalid_request", "endpoint or completion_window not supported")
        clock = self.server.config.clock
        batch = Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            input_file_id=str(file_id),
            created=clock(),
            created_at=int(time.time()),
            expire=len(self.batches) < self.config.expire,
        )
        lines = self._lines(batch)
        batch.counts["total"] = len(lines)
        self.batches[batch.id] = batch
        self.server.ledger.batches += 1
        self.server.ledger.batch_lines += len(lines)
        if self.config.lose_creates > 0:
            self.config.lose_creates -= 1
            return _error(500, "server_error", "The server had an error; the batch was made.")
        return web.json_response(batch.json())

    async def _get(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "batch_not_found", "No such batch.")
        self._advance(batch, request)
        return web.json_response(batch.json())

    async def _list(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        newest = list(reversed(self.batches.values()))
        if after := request.query.get("after"):
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = newest[:limit]
        for batch in page:
            self._advance(batch, request)
        body = {
            "object": "list",
            "data": [b.json() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(newest) > limit,
        }
        return web.json_response(body)

    async def _cancel(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "batch_not_found", "No such batch.")
        if batch.status in ("validating", "in_progress"):
            batch.cancelled, batch.status = True, "cancelling"
        return web.json_response(batch.json())

    def _lines(self, batch: Batch) -> list[dict[str, Any]]:
        """Return the input file's lines; a bad one fails the batch (recorded in its errors)."""
        lines = []
        for number, raw in enumerate(self.files[batch.input_file_id].splitlines(), 1):
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = None
            if not (isinstance(line, dict) and line.get("url") == ENDPOINT and "custom_id" in line):
                batch.errors.append({"code": "invalid_line", "message": "bad line", "line": number})
                batch.status = "failed"
                continue
            lines.append(line)
        return lines

    def _advance(self, batch: Batch, request: web.Request) -> None:
        """Move the batch along the server's clock; answer its lines when it ends."""
        if batch.status not in ("validating", "in_progress", "cancelling"):
            return
        elapsed = self.server.config.clock() - batch.created
        if batch.cancelled:
            self._finish(batch, request, answered=0, status="cancelled")
        elif elapsed >= self.config.delay:
            lines = batch.counts["total"]
            half = lines // 2 if batch.expire else lines
            self._finish(batch, request, answered=half, status="expired" if batch.expire else "")
        elif elapsed >= self.config.delay * _VALIDATING:
            batch.status = "in_progress"

    def _finish(self, batch: Batch, request: web.Request, *, answered: int, status: str) -> None:
        lines = self._lines(batch)
        out: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for number, line in enumerate(lines):
            if number >= answered:
                why = "expired" if status == "expired" else "cancelled"
                message = f"This line was not executed before the batch was {why}."
                errors.append(_line(line, error={"code": f"batch_{why}", "message": message}))
                continue
            done, failed = self._answer(batch, request, line)
            (errors if failed else out).append(done)
        rng = random.Random(batch.id)
        rng.shuffle(out)
        rng.shuffle(errors)
        batch.counts.update(completed=len(out), failed=len(errors))
        if out:
            batch.output_file_id = self._store(out)
        if errors:
            batch.error_file_id = self._store(errors)
        batch.status = status or "completed"

    def _answer(
        self, batch: Batch, request: web.Request, line: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Answer one line as the chat route would; return (output line, failed)."""
        server, cid = self.server, str(line["custom_id"])
        body: dict[str, Any] = line["body"] if isinstance(line.get("body"), dict) else {}
        entry = server._record(request, body)
        entry.path, entry.custom_id = f"/v1/batches/{batch.id}", cid
        fault = _content_fault(server, entry.user_text)
        if fault is not None:
            status, etype, code, message = server.config.error_bodies[fault]
            entry.outcome, entry.status = fault, status
            error = {"error": {"message": message, "type": etype, "code": code}}
            return _line(line, status=status, body=error), True
        if self._fails(cid):
            self.failed_once.add(cid)
            entry.outcome, entry.status = "500", 500
            message = "The server had an error while processing your request."
            if _fraction(f"form:{cid}") < 0.5:
                error = {"error": {"message": message, "type": "server_error", "code": None}}
                return _line(line, status=500, body=error), True
            return _line(line, error={"code": "server_error", "message": message}), True
        reply = server._reply("ok", body, entry)
        entry.outcome, entry.status, entry.shape = "ok", 200, reply.shape
        entry.prompt_tokens = server._billed(body)  # billed as the chat route bills
        completion = orjson.loads(
            server._completion(body, reply, prompt_tokens=entry.prompt_tokens, empty=False)
        )
        return _line(line, status=200, body=completion), False

    def _fails(self, cid: str) -> bool:
        rate = self.config.fail_rate
        seed = self.server.config.seed
        return cid not in self.failed_once and _fraction(f"{seed}:{cid}") < rate

    def _store(self, lines: list[dict[str, Any]]) -> str:
        file_id = f"file-batch_output-{uuid.uuid4().hex[:20]}"
        self.files[file_id] = b"".join(orjson.dumps(x) + b"\n" for x in lines)
        return file_id


def _line(
    line: dict[str, Any],
    *,
    status: int | None = None,
    body: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return an output or error file line for one input line."""
    response = None
    if status is not None:
        response = {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:20]}",
        "custom_id": line["custom_id"],
        "response": response,
        "error": error,
    }


def _content_fault(server: FakeServer, text: str) -> str | None:
    faults = server.config.content_faults
    fault = faults(text) if callable(faults) else None
    if not callable(faults):
        fault = next((kind for marker, kind in faults.items() if marker in text), None)
    return fault if fault in server.config.error_bodies else None


def _fraction(text: str) -> float:
    """Return a number in [0, 1) fixed by `text`."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)
