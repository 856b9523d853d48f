"""The endpoints that serve one model: each request goes to the replica with least in flight.

Every replica has its own client and its own `Throttle` (its learned rate). A send goes through
`Replicas.send`, one attempt of the row's retry budget, which re-sends at once and for free:
  - after a 429: the replica's throttle pauses and cuts its rate; the re-send waits for the pause;
  - after a replica failure (refused connection, 5xx, dropped or timed-out exchange) while
    another replica is up: the re-send goes elsewhere.
A refused connection, or `_STREAK` failures in a row, benches a replica for a cool-down that
doubles while it stays down (`_COOL_DOWN` to `_COOL_DOWN_MAX`); then one probe request goes to it,
and an answer puts it back. While every replica is benched, the one due back first is tried
anyway (rows fail fast, and the run's failure streak stops a run whose every replica is down).
One replica is the same path with nothing to spread: its failures spend the row's budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config import EvalConfig
from pipeline.errors import FatalAPIError, RetryableError
from pipeline.model.client import ChatClient, OpenAIClient
from pipeline.model.pacing import Clock, LoopClock, Throttle, Ticket
from pipeline.model.retry import CONNECT
from pipeline.providers.registry import split_urls
from pipeline.records import ChatRequest, Completion

if TYPE_CHECKING:
    import aiohttp  # loads with the session (client.make_session)

_STREAK = 5  # failures in a row that bench a replica
_COOL_DOWN, _COOL_DOWN_MAX = 2.0, 60.0  # seconds benched: the first time, and at most


@dataclass(slots=True)
class Replica:
    """One endpoint of the model, and what it did."""

    url: str  # without credentials
    client: ChatClient
    throttle: Throttle
    in_flight: int = 0
    sent: int = 0  # requests sent to it, whatever became of them
    errors: int = 0  # failed sends other than 429: 5xx, no answer, a bad body
    answered: int = 0  # answers other than 429 (their latency is in `seconds`)
    seconds: float = 0.0
    streak: int = 0  # failures in a row
    benched_until: float = 0.0
    cool_down: float = _COOL_DOWN
    benched: int = 0  # times benched
    probing: bool = False  # back from the bench: one request at a time until it answers

    def report(self) -> dict[str, Any]:
        """Return this replica's requests, errors, mean latency and learned rate."""
        mean = round(self.seconds / self.answered, 3) if self.answered else None
        return {
            "url": self.url,
            "requests": self.sent,
            **self.throttle.report(),
            "errors": self.errors,
            "mean_latency_s": mean,
            "benched": self.benched,
        }


@dataclass(slots=True)
class Replicas:
    """The replicas of one model, and the in-flight cap they share."""

    replicas: list[Replica]
    slots: asyncio.Semaphore
    clock: Clock = field(default_factory=LoopClock)
    stopped: FatalAPIError | None = None  # set when a row hit a fatal error: send nothing more

    def up(self, now: float) -> list[Replica]:
        """Return the replicas a request may go to now."""
        return [
            r for r in self.replicas if r.benched_until <= now and not (r.probing and r.in_flight)
        ]

    def pick(self, avoid: Replica | None = None) -> Replica:
        """Return the replica with least in flight, `avoid` only when no other is up.

        When every replica is benched the one due back first is tried anyway: rows then fail
        fast and the run's failure streak stops it, rather than waiting on probes one by one.
        """
        now = self.clock()
        live = self.up(now) or self.replicas
        best = min(live, key=lambda r: (r is avoid, max(r.benched_until - now, 0.0), r.in_flight))
        if best.benched_until:  # back from the bench (or all are benched): this is a probe
            best.benched_until, best.probing = 0.0, True
        return best

    async def send(
        self,
        request: ChatRequest,
        image_url: str | None,
        tokens: int,
        *,
        deadline: float,
        on_send: Callable[[], None],
    ) -> Completion:
        """Return the reply, re-sending at once after a 429 or a failure another replica covers."""
        failovers = len(self.replicas) - 1  # free re-sends after failures: a poison row stops
        failed: Replica | None = None  # where this request last failed: go elsewhere
        while True:
            async with self.slots:  # a slot first: rows queued for one hold no replica yet
                replica = self.pick(avoid=failed)
                replica.in_flight += 1
                try:
                    ticket = await replica.throttle.acquire(tokens)
                    if self.stopped is not None:
                        raise self.stopped
                    on_send()
                    replica.sent += 1
                    start = self.clock()
                    try:
                        completion = await replica.client.complete(request, image_url)
                    except RetryableError as exc:
                        free = self._failed(replica, ticket, exc, start)
                        if free == "failover" and failovers > 0:
                            failovers, failed = failovers - 1, replica
                        elif free != "limited":
                            raise
                        if self.clock() >= deadline:
                            raise
                        continue
                    except Exception:
                        self._answered(replica, ticket, start, ok=True)  # up; this row failed
                        raise
                    self._answered(replica, ticket, start, ok=True)
                    return completion
                finally:
                    replica.in_flight -= 1

    def _answered(self, replica: Replica, ticket: Ticket, start: float, *, ok: bool) -> None:
        replica.throttle.answered(ticket)
        replica.answered += 1
        replica.seconds += self.clock() - start
        if ok:
            replica.streak, replica.probing, replica.cool_down = 0, False, _COOL_DOWN

    def _failed(self, replica: Replica, ticket: Ticket, exc: RetryableError, start: float) -> str:
        """Record a retryable failure; say what the re-send is: "limited" and "failover" are free
        (a 429; a replica failing while another is up), "retry" spends the row's budget."""
        if exc.status == 429:
            replica.throttle.limited_by(ticket, exc.retry_after)
            return "limited"
        replica.errors += 1
        if exc.status is not None and exc.status < 500:  # answered (408, 409, a bad body)
            self._answered(replica, ticket, start, ok=False)
            return "retry"
        replica.streak += 1
        if exc.code == CONNECT or replica.streak >= _STREAK or replica.probing:
            self._bench(replica)
        others = [r for r in self.up(self.clock()) if r is not replica]
        return "failover" if others else "retry"

    def _bench(self, replica: Replica) -> None:
        replica.benched_until = self.clock() + replica.cool_down
        replica.cool_down = min(replica.cool_down * 2, _COOL_DOWN_MAX)
        replica.benched += 1
        replica.probing = False
        replica.streak = 0

    def report(self) -> list[dict[str, Any]]:
        """Return each replica's report, in the order of the base URL list."""
        return [r.report() for r in self.replicas]


def make_replicas(
    cfg: EvalConfig,
    session: aiohttp.ClientSession,
    extra_body: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
) -> Replicas:
    """Return a replica per URL of `cfg`'s base URL list, each with its own client and learned
    rate (`--rpm` and `--tpm` are each one's ceiling), sharing `cfg.concurrency` slots."""
    urls = split_urls(cfg.spec.base_url)
    auths = cfg.url_auth or (None,) * len(urls)
    replicas = []
    for url, auth in zip(urls, auths, strict=True):
        throttle = Throttle(rpm=cfg.rpm, tpm=cfg.tpm, clock=clock)
        client = OpenAIClient(
            session,
            base_url=url,
            model=cfg.spec.model,
            api_key=cfg.api_key or "",
            url_auth=auth,
            provider=cfg.spec.provider,
            timeout=cfg.timeout,
            extra_body=extra_body,
            token_param=cfg.spec.token_param,
            on_headers=throttle.read_headers,
        )
        replicas.append(Replica(url, client, throttle))
    return Replicas(replicas, asyncio.Semaphore(cfg.concurrency), clock or LoopClock())
