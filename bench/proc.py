"""Child processes for the benchmark: the fake server and the pipeline, each measured on its own.

A child's CPU time and peak RSS come from its own `wait4` rusage, so the bench process and the
server never count towards the pipeline's numbers. All times are `time.monotonic()`, which on
Linux is the system-wide CLOCK_MONOTONIC: the server's ledger times compare with ours directly.
Every child runs in its own session and is ended by `stop_all()`, even after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from pipeline.config import child_env

REPO = Path(__file__).resolve().parents[1]
FAKESERVER = REPO / "tests" / "fakeserver.py"
FAULT_KINDS = "500,503,429,drop"  # every retryable fault the simulator has but a hang
_POLL = 0.005  # seconds between exit checks: the error on a measured wall time
_LIVE: set[subprocess.Popen[bytes]] = set()


@dataclass(frozen=True, slots=True)
class Exit:
    """How a child ended and what it used."""

    code: int
    end: float  # monotonic time it was reaped
    cpu: float  # user + system seconds
    rss_mb: float  # peak resident set size


@dataclass(frozen=True, slots=True)
class Sim:
    """What the simulated provider does: latency (+ uniform jitter) and injected faults."""

    latency: float
    jitter: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: str = FAULT_KINDS
    retry_after: float = 0.0

    @property
    def mean_latency(self) -> float:
        """Return the expected seconds per request."""
        return self.latency + self.jitter / 2


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session and remember it for `stop_all`."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    _LIVE.add(proc)
    return proc


def reap(proc: subprocess.Popen[bytes], timeout: float | None = None) -> Exit:
    """Wait for a child (killing it after `timeout` s) and return its own rusage."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            _signal(proc, signal.SIGKILL)
            deadline = None  # the next rounds collect it
        time.sleep(_POLL)
    end = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _LIVE.discard(proc)
    return Exit(proc.returncode, end, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_all(grace: float = 3.0) -> None:
    """End every child still running: SIGTERM, then SIGKILL after `grace` seconds."""
    for proc in list(_LIVE):
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in list(_LIVE):
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            _signal(proc, signal.SIGKILL)
            proc.wait()
        _LIVE.discard(proc)


@dataclass
class Server:
    """The fake OpenAI-compatible server as its own process on 127.0.0.1; a context manager."""

    sim: Sim
    workdir: Path
    port: int = 0  # 0: any free port
    args: tuple[str, ...] = ()  # more fakeserver flags, e.g. ("--rpm", "600")
    name: str = "ledger"  # its ledger file: NAME.jsonl in workdir (two servers: two names)
    url: str = ""
    exit: Exit | None = None
    received: list[float] = field(default_factory=list)  # request arrival times, sorted
    answered: list[float] = field(default_factory=list)  # arrival times of the answered ones
    outcomes: dict[str, int] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        ledger = self.workdir / f"{self.name}.jsonl"
        ledger.unlink(missing_ok=True)
        argv = [
            sys.executable, str(FAKESERVER), "--host", "127.0.0.1", "--port", str(self.port),
            "--latency", f"{self.sim.latency}", "--jitter", f"{self.sim.jitter}",
            "--fault-rate", f"{self.sim.fault_rate}", "--fault-kinds", self.sim.fault_kinds,
            "--retry-after", f"{self.sim.retry_after}", "--ledger-out", str(ledger), *self.args,
        ]  # fmt: skip
        with (self.workdir / "server.log").open("ab") as log:
            self._proc = spawn(argv, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        assert self._proc.stdout is not None
        line = _readline(self._proc.stdout, timeout=20.0)
        if not line.startswith("listening on "):
            msg = f"fake server did not start (said {line!r}); see {self.workdir / 'server.log'}"
            raise RuntimeError(msg)
        self.url = line.removeprefix("listening on ").strip() + "/v1"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        _signal(self._proc, signal.SIGTERM)
        self.exit = reap(self._proc, timeout=30.0)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        ledger = self.workdir / f"{self.name}.jsonl"
        if exc_type is None and ledger.exists():
            with ledger.open("rb") as f:
                for line in f:
                    entry = orjson.loads(line)
                    self.received.append(entry["received"])
                    outcome = entry["outcome"]
                    if outcome == "ok":
                        self.answered.append(entry["received"])
                    self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.received.sort()
            self.answered.sort()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _readline(stream: IO[bytes], *, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode("utf-8", "replace") if ready else ""


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One measured child: when it started, how it ended, and the summary it wrote (if any)."""

    start: float
    exit: Exit
    summary: dict[str, Any]

    @property
    def wall(self) -> float:
        """Return seconds from spawn to exit."""
        return self.exit.end - self.start


def run_child(argv: list[str], *, env: dict[str, str], log: Path, timeout: float) -> ChildRun:
    """Run a child to its end with output appended to `log`; the summary is left empty."""
    with log.open("ab") as sink:
        start = time.monotonic()
        proc = spawn(argv, env=env, cwd=REPO, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
        done = reap(proc, timeout)
    return ChildRun(start, done, {})


def clean_env(cache: Path) -> dict[str, str]:
    """Return our environment without DRVD_* settings, with the bench's cache folder."""
    # A DRVD_RPM or DRVD_CONCURRENCY in the caller's shell must not leak into a measurement.
    return child_env(DRVD_CACHE_DIR=str(cache))


def run_pipeline(
    url: str,
    data: Path,
    out: Path,
    *,
    cache: Path,
    concurrency: int,
    log: Path,
    flags: tuple[str, ...] = (),
    timeout: float = 900.0,
) -> ChildRun:
    """Run one `python -m pipeline eval` child against `url` and return its measurements."""
    argv = [
        sys.executable, "-m", "pipeline", "eval", "--model", "openai:bench-model",
        "--base-url", url, "--data", str(data), "--out", str(out), "--run-name", "run",
        "--concurrency", str(concurrency), "--quiet", *flags,
    ]  # fmt: skip
    run = run_child(argv, env=clean_env(cache), log=log, timeout=timeout)
    path = out / "run" / "summary.json"
    summary = orjson.loads(path.read_bytes()) if path.exists() else {}
    return ChildRun(run.start, run.exit, summary)
