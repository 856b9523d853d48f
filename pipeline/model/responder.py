"""The models that answer rows: the offline `random` baseline, or an API model behind the cache.

For an API model the order is: cache lookup (free: no slot, no token, no encoding) → encode the
image off the event loop → per attempt: pick a replica, take an in-flight slot, wait for the
replica's throttle, send (pipeline/model/replicas.py; a 429 is re-sent there, free of the row's budget).
A success is stored in the cache before it is returned, so a crash after it never pays twice; one
the cache cannot store (disk full) is returned marked `unsaved`, and the runner stops.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from tenacity import AsyncRetrying

from pipeline.config import EvalConfig
from pipeline.data.images import IMAGE_VERSION, ImageCache, file_digest
from pipeline.data.prompts import PROTOCOL_VERSION
from pipeline.errors import APIError, FatalAPIError, RowError, os_reason
from pipeline.model.budget import Budget
from pipeline.model.cache import ResponseCache, request_key
from pipeline.model.claims import RequestClaims
from pipeline.model.pacing import Clock, LoopClock
from pipeline.model.replicas import Replicas
from pipeline.model.retry import retrying
from pipeline.providers.prices import request_cost
from pipeline.providers.registry import first_url
from pipeline.providers.tokens import image_rule, request_tokens
from pipeline.records import ChatRequest, Completion, Outcome, Sample, Usage

NORMAL_REPORT = (
    "The image is of diagnostic quality. No acute abnormality is identified. "
    "Visualized structures are within normal limits. No mass, fracture, or fluid collection."
)
_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[.):]\s", re.MULTILINE)
_CLAIM_POLL, _CLAIM_POLL_MAX = 0.05, 1.0  # seconds between looks at another process's request


class Responder(Protocol):
    """Answers rows; the runner calls nothing else."""

    name: str

    async def respond(self, sample: Sample, request: ChatRequest) -> Outcome:
        """Answer one row."""
        ...


class RandomModel:
    """Seeded chance baseline: a uniformly random offered letter; a generic normal report."""

    def __init__(self, *, seed: int = 0) -> None:
        self.name = "random"
        self.seed = seed

    def answer(self, sample: Sample, epoch: int = 0) -> str:
        """Return this row's answer; the same seed, row and epoch always give the same answer."""
        rng = random.Random(f"{self.seed}:{sample.key}" + (f":{epoch}" if epoch else ""))
        row = sample.row
        if sample.kind == "report":
            return NORMAL_REPORT
        if sample.kind == "joint":
            found: list[str] = _OPTION_LINE.findall(row["joint_prompt"])
            offered = sorted(set(found)) or list("ABCD")
            return ",".join(rng.choice(offered) for _ in range(4))
        letters = [str(opt).strip()[:1] for opt in row["options"] if str(opt).strip()]
        return str(rng.choice(letters))

    async def respond(self, sample: Sample, request: ChatRequest) -> Outcome:
        """Answer without any network."""
        return Outcome(Completion(text=self.answer(sample, request.epoch), model=self.name))


def response_key(
    cfg: EvalConfig,
    extra_body: Mapping[str, Any],
    request: ChatRequest,
    image_digest: str | None,
) -> str:
    """Return the response-cache key of a request to `cfg.spec` (`plan` probes the cache with it).

    Replicas serve the same model: the key names the first URL of the list, not the one
    that answered, so adding a replica keeps the cache.
    """
    return request_key(
        model=cfg.spec.model,
        endpoint=first_url(cfg.spec.base_url),
        protocol_version=PROTOCOL_VERSION,
        request=request,
        image_digest=image_digest,
        legacy_mime=cfg.legacy_mime,
        # The encoder's version: a change in what is sent for the same file is a new request.
        extra={**extra_body, "image_version": IMAGE_VERSION}
        if request.image is not None
        else extra_body,
        epoch=request.epoch,
    )


class APIModel:
    """An OpenAI-compatible model behind the response cache, its replicas and retry policy."""

    def __init__(
        self,
        cfg: EvalConfig,
        replicas: Replicas,
        *,
        cache: ResponseCache | None,
        images: ImageCache,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        extra_body: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.name = cfg.spec.model
        self.cfg = cfg
        self.replicas = replicas
        self.cache = cache
        self.claims = RequestClaims(cache.dir) if cache is not None else None
        self.images = images
        self.clock: Clock = clock or LoopClock()
        self.extra_body = dict(extra_body or {})  # must match the client's: it is in the key
        self.image_rule = image_rule(cfg.spec.model, cfg.spec.provider)  # pacing and cost bounds
        self.budget = budget  # the run's cost cap (shared with its judge); None: no cap
        self._in_flight: dict[str, asyncio.Future[None]] = {}  # cache key → done signal
        self._retry_kwargs = retrying(
            max_attempts=cfg.max_retries + 1, max_seconds=cfg.row_deadline, sleep=sleep
        )

    @property
    def stopped(self) -> FatalAPIError | None:
        """The fatal error that stopped sending, if any."""
        return self.replicas.stopped

    def cache_key(self, request: ChatRequest, image_digest: str | None) -> str:
        """Return the response-cache key for this model and request."""
        return response_key(self.cfg, self.extra_body, request, image_digest)

    async def respond(self, sample: Sample, request: ChatRequest) -> Outcome:
        """Answer from the cache, else call the API with retries; fatal errors propagate."""
        try:
            digest = await asyncio.to_thread(file_digest, sample.image)
        except OSError as exc:
            return Outcome(None, RowError(f"image could not be read: {exc}"))
        return await self._answer(request, self.cache_key(request, digest))

    async def complete_text(self, request: ChatRequest) -> Outcome:
        """Answer a text-only request (judge calls) the same way; fatal errors propagate."""
        return await self._answer(request, self.cache_key(request, None))

    async def _answer(self, request: ChatRequest, key: str) -> Outcome:
        # An identical request already in flight (a duplicate row) is paid once: wait for it,
        # then read its answer from the cache.
        while (pending := self._in_flight.get(key)) is not None:
            await asyncio.wait([pending])
        if (hit := self.cached(key)) is not None:
            return hit
        done = self._in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            if self.claims is None:
                return await self._fetch(request, key)
            # ...and so is one another process sharing the cache is paying for.
            poll = _CLAIM_POLL
            while not self.claims.try_claim(key):
                await asyncio.sleep(poll)
                if (hit := self.cached(key)) is not None:
                    return hit
                poll = min(poll * 2, _CLAIM_POLL_MAX)
            try:  # answered by the other process between the miss above and the claim?
                return self.cached(key) or await self._fetch(request, key)
            finally:
                self.claims.release(key)
        finally:
            del self._in_flight[key]
            done.set_result(None)

    def cached(self, key: str) -> Outcome | None:
        """Return the cached answer of a request key (a hit, with what it saved), or None."""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            saved = self._cost(hit)  # what the hit would have cost, at today's price
            return Outcome(hit, usage=Usage(cache_hits=1, saved_usd=saved))
        return None

    def _cost(self, completion: Completion) -> float:
        """Return what a completion's billed tokens cost (0 when the model has no price)."""
        price = self.cfg.price
        return price.cost(completion.prompt_tokens, completion.completion_tokens) if price else 0.0

    async def _reserve(self, request: ChatRequest) -> float:
        """Reserve the request's cost bound, waiting for calls in flight to settle if it does not
        fit yet; `CostCapReached` when, with none in flight, it still does not."""
        if self.budget is None or self.budget.cap is None or self.cfg.price is None:
            return 0.0  # no cap: no estimate to make (it reads the image's header)
        spec = self.cfg.spec
        cost = request_cost(self.cfg.price, request, spec.model, spec.provider)
        return await self.budget.reserve_when_free(cost)

    async def _fetch(self, request: ChatRequest, key: str) -> Outcome:
        image_url = None
        if request.image is not None:
            try:
                image_url = await asyncio.to_thread(
                    self.images.data_url, request.image, legacy_mime=self.cfg.legacy_mime
                )
            except OSError as exc:
                return Outcome(None, RowError(f"image could not be encoded: {exc}"))
        # Only a TPM bucket spends tokens; the estimate reads the image's header.
        tokens = request_tokens(request, self.image_rule) if self.cfg.tpm is not None else 0
        sent = [0]  # attempts that reached the client
        reserved, paid = await self._reserve(request), 0.0  # raises at the cap: nothing sent
        try:
            completion = await self._call(request, image_url, tokens, sent)
            paid = self._cost(completion)
        except FatalAPIError as exc:
            self.replicas.stopped = self.replicas.stopped or exc
            raise
        except APIError as exc:
            return Outcome(None, exc, Usage(api_calls=sent[0], retries=max(sent[0] - 1, 0)))
        finally:
            if self.budget is not None:
                self.budget.settle(reserved, paid)
        unsaved = None
        if self.cache is not None and completion.keep:
            try:
                self.cache.put(key, completion)  # durable before the row can count as done
            except OSError as exc:  # disk full: the answer is in hand, the row still goes on
                unsaved = f"{self.cache.dir}: {os_reason(exc)}"
        usage = Usage(
            api_calls=sent[0],
            retries=sent[0] - 1,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            reasoning_tokens=completion.reasoning_tokens,
            cost_usd=paid,
        )
        return Outcome(completion, usage=usage, unsaved=unsaved)

    async def _call(
        self, request: ChatRequest, image_url: str | None, tokens: int, sent: list[int]
    ) -> Completion:
        deadline = self.clock() + self.cfg.row_deadline

        def count() -> None:
            sent[0] += 1

        async for attempt in AsyncRetrying(**self._retry_kwargs):
            with attempt:
                # A slot is held per send, never across a backoff sleep.
                return await self.replicas.send(
                    request, image_url, tokens, deadline=deadline, on_send=count
                )
        msg = "unreachable: AsyncRetrying re-raises the last error"
        raise AssertionError(msg)
