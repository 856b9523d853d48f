"""End to end: the real client, runner and cache against the local fake OpenAI server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import VirtualClock
from fakeserver import FakeConfig, running

from pipeline.config import load_config
from pipeline.data.prompts import DISCRETE_MAX_TOKENS, SYSTEM_ANALYSIS, SYSTEM_DISCRETE
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.model.cache import ResponseCache
from pipeline.records import FILES
from pipeline.run.runner import run_eval
from pipeline.scoring.summary import score_run

REPO = Path(__file__).resolve().parent.parent


async def no_sleep(_seconds: float) -> None:
    """Backoff sleeps are injected away: tests never wait for a retry."""


def dataset(tmp_path: Path, total: int = 60, **kw) -> Path:
    root = tmp_path / "data"
    write_dataset(root, total=total, **kw)
    return root


def config(data: Path, out: Path, url: str | None = None, **flags):
    model = "openai:test-model" if url else "random"
    base = {"model": model, "data": data, "out": out, "run_name": "r", "base_url": url}
    env = {"DRVD_CACHE_DIR": str(out.parent / "cache"), **flags.pop("env", {})}
    return load_config({**base, **flags}, env)


def results(out: Path) -> dict[str, list[dict]]:
    found = {}
    for stem in FILES:
        path = out / "r" / f"{stem}.jsonl"
        if path.exists():
            found[stem] = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return found


def input_rows(data: Path) -> dict[str, list[dict]]:
    return {
        stem: [orjson.loads(x) for x in (data / f"{stem}.jsonl").read_bytes().splitlines()]
        for stem in FILES
        if (data / f"{stem}.jsonl").exists()
    }


def assert_complete_and_ordered(data: Path, out: Path) -> None:
    got, want = results(out), input_rows(data)
    assert got.keys() == want.keys()
    for stem, rows in want.items():
        assert [r["_meta"]["line"] for r in got[stem]] == list(range(1, len(rows) + 1))
        for row, original in zip(got[stem], rows, strict=True):
            assert {k: row[k] for k in original} == original  # input carried unchanged
            assert row["error"] is None
            assert row["model_response"]


async def test_random_model_runs_offline_in_input_order(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    cfg = config(data, tmp_path / "out")
    result = await run_eval(cfg, show_progress=False)
    assert result.exit_code == ExitCode.OK
    assert_complete_and_ordered(data, tmp_path / "out")
    summary = orjson.loads((tmp_path / "out" / "r" / "summary.json").read_bytes())
    assert set(summary["files"]) == set(FILES)
    assert summary["usage"]["api_calls"] == 0
    assert summary["files"]["joint_qa"]["n"] == len(input_rows(data)["joint_qa"])
    # Seeded: the same seed gives the same answers; another seed does not.
    again = await run_eval(config(data, tmp_path / "out2"), show_progress=False)
    assert again.summary["files"] == summary["files"]


async def test_faults_complete_every_row_and_never_pay_twice(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=80)
    # Hangs are left to test_client: a short timeout here would make a late answer paid twice.
    kinds = ("429", "500", "503", "drop", "garbage", "empty", "empty_choices")
    fake = FakeConfig(fault_rate=0.2, fault_kinds=kinds, retry_after=0.0, seed=3)
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=8)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.OK, result.summary["usage"]
    assert_complete_and_ordered(data, tmp_path / "out")
    faults = server.ledger.count() - server.ledger.paid
    assert faults >= 10  # the faults really happened
    assert server.ledger.duplicates() == 0
    usage = result.summary["usage"]
    assert usage["retries"] == faults
    assert usage["failed_rows"] == 0


async def test_rerun_into_new_out_makes_zero_api_calls(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    async with running() as server:
        first = await run_eval(config(data, tmp_path / "a", server.url), show_progress=False)
        paid = server.ledger.count()
        second = await run_eval(config(data, tmp_path / "b", server.url), show_progress=False)
        assert server.ledger.count() == paid
    assert second.summary["usage"]["api_calls"] == 0
    assert second.summary["usage"]["cache_hits"] == first.summary["usage"]["api_calls"]
    assert second.summary["files"] == first.summary["files"]


async def test_wrong_key_stops_within_concurrency_and_key_is_nowhere(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=120)
    secret = "sk-WRONG-0123456789abcdef"
    async with running(FakeConfig(expected_key="sk-right", latency=0.05)) as server:
        cfg = config(
            data, tmp_path / "out", server.url, concurrency=4, env={"DRVD_API_KEY": secret}
        )
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.FATAL
    assert "401" in (result.fatal or "")
    assert server.ledger.count() <= 4
    for path in tmp_path.rglob("*"):
        if path.is_file() and "data" not in path.parts:
            assert secret.encode() not in path.read_bytes(), path


async def test_failed_row_is_retried_on_rerun(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=40)
    marker = "(item 3)"  # one visual-evidence question
    fake = FakeConfig(content_faults={marker: "400_inspection"})
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url)
        first = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        assert first.exit_code == ExitCode.FAILED_ROWS
        assert first.summary["usage"]["failed_rows"] == 1
        failed = [r for rows in results(tmp_path / "out").values() for r in rows if r["error"]]
        assert len(failed) == 1
        assert "DataInspectionFailed" in failed[0]["error"]
        assert failed[0]["model_response"] is None
        # Moderation refusals are never retried within a run.
        assert sum(marker in e.user_text for e in server.ledger.entries) == 1
        fake.content_faults = {}
        paid = server.ledger.count()
        second = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        assert server.ledger.count() == paid + 1  # only the failed row is sent again
    assert second.exit_code == ExitCode.OK
    assert second.summary["usage"]["failed_rows"] == 0
    assert_complete_and_ordered(data, tmp_path / "out")


async def test_same_error_on_many_rows_stops_the_run(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=100)
    fake = FakeConfig(content_faults={"": "400_too_large"})  # every row
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=2)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.FATAL
    assert "in a row" in (result.fatal or "")
    assert server.ledger.count() < 40


async def test_torn_last_line_and_bad_rows(tmp_path: Path, capsys) -> None:
    data = dataset(tmp_path, total=40)
    path = data / "independent_qa.jsonl"
    lines = path.read_bytes().splitlines()
    lines[2] = b'{"not json'
    lines[4] = orjson.dumps({**orjson.loads(lines[4]), "image_paths": "images/missing.png"})
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = config(data, tmp_path / "out")
    first = await run_eval(cfg, show_progress=False)
    assert first.exit_code == ExitCode.FAILED_ROWS
    err = capsys.readouterr().err
    assert f"{path}:3: invalid JSON" in err
    assert f"{path}:5: image not found" in err
    # The row with a missing image is a failed results row (scored wrong, as the official
    # pipeline does); the line that is no row is listed apart.
    assert first.summary["usage"]["failed_rows"] == 1
    [invalid] = first.summary["run"]["invalid_rows"]
    assert invalid.startswith(f"{path}:3: invalid JSON")
    missing = [r for r in results(tmp_path / "out")["independent_qa"] if r["error"]]
    assert [r["error"] for r in missing] == ["image not found: images/missing.png"]
    # Simulate a crash mid-write: drop the last row and leave half of it behind.
    out = tmp_path / "out" / "r" / "visual_evidence_qa.jsonl"
    kept = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(kept[:-1]) + kept[-1][:25])
    second = await run_eval(cfg, show_progress=False)
    rows = results(tmp_path / "out")["visual_evidence_qa"]
    assert len(rows) == len(kept)
    assert len({r["_meta"]["key"] for r in rows}) == len(kept)
    assert second.summary["files"] == first.summary["files"]


async def test_rpm_pacing_keeps_429s_under_one_percent(tmp_path: Path, clock: VirtualClock) -> None:
    # The server enforces 600 per sliding minute and we pace at 600 per minute, both on the
    # virtual clock: a run of 700 rows spans more than one window without tripping it.
    fake = FakeConfig(rpm=600, retry_after=0.0, clock=clock)
    data = dataset(tmp_path, total=700, images=4, sizes=(32,))
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=16, rpm=600)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep, clock=clock)
    assert result.exit_code == ExitCode.OK
    sent = server.ledger.count()
    span = server.ledger.entries[-1].received - server.ledger.entries[0].received
    assert span > 60  # the run outlasted one server window, so the limit was in play
    assert server.ledger.count("429") < 0.01 * sent


async def _wait_for_lines(path: Path, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes().count(b"\n") >= n):
        assert time.monotonic() < deadline, f"{path} never reached {n} lines"
        await asyncio.sleep(0.02)


@pytest.mark.no_page  # checks nothing of the page
async def test_kill_9_then_rerun_loses_nothing_and_repays_at_most_in_flight(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=300, images=12)
    concurrency = 8
    env = {**os.environ, "DRVD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    async with running(FakeConfig(latency=0.05)) as server:
        args = ["eval", "--model", "openai:m", "--base-url", server.url, "--data", str(data)]
        args += ["--out", str(tmp_path / "out"), "--run-name", "r", "--quiet"]
        args += ["--concurrency", str(concurrency)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", *args, env=env, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        first = tmp_path / "out" / "r" / "visual_evidence_qa.jsonl"
        await _wait_for_lines(first, 60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        before = server.ledger.paid
        assert 0 < before < 300
        rerun = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", *args, env=env, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await rerun.wait() == ExitCode.OK
    assert_complete_and_ordered(data, tmp_path / "out")
    assert server.ledger.duplicates() <= concurrency


@pytest.mark.no_page  # checks nothing of the page
async def test_ctrl_c_stops_cleanly_with_partial_summary(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=300, images=12)
    env = {**os.environ, "DRVD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    async with running(FakeConfig(latency=0.05)) as server:
        args = ["eval", "--model", "openai:m", "--base-url", server.url, "--data", str(data)]
        args += ["--out", str(tmp_path / "out"), "--run-name", "r", "--quiet", "--concurrency", "4"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", *args, env=env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        first = tmp_path / "out" / "r" / "visual_evidence_qa.jsonl"
        await _wait_for_lines(first, 20)
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            raise
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"rerun the same command to resume" in stderr
    summary = orjson.loads((tmp_path / "out" / "r" / "summary.json").read_bytes())
    written = first.read_bytes().count(b"\n")
    assert 20 <= written < 300
    # The partial summary counts exactly the rows on disk, calls included, as a rebuild does.
    assert summary["files"]["visual_evidence_qa"]["n"] == written
    rebuilt = score_run(tmp_path / "out" / "r")
    assert (summary["files"], summary["usage"]) == (rebuilt["files"], rebuilt["usage"])
    assert summary["usage"]["api_calls"] >= written
    assert summary["run"]["stopped"].startswith("interrupted")


async def test_identical_rows_in_flight_together_are_paid_once(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=40)
    row = (data / "visual_evidence_qa.jsonl").read_bytes().splitlines()[0]
    (data / "visual_evidence_qa.jsonl").write_bytes((row + b"\n") * 12)
    async with running(FakeConfig(latency=0.1)) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=8, files="visual_evidence_qa")
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.OK
    assert server.ledger.count() == 1
    rows = results(tmp_path / "out")["visual_evidence_qa"]
    assert len({r["_meta"]["key"] for r in rows}) == 12  # each occurrence counts once
    assert result.summary["files"]["visual_evidence_qa"]["n"] == 12
    assert result.summary["usage"]["cache_hits"] == 11


async def test_resume_sends_only_unfinished_rows_even_without_the_cache(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=40)
    async with running() as server:
        cfg = config(data, tmp_path / "out", server.url, no_cache=True)
        first = await run_eval(cfg, show_progress=False)
        assert server.ledger.count() == 40
        # A crash after 2 joint rows were written: only the rest is sent again.
        joint = tmp_path / "out" / "r" / "joint_qa.jsonl"
        lines = joint.read_bytes().splitlines(keepends=True)
        keep = 2
        assert len(lines) - keep >= 3
        joint.write_bytes(b"".join(lines[:keep]))
        second = await run_eval(cfg, show_progress=False)
        assert server.ledger.count() == 40 + len(lines) - keep
        third = await run_eval(cfg, show_progress=False)  # nothing left to do
        assert server.ledger.count() == 40 + len(lines) - keep
    assert ResponseCache(tmp_path / "cache").stats()["entries"] == 0  # --no-cache wrote nothing
    assert first.exit_code == second.exit_code == third.exit_code == ExitCode.OK
    assert third.summary["files"] == first.summary["files"]
    assert_complete_and_ordered(data, tmp_path / "out")


async def test_summary_rebuilt_from_the_results_equals_the_live_one(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=60)
    fake = FakeConfig(script=["500", "ok", "503"], content_faults={"(item 3)": "400_inspection"})
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=4)
        live = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    # What `drvd score` does: the run section and model name kept, everything else from rows.
    rebuilt = score_run(
        cfg.run_dir, model=live.summary["model"], extra={"run": live.summary["run"]}
    )
    assert rebuilt == live.summary
    usage = live.summary["usage"]
    assert usage["api_calls"] == server.ledger.count()  # every call sent, retries included
    assert (usage["retries"], usage["failed_rows"]) == (2, 1)


async def test_concurrency_cap_holds_for_a_full_run(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=80)
    fake = FakeConfig(latency=0.03, fault_rate=0.1, fault_kinds=("500", "429"), retry_after=0.0)
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, concurrency=4)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.OK
    # The cap is reached (the run was not starved) and never passed, retries included.
    assert server.ledger.max_in_flight == 4


async def test_a_successful_keyed_run_writes_the_key_nowhere(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=40)
    secret = "sk-live-SECRET-0123456789abcdef"
    env = {
        **os.environ,
        "DRVD_CACHE_DIR": str(tmp_path / "cache"),
        "DRVD_API_KEY": secret,
        "DRVD_JUDGE_API_KEY": secret,
        "PYTHONPATH": str(REPO),
    }
    # Unreadable replies, so the judge is called with the key too.
    fake = FakeConfig(expected_key=secret, answer_fn=lambda p: "I would say the second one.")
    async with running(fake) as server:
        args = ["eval", "--model", "openai:m", "--base-url", server.url, "--data", str(data)]
        args += ["--out", str(tmp_path / "out"), "--run-name", "r", "--no-bertscore"]
        args += ["--judge", "openai:j", "--judge-base-url", server.url]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", *args, env=env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == ExitCode.OK, stderr.decode()
    assert server.ledger.count("401") == 0  # the key was sent, and it was right
    assert {e.model for e in server.ledger.entries} == {"m", "j"}
    written = [p for d in ("out", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert len(written) > 40
    for blob in [stdout, stderr, *(p.read_bytes() for p in written)]:
        assert secret.encode() not in blob


async def test_each_row_gets_its_own_template_in_a_merged_file(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=40)
    evidence = (data / "visual_evidence_qa.jsonl").read_bytes().splitlines()
    independent = (data / "independent_qa.jsonl").read_bytes().splitlines()
    # The official scripts take the template from the first line; we decide per row.
    merged = [evidence[0], *independent[:3], evidence[1]]
    (data / "independent_qa.jsonl").write_bytes(b"\n".join(merged) + b"\n")
    async with running() as server:
        cfg = config(data, tmp_path / "out", server.url, files="independent_qa")
        result = await run_eval(cfg, show_progress=False)
        sent = [(e.system, e.params.get("max_tokens")) for e in server.ledger.entries]
    assert result.exit_code == ExitCode.OK
    assert sorted(sent, key=str) == sorted(
        [(SYSTEM_ANALYSIS, None)] * 2 + [(SYSTEM_DISCRETE, DISCRETE_MAX_TOKENS)] * 3, key=str
    )
