"""Issue #12: a provider limit nobody told us, and one model served by two replicas.

limits: the simulator accepts 10 requests/s over any 1 s window (`--rpm 600 --rpm-window 1`,
DashScope's RPM/60 per second) and answers 429 at once beyond it, with `Retry-After: 1` or with no
hint; the pipeline is given no --rpm and must find the rate itself. Its rate is rows answered /
(last accepted request - first accepted request + 0.1 s) on the simulator's clock, so start-up
and the last answer's latency are left out (an even 10/s pacer scores 100%); the 429 share is
429s / all requests in the same ledger. The same run with `--rpm 600` is the reference a client
told the limit reaches, and inspect-ai's adaptive connections (max 32) the anchor.
replicas: two simulators at L=0.5 s behind `--base-url U1,U2` at C=64 (bound C/L = 128 rows/s);
then replica 2 answering 503 to everything, then replica 2 a port nobody listens on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data import subset
from bench.peer import run_inspect
from bench.proc import ChildRun, Server, Sim, free_port, run_pipeline
from bench.sections import Bench
from bench.table import Line, ratio

LIMIT_RPM = 600  # 10 requests/s
WINDOW = ("--rpm", str(LIMIT_RPM), "--rpm-window", "1")
LIMIT_L = 0.2
LIMIT_C = 32
HINTS = (("Retry-After: 1", ()), ("no Retry-After", ("--no-retry-after",)))
REPLICA_L = 0.5
REPLICA_C = 64

Child = Callable[[str, Path, float], ChildRun]  # (base URL, output folder, timeout) → its run
Spec = tuple[Sim, tuple[str, ...]] | None  # a simulator and its extra flags; None: a closed port


@dataclass(frozen=True, slots=True)
class Served:
    """One client run against one or more simulators, read from their ledgers."""

    rows: int
    code: int
    wall: float
    cpu: float
    answered: int  # requests answered 200, every simulator
    rate: float  # answered / (last accepted - first accepted + tail), rows/s
    requests: tuple[int, ...]  # per replica (0 for a closed port: nothing reaches it)
    outcomes: dict[str, int]
    usage: dict[str, Any]  # the pipeline's summary usage ({} for inspect-ai or no summary)
    said: str  # the client's last log line when it exited non-zero

    @property
    def share_429(self) -> float:
        """Return the share of all requests answered 429."""
        total = sum(self.outcomes.values())
        return self.outcomes.get("429", 0) / total if total else math.nan

    @property
    def complete(self) -> bool:
        """Return whether every row was answered and the client exited 0."""
        return self.code == 0 and self.answered >= self.rows

    def of(self, bound: float) -> str:
        """Return the rate as a share of `bound`, or n/a when nothing was answered."""
        return ratio(self.rate, bound) if self.answered else "n/a"

    def shares(self) -> list[float]:
        """Return each replica's share of the requests."""
        total = sum(self.requests)
        return [n / total if total else 0.0 for n in self.requests]

    def result(self, *, with_429: bool = False) -> str:
        """Return the rate (and the 429 share) as a result cell, saying when rows are missing."""
        if not self.answered:
            return f"no row answered (exit {self.code})"
        text = f"{self.rate:.2f} rows/s" + (f", {self.share_429:.1%} 429s" if with_429 else "")
        return (
            text if self.complete else f"{text}; {self.answered}/{self.rows} rows, exit {self.code}"
        )

    def detail(self, who: str) -> str:
        """Describe the run for the method section."""
        usage = self.usage
        text = (
            f"{self.rows:,} rows, {self.answered:,} answered; {who} exit {self.code}, wall "
            f"{self.wall:.1f} s, CPU {self.cpu:.1f} s; requests per replica "
            f"{' / '.join(f'{n:,}' for n in self.requests)}; outcomes {self.outcomes}"
        )
        if usage:
            text += f"; retries {usage.get('retries')}, failed rows {usage.get('failed_rows')}"
        return text + (f"; {who} ended with: {self.said}" if self.said else "")


def serve(
    b: Bench,
    specs: Sequence[Spec],
    rows: int,
    child: Child,
    log: Path,
    *,
    tail: float,
    bound: float,
) -> Served:
    """Start the simulators, run `child` against their comma-joined URLs, read their ledgers.

    `tail` is what an ideal client spends after its last request (L, or one pacing interval);
    `bound` the most rows/s it could reach, which sets the timeout.
    """
    with contextlib.ExitStack() as stack:
        servers = [
            None
            if spec is None
            else stack.enter_context(Server(spec[0], b.work, args=spec[1], name=f"ledger-{n}"))
            for n, spec in enumerate(specs)
        ]
        urls = [s.url if s else f"http://127.0.0.1:{free_port()}/v1" for s in servers]
        timeout = 120 + 10 * rows / bound
        run = child(",".join(urls), b.fresh("run"), timeout)
    accepted = sorted(t for s in servers if s for t in s.answered)
    span = accepted[-1] - accepted[0] + tail if accepted else math.nan
    outcomes: Counter[str] = Counter()
    for server in servers:
        outcomes.update(server.outcomes if server else {})
    return Served(
        rows=rows,
        code=run.exit.code,
        wall=run.wall,
        cpu=run.exit.cpu,
        answered=len(accepted),
        rate=len(accepted) / span if span > 0 else math.nan,
        requests=tuple(len(s.received) if s else 0 for s in servers),
        outcomes=dict(outcomes),
        usage=run.summary.get("usage", {}),
        said=_last_line(log) if run.exit.code > 0 else _killed(run.exit.code, timeout),
    )


def _killed(code: int, timeout: float) -> str:
    return f"SIGKILL from the bench at its {timeout:.0f} s timeout" if code < 0 else ""


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def pipeline_child(b: Bench, data: Path, concurrency: int, *flags: str) -> tuple[Child, Path]:
    """Return a child running the pipeline over `data`, and the log it writes."""
    log = b.fresh("pipeline").with_suffix(".log")

    def child(url: str, out: Path, timeout: float) -> ChildRun:
        return run_pipeline(
            url,
            data,
            out,
            cache=b.cache,
            concurrency=concurrency,
            log=log,
            flags=("--no-cache", *flags),
            timeout=timeout,
        )

    return child, log


def section_limits(b: Bench) -> None:
    """Rows/s and 429s against an unknown 10 requests/s limit, then told it, then inspect-ai."""
    data = b.fresh("data-limits")
    rows = subset(b.data, data, b.plan.limit_rows)
    sim, bound = Sim(LIMIT_L), LIMIT_RPM / 60
    paced = {"tail": 1 / bound, "bound": bound}  # an even pacer's last request is 0.1 s before
    how = (
        f"{rows:,} rows at C={LIMIT_C}, L={LIMIT_L:g} s; the simulator accepts {bound:g} "
        "requests in any 1 s window (`--rpm 600 --rpm-window 1`) and answers 429 at once beyond "
        "it; rate = rows answered / (last accepted - first accepted request + 0.1 s) on the "
        "simulator's clock (start-up excluded; the wall time is given too); 429 share = 429s / "
        "all requests, from the simulator's ledger. "
    )
    found: dict[str, Served] = {}
    for label, hint in HINTS:
        child, log = pipeline_child(b, data, LIMIT_C)
        got = found[label] = serve(b, [(sim, (*WINDOW, *hint))], rows, child, log, **paced)
        b.lines.append(
            Line(
                "unknown limit",
                f"rows/s, no --rpm given, 429s with {label}",
                got.result(with_429=True),
                f"limit {bound:g} rows/s",
                got.of(bound),
                "≥ 85%, ≤ 15% 429s",
                got.complete and got.rate >= 0.85 * bound and got.share_429 <= 0.15,
                how + got.detail("pipeline"),
            )
        )
    child, log = pipeline_child(b, data, LIMIT_C, "--rpm", str(LIMIT_RPM))
    got = serve(b, [(sim, WINDOW)], rows, child, log, **paced)
    b.lines.append(
        Line(
            "unknown limit",
            f"rows/s, told --rpm {LIMIT_RPM} (the reference)",
            got.result(with_429=True),
            f"limit {bound:g} rows/s",
            got.of(bound),
            "≥ 98%, < 1% 429s",
            got.complete and got.rate >= 0.98 * bound and got.share_429 < 0.01,
            how + got.detail("pipeline"),
        )
    )
    _anchor(b, data, rows, sim, found, how)


def _anchor(b: Bench, data: Path, rows: int, sim: Sim, ours: dict[str, Served], how: str) -> None:
    """Run the unknown-limit cases through inspect-ai, beside ours, or say it was skipped."""
    what = f"inspect-ai, adaptive_connections={LIMIT_C}, no limit given"
    if importlib.util.find_spec("inspect_ai") is None or importlib.util.find_spec("openai") is None:
        b.lines.append(Line("unknown limit", what, "skipped (pip install inspect-ai openai)"))
        return
    version = importlib.metadata.version("inspect_ai")
    bound, log = LIMIT_RPM / 60, b.work / "peer.log"

    def child(url: str, out: Path, timeout: float) -> ChildRun:
        return run_inspect(b, data, url, out, timeout, adaptive=LIMIT_C)

    for label, hint in HINTS:
        got = serve(b, [(sim, (*WINDOW, *hint))], rows, child, log, tail=1 / bound, bound=bound)
        mine = ours[label]
        b.lines.append(
            Line(
                "unknown limit",
                f"{what}, 429s with {label}",
                got.result(with_429=True),
                f"ours {mine.rate:.2f} rows/s, {mine.share_429:.1%} 429s",
                got.of(bound),
                detail=how + f"inspect-ai {version} (`adaptive_connections`={LIMIT_C}, i.e. "
                "AdaptiveConcurrency(max=32), no `max_connections`; same rows, same warm image "
                "cache): " + got.detail("inspect-ai"),
            )
        )


def section_replicas(b: Bench) -> None:
    """Rows/s and balance over two replicas, then with replica 2 failing or gone."""
    data = b.fresh("data-replicas")
    rows = subset(b.data, data, b.plan.replica_rows)
    sim, bound = Sim(REPLICA_L), REPLICA_C / REPLICA_L
    how = (
        f"two simulators (own processes) at L={REPLICA_L:g} s behind `--base-url U1,U2`, "
        f"C={REPLICA_C}, --no-cache, warm image cache; rate = rows answered / (last accepted - "
        f"first accepted request + L) over both ledgers (one clock). "
    )
    child, log = pipeline_child(b, data, REPLICA_C)
    got = serve(b, [(sim, ()), (sim, ())], rows, child, log, tail=REPLICA_L, bound=bound)
    shares = got.shares()
    b.lines.append(
        Line(
            "replicas",
            f"rows/s over two replicas, C={REPLICA_C}, L={REPLICA_L:g} s",
            got.result(),
            f"{bound:.0f} (C/L)",
            got.of(bound),
            "≥ 90%",
            got.complete and got.rate >= 0.9 * bound,
            how + got.detail("pipeline"),
        )
    )
    b.lines.append(
        Line(
            "replicas",
            "each replica's share of the requests",
            " / ".join(f"{s:.1%}" for s in shares),
            target="≥ 35% each",
            met=bool(got.answered) and min(shares) >= 0.35,
            detail="requests in each simulator's ledger / all requests, same run as above",
        )
    )
    small = b.fresh("data-replicas-small")
    rows = subset(b.data, small, max(64, b.plan.replica_rows // 4))
    broken: list[tuple[str, Spec]] = [
        ("replica 2 answers 503 to everything", (sim, ("--default-outcome", "503"))),
        ("replica 2's port closed (nobody listens)", None),
    ]
    for label, second in broken:
        child, log = pipeline_child(b, small, REPLICA_C)
        got = serve(b, [(sim, ()), second], rows, child, log, tail=REPLICA_L, bound=bound / 2)
        b.lines.append(
            Line(
                "replicas",
                f"rows done when {label}",
                f"{got.answered:,}/{rows:,} rows, exit {got.code}",
                f"{got.rate:.1f} rows/s; one replica's bound {bound / 2:.0f}"
                if got.answered
                else f"one replica's bound {bound / 2:.0f} rows/s",
                got.of(bound / 2),
                "every row, exit 0",
                got.complete,
                how + got.detail("pipeline"),
            )
        )
