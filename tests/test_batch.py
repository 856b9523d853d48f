"""`--batch`: rows through the Batch API of the real fake server, in process and as processes."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from fakebatch import BatchConfig
from fakeserver import FakeConfig, running
from procs import drvd, lines_of, server_process, start_drvd, wait_for

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.model.batch.state import BATCHES_NAME
from pipeline.records import FILES
from pipeline.run.runner import run_eval

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)

ROWS = 60
PRICE = {"price_in": 2.0, "price_out": 8.0}


async def no_sleep(_seconds: float) -> None:
    """Backoff sleeps are injected away."""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_dataset(root, total=ROWS, images=6, sizes=(32,))
    return root


def config(data: Path, out: Path, url: str, **flags):
    base = {"model": "openai:m", "data": data, "out": out, "run_name": "r", "base_url": url}
    env = {"DRVD_CACHE_DIR": str(out / "cache"), "DRVD_BATCH_POLL": "0.05"}
    return load_config({**base, "judge": "none", **PRICE, **flags}, env)


def rows(run: Path) -> list[dict]:
    return [row for stem in FILES for row in lines_of(run / f"{stem}.jsonl")]


def answers(run: Path) -> dict[str, object]:
    return {row["_meta"]["key"]: row["model_response"] for row in rows(run)}


async def test_every_row_is_answered_failed_lines_retried_none_paid_twice_at_half_price(
    tmp_path: Path, data: Path
) -> None:
    # Which lines fail hangs on their keys (the temporary image paths): at 15% of 60 lines,
    # none failing has odds 0.85^60 = 6e-5 (at 5% it was 5%, and CI once drew it).
    fake = FakeConfig(batch=BatchConfig(delay=0.1, fail_rate=0.15))
    async with running(fake) as server:
        cfg = config(data, tmp_path / "batch", server.url, batch=True)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        ledger = server.ledger
        failed = ledger.count("500")
        assert result.exit_code == ExitCode.OK, result.fatal
        assert failed >= 1  # 15% of the lines failed on their first sight...
        assert ledger.paid == ROWS  # ...and were answered by a second batch
        assert ledger.batches >= 2
        assert ledger.duplicates() == 0
        assert all(e.path.startswith("/v1/batches/") for e in ledger.entries)
        online = await run_eval(config(data, tmp_path / "online", server.url), show_progress=False)
    run = tmp_path / "batch" / "r"
    assert len(rows(run)) == ROWS
    assert all(row["error"] is None for row in rows(run))
    # The same answers, scores and tokens as online; half the cost (the batch price).
    assert answers(run) == answers(tmp_path / "online" / "r")
    assert result.summary["files"] == online.summary["files"]
    usage, paid_online = result.summary["usage"], online.summary["usage"]
    assert usage["prompt_tokens"] == paid_online["prompt_tokens"] > 0
    assert usage["batch_calls"] == usage["api_calls"] == ROWS + failed
    assert usage["cost_usd"] == pytest.approx(paid_online["cost_usd"] / 2, rel=1e-6)
    assert orjson.loads((run / BATCHES_NAME).read_bytes())["batches"] == []


async def test_input_files_are_split_by_batch_max_mb(tmp_path: Path, data: Path) -> None:
    fake = FakeConfig(batch=BatchConfig(delay=0.05, max_file_bytes=40_000))
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, batch=True, batch_max_mb=0.03)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        assert result.exit_code == ExitCode.OK, result.fatal
        assert server.ledger.batches >= 3  # every file under 30 kB; one would be too large
        assert server.ledger.paid == ROWS
        assert server.ledger.duplicates() == 0


async def test_batch_retry_online_sends_the_failed_lines_to_the_chat_route(
    tmp_path: Path, data: Path
) -> None:
    fake = FakeConfig(batch=BatchConfig(delay=0.05, fail_rate=0.2))
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, batch=True, batch_retry="online")
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        ledger = server.ledger
        assert result.exit_code == ExitCode.OK, result.fatal
        online = [e for e in ledger.entries if e.path == "/v1/chat/completions"]
        assert len(online) == ledger.count("500") >= 5
        assert ledger.batches == 1
        assert ledger.paid == ROWS
        assert ledger.duplicates() == 0


async def test_a_line_refused_for_its_content_fails_its_row_and_is_not_sent_again(
    tmp_path: Path, data: Path
) -> None:
    fake = FakeConfig(
        batch=BatchConfig(delay=0.05),
        content_faults=lambda text: "400_inspection" if _share(text) < 0.2 else None,
    )
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, batch=True)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        refused = server.ledger.count("400_inspection")
        assert server.ledger.batches == 1  # nothing to send again
        assert server.ledger.paid == ROWS - refused
    # The marked texts are a fixed ~20% of the rows: refusals did happen, and only those failed.
    assert refused >= 2
    assert result.exit_code == ExitCode.FAILED_ROWS
    assert result.summary["usage"]["failed_rows"] == refused
    failed = [row for row in rows(tmp_path / "out" / "r") if row["error"]]
    assert len(failed) == refused
    assert all("moderation" in row["error"] for row in failed)


async def test_a_create_whose_answer_was_lost_is_adopted_not_made_again(
    tmp_path: Path, data: Path
) -> None:
    fake = FakeConfig(batch=BatchConfig(delay=0.05, lose_creates=1))
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, batch=True)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        assert result.exit_code == ExitCode.OK, result.fatal
        assert server.ledger.batches == 1  # found by its input file id (the list route)
        assert server.ledger.paid == ROWS


def _share(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def _eval(url: str, data: Path, out: Path) -> list[str | Path]:
    return [
        "eval", "--model", "openai:m", "--base-url", url, "--data", data, "--out", out,
        "--run-name", "r", "--judge", "none", "--quiet", "--batch",
    ]  # fmt: skip


def _recorded(run: Path) -> list[dict]:
    path = run / BATCHES_NAME
    entries = orjson.loads(path.read_bytes())["batches"] if path.exists() else []
    return [e for e in entries if e["batch_id"]]


def test_kill_9_while_a_batch_is_pending_then_rerun_collects_it(tmp_path: Path, data: Path) -> None:
    out, env = tmp_path / "out", {"DRVD_BATCH_POLL": "0.1", "DRVD_CACHE_DIR": str(tmp_path / "c")}
    with server_process("--batch-delay", "4", "--batch-fail-rate", "0.05") as server:
        first = start_drvd(*_eval(server.url, data, out), env=env)
        pending = wait_for(lambda: _recorded(out / "r"), what="a recorded batch")
        first.kill()  # kill -9
        first.communicate(timeout=30)
        created = server.ledger()["batches"]
        assert created == len(pending) >= 1
        again = drvd(*_eval(server.url, data, out), env=env)
        assert again.returncode == 0, again.stderr
        ledger = server.ledger()
    # No row the killed run had sent went into a new batch: only the lines that failed did.
    assert ledger["batch_lines"] == ROWS + ledger["outcomes"].get("500", 0)
    assert ledger["paid"] == ROWS
    assert ledger["duplicates"] == 0
    assert len(rows(out / "r")) == ROWS
    assert all(row["error"] is None for row in rows(out / "r"))


def test_ctrl_c_leaves_the_batches_running_and_says_how_to_collect_them(
    tmp_path: Path, data: Path
) -> None:
    out, env = tmp_path / "out", {"DRVD_BATCH_POLL": "0.1", "DRVD_CACHE_DIR": str(tmp_path / "c")}
    with server_process("--batch-delay", "30") as server:
        proc = start_drvd(*_eval(server.url, data, out), env=env)
        pending = wait_for(lambda: _recorded(out / "r"), what="a recorded batch")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert server.ledger()["paid"] == 0
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"{len(pending)} batch(es) still pending" in err
    assert "rerun the same command to collect them" in err
    assert [e["batch_id"] for e in _recorded(out / "r")] == [e["batch_id"] for e in pending]


def test_batch_with_an_offline_model_is_a_usage_error(tmp_path: Path, data: Path) -> None:
    done: subprocess.CompletedProcess[str] = drvd(
        "eval", "--model", "random", "--data", data, "--out", tmp_path, "--batch"
    )
    assert done.returncode == 2, done.stderr
    assert "--batch needs an API model" in done.stderr
