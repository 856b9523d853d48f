"""Real processes for tests: the fake server as its own process, and `python -m pipeline` runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ServerProcess:
    """`tests/fakeserver.py` running as its own process."""

    url: str  # ends in /v1
    proc: subprocess.Popen[str]

    @property
    def root(self) -> str:
        """Return http://host:port."""
        return self.url.removesuffix("/v1")

    def ledger(self) -> dict[str, Any]:
        """Return the server's ledger summary (requests, paid, duplicates, ...)."""
        return ledger(self.root)


def ledger(root: str) -> dict[str, Any]:
    """Return the ledger summary of the fake server at http://host:port."""
    with urllib.request.urlopen(f"{root}/_ledger", timeout=10) as resp:
        data: dict[str, Any] = orjson.loads(resp.read())
    return data


@contextmanager
def server_process(*flags: str) -> Iterator[ServerProcess]:
    """Start the fake server with `flags` on a free port; stop it at the end."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fakeserver.py"), "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        yield ServerProcess(line.removeprefix("listening on ") + "/v1", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def drvd_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment a CLI run gets: the test's (no DRVD_* or keys) plus `env`."""
    return {**os.environ, "COLUMNS": "200", **(env or {})}


def drvd(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ARGS` to the end; the environment is the test's plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=REPO,
        env=drvd_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_drvd(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m pipeline ARGS` in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=REPO,
        env=drvd_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: Callable[[], Any], *, timeout: float = 60.0, what: str = "it") -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    msg = f"timed out after {timeout} s waiting for {what}"
    raise AssertionError(msg)


def lines_of(path: Path) -> list[dict[str, Any]]:
    """Return every line of a JSONL file, parsed (each must parse)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
