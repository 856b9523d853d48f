"""Real processes against the fake server as its own process: the run lock, signals, two runs on
one cache, and what a crash prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from procs import REPO, drvd, drvd_env, lines_of, server_process, start_drvd, wait_for

from pipeline.data.synthetic import write_dataset
from pipeline.records import FILES

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)
ROWS = 40


def _eval_args(url: str, data: Path, out: Path, cache: Path, *more: str) -> list[str | Path]:
    return [
        "eval", "--model", "openai:m", "--base-url", url, "--data", data, "--out", out,
        "--cache-dir", cache, "--quiet", "--judge", "none", "--concurrency", "4", *more,
    ]  # fmt: skip


def _rows(run: Path) -> list[dict[str, object]]:
    return [row for stem in FILES for row in lines_of(run / f"{stem}.jsonl")]


def _answered(run: Path) -> int:
    return sum(1 for row in _rows(run) if row["error"] is None)


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    assert sum(write_dataset(root, total=ROWS, images=4, sizes=(32,)).values()) == ROWS
    return root


def test_a_second_process_on_a_locked_run_stops_at_once_and_no_row_is_lost(
    tmp_path: Path, data: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    # 1 s per request, 10 s in all: the first run must outlast the two refused commands, each a
    # new Python process that may take seconds to start on a loaded machine.
    with server_process("--latency", "1.0") as server:
        first = start_drvd(*_eval_args(server.url, data, out, cache, "--run-name", "r"))
        lock = out / "r" / ".lock"
        wait_for(lambda: f"pid {first.pid}" in lock.read_text(errors="replace") if lock.exists()
                 else False, what="the first run's lock")  # fmt: skip
        for command in (
            _eval_args(server.url, data, out, cache, "--run-name", "r"),
            ["score", out / "r"],
        ):
            second = drvd(*command)
            assert second.returncode == 2, second.stderr
            assert "Traceback" not in second.stderr
            [line] = second.stderr.strip().splitlines()
            assert line.startswith("error: "), line
            assert f"pid {first.pid}" in line, line
            assert "in use by" in line
        assert first.poll() is None, "the first run was still going while the others were refused"
        code, _, err = _finish(first)
        assert code == 0, err
        rows = _rows(out / "r")
        keys = Counter(str(row["_meta"]["key"]) for row in rows)  # type: ignore[index]
        assert len(keys) == ROWS
        assert set(keys.values()) == {1}
        summary = orjson.loads((out / "r" / "summary.json").read_bytes())
        assert summary["usage"]["api_calls"] == ROWS == server.ledger()["paid"]


def test_the_lock_dies_with_its_process(tmp_path: Path, data: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    with server_process("--latency", "0.25") as server:
        args = _eval_args(server.url, data, out, cache, "--run-name", "r")
        first = start_drvd(*args)
        wait_for(lambda: _answered(out / "r") >= 4, what="a few rows")
        first.kill()  # kill -9: no chance to release anything
        first.communicate(timeout=30)
        again = start_drvd(*args)  # not refused by a stale lock
        code, _, err = _finish(again)
        assert code == 0, err
        assert _answered(out / "r") >= ROWS
        # Re-paid: at most the requests the killed run had in flight.
        assert server.ledger()["duplicates"] <= 4


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(
    tmp_path: Path, data: Path, sig: signal.Signals, code: int
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    with server_process("--latency", "0.25") as server:
        args = _eval_args(server.url, data, out, cache, "--run-name", "r")
        proc = start_drvd(*args)
        wait_for(lambda: _answered(out / "r") >= 4, what="a few rows")
        proc.send_signal(sig)
        got, _, err = _finish(proc, timeout=30)
        assert got == code, err
        assert "Traceback" not in err
        assert f"stopped by {sig.name}: interrupted: rerun the same command to resume" in err
        # The partial summary counts exactly the rows the files hold.
        written = _answered(out / "r")
        assert 4 <= written < ROWS
        summary = orjson.loads((out / "r" / "summary.json").read_bytes())
        assert summary["run"]["stopped"].startswith("interrupted")
        counted = sum(f["n"] for f in summary["files"].values())
        assert counted == len(_rows(out / "r"))
        # The rerun resumes: it pays only for the rest (and the requests cut in flight).
        code2, _, err2 = _finish(start_drvd(*args))
        assert code2 == 0, err2
        assert _answered(out / "r") == ROWS
        assert server.ledger()["duplicates"] <= 4


def test_two_runs_sharing_one_cache_pay_for_each_request_once(tmp_path: Path, data: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    with server_process("--latency", "0.2") as server:
        procs = [
            start_drvd(*_eval_args(server.url, data, out, cache, "--run-name", name))
            for name in ("a", "b")
        ]
        for proc in procs:
            code, _, err = _finish(proc)
            assert code == 0, err
        ledger = server.ledger()
    assert ledger["duplicates"] == 0, ledger
    assert ledger["paid"] == ROWS
    answers = [
        sorted((str(r["_meta"]["key"]), r["raw_response"]) for r in _rows(out / n))  # type: ignore[index]
        for n in ("a", "b")
    ]
    assert len(answers[0]) == ROWS
    assert answers[0] == answers[1]
    usage = [orjson.loads((out / n / "summary.json").read_bytes())["usage"] for n in ("a", "b")]
    assert sum(u["api_calls"] for u in usage) == ROWS
    assert sum(u["cache_hits"] for u in usage) == ROWS  # what one paid for, the other read


def test_invalid_input_is_not_told_to_rerun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, total=8, images=2, sizes=(32,))
    path = data / "independent_qa.jsonl"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    rows[0]["image_paths"] = "images/missing.png"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"{not json\n")
    proc = drvd("eval", "--model", "random", "--data", data, "--out", tmp_path / "out", "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "rerun the same command to retry" not in proc.stderr
    assert "2 input rows cannot be used (1 lines that are not rows, 1 rows whose image" in (
        proc.stderr
    )
    assert "a rerun alone will not help" in proc.stderr


_CRASH = """
import sys
import pipeline.cli as cli

def boom(args, console):
    raise RuntimeError("boom")

cli._eval = boom
sys.exit(cli.main(["eval", "--model", "random"]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_is_one_line_unless_drvd_debug(tmp_path: Path, debug: bool) -> None:
    env = drvd_env({"DRVD_DEBUG": "1"} if debug else None)
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    if debug:
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr
        assert "boom" in proc.stderr
        return
    assert proc.returncode == 70, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: internal error (RuntimeError: boom)")
    assert "DRVD_DEBUG=1" in line


def test_the_lock_file_names_no_secret(tmp_path: Path) -> None:
    # The holder line is what a refused process prints: it never holds the command line.
    data = tmp_path / "data"
    write_dataset(data, total=4, images=1, sizes=(32,))
    out = tmp_path / "out"
    proc = drvd(
        "eval", "--model", "random", "--data", data, "--out", out, "--run-name", "r", "--quiet",
        "--seed", "7",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    holder = (out / "r" / ".lock").read_text()
    assert holder.startswith("`drvd eval` (pid ")
    assert "--seed" not in holder
    assert str(data) not in holder
    assert os.getpid() != int(holder.split("pid ")[1].split()[0])


_HOLDER = """
import sys
from pathlib import Path
from pipeline.model.claims import RequestClaims

claims = RequestClaims(Path(sys.argv[1]))
assert claims.try_claim(sys.argv[2])
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_claim_held_by_another_process_blocks_only_its_key(tmp_path: Path) -> None:
    from pipeline.model.claims import _OPEN, RequestClaims

    key, other = "drvd-cache-1-" + "ab" * 20, "drvd-cache-1-" + "cd" * 20
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), key],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        claims = RequestClaims(tmp_path)
        assert not claims.try_claim(key)
        assert claims.try_claim(other)
        assert claims.try_claim(other)  # this process's own claims never block each other
        claims.release(other)
        claims.release(other)
        assert claims.path not in _OPEN  # no claim held: the descriptor is closed
    finally:
        holder.communicate("\n", timeout=30)
    assert claims.try_claim(key)  # the holder's claims died with it
    claims.release(key)
