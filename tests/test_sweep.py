"""`drvd sweep`: several models in one process, against fake servers running as their own processes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from procs import REPO, ServerProcess, drvd, lines_of, server_process, start_drvd, wait_for

from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.records import FILES
from pipeline.run.lock import run_lock
from pipeline.run.sweep import STATUS

ROWS = 16
LATENCY = 0.3
C = 2  # each model alone: ROWS * LATENCY / C = 2.4 s of requests
KEYWORDS = "comma-separated list of visually identifiable"


def _data(root: Path, rows: int = ROWS, **split: float) -> Path:
    assert (
        sum(write_dataset(root, total=rows, images=4, sizes=(32,), split=split or None).values())
        == rows
    )
    return root


def _models_file(path: Path, servers: dict[str, ServerProcess], **extra: str) -> Path:
    """One alias per server: `alias` → model id `model-<alias>` at that server, C in flight."""
    text = ""
    for alias, server in servers.items():
        text += f'[models.{alias}]\nmodel = "model-{alias}"\nbase_url = "{server.url}"\n'
        text += f"concurrency = {C}\n{extra.get(alias, '')}\n"
    path.write_text(text)
    return path


def _flags(models: Path, data: Path, out: Path, cache: Path, *more: str) -> list[str | Path]:
    return [
        "--models-file", models, "--data", data, "--out", out, "--cache-dir", cache,
        "--judge", "none", *more,
    ]  # fmt: skip


def _rows(run: Path) -> list[dict[str, Any]]:
    rows = [row for stem in FILES for row in lines_of(run / f"{stem}.jsonl")]
    for row in rows:
        row["_meta"].pop("request_id")  # the server's counter: differs between two runs
    return rows


def _summary(run: Path) -> dict[str, Any]:
    """Return the summary without what each run measured of its endpoints (latency)."""
    data: dict[str, Any] = orjson.loads((run / "summary.json").read_bytes())
    data["run"].pop("endpoints")
    return data


def _comparison(out: Path) -> dict[str, Any]:
    [path] = out.glob("sweep-*.json")
    assert path.with_suffix(".md").is_file()
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


@contextmanager
def _servers(
    tmp_path: Path, *names: str, flags: dict[str, list[str]] | None = None, latency: float = LATENCY
) -> Iterator[dict[str, ServerProcess]]:
    """Start one fake server process per name, each writing its ledger to tmp_path on exit."""
    with ExitStack() as stack:
        servers = {}
        for name in names:
            ledger = ["--ledger-out", str(tmp_path / f"{name}.ledger")]
            more = (flags or {}).get(name, [])
            servers[name] = stack.enter_context(
                server_process("--latency", str(latency), *ledger, *more)
            )
        yield servers


def _received(tmp_path: Path, name: str, start: float, end: float) -> list[float]:
    """When the server `name` received requests between `start` and `end` (monotonic clock)."""
    entries = lines_of(tmp_path / f"{name}.ledger")
    return sorted(e["received"] for e in entries if start <= e["received"] <= end)


@pytest.mark.no_page  # checks nothing of the page
def test_sweep_runs_both_models_at_once_with_the_results_of_two_evals(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    with _servers(tmp_path, "a", "b") as servers:
        models = _models_file(tmp_path / "models.toml", servers)
        t0 = time.monotonic()
        sweep = drvd("sweep", "--models", "a,b", "--quiet",
                     *_flags(models, data, tmp_path / "swept", tmp_path / "cache1"))  # fmt: skip
        t1 = time.monotonic()
        assert sweep.returncode == 0, sweep.stderr
        for alias in ("a", "b"):  # one after the other, into another --out, with another cache
            one = drvd("eval", "--model", alias, "--quiet",
                       *_flags(models, data, tmp_path / "alone", tmp_path / "cache2"))  # fmt: skip
            assert one.returncode == 0, one.stderr
        t2 = time.monotonic()
    swept = {n: _received(tmp_path, n, t0, t1) for n in ("a", "b")}
    alone = {n: _received(tmp_path, n, t1, t2) for n in ("a", "b")}
    assert all(len(got) == ROWS for got in (*swept.values(), *alone.values()))  # each really paid
    # Both servers were busy over the same interval: most of each one's span overlaps the other.
    overlap = min(swept["a"][-1], swept["b"][-1]) - max(swept["a"][0], swept["b"][0])
    for times in swept.values():
        assert overlap > 0.6 * (times[-1] - times[0]), swept
    # ...so the sweep took about as long as one model alone, not the two together.
    span = max(t[-1] for t in swept.values()) - min(t[0] for t in swept.values())
    separate = sum(t[-1] - t[0] for t in alone.values())
    print(f"requests spanned {span:.2f} s in the sweep, {separate:.2f} s in two evals")
    assert span < 0.75 * separate
    for alias in ("a", "b"):
        assert _rows(tmp_path / "swept" / alias) == _rows(tmp_path / "alone" / alias)
        assert len(_rows(tmp_path / "swept" / alias)) == ROWS
        assert _summary(tmp_path / "swept" / alias) == _summary(tmp_path / "alone" / alias)
    table = _comparison(tmp_path / "swept")
    assert [m["model"] for m in table["models"]] == ["a", "b"]
    for line in table["models"]:
        summary = _summary(tmp_path / "swept" / line["model"])
        assert line["rows"] == ROWS
        assert line["status"] == "ok"
        assert line["files"]["independent_qa"] == summary["files"]["independent_qa"]["accuracy"]
    assert f"| a | {ROWS} |" in sweep.stdout
    assert sweep.stdout.strip().splitlines()[-1].startswith("comparison: ")


@pytest.mark.no_page  # checks nothing of the page
def test_the_sweep_shares_its_cache_and_pays_the_judge_once_for_both_models(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path / "data", 8, report_generation=1.0)
    with _servers(tmp_path, "a", "b", "judge") as servers:
        models = _models_file(tmp_path / "models.toml", {n: servers[n] for n in ("a", "b")})
        judge = ["--judge", "openai:judge-model", "--judge-base-url", servers["judge"].url]
        args = ["sweep", "--models", "a,b", "--quiet", "--no-bertscore"]
        first = drvd(*args, *_flags(models, data, tmp_path / "one", tmp_path / "cache"), *judge)
        assert first.returncode == 0, first.stderr
        paid = {n: s.ledger() for n, s in servers.items()}
        again = drvd(*args, *_flags(models, data, tmp_path / "two", tmp_path / "cache"), *judge)
        assert again.returncode == 0, again.stderr
        assert {n: s.ledger() for n, s in servers.items()} == paid  # the rerun paid nothing
    assert paid["a"]["paid"] == paid["b"]["paid"] == 8
    # Both models' reports have the same references: their keywords were asked for once.
    asked = [e for e in lines_of(tmp_path / "judge.ledger") if KEYWORDS in e["user_text"]]
    assert len(asked) == len({e["messages_hash"] for e in asked}) == paid["judge"]["requests"]
    references = {row["answer"] for row in lines_of(data / "report_generation.jsonl")}
    assert len(asked) >= len(references) > 1
    for alias in ("a", "b"):
        rows = _rows(tmp_path / "two" / alias)
        assert len(rows) == 8
        assert all(row["keywords"]["reference"] for row in rows)
        assert _summary(tmp_path / "two" / alias)["usage"]["api_calls"] == 0


def test_a_fatal_error_stops_only_its_model_and_the_sweep_exits_3(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", 8, visual_evidence_qa=0.5, joint_qa=0.5)
    bad_key = {"b": ["--expected-key", "right-key"]}
    with _servers(tmp_path, "a", "b", flags=bad_key) as servers:
        models = _models_file(tmp_path / "models.toml", servers, b='key_env = "B_KEY"')
        proc = drvd("sweep", "--models", "a,b", "--quiet",
                    *_flags(models, data, tmp_path / "out", tmp_path / "cache"),
                    env={"B_KEY": "wrong-key"})  # fmt: skip
        assert servers["a"].ledger()["paid"] == 8
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    [stopped] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert stopped.startswith("error: b: stopped: 401"), stopped
    assert "wrong-key" not in proc.stderr + proc.stdout
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"wrong-key" not in written
    assert len([r for r in _rows(tmp_path / "out" / "a") if r["error"] is None]) == 8
    assert _summary(tmp_path / "out" / "b")["run"]["stopped"].startswith("401")
    table = {m["model"]: m for m in _comparison(tmp_path / "out")["models"]}
    assert (table["a"]["status"], table["a"]["exit_code"], table["a"]["rows"]) == ("ok", 0, 8)
    assert (table["b"]["status"], table["b"]["exit_code"]) == ("stopped", 3)
    assert "| a |" in proc.stdout
    assert "| b |" in proc.stdout


@pytest.mark.no_page  # checks nothing of the page
def test_progress_without_a_terminal_is_a_line_per_model(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", 6, independent_qa=1.0)
    with _servers(tmp_path, "a", "b", latency=0) as servers:
        models = _models_file(tmp_path / "models.toml", servers)
        proc = drvd("sweep", "--models", "a,b,random",
                    *_flags(models, data, tmp_path / "out", tmp_path / "cache"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for alias in ("a", "b", "random"):
        assert f"{alias}: 6/6 rows " in proc.stderr, proc.stderr


@pytest.mark.no_page  # checks nothing of the page
def test_sigterm_stops_every_run_and_each_writes_its_partial_summary(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    out = tmp_path / "out"
    with _servers(tmp_path, "a", "b") as servers:
        models = _models_file(tmp_path / "models.toml", servers)
        proc = start_drvd("sweep", "--models", "a,b", "--quiet",
                          *_flags(models, data, out, tmp_path / "cache"))  # fmt: skip
        answered = lambda: all(len(_rows(out / n)) >= 2 for n in ("a", "b"))  # noqa: E731
        wait_for(answered, what="a few rows of each model")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM: interrupted: rerun the same command to resume" in err
    for alias in ("a", "b"):
        summary = _summary(out / alias)
        assert summary["run"]["stopped"].startswith("interrupted")
        assert sum(f["n"] for f in summary["files"].values()) == len(_rows(out / alias)) < ROWS
    assert {m["status"] for m in _comparison(out)["models"]} == {"interrupted"}


@pytest.mark.no_page  # checks nothing of the page
def test_a_run_folder_in_use_stops_the_sweep_before_any_request(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    with _servers(tmp_path, "a", "b") as servers:
        models = _models_file(tmp_path / "models.toml", servers)
        with run_lock(tmp_path / "out" / "b", "eval"):
            proc = drvd("sweep", "--models", "a,b", "--quiet",
                        *_flags(models, data, tmp_path / "out", tmp_path / "cache"))  # fmt: skip
        assert servers["a"].ledger()["requests"] == servers["b"].ledger()["requests"] == 0
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'out' / 'b'} is in use by `drvd eval`"), line


@pytest.mark.parametrize(
    ("variables", "command"),
    [
        (["MODELS=a b", "DATA=x"], "-m pipeline sweep --models a,b --data x --out runs"),
        (["MODEL=a", "DATA=x"], "-m pipeline eval --model a --data x --out runs"),
    ],
)
def test_make_eval_with_models_runs_the_sweep(variables: list[str], command: str) -> None:
    proc = subprocess.run(
        ["make", "-n", "-C", str(REPO), "eval", *variables],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert command in proc.stdout, proc.stdout


def test_every_exit_status_has_a_word_in_the_comparison() -> None:
    """A run stopped by --max-cost (4) among others: its line says so (it was missing)."""
    assert set(STATUS) == set(ExitCode)
    assert STATUS[ExitCode(4)] == "cost cap"
