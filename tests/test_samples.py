"""`--samples K`: K answers per row, each paid once, resumable, and statistics that recover a
planted truth. Real processes against the fake server as a model of known behaviour."""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fakebatch import BatchConfig
from fakeserver import FakeConfig, running
from procs import REPO, drvd, lines_of, server_process, start_drvd, wait_for
from test_intervals import difference_reference

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.records import FILES
from pipeline.run.runner import run_eval
from pipeline.scoring.samples import Draw, stats
from pipeline.scoring.stats import wilson

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)
ROWS = 100  # 45 evidence, 35 independent, 12 joint, 8 reports
MCQ = ("visual_evidence_qa", "independent_qa")
LEVELS = ("modality", "organ", "lesion", "diagnosis")


def _eval(url: str, data: Path, out: Path, cache: Path, *more: str) -> list[str | Path]:
    return [
        "eval", "--model", "openai:m", "--base-url", url, "--data", data, "--out", out,
        "--cache-dir", cache, "--quiet", "--judge", "none", "--concurrency", "4",
        "--run-name", "r", *more,
    ]  # fmt: skip


def _summary(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((run / "summary.json").read_bytes())
    return data


def _folder(run: Path, k: int) -> Path:
    return run if k == 0 else run / "samples" / str(k)


def _hits(row: dict[str, Any]) -> list[bool]:
    """Recount one results line by the official rules, independently of pipeline.scoring."""
    said = row["model_response"]
    if "joint_prompt" in row:
        tokens = said.split(",") if isinstance(said, str) else []
        golds = [row[f"{level}_answer"][0] for level in LEVELS]
        return [i < len(tokens) and tokens[i] == g for i, g in enumerate(golds)]
    return [said == row["answer"].split(".")[0].strip()]


def _recount(run: Path, stem: str, k: int) -> list[list[list[bool]]]:
    """Return, per item (sample 0's order), per sample, its hits."""
    files = [
        {r["_meta"]["key"]: r for r in lines_of(_folder(run, s) / f"{stem}.jsonl")}
        for s in range(k)
    ]
    return [[_hits(files[s][key]) for s in range(k)] for key in files[0]]


# ---- the statistics on a hand-made example, in exact fractions ----


def test_majority_agreement_and_pass_at_k_on_a_hand_made_example() -> None:
    # Gold is "A". Three samples per item; per item: answers, then what each statistic sees.
    items: list[list[str | None]] = [
        ["A", "A", "A"],  # all right, all agree
        ["B", "A", "A"],  # majority right, pass@k, not all
        ["B", "C", "A"],  # a three-way tie: the first answer (B, wrong) wins
        ["A", "B", "B"],  # majority wrong though sample 0 is right
        ["C", "C", "C"],  # all wrong, all agree
        [None, "A", None],  # a failed row answers None: the majority is None, wrong
    ]
    draws = [[Draw(a, a == "A") for a in item] for item in items]
    got = stats(draws)
    per_sample = [Fraction(2, 6), Fraction(3, 6), Fraction(3, 6)]  # items right in each sample
    assert got["k"] == 3
    assert got["n"] == 6
    assert got["per_sample"] == [float(p) for p in per_sample]
    assert got["mean"] == pytest.approx(float(Fraction(4, 9)), abs=1e-15)
    # Deviations from 4/9: -1/9, 1/18, 1/18; squares 6/324 over k - 1 = 2: variance 1/108.
    assert got["sd"] == pytest.approx(float(Fraction(1, 108)) ** 0.5, abs=1e-15)
    assert got["majority"] == float(Fraction(2, 6))  # items 1 and 2
    assert got["agreement"] == float(Fraction(2, 6))  # items 1 and 5
    assert got["pass_at_k"] == float(Fraction(5, 6))  # all but item 5
    assert got["pass_all_k"] == float(Fraction(1, 6))  # item 1


def test_no_item_gives_no_shares() -> None:
    assert stats([], 3) == {
        "k": 3,
        "n": 0,
        **dict.fromkeys(
            ("mean", "sd", "majority", "agreement", "pass_at_k", "pass_all_k", "per_sample")
        ),
    }


# ---- K = 1 is today's run, byte for byte ----


def test_samples_1_is_byte_identical_to_a_run_without_the_flag(tmp_path: Path) -> None:
    demo = REPO / "pipeline" / "data" / "sample"
    base: list[str | Path] = [
        "eval",
        "--model",
        "random",
        "--data",
        demo,
        "--judge",
        "none",
        "--quiet",
    ]
    runs = {
        "plain": drvd(*base, "--out", tmp_path / "plain", "--run-name", "demo"),
        "flag": drvd(*base, "--out", tmp_path / "flag", "--run-name", "demo", "--samples", "1"),
        "env": drvd(*base, "--out", tmp_path / "env", "--run-name", "demo", env={"DRVD_SAMPLES": "1"}),
    }  # fmt: skip
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.stderr)
        assert "samples" not in done.stderr
    names = [*(f"{s}.jsonl" for s in FILES), "summary.json"]
    for name in names:
        plain = (tmp_path / "plain" / "demo" / name).read_bytes()
        for other in ("flag", "env"):
            assert (tmp_path / other / "demo" / name).read_bytes() == plain, (other, name)
    assert "samples" not in _summary(tmp_path / "flag" / "demo")
    assert not (tmp_path / "flag" / "demo" / "samples").exists()


# ---- K = 3, then 5, against a model right with probability 0.6 per request ----


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("samples")
    data, out, cache, ledger = root / "data", root / "out", root / "cache", root / "ledger.jsonl"
    write_dataset(data, total=ROWS, images=20, sizes=(32,))
    paid: list[int] = []
    official: dict[str, Any] = {}
    truth = ("--truth", str(data), "--behaviour", "item:0.6", "--ledger-out", str(ledger))
    with server_process(*truth) as server:
        for more in ((), ("--samples", "3"), ("--samples", "5")):  # today's run, then samples
            done = drvd(*_eval(server.url, data, out, cache, *more))
            assert done.returncode == 0, done.stderr
            paid.append(server.ledger()["paid"])
            official = official or _summary(out / "r")
        summary = _summary(out / "r")
        rescored = drvd("score", out / "r", "--page", "off")
        assert rescored.returncode == 0, rescored.stderr
        again = drvd("score", out / "r" / "samples" / "2", "--page", "off")
        assert again.returncode == 0, again.stderr
    entries = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    return SimpleNamespace(
        run=out / "r", data=data, cache=cache, paid=paid, summary=summary, entries=entries,
        stderr=done.stderr, stdout=done.stdout, official=official,
    )  # fmt: skip


def test_adding_samples_to_a_finished_run_pays_only_the_new_ones(sampled: SimpleNamespace) -> None:
    # A run without the flag, then --samples 3 on it, then 5: sample 0 is the run, never re-paid.
    assert sampled.paid == [ROWS, 3 * ROWS, 5 * ROWS]
    assert sampled.summary["files"] == sampled.official["files"]  # official scores unchanged
    assert "samples" not in sampled.official
    # Every request (the same messages for every sample) was paid exactly five times.
    per_request = Counter(e["messages_hash"] for e in sampled.entries if e["status"] == 200)
    assert len(per_request) == ROWS
    assert set(per_request.values()) == {5}
    for k in range(5):
        for stem in FILES:
            keys = [r["_meta"]["key"] for r in lines_of(_folder(sampled.run, k) / f"{stem}.jsonl")]
            assert len(keys) == len(set(keys)) > 0, (k, stem)
    usage = sampled.summary["samples"]["usage"]
    assert usage["api_calls"] == 4 * ROWS  # the extra samples' calls, apart from sample 0's
    assert sampled.summary["usage"]["api_calls"] + usage["cache_hits"] == ROWS  # sample 0 paid once


def test_sample_statistics_equal_a_recount_of_the_results_files(sampled: SimpleNamespace) -> None:
    files = sampled.summary["samples"]["files"]
    assert sampled.summary["samples"]["k"] == 5
    assert "report_generation" not in files
    for stem in MCQ:
        items = [[hits[0] for hits in item] for item in _recount(sampled.run, stem, 5)]
        got = files[stem]
        per_sample = [sum(item[s] for item in items) / len(items) for s in range(5)]
        assert got["n"] == len(items) > 0
        assert got["per_sample"] == pytest.approx(per_sample)
        assert got["mean"] == pytest.approx(statistics.fmean(per_sample))
        assert got["sd"] == pytest.approx(statistics.stdev(per_sample))
        assert got["pass_at_k"] == pytest.approx(sum(map(any, items)) / len(items))
        assert got["pass_all_k"] == pytest.approx(sum(map(all, items)) / len(items))
    joint = _recount(sampled.run, "joint_qa", 5)
    for i, level in enumerate(LEVELS):
        right = sum(hits[i] for item in joint for hits in item)
        assert files["joint_qa"]["levels"][level]["mean"] == pytest.approx(right / (5 * len(joint)))
    chains = sum(all(hits) for item in joint for hits in item)
    assert files["joint_qa"]["chain"]["mean"] == pytest.approx(chains / (5 * len(joint)))
    # Sample 0 is the official run: its accuracy is the summary's.
    for stem in MCQ:
        assert files[stem]["per_sample"][0] == sampled.summary["files"][stem]["accuracy"]


def test_the_mean_over_samples_recovers_the_planted_accuracy(sampled: SimpleNamespace) -> None:
    # Every answer is right with probability 0.6, independently: 80 MCQ items x 5 samples.
    right = n = 0
    for stem in MCQ:
        items = _recount(sampled.run, stem, 5)
        right += sum(hits[0] for item in items for hits in item)
        n += 5 * len(items)
    low, high = wilson(right, n) or (0.0, 1.0)
    assert low <= 0.6 <= high, (right, n)
    # Each file's interval over the K samples holds the truth, and is the clustered interval
    # recomputed here from the files: per image, the sum of per-item means, and the item count.
    for stem in MCQ:
        ci = sampled.summary["samples"]["files"][stem]["ci"]
        assert ci["low"] <= 0.6 <= ci["high"], (stem, ci)
        images = _images(sampled.run / f"{stem}.jsonl")
        items = _recount(sampled.run, stem, 5)
        totals: dict[str, list[float]] = {}
        for image, item in zip(images, items, strict=True):
            cell = totals.setdefault(image, [0.0, 0])
            cell[0] += sum(hits[0] for hits in item) / 5
            cell[1] += 1
        n, g = len(items), len(totals)
        p = sum(t for t, _ in totals.values()) / n
        v = g / (g - 1) * sum((t - p * m) ** 2 for t, m in totals.values()) / n**2
        assert ci["clusters"] == g
        assert ci["design_effect"] == pytest.approx(v / (p * (1 - p) / (5 * n)), abs=1e-4)


def _images(path: Path) -> list[str]:
    """Each item's image, in the order _recount reads the items (sample 0's keys)."""
    rows = {r["_meta"]["key"]: r["image_paths"] for r in lines_of(path)}
    return list(rows.values())


def test_each_sample_is_scored_on_its_own_and_score_rebuilds_the_same_summary(
    sampled: SimpleNamespace,
) -> None:
    assert _summary(sampled.run) == sampled.summary  # `score` rebuilt it from the files
    own = _summary(sampled.run / "samples" / "2")
    for stem in MCQ:
        per_sample = sampled.summary["samples"]["files"][stem]["per_sample"]
        assert own["files"][stem]["accuracy"] == per_sample[2]


def test_the_temperature_0_files_are_named_in_a_warning(sampled: SimpleNamespace) -> None:
    assert "warning: --samples 5 on independent_qa, joint_qa" in sampled.stderr
    assert sampled.summary["samples"]["temperature_0"] == ["independent_qa", "joint_qa"]
    assert sampled.summary["run"]["deviations"] == {}


def _plan(sampled: SimpleNamespace, k: int) -> Any:
    """`plan --samples K --json` on the sampled run's folder and cache; it must succeed."""
    done = drvd(
        "plan", "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--data",
        sampled.data, "--out", sampled.run.parent, "--run-name", "r", "--cache-dir",
        sampled.cache, "--judge", "none", "--samples", str(k), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_plan_counts_the_new_samples_only(sampled: SimpleNamespace) -> None:
    done = _plan(sampled, 7)
    plan = orjson.loads(done.stdout)
    assert plan["samples"] == 7
    assert plan["rows"] == 7 * ROWS
    assert plan["answered"] == 5 * ROWS
    assert plan["to_send"] == 2 * ROWS
    # K = 7 was not measured (the run has 5): the detectable difference credits one answer a row.
    assert {d["samples"] for d in plan["detectable"].values()} == {1}


def test_plan_credits_k_samples_only_with_a_design_effect_measured_over_k(
    sampled: SimpleNamespace,
) -> None:
    done = _plan(sampled, 5)
    found = orjson.loads(done.stdout)["detectable"]
    c = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    for stem in MCQ:
        measured = sampled.summary["samples"]["files"][stem]
        deff, p = max(measured["ci"]["design_effect"], 1.0), measured["mean"]
        got = found[stem]
        assert (got["samples"], got["from"]) == (5, "last run")
        assert got["design_effect"] == pytest.approx(deff, abs=1e-4)
        # Solved by fixed-point iteration on delta = c*sqrt(deff*(psi - delta^2)/(n*K)).
        psi, delta = 2 * p * (1 - p), 0.0
        for _ in range(200):
            delta = c * math.sqrt(deff * (psi - delta * delta) / (got["rows"] * 5))
        assert got["difference"] == pytest.approx(delta, abs=1e-4)


# ---- kill -9 in the middle, then a rerun ----


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data, out, cache, ledger = (
        tmp_path / "data",
        tmp_path / "out",
        tmp_path / "cache",
        tmp_path / "l",
    )
    write_dataset(data, total=40, images=8, sizes=(32,))
    with server_process("--latency", "0.1", "--ledger-out", str(ledger)) as server:
        args = _eval(server.url, data, out, cache, "--samples", "3")
        first = start_drvd(*args)
        extra = out / "r" / "samples"

        def some_of_each() -> bool:
            return all(
                sum(len(lines_of(_folder(out / "r", k) / f"{s}.jsonl")) for s in FILES) >= 3
                for k in range(3)
            )

        wait_for(some_of_each, what="rows of every sample")
        first.kill()
        first.communicate(timeout=30)
        assert extra.is_dir()
        again = drvd(*args)
        assert again.returncode == 0, again.stderr
    entries = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    per_request = Counter(e["messages_hash"] for e in entries if e["status"] == 200)
    assert len(per_request) == 40
    # Each request is paid 3 times, plus at most the 4 the killed run had in flight.
    assert sum(per_request.values()) - 3 * 40 <= 4
    assert min(per_request.values()) == 3
    for k in range(3):
        rows = [r for s in FILES for r in lines_of(_folder(out / "r", k) / f"{s}.jsonl")]
        assert len(rows) == len({r["_meta"]["key"] for r in rows}) == 40, k
        assert all(r["error"] is None for r in rows)


# ---- --temperature, a recorded deviation ----


def test_temperature_is_sent_recorded_and_silences_the_warning(tmp_path: Path) -> None:
    data, out, ledger = tmp_path / "data", tmp_path / "out", tmp_path / "ledger.jsonl"
    write_dataset(data, total=20, images=4, sizes=(32,))
    with server_process("--ledger-out", str(ledger)) as server:
        args = _eval(server.url, data, out, tmp_path / "cache", "--samples", "2")
        done = drvd(*args, "--temperature", "0.7")
        assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    summary = _summary(out / "r")
    assert summary["run"]["deviations"] == {"temperature": 0.7}
    assert "temperature_0" not in summary["samples"]
    entries = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    assert len(entries) == 2 * 20
    assert {e["params"].get("temperature") for e in entries} == {0.7}


# ---- the Batch API: a line's custom_id says which sample it is ----


async def test_batch_lines_carry_the_sample_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    n = sum(write_dataset(data, total=12, images=3, sizes=(32,)).values())
    flags = {
        "model": "openai:m", "data": data, "out": tmp_path, "run_name": "r", "judge": "none",
        "batch": True, "samples": 3,
    }  # fmt: skip
    async with running(FakeConfig(batch=BatchConfig(delay=0.05))) as server:
        env = {"DRVD_CACHE_DIR": str(tmp_path / "cache"), "DRVD_BATCH_POLL": "0.05"}
        cfg = load_config({**flags, "base_url": server.url}, env)
        result = await run_eval(cfg, show_progress=False)
        assert result.exit_code == ExitCode.OK, result.fatal
        ids = [e.custom_id for e in server.ledger.entries]
    assert len(ids) == 3 * n
    assert all(e.path.startswith("/v1/batches/") for e in server.ledger.entries)
    by_sample = Counter(next((k for k in (1, 2) if f"-s{k}-" in i), 0) for i in ids)
    assert by_sample == {0: n, 1: n, 2: n}
    for k in range(3):
        rows = [r for s in FILES for r in lines_of(_folder(tmp_path / "r", k) / f"{s}.jsonl")]
        assert len(rows) == n
        assert all(r["_meta"]["usage"]["batch_calls"] == 1 for r in rows)


# ---- the fake server's image behaviour: every row of an image right, or every one wrong ----


async def test_image_behaviour_decides_once_per_image(tmp_path: Path) -> None:
    from fakebehaviour import make_behaviour

    data = tmp_path / "data"
    write_dataset(
        data, total=60, images=6, sizes=(32,), split={"independent_qa": 0.7, "joint_qa": 0.3}
    )
    fake = FakeConfig(behaviour=make_behaviour("image:0.5", data, seed=3))
    async with running(fake) as server:
        flags = {"model": "openai:m", "data": data, "out": tmp_path, "run_name": "r",
                 "judge": "none", "samples": 2, "base_url": server.url}  # fmt: skip
        cfg = load_config(flags, {"DRVD_CACHE_DIR": str(tmp_path / "cache")})
        result = await run_eval(cfg, show_progress=False)
        assert result.exit_code == ExitCode.OK, result.fatal
    by_image: dict[str, set[bool]] = {}
    for k in range(2):
        for stem in ("independent_qa", "joint_qa"):
            for row in lines_of(_folder(tmp_path / "r", k) / f"{stem}.jsonl"):
                by_image.setdefault(row["image_paths"], set()).update(_hits(row))
    assert len(by_image) == 6
    assert all(len(seen) == 1 for seen in by_image.values())  # all right or all wrong
    assert {True, False} == {next(iter(seen)) for seen in by_image.values()}
    agreement = result.summary["samples"]["files"]["independent_qa"]["agreement"]
    assert agreement == 1.0  # the same answer on every request


def test_the_page_shows_the_samples_table_only_with_samples(sampled: SimpleNamespace) -> None:
    from pipeline.views.page_tables import samples_table

    table = samples_table(sampled.summary)
    assert "5 samples per row" in table
    for stem in MCQ:
        cell = sampled.summary["samples"]["files"][stem]
        assert f"<tr><th>{stem}</th><td>{cell['n']}</td><td>{100 * cell['mean']:.1f}%</td>" in table
    assert all(f"joint_qa · {part}" in table for part in (*LEVELS, "chain"))
    assert samples_table(sampled.official) == ""  # K = 1: the page as it was


def test_the_terminal_says_what_the_samples_say(sampled: SimpleNamespace) -> None:
    for stem in MCQ:
        mean = sampled.summary["samples"]["files"][stem]["mean"]
        assert f"samples (5): {stem} mean {100 * mean:.2f}%" in sampled.stdout
    assert f"extra samples: {4 * ROWS:,} API calls" in sampled.stdout


def test_a_sample_that_cannot_start_ends_the_run_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "samples").write_text("a file where the samples' folder goes")
    demo = REPO / "pipeline" / "data" / "sample"
    done = drvd(
        "eval", "--model", "random", "--data", demo, "--judge", "none", "--quiet", "--out",
        tmp_path, "--run-name", "demo", "--samples", "2",
    )  # fmt: skip
    assert done.returncode == ExitCode.WRITE, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "cannot create" in line
    assert "samples" in line


async def test_the_cost_cap_counts_what_every_sample_spent_before(tmp_path: Path) -> None:
    # Independent rows only: their max_tokens (50) keeps a request's reserved bound near its cost.
    data = tmp_path / "data"
    n = sum(
        write_dataset(data, total=60, images=6, sizes=(32,), split={"independent_qa": 1}).values()
    )
    async with running(FakeConfig()) as server:
        flags = {"model": "openai:m", "data": data, "out": tmp_path, "run_name": "r",
                 "judge": "none", "base_url": server.url, "price_in": 2.0, "price_out": 8.0}  # fmt: skip
        env = {"DRVD_CACHE_DIR": str(tmp_path / "cache")}
        first = await run_eval(load_config({**flags, "samples": 2}, env), show_progress=False)
        assert first.exit_code == ExitCode.OK, first.fatal
        spent = first.summary["usage"]["cost_usd"] + first.summary["samples"]["usage"]["cost_usd"]
        one = first.summary["usage"]["cost_usd"]  # what one sample of every row costs
        # Room for half a sample more: only counting both earlier samples' spending stops it.
        capped = load_config({**flags, "samples": 3, "max_cost": spent + one / 2}, env)
        result = await run_eval(capped, show_progress=False)
        assert result.exit_code == ExitCode.COST, result.fatal
        assert 0 < server.ledger.paid - 2 * n < n
    assert result.summary["samples"]["temperature_0"] == ["independent_qa"]  # the files it has


def test_a_sweep_draws_the_samples_of_every_model(tmp_path: Path) -> None:
    demo = REPO / "pipeline" / "data" / "sample"
    done = drvd(
        "sweep", "--models", "random", "--data", demo, "--judge", "none", "--quiet", "--out",
        tmp_path, "--samples", "2", "--seed", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = tmp_path / "random"
    assert _summary(run)["samples"]["k"] == 2
    for stem in FILES:
        first = {r["_meta"]["key"]: r["model_response"] for r in lines_of(run / f"{stem}.jsonl")}
        again = {
            r["_meta"]["key"]: r["model_response"]
            for r in lines_of(run / "samples" / "1" / f"{stem}.jsonl")
        }
        assert first.keys() == again.keys()
    # The random baseline draws each sample anew: the samples do not all repeat sample 0.
    assert _summary(run)["samples"]["files"]["independent_qa"]["agreement"] < 1


def test_compare_pairs_each_items_share_over_k_samples_on_both_sides(
    sampled: SimpleNamespace, tmp_path: Path
) -> None:
    # A second model (right 30% of the time) with K = 2, against the K = 5 run: the difference
    # is over each item's share right of its K answers, recounted here from the files.
    other = tmp_path / "out"
    truth = ("--truth", str(sampled.data), "--behaviour", "item:0.3", "--seed", "9")
    with server_process(*truth) as server:
        done = drvd(*_eval(server.url, sampled.data, other, tmp_path / "cache", "--samples", "2"))
        assert done.returncode == 0, done.stderr
    cmp = drvd("compare", sampled.run, other / "r", "--out", tmp_path / "cmp")
    assert cmp.returncode == 0, cmp.stderr
    lines = list(csv.DictReader((tmp_path / "cmp" / "paired.csv").read_text().splitlines()))
    for stem in MCQ:
        got = next(line for line in lines if line["file"] == stem)
        assert got["diff_samples"] == "5/2"
        keys = [r["_meta"]["key"] for r in lines_of(sampled.run / f"{stem}.jsonl")]
        images = {
            r["_meta"]["key"]: r["image_paths"] for r in lines_of(sampled.run / f"{stem}.jsonl")
        }
        first = {
            k: sum(h[0] for h in item) / 5
            for k, item in zip(keys, _recount(sampled.run, stem, 5), strict=True)
        }
        keys2 = [r["_meta"]["key"] for r in lines_of(other / "r" / f"{stem}.jsonl")]
        second = {
            k: sum(h[0] for h in item) / 2
            for k, item in zip(keys2, _recount(other / "r", stem, 2), strict=True)
        }
        both = [k for k in first if k in second]
        diff, low, high = difference_reference(
            [second[k] for k in both], [first[k] for k in both], [images[k] for k in both]
        )
        assert float(got["diff"]) == pytest.approx(diff, abs=1e-6)
        assert (float(got["diff_ci_low"]), float(got["diff_ci_high"])) == pytest.approx(
            (low, high), abs=1e-6
        )
        assert high < 0  # 0.3 against 0.6: the interval sees it
