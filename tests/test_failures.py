"""Why rows failed, by cause, and a server no request reaches: real CLI runs, real sockets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from procs import drvd, lines_of, server_process

from pipeline.data.synthetic import write_dataset
from pipeline.records import FILES
from pipeline.run.failures import UNREACHED_ROWS

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)
ROWS = 24


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failures") / "data"
    assert sum(write_dataset(root, total=ROWS, images=2, sizes=(32,)).values()) == ROWS
    return root


def dead_url() -> str:
    """Return a base URL on a port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def run(data: Path, tmp: Path, url: str, *more: str):
    return drvd(
        "eval", "--model", "openai:m", "--base-url", url, "--data", data, "--out", tmp / "out",
        "--run-name", "r", "--judge", "none", "--quiet", "--cache-dir", tmp / "cache", *more,
    )  # fmt: skip


def rows(tmp: Path) -> list[dict]:
    return [row for stem in FILES for row in lines_of(tmp / "out" / "r" / f"{stem}.jsonl")]


def test_a_server_nobody_listens_on_stops_the_run_in_one_line_and_a_rerun_finishes(
    data: Path, tmp_path: Path
) -> None:
    url = dead_url()
    host = url.removeprefix("http://").removesuffix("/v1")
    # No retries: each row fails at its first refused connection (the rule counts rows).
    dead = run(data, tmp_path, url, "--max-retries", "0", "--concurrency", "2")
    assert dead.returncode == 3, dead.stderr
    lines = dead.stderr.strip().splitlines()
    assert len(lines) == 1, dead.stderr
    assert lines[0].startswith("error: stopped: no request reached the server: ")
    assert (
        f"rows: Cannot connect to host {host} — is the server running? check --base-url"
        in (lines[0])
    )
    assert "Correct/n" not in dead.stdout  # no table of zeros
    assert "Traceback" not in dead.stderr
    # Stopped early, and what it recorded is kept: every row it tried is in the results.
    failed = rows(tmp_path)
    assert UNREACHED_ROWS <= len(failed) < ROWS
    assert all(row["_meta"]["error_code"] == "connect" for row in failed)
    with server_process() as server:
        again = run(data, tmp_path, server.url)
        assert again.returncode == 0, again.stderr
        assert server.ledger()["paid"] == ROWS
    assert len(rows(tmp_path)) == ROWS
    assert all(row["error"] is None for row in rows(tmp_path))


def test_a_few_rows_on_a_dead_server_stop_the_same_way(data: Path, tmp_path: Path) -> None:
    dead = run(data, tmp_path, dead_url(), "--max-retries", "0", "--limit", "1")
    assert dead.returncode == 3, dead.stderr  # 4 rows, fewer than UNREACHED_ROWS: all failed
    assert "no request reached the server: 4 rows: Cannot connect" in dead.stderr
    assert "Correct/n" not in dead.stdout


def test_a_dead_replica_beside_a_live_one_does_not_stop_the_run(data: Path, tmp_path: Path) -> None:
    with server_process() as server:
        both = run(data, tmp_path, f"{dead_url()},{server.url}", "--max-retries", "0")
        assert both.returncode == 0, both.stderr
        assert server.ledger()["paid"] == ROWS


def test_failed_rows_are_grouped_by_cause_with_what_to_do(data: Path, tmp_path: Path) -> None:
    script = "500,500,500,400_inspection,400_inspection"
    with server_process("--script", script) as server:
        proc = run(data, tmp_path, server.url, "--max-retries", "0", "--concurrency", "1")
        assert server.ledger()["paid"] == ROWS - 5
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "5 rows failed: rerun the same command to retry them",
        "  3 rows: server error 500 — rerun the same command later",
        "  2 rows: refused by content moderation — a rerun sends them again; they may be "
        "refused again",
    ]
    # The causes agree with the rows themselves.
    failed = [row["_meta"]["error_status"] for row in rows(tmp_path) if row["error"]]
    assert sorted(failed) == [400, 400, 500, 500, 500]


def test_a_dead_server_stops_k_samples_in_one_line_too(data: Path, tmp_path: Path) -> None:
    dead = run(data, tmp_path, dead_url(), "--max-retries", "0", "--limit", "1", "--samples", "3")
    assert dead.returncode == 3, dead.stderr
    lines = [line for line in dead.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, dead.stderr
    assert "no request reached the server: 4 rows: Cannot connect" in lines[0]
    assert "Correct/n" not in dead.stdout
    assert "Traceback" not in dead.stderr
