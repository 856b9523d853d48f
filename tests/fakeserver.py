"""An OpenAI-compatible chat server for tests and benchmarks, with scripted faults and a ledger.

In tests: `async with running(FakeConfig(...)) as server:` (or the `fake_server` fixture), then
point a client at `server.url` (ends in /v1) and read `server.ledger`. `server.config` is mutable:
flip `script`, `fault_rate`, `expected_key`… between requests.

As a process: `python tests/fakeserver.py --port 0 --latency 0.5 --fault-rate 0.1` prints
`listening on http://127.0.0.1:PORT` and serves until SIGINT/SIGTERM; `GET /_ledger` returns counts.

Each request's outcome is chosen in this order: `redirect` (every request, e.g. 307 to
`redirect_to`) → wrong key (401) → wrong `expected_basic` credentials (407 in Proxy-Authorization
after a Bearer key, else 401) → RPM window full (429) → `content_faults` (marker in the user text) →
next item of `script` → `fault_rate` draw → `default_outcome` ("ok").

Besides the faults, an outcome can name a reply shape (`fakereplies.SHAPES`): reasoning thoughts in
`reasoning_content`, `reasoning` or an inline `<think>` block, length or content-filter cut-offs,
refusals, null or list content, no usage, and HTTP 200 error bodies. `reasoning` and `think_tokens`
turn the server into a reasoning model for every "ok" answer (see `FakeConfig`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import random
import re
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from fakebatch import BatchAPI, BatchConfig
from fakebehaviour import BEHAVIOURS, Behaviour, make_behaviour
from fakebilling import BILLING, qwen_prompt_tokens
from fakelooks import BEHAVIOURS as LOOKS
from fakelooks import behaviour as looks
from fakereplies import (
    ERROR_200_BODIES,
    PAID_SHAPES,
    REASONING_STYLES,
    SHAPES,
    Reply,
    budget,
    mode_reply,
    shape_reply,
    wrong_letters,
)

# Outcomes a script, a content fault or a fault_rate draw can name. SUCCESS: what a provider bills,
# including the reply shapes that carry no usable answer (length, content_filter, refusal…).
SUCCESS = ("ok", "blank_json", *PAID_SHAPES)
FAULTS = (
    "429",  # rate limited, with Retry-After
    "429_bare",  # rate limited, no Retry-After
    "500",
    "503",
    "drop",  # close the connection without answering
    "hang",  # never answer (until the client gives up or the server stops)
    "garbage",  # 200, body not JSON
    "empty",  # 200, empty body
    "blank",  # 200, only blank lines (DeepSeek queue gave up)
    "empty_choices",  # 200, "choices": []
    "blank_json",  # 200, blank lines then valid JSON (DeepSeek queued): a success
    "401",  # OpenAI-style invalid key
    "402",  # DeepSeek Insufficient Balance
    "429_quota",  # OpenAI insufficient_quota (billing)
    "429_throttle",  # DashScope insufficient_quota (a TPM throttle)
    "400_inspection",  # DashScope DataInspectionFailed
    "400_arrearage",  # DashScope Arrearage
    "400_too_large",  # DashScope image too large
    "407",  # a proxy refused the Proxy-Authorization credentials
    "echo_auth",  # 200 whose answer, thoughts, model and id echo the credentials, JSON-escaped
    "echo_auth_401",  # 401 whose message and request_id echo the credentials, JSON-escaped
    *SHAPES,  # reply shapes: see fakereplies.py
)
OUTCOMES = ("ok", *FAULTS)
DEFAULT_FAULT_KINDS = ("429", "500", "503", "drop")
_HANG_LIMIT = 600.0  # a hung request gives up on its own after this, whatever happens

# outcome → (status, error.type, error.code, error.message), as the providers send them.
ErrorBody = tuple[int, str, str | None, str]
ERROR_BODIES: dict[str, ErrorBody] = {
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "429_bare": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "500": (500, "server_error", None, "The server had an error while processing your request."),
    "503": (503, "server_error", "server_is_overloaded", "The server is overloaded."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "407": (407, "proxy_error", None, "Proxy Authentication Required"),
    "402": (402, "unknown_error", "invalid_request_error", "Insufficient Balance"),
    "429_quota": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "429_throttle": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details. "
        "For details, see: error-code#token-limit",
    ),
    "400_inspection": (
        400,
        "data_inspection_failed",
        "data_inspection_failed",
        "<400> InternalError.Algo.DataInspectionFailed: Input or output data may contain "
        "inappropriate content.",
    ),
    "400_arrearage": (
        400,
        "Arrearage",
        "Arrearage",
        "Access denied, please make sure your account is in good standing.",
    ),
    "400_too_large": (
        400,
        "invalid_request_error",
        "invalid_parameter_error",
        "Multimodal file size is too large",
    ),
}
NO_RETRY_AFTER = ("429_bare",)  # 429 outcomes sent without a Retry-After header

_OPTION = re.compile(r"^\s*([A-H])[.)]\s+\S", re.MULTILINE)
_REPORTS = (
    "The image shows normal anatomical structures without evidence of an acute abnormality.",
    "There is a focal hyperdense lesion with mild surrounding edema; no midline shift.",
    "Bilateral patchy opacities are present, more prominent in the lower zones.",
    "A well-defined mass is seen with smooth margins; adjacent structures are preserved.",
)

ContentFaults = Mapping[str, str] | Callable[[str], str | None]


@dataclass
class FakeConfig:
    """How the server behaves; mutable so a test can change it between requests."""

    latency: float = 0.0  # seconds before answering
    jitter: float = 0.0  # plus uniform(0, jitter)
    fault_rate: float = 0.0  # share of requests that get a fault drawn from fault_kinds
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    seed: int = 0
    script: list[str] = field(default_factory=list)  # consumed one outcome per request
    content_faults: ContentFaults = field(default_factory=dict)  # user-text marker → outcome
    retry_after: float = 1.0  # Retry-After seconds sent with every 429
    retry_after_header: bool = True  # False: no 429 (RPM window or scripted) has Retry-After
    rpm: int | None = None  # accepted requests per minute, counted over a sliding window
    # The window's seconds: 60 lets a minute's allowance through at once; 1 enforces rpm/60 per
    # second (DashScope's way).
    rpm_window: float = 60.0
    # OpenAI's x-ratelimit-{limit,remaining,reset}-requests on every answer (with `rpm`)
    ratelimit_headers: bool = False
    expected_key: str | None = None  # when set, any other Bearer token gets 401
    # "user:password": when set, Basic credentials must come in Proxy-Authorization after a Bearer
    # key (else 407), or in Authorization without one (else 401)
    expected_basic: str | None = None
    redirect: int | None = None  # when set, every request gets this status and `redirect_to`
    redirect_to: str = ""
    served_model: str | None = None  # reported model; None echoes the requested one
    answer_fn: Callable[[dict[str, Any]], str | None] | None = None  # None: default_answer
    replies: str = "plain"  # "plain" | "varied" (see CHOICE_PHRASINGS)
    judge_reply: str = "letter"  # one of JUDGE_REPLIES
    clock: Callable[[], float] = time.monotonic  # for the RPM window and ledger times
    # outcome name → (status, error.type, error.code, error.message); add entries for new forms
    error_bodies: dict[str, ErrorBody] = field(default_factory=lambda: dict(ERROR_BODIES))
    default_outcome: str = "ok"  # for a request nothing else picked, e.g. "list_content"
    # A reasoning model, for every "ok" answer: its thoughts go to "field" (reasoning_content),
    # "openrouter" (reasoning), "inline" (<think>…</think> before the answer) or, with "none",
    # nowhere (hidden, as OpenAI's o-series: only usage.completion_tokens_details).
    reasoning: str = "none"
    # > 0: that many thought tokens precede every answer; a request whose max_tokens (or
    # max_completion_tokens) is below thoughts + answer gets finish_reason "length", no answer
    # (content "", or the unclosed <think> when inline) and completion_tokens = its max. 0: with a
    # reasoning style, short thoughts and no truncation; with "none", plain answers.
    think_tokens: int = 0
    # usage.prompt_tokens: "flat" (text/4 + 85) or "qwen28", as DashScope bills Qwen2.5-VL: the
    # images received, decoded and counted by the 28-px rule, plus text pieces (fakebilling.py)
    bill: str = "flat"
    batch: BatchConfig = field(default_factory=BatchConfig)  # the Batch API's (fakebatch.py)
    # A model of known behaviour (fakebehaviour.py): right with a planted probability
    behaviour: Behaviour | None = None

    def __post_init__(self) -> None:
        if self.bill not in BILLING:
            msg = f"bill must be one of {', '.join(BILLING)}, not {self.bill!r}"
            raise ValueError(msg)
        if self.reasoning not in REASONING_STYLES:
            msg = f"reasoning must be one of {', '.join(REASONING_STYLES)}, not {self.reasoning!r}"
            raise ValueError(msg)


@dataclass
class LedgerEntry:
    """One request as the server saw it (never the key itself)."""

    received: float  # config.clock() when it arrived
    path: str
    model: str | None
    messages_hash: str  # sha256 of the canonical messages JSON
    has_auth: bool  # an Authorization header was present
    auth: str  # its scheme ("Bearer", "Basic") or ""
    proxy_auth: str  # the scheme of Proxy-Authorization, or ""
    system: str
    user_text: str
    content_types: tuple[str, ...]  # user content part types, in order
    params: dict[str, Any]  # every body field except messages
    outcome: str = "pending"  # one of OUTCOMES, or "bad_request"; set before the latency wait
    status: int | None = None  # None: no answer sent (drop, hang, client gave up first)
    # The reply shape of a completion sent: the outcome, or for "ok"/"blank_json" under a reasoning
    # mode the shape it produced ("reasoning", "think_inline", "length_empty", "think_unclosed"…).
    shape: str = ""
    prompt_tokens: int = 0  # what usage.prompt_tokens billed (0: no completion sent)
    custom_id: str = ""  # a Batch API line's custom_id ("" for the chat route)
    answer: str = ""  # the answer a completion sent carried (before any reply shape)

    @property
    def paid(self) -> bool:
        """Return whether a successful answer was sent for this request."""
        return self.outcome in SUCCESS and self.status == 200


@dataclass
class Ledger:
    """Every request received, plus concurrency counters."""

    entries: list[LedgerEntry] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    batches: int = 0  # batches created through the Batch API
    batch_lines: int = 0  # the lines of those batches

    @property
    def paid(self) -> int:
        """Count successful answers actually sent (what a provider would bill)."""
        return sum(e.paid for e in self.entries)

    def count(self, outcome: str | None = None) -> int:
        """Count requests, all or those with one outcome."""
        return sum(outcome is None or e.outcome == outcome for e in self.entries)

    def duplicates(self, *, paid_only: bool = True) -> int:
        """Count requests whose messages were already sent before (paid ones only by default)."""
        seen: set[str] = set()
        dups = 0
        for e in self.entries:
            if paid_only and not e.paid:
                continue
            dups += e.messages_hash in seen
            seen.add(e.messages_hash)
        return dups

    def summary(self) -> dict[str, Any]:
        """Return counts as a JSON-able dict."""
        outcomes: dict[str, int] = {}
        shapes: dict[str, int] = {}
        auth: dict[str, int] = {}  # "Authorization scheme / Proxy-Authorization scheme" → count
        for e in self.entries:
            outcomes[e.outcome] = outcomes.get(e.outcome, 0) + 1
            schemes = f"{e.auth or '-'} / {e.proxy_auth or '-'}"
            auth[schemes] = auth.get(schemes, 0) + 1
            if e.shape:
                shapes[e.shape] = shapes.get(e.shape, 0) + 1
        return {
            "requests": len(self.entries),
            "paid": self.paid,
            "duplicates": self.duplicates(),
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": sum(e.prompt_tokens for e in self.entries if e.paid),
            "in_flight": self.in_flight,
            "batches": self.batches,
            "batch_lines": self.batch_lines,
            "outcomes": outcomes,
            "shapes": shapes,
            "auth": auth,
        }


# Reply styles: "plain" answers bare letters; "varied" wraps the same letter in the phrasings models
# actually use (each listed in issue 4), chosen per request by a hash of the prompt.
CHOICE_PHRASINGS = (
    "{L}",
    "{L}.",
    "({L})",
    "**{L}**",
    "Answer: {L}",
    "The answer is {L}.",
    "{L}) {T}",
    "{L}. {T} because the imaging appearance is typical.",
    "{T}",
    "```\n{L}\n```",
    "\\boxed{{{L}}}",
    "The correct option is {L}",
    "I think the answer is ({L}) {T}.",
    "Final answer: **{L}. {T}**",
)
CHAIN_PHRASINGS = (
    "{0},{1},{2},{3}",
    "{0}, {1}, {2}, {3}",
    "['{0}','{1}','{2}','{3}']",
    "1. {0} 2. {1} 3. {2} 4. {3}",
    "Answers: {0}, {1}, {2}, {3}",
    "**{0}, {1}, {2}, {3}**",
)
# How the fake judge answers the official mapper prompt: the letter alone, the full option
# ("C. CT", as the official mapper stores it), lower case, or nothing usable.
JUDGE_REPLIES = ("letter", "option", "lower", "garbage")
MAPPER_MARKER = "Other model's answer: "
KEYWORD_MARKER = "comma-separated list of visually identifiable"
_OPTION_TEXT = re.compile(r"^\s*([A-H])[.)]\s+(.+?)\s*$", re.MULTILINE)


def default_answer(payload: dict[str, Any], config: FakeConfig | None = None) -> str:
    """Answer deterministically: a letter, a comma-separated chain, a report, or a judge reply."""
    config = config or FakeConfig()
    system, text, _ = _split_messages(payload)
    if MAPPER_MARKER in text:
        return _judge_reply(text, config.judge_reply)
    if KEYWORD_MARKER in text:
        return _keywords(text)
    if config.behaviour is not None and (said := config.behaviour.answer(payload, text)):
        return said
    blocks = _option_blocks(text)
    digest = hashlib.sha256(text.encode()).digest()
    varied = config.replies == "varied"
    if "comma" in system.lower() or len(blocks) > 1:
        blocks = blocks or [list("ABCD")] * 4
        letters = [b[digest[i % len(digest)] % len(b)] for i, b in enumerate(blocks)]
        if varied and len(letters) == 4:
            return CHAIN_PHRASINGS[digest[5] % len(CHAIN_PHRASINGS)].format(*letters)
        return ",".join(letters)
    if blocks:
        letter = blocks[0][digest[0] % len(blocks[0])]
        if not varied:
            return letter
        options = dict(_OPTION_TEXT.findall(text))
        phrasing = CHOICE_PHRASINGS[digest[6] % len(CHOICE_PHRASINGS)]
        return phrasing.format(L=letter, T=options.get(letter, letter))
    return _REPORTS[digest[0] % len(_REPORTS)]


def _judge_reply(prompt: str, style: str) -> str:
    """Map the other model's answer to the option whose text it mentions (else the first)."""
    listed = prompt.split("Options:", 1)[-1].split(MAPPER_MARKER)[0]
    options: list[tuple[str, str]] = _OPTION_TEXT.findall(listed)
    said = prompt.split(MAPPER_MARKER, 1)[1].split("\n\nInstruction:")[0].lower()
    letter, text = next(((k, t) for k, t in options if t.lower() in said), options[0])
    return {"letter": letter, "option": f"{letter}. {text}", "lower": letter.lower()}.get(
        style, "I am not sure what the model meant."
    )


def _keywords(prompt: str) -> str:
    """Return the report's longer words as a comma-separated keyword list."""
    body = prompt.split("\n\n")[1] if prompt.count("\n\n") >= 2 else prompt
    words = [w.strip(".,;:()").lower() for w in body.split()]
    return ", ".join(dict.fromkeys(w for w in words if len(w) >= 5))


def _option_blocks(text: str) -> list[list[str]]:
    """Group option letters into questions: a letter not after the previous one starts a new one."""
    blocks: list[list[str]] = []
    for letter in _OPTION.findall(text):
        if not blocks or letter <= blocks[-1][-1]:
            blocks.append([])
        blocks[-1].append(letter)
    return blocks


def _split_messages(payload: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """Return (system text, user text, user content part types)."""
    system, texts, types = "", [], []
    for msg in payload.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        role = msg.get("role") if isinstance(msg, dict) else None
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if not isinstance(part, dict):
                continue
            if role == "system":
                system += str(part.get("text", ""))
            elif role == "user":
                types.append(str(part.get("type")))
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
    return system, "\n".join(texts), tuple(types)


class FakeServer:
    """The running app's state: config, ledger, and the URL to reach it."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.ledger = Ledger()
        self.root = ""  # http://host:port, set once listening
        self._rng = random.Random(config.seed)
        self._window: deque[float] = deque()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        """Return the base URL a client should use (ends in /v1)."""
        return f"{self.root}/v1"

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/_ledger", self._ledger)
        BatchAPI(self).add_routes(app)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._closing.set()  # releases hung handlers before aiohttp waits for them

    async def _ledger(self, _request: web.Request) -> web.Response:
        body = orjson.dumps(self.ledger.summary())
        return web.Response(body=body, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        ledger = self.ledger
        ledger.in_flight += 1
        ledger.max_in_flight = max(ledger.max_in_flight, ledger.in_flight)
        try:
            try:
                payload = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                payload = None
            if not isinstance(payload, dict):
                payload = {}
            entry = self._record(request, payload)
            if self.config.redirect is not None:
                entry.outcome, entry.status = "redirect", self.config.redirect
                location = {"Location": self.config.redirect_to}
                return web.Response(status=self.config.redirect, headers=location)
            if not isinstance(payload.get("messages"), list):
                entry.outcome, entry.status = "bad_request", 400
                return web.Response(status=400, text="Invalid Format: no messages")
            if gated := self._gate(request):
                outcome, retry_after = gated  # answered at once, as a provider's front door does
            else:
                outcome, retry_after = self._pick(entry), None
            entry.outcome = outcome
            if gated is None:
                await self._delay()  # a client that gives up here leaves status None
            response = await self._answer(request, entry, payload, retry_after)
            entry.status = response.status
            return response
        finally:
            ledger.in_flight -= 1

    def _record(self, request: web.Request, payload: dict[str, Any]) -> LedgerEntry:
        system, text, types = _split_messages(payload)
        messages = orjson.dumps(payload.get("messages"), option=orjson.OPT_SORT_KEYS)
        entry = LedgerEntry(
            received=self.config.clock(),
            path=request.path,
            model=payload.get("model"),
            messages_hash=hashlib.sha256(messages).hexdigest(),
            has_auth="Authorization" in request.headers,
            auth=request.headers.get("Authorization", "").partition(" ")[0],
            proxy_auth=request.headers.get("Proxy-Authorization", "").partition(" ")[0],
            system=system,
            user_text=text,
            content_types=types,
            params={k: v for k, v in payload.items() if k != "messages"},
        )
        self.ledger.entries.append(entry)
        return entry

    def _gate(self, request: web.Request) -> tuple[str, float | None] | None:
        """Return (outcome, Retry-After) when the key or the RPM window rejects the request."""
        cfg = self.config
        expected = f"Bearer {cfg.expected_key}"
        if cfg.expected_key is not None and request.headers.get("Authorization") != expected:
            return "401", None
        if cfg.expected_basic is not None:
            basic = "Basic " + base64.b64encode(cfg.expected_basic.encode()).decode()
            if request.headers.get("Authorization", "").startswith("Bearer "):
                if request.headers.get("Proxy-Authorization") != basic:
                    return "407", None
            elif request.headers.get("Authorization") != basic:
                return "401", None
        if cfg.rpm is not None:
            now, span = cfg.clock(), cfg.rpm_window
            self._expire(now)
            if len(self._window) >= self._allowed():
                return "429", max(1.0, float(math.ceil(self._window[0] + span - now)))
            self._window.append(now)  # only accepted requests count, as at real providers
        return None

    def _allowed(self) -> int:
        """Return how many requests the RPM window accepts."""
        cfg = self.config
        return max(1, round((cfg.rpm or 0) * cfg.rpm_window / 60.0))

    def _expire(self, now: float) -> None:
        while self._window and self._window[0] <= now - self.config.rpm_window:
            self._window.popleft()

    def limit_headers(self) -> dict[str, str]:
        """Return OpenAI's x-ratelimit-*-requests headers for the window as it stands now."""
        cfg = self.config
        if cfg.rpm is None or not cfg.ratelimit_headers:
            return {}
        now = cfg.clock()
        self._expire(now)
        # As OpenAI means it: the time until the whole allowance is back, not the next request.
        reset = self._window[-1] + cfg.rpm_window - now if self._window else 0.0
        return {
            "x-ratelimit-limit-requests": str(cfg.rpm),
            "x-ratelimit-remaining-requests": str(max(0, self._allowed() - len(self._window))),
            "x-ratelimit-reset-requests": f"{max(0.0, reset) * 1000:.0f}ms",
        }

    def _pick(self, entry: LedgerEntry) -> str:
        """Choose the outcome of an accepted request."""
        cfg = self.config
        if fault := _content_fault(cfg.content_faults, entry.user_text):
            return fault
        if cfg.script:
            return cfg.script.pop(0)
        if cfg.fault_rate and self._rng.random() < cfg.fault_rate:
            return self._rng.choice(cfg.fault_kinds)
        return cfg.default_outcome

    async def _delay(self) -> None:
        cfg = self.config
        delay = cfg.latency + (self._rng.uniform(0, cfg.jitter) if cfg.jitter else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _answer(
        self,
        request: web.Request,
        entry: LedgerEntry,
        payload: dict[str, Any],
        retry_after: float | None,
    ) -> web.StreamResponse:
        outcome, cfg = entry.outcome, self.config
        headers = {"x-request-id": f"req-{len(self.ledger.entries)}", **self.limit_headers()}
        if outcome in ("ok", "blank_json", "empty_choices", *PAID_SHAPES):
            reply = self._reply(outcome, payload, entry)
            entry.shape = "empty_choices" if outcome == "empty_choices" else reply.shape
            entry.prompt_tokens = self._billed(payload)
            body = self._completion(
                payload, reply, prompt_tokens=entry.prompt_tokens, empty=outcome == "empty_choices"
            )
            if outcome != "blank_json":
                return web.Response(body=body, content_type="application/json", headers=headers)
            return await _blank_then(request, body, headers)
        if outcome in ("echo_auth", "echo_auth_401"):
            return _echo_auth(request, outcome)
        if outcome in ERROR_200_BODIES:
            body = orjson.dumps(ERROR_200_BODIES[outcome])
            return web.Response(body=body, content_type="application/json", headers=headers)
        if outcome == "drop":
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp ends the handler quietly, no response
        if outcome == "hang":
            # Ends when the server shuts down; the client's timeout closes the connection first,
            # which cancels this handler (handler_cancellation=True).
            await asyncio.wait_for(self._closing.wait(), _HANG_LIMIT)
            raise asyncio.CancelledError
        if outcome == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if outcome in ("empty", "blank"):
            text = "" if outcome == "empty" else "\n\n\n\n"
            return web.Response(text=text, content_type="application/json")
        if outcome in cfg.error_bodies:
            status, etype, code, message = cfg.error_bodies[outcome]
            body = orjson.dumps({"error": {"message": message, "type": etype, "code": code}})
            wait = cfg.retry_after if retry_after is None else retry_after
            bare = outcome in NO_RETRY_AFTER or not cfg.retry_after_header
            hint = dict(headers)
            if status == 429 and not bare:
                hint["Retry-After"] = f"{wait:g}"
            return web.Response(
                status=status, body=body, content_type="application/json", headers=hint
            )
        return web.Response(status=500, text=f"fakeserver: unknown outcome {outcome!r}")

    def _reply(self, outcome: str, payload: dict[str, Any], entry: LedgerEntry) -> Reply:
        """Build the success an outcome names, with the answer answer_fn/default_answer gives."""
        cfg = self.config
        answer = cfg.answer_fn(payload) if cfg.answer_fn else None
        if answer is None:  # an answer_fn returns None for requests it leaves to the default
            answer = default_answer(payload, cfg)
        entry.answer = answer
        text = _split_messages(payload)[1]
        wrong = wrong_letters(answer, _option_blocks(text), dict(_OPTION_TEXT.findall(text)))
        if outcome in PAID_SHAPES:
            return shape_reply(outcome, answer, wrong, budget(payload), cfg.think_tokens)
        return mode_reply(cfg.reasoning, cfg.think_tokens, answer, wrong, budget(payload))

    def _billed(self, payload: dict[str, Any]) -> int:
        """Return the prompt tokens this request bills (`FakeConfig.bill`)."""
        if self.config.bill == "qwen28":
            return qwen_prompt_tokens(payload)
        system, text, _ = _split_messages(payload)
        return (len(system) + len(text)) // 4 + 85  # a flat image cost, like 4o "low"

    def _completion(
        self, payload: dict[str, Any], reply: Reply, *, prompt_tokens: int, empty: bool
    ) -> bytes:
        body = reply.body(
            ident=f"chatcmpl-{len(self.ledger.entries)}",
            model=self.config.served_model or payload.get("model") or "fake-model",
            prompt_tokens=prompt_tokens,
            empty=empty,
        )
        return orjson.dumps(body)


def _echo_auth(request: web.Request, outcome: str) -> web.Response:
    """Answer with every credential the request carried, as a careless gateway might echo them.

    The body holds each one JSON-escaped (its first character as `\\u00xx`, its second as
    `\\u00XX`, every `/` as `\\/`), so a client that looks only for the literal key misses them;
    the x-request-id header holds the first one literally.
    """
    found = []
    for name in ("Authorization", "Proxy-Authorization"):
        scheme, _, value = request.headers.get(name, "").partition(" ")
        if value:
            found.append(value)
            if scheme == "Basic":  # "user:password"
                found.append(base64.b64decode(value).decode("utf-8", "replace"))
    said = " ".join(_json_escaped(s) for s in found).encode()
    headers = {"x-request-id": found[0] if found else "none"}
    if outcome == "echo_auth_401":
        status = 401
        data: dict[str, Any] = {
            "error": {"message": "Incorrect API key provided: @", "code": "invalid_api_key"},
            "request_id": "@",
        }
    else:
        status = 200
        message = {"role": "assistant", "content": "A. You sent @", "reasoning_content": "@"}
        data = {
            "id": "@",
            "model": "@",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
    body = orjson.dumps(data).replace(b"@", said)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json_escaped(secret: str) -> str:
    """Return `secret` as valid JSON string content, escaped where a plain search would miss it."""
    out = []
    for i, char in enumerate(secret):
        if i < 2:
            out.append(f"\\u{ord(char):04x}" if i == 0 else f"\\u{ord(char):04X}")
        elif char == "/":
            out.append("\\/")
        else:
            out.append(orjson.dumps(char).decode()[1:-1])
    return "".join(out)


def _content_fault(faults: ContentFaults, text: str) -> str | None:
    if callable(faults):
        return faults(text)
    return next((kind for marker, kind in faults.items() if marker in text), None)


async def _blank_then(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Send DeepSeek's queued answer: blank lines first, the JSON a moment later."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "application/json"
    await response.prepare(request)
    for _ in range(3):
        await response.write(b"\n")
        await asyncio.sleep(0.01)
    await response.write(body)
    await response.write_eof()
    return response


@asynccontextmanager
async def running(
    config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeServer]:
    """Serve a FakeServer in the current loop; stop it (and any hung request) on exit."""
    server = FakeServer(config or FakeConfig())
    runner = web.AppRunner(
        server.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        server.root = f"http://{bound_host}:{bound_port}"
        yield server
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python tests/fakeserver.py`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--jitter", type=float, default=0.0, help="plus uniform(0, JITTER) seconds")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail")
    p.add_argument(
        "--fault-kinds",
        default=",".join(DEFAULT_FAULT_KINDS),
        help=f"comma list drawn from when a fault fires; any of: {','.join(FAULTS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--script", default="", help="comma list of outcomes for the first requests")
    p.add_argument(
        "--content-fault",
        action="append",
        default=[],
        metavar="MARKER=OUTCOME",
        help="user text containing MARKER gets OUTCOME (repeatable)",
    )
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429")
    p.add_argument(
        "--no-retry-after",
        dest="retry_after_header",
        action="store_false",
        help="send every 429 (RPM window included) without a Retry-After header",
    )
    p.add_argument("--rpm", type=int, default=None, help="accepted requests per minute")
    p.add_argument(
        "--rpm-window",
        type=float,
        default=60.0,
        help="seconds of the sliding window RPM is counted over (1: rpm/60 per second)",
    )
    p.add_argument(
        "--ratelimit-headers",
        action="store_true",
        help="send x-ratelimit-{limit,remaining,reset}-requests on every answer",
    )
    p.add_argument("--expected-key", default=None, help="only this Bearer key is accepted")
    p.add_argument(
        "--expected-basic",
        default=None,
        metavar="USER:PASSWORD",
        help="only these Basic credentials are accepted (Proxy-Authorization after a Bearer key)",
    )
    p.add_argument("--redirect", type=int, choices=(301, 302, 303, 307, 308), help="redirect all")
    p.add_argument("--redirect-to", default="", metavar="URL", help="the redirect's Location")
    p.add_argument("--served-model", default=None, help="model name to report")
    p.add_argument("--ledger-out", type=Path, help="write the ledger as JSONL here on exit")
    p.add_argument(
        "--replies", choices=("plain", "varied"), default="plain", help="answer phrasing"
    )
    p.add_argument(
        "--judge-reply", choices=JUDGE_REPLIES, default="letter", help="mapper prompt reply"
    )
    p.add_argument(
        "--default-outcome", default="ok", help="outcome when nothing else picks one (any outcome)"
    )
    p.add_argument(
        "--reasoning",
        choices=REASONING_STYLES,
        default="none",
        help="where a reasoning model's thoughts go: field=reasoning_content, openrouter=reasoning,"
        " inline=<think> in content, none=hidden",
    )
    p.add_argument(
        "--think-tokens",
        type=int,
        default=0,
        help="thought tokens before every answer; max_tokens below thoughts+answer cuts the reply",
    )
    p.add_argument(
        "--bill",
        choices=BILLING,
        default="flat",
        help="usage.prompt_tokens: flat (text/4 + 85) or qwen28 (DashScope's Qwen2.5-VL rule on "
        "the decoded images, plus text pieces)",
    )
    p.add_argument(
        "--truth", type=Path, help="a dataset folder: the gold answers --behaviour needs"
    )
    p.add_argument(
        "--behaviour",
        metavar="NAME[:P]",
        help=f"a model of known behaviour, with --truth: {', '.join([*BEHAVIOURS, *LOOKS])}"
        " (fakebehaviour.py, fakelooks.py)",
    )
    p.add_argument("--batch-delay", type=float, default=0.2, help="seconds until a batch ends")
    p.add_argument(
        "--batch-fail-rate", type=float, default=0.0, help="share of batch lines failing once"
    )
    p.add_argument(
        "--batch-expire", type=int, default=0, help="the first N batches expire half-answered"
    )
    p.add_argument(
        "--batch-max-bytes", type=int, default=200_000_000, help="largest upload (else 413)"
    )
    return p.parse_args(argv)


def _named(args: argparse.Namespace, names: object) -> bool:
    """Whether --behaviour names one of `names` (with --truth, which each needs)."""
    name = str(args.behaviour or "").partition(":")[0]
    return bool(args.truth) and name in names  # type: ignore[operator]


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    """Build a FakeConfig from parsed CLI flags, rejecting unknown outcome names."""
    kinds = tuple(k for k in args.fault_kinds.split(",") if k)
    script = [k for k in args.script.split(",") if k]
    faults = dict(item.split("=", 1) for item in args.content_fault)
    unknown = {*kinds, *script, *faults.values(), args.default_outcome} - set(OUTCOMES)
    if unknown:
        msg = f"unknown outcome(s) {sorted(unknown)}; choose from {', '.join(OUTCOMES)}"
        raise SystemExit(msg)
    return FakeConfig(
        latency=args.latency,
        jitter=args.jitter,
        fault_rate=args.fault_rate,
        fault_kinds=kinds,
        seed=args.seed,
        script=script,
        content_faults=faults,
        retry_after=args.retry_after,
        retry_after_header=args.retry_after_header,
        rpm=args.rpm,
        rpm_window=args.rpm_window,
        ratelimit_headers=args.ratelimit_headers,
        expected_key=args.expected_key,
        expected_basic=args.expected_basic,
        redirect=args.redirect,
        redirect_to=args.redirect_to,
        served_model=args.served_model,
        answer_fn=looks(args.behaviour, args.truth) if _named(args, LOOKS) else None,
        replies=args.replies,
        judge_reply=args.judge_reply,
        default_outcome=args.default_outcome,
        reasoning=args.reasoning,
        think_tokens=args.think_tokens,
        bill=args.bill,
        behaviour=make_behaviour(args.behaviour, args.truth, args.seed)
        if args.behaviour and not _named(args, LOOKS)
        else None,
        batch=BatchConfig(
            delay=args.batch_delay,
            fail_rate=args.batch_fail_rate,
            expire=args.batch_expire,
            max_file_bytes=args.batch_max_bytes,
        ),
    )


async def _serve(config: FakeConfig, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config, host=args.host, port=args.port) as server:
        print(f"listening on {server.root}", flush=True)
        await stop.wait()
    if args.ledger_out:
        lines = (orjson.dumps(asdict(e)) + b"\n" for e in server.ledger.entries)
        args.ledger_out.write_bytes(b"".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Run the fake server as its own process until SIGINT or SIGTERM."""
    args = parse_args(argv)
    asyncio.run(_serve(config_from_args(args), args))


if __name__ == "__main__":
    main()
