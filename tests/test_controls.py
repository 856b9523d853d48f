"""`drvd controls RUN` end to end: real processes against the fake server with a planted behaviour.

The expected numbers are recounted from the server's ledger (each request's text, whether it
carried an image, and the answer the server gave) and from the dataset file, never from our
scorer: a wrong pairing, rotation, gold letter or cache key turns these red.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakelooks import options_of
from procs import drvd, ledger, lines_of, server_process, start_drvd, wait_for

from pipeline.data.synthetic import write_dataset

PAGE = False
FILES = ("visual_evidence_qa", "independent_qa", "joint_qa")
LEVELS = ("modality", "organ", "lesion", "diagnosis")


def _env(cache: Path) -> dict[str, str]:
    return {"DRVD_CACHE_DIR": str(cache), "DRVD_PAGE": "off", "DRVD_API_KEY": "sk-controls-test"}


def _eval(url: str, data: Path, out: Path, env: dict[str, str], *extra: str) -> None:
    done = drvd(
        "eval", "--model", "openai:fake", "--base-url", url, "--data", data, "--out", out,
        "--run-name", "r", "--judge", "none", "--quiet", *extra, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _plan(url: str, data: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    done = drvd(
        "plan", "--model", "openai:fake", "--base-url", url, "--data", data, "--out", out,
        "--run-name", "r", "--judge", "none", "--controls", "no-image,other-image", "--json",
        "--price-in", "2.5", "--price-out", "10", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    controls: dict[str, Any] = orjson.loads(done.stdout)["controls"]
    return controls


def _rows(data: Path, stem: str) -> list[dict[str, Any]]:
    return lines_of(data / f"{stem}.jsonl")


def _gold_letter(row: dict[str, Any]) -> str:
    return str(row["answer"])[0]


def _ledger_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("controls-data")
    write_dataset(root, total=60, images=8, sizes=(96,), seed=3)
    return root


@pytest.fixture(scope="module")
def prior(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of the `prior` model, its controls no-image and other-image, then a rerun."""
    tmp = tmp_path_factory.mktemp("prior")
    env, out, book = _env(tmp / "cache"), tmp / "runs", tmp / "ledger.jsonl"
    flags = ("--behaviour", "prior", "--truth", str(data), "--ledger-out", str(book))
    with server_process(*flags) as server:
        _eval(server.url, data, out, env)
        run = out / "r"
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".jsonl", ".json")}
        evaluated, paid_eval = ledger(server.root)["requests"], ledger(server.root)["paid"]
        plan = _plan(server.url, data, out, env)
        done = drvd("controls", run, "--controls", "no-image,other-image", "--quiet", env=env)
        assert done.returncode == 0, done.stderr
        paid = ledger(server.root)["paid"]
        again = drvd("controls", run, "--controls", "no-image,other-image", "--quiet", env=env)
        assert again.returncode == 0, again.stderr
        repaid = ledger(server.root)["paid"] - paid
        replan = _plan(server.url, data, out, env)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name in before}
    return {
        "run": run,
        "controls": orjson.loads((run / "controls.json").read_bytes()),
        "book": _ledger_lines(book),
        "evaluated": evaluated,
        "before": before,
        "after": after,
        "repaid": repaid,
        "plan": plan,
        "replan": replan,
        "paid": paid - paid_eval,
    }


def test_no_image_under_a_prior_scores_exactly_the_share_of_first_option_golds(
    prior: dict[str, Any], data: Path
) -> None:
    for stem in ("visual_evidence_qa", "independent_qa"):
        rows = _rows(data, stem)
        first = sum(_gold_letter(r) == "A" for r in rows)
        got = prior["controls"]["controls"]["no-image"]["files"][stem]
        assert got["items"] == len(rows)
        assert got["accuracy_with"] == 1.0  # the prior model is right with its own image
        assert got["accuracy"] * len(rows) == pytest.approx(first)
        assert got["reliance"]["value"] == pytest.approx(1 - first / len(rows), abs=1e-6)
    joint = _rows(data, "joint_qa")
    cells = [str(r[f"{lv}_answer"])[0] == "A" for r in joint for lv in LEVELS]
    got = prior["controls"]["controls"]["no-image"]["files"]["joint_qa"]
    assert got["accuracy"] == pytest.approx(sum(cells) / len(cells))


def _recount(entries: list[dict[str, Any]], data: Path, stem: str) -> float:
    """Accuracy of the ledger's answers to one file's MCQ items, from the dataset's gold texts."""
    gold = {}
    for row in _rows(data, stem):
        gold[row["question"]] = row["answer"].split(". ", 1)[1]
    right = n = 0
    for e in entries:
        question = e["user_text"].split("Question:", 1)[-1].split("Options:")[0].strip()
        if question not in gold:
            continue
        letter = next(k for k, text in options_of(e["user_text"]) if text == gold[question])
        right += e["answer"] == letter
        n += 1
    return right / n


def test_reliance_equals_a_recount_from_the_servers_ledger(
    prior: dict[str, Any], data: Path
) -> None:
    book = [e for e in prior["book"] if e["status"] == 200]
    n_eval = prior["evaluated"]
    official = [e for e in book[:n_eval] if "image_url" in e["content_types"]]
    blind = [e for e in book[n_eval:] if "image_url" not in e["content_types"]]
    swapped = [e for e in book[n_eval:] if "image_url" in e["content_types"]]
    controls = prior["controls"]["controls"]
    for stem in ("visual_evidence_qa", "independent_qa"):
        with_image = _recount(official, data, stem)
        for name, entries in (("no-image", blind), ("other-image", swapped)):
            got = controls[name]["files"][stem]
            assert got["reliance"]["value"] == pytest.approx(
                with_image - _recount(entries, data, stem), abs=1e-6
            )
            assert got["reliance"]["low"] <= got["reliance"]["value"] <= got["reliance"]["high"]
    assert controls["other-image"]["seed"] == 0
    assert "report_generation" in controls["no-image"]["skipped"]


def test_plan_prices_the_controls_then_finds_them_done(prior: dict[str, Any], data: Path) -> None:
    before, after = prior["plan"], prior["replan"]
    # Every request the plan said it would send was paid, once; after, nothing is left.
    assert before["no-image"]["to_send"] + before["other-image"]["to_send"] == prior["paid"]
    items = sum(len(_rows(data, stem)) for stem in FILES)  # MCQ and joint items, no report
    assert before["no-image"]["items"] == before["other-image"]["items"] == items
    assert before["no-image"]["cost_usd"] > 0
    assert before["no-image"]["prompt_tokens"] < before["other-image"]["prompt_tokens"]
    assert after["no-image"]["to_send"] == after["other-image"]["to_send"] == 0
    assert after["no-image"]["done"] == before["no-image"]["requests"]


def test_controls_never_change_the_runs_files_and_a_rerun_pays_nothing(
    prior: dict[str, Any],
) -> None:
    assert prior["after"] == prior["before"]  # results files and summary.json, byte for byte
    assert set(prior["before"]) >= {"summary.json", "visual_evidence_qa.jsonl"}
    assert prior["repaid"] == 0
    # Every control request was paid once: no duplicate of an official request either.
    paid = [e["messages_hash"] for e in prior["book"] if e["status"] == 200]
    assert len(paid) == len(set(paid))


@pytest.fixture(scope="module")
def biased(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of a model that picks option A half the time, then its shuffle control."""
    tmp = tmp_path_factory.mktemp("biased")
    env, out, book = _env(tmp / "cache"), tmp / "runs", tmp / "ledger.jsonl"
    flags = ("--behaviour", "first-option:0.5", "--truth", str(data), "--ledger-out", str(book))
    with server_process(*flags) as server:
        _eval(server.url, data, out, env, "--files", "visual_evidence_qa,independent_qa")
        done = drvd("controls", out / "r", "--controls", "shuffle", "--quiet", env=env)
        assert done.returncode == 0, done.stderr
    return {
        "controls": orjson.loads((out / "r" / "controls.json").read_bytes()),
        "book": _ledger_lines(book),
    }


def test_circular_accuracy_and_position_share_equal_a_ledger_recount(
    biased: dict[str, Any], data: Path
) -> None:
    shuffle = biased["controls"]["controls"]["shuffle"]["files"]
    for stem in ("visual_evidence_qa", "independent_qa"):
        gold = {r["question"]: r["answer"].split(". ", 1)[1] for r in _rows(data, stem)}
        sizes = {r["question"]: len(r["options"]) for r in _rows(data, stem)}
        answers: dict[str, dict[str, bool]] = defaultdict(dict)  # question → order → right
        chosen: dict[str, int] = defaultdict(int)
        for e in biased["book"]:
            question = e["user_text"].split("Question:", 1)[-1].split("Options:")[0].strip()
            if e["status"] != 200 or question not in gold:
                continue
            options = options_of(e["user_text"])
            right = next(k for k, text in options if text == gold[question])
            answers[question][",".join(t for _, t in options)] = e["answer"] == right
            chosen[e["answer"]] += 1
        assert all(len(a) == sizes[q] for q, a in answers.items())  # n rotations, each once
        circular = sum(all(a.values()) for a in answers.values()) / len(answers)
        got = shuffle[stem]
        assert got["items"] == len(gold)
        assert got["circular_accuracy"] == pytest.approx(circular)
        total = sum(chosen.values())
        assert got["position_share"]["A"]["chosen"] == pytest.approx(chosen["A"] / total)
        # The planted bias: A is chosen far more often than it holds the gold option.
        assert got["position_share"]["A"]["chosen"] > got["position_share"]["A"]["gold"] + 0.2
        # ...so accuracy is highest where the gold option is A.
        by_gold = got["by_gold_position"]
        assert by_gold["A"]["accuracy"] == 1.0
        assert all(by_gold[p]["accuracy"] < 0.8 for p in by_gold if p != "A")


def test_kill_9_mid_controls_then_rerun_loses_nothing(data: Path, tmp_path: Path) -> None:
    env, out = _env(tmp_path / "cache"), tmp_path / "runs"
    flags = ("--behaviour", "prior", "--truth", str(data), "--latency", "0.05")
    with server_process(*flags) as server:
        _eval(server.url, data, out, env, "--files", "visual_evidence_qa")
        run = out / "r"
        paid_eval = ledger(server.root)["paid"]
        rows = run / "controls" / "shuffle" / "visual_evidence_qa.jsonl"
        first = start_drvd(
            "controls", run, "--controls", "shuffle", "--concurrency", "4", "--quiet",
            env={**env, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        wait_for(lambda: len(lines_of(rows)) >= 10, what="some control rows")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        kept = len(lines_of(rows))
        done = drvd("controls", run, "--controls", "shuffle", "--quiet", env=env)
        assert done.returncode == 0, done.stderr
        paid = ledger(server.root)["paid"] - paid_eval
    items = _rows(data, "visual_evidence_qa")
    rotations = sum(len(r["options"]) for r in items)
    # Rotation 0 is the official request: the cache answers it. The rest is paid once, plus
    # at most the requests the killed process had in flight.
    assert rotations - len(items) <= paid <= rotations - len(items) + 4
    keys = [line["_meta"]["key"] for line in lines_of(rows)]
    assert len(keys) == len(set(keys)) == rotations
    assert kept >= 10
    got = orjson.loads((run / "controls.json").read_bytes())["controls"]["shuffle"]
    assert got["files"]["visual_evidence_qa"]["items"] == len(items)


def test_max_cost_caps_the_controls_and_a_rerun_pays_only_the_rest(
    data: Path, tmp_path: Path
) -> None:
    env, out = _env(tmp_path / "cache"), tmp_path / "runs"
    flags = ("--behaviour", "prior", "--truth", str(data))
    price = ("--price-in", "1000", "--price-out", "1000")  # about $0.12 a request
    with server_process(*flags) as server:
        _eval(server.url, data, out, env, "--files", "visual_evidence_qa", *price)
        run, paid_eval = out / "r", ledger(server.root)["paid"]
        capped = drvd("controls", run, "--controls", "no-image", "--max-cost", "1", env=env)
        assert capped.returncode == 4, capped.stderr
        assert "--max-cost" in capped.stderr
        paid_capped = ledger(server.root)["paid"] - paid_eval
        rows = lines_of(run / "controls" / "no-image" / "visual_evidence_qa.jsonl")
        spent = sum(r["_meta"]["usage"]["cost_usd"] for r in rows)
        assert 0 < spent <= 1.0
        assert 0 < paid_capped < len(_rows(data, "visual_evidence_qa"))
        done = drvd("controls", run, "--controls", "no-image", "--max-cost", "100", env=env)
        assert done.returncode == 0, done.stderr
        paid = ledger(server.root)["paid"] - paid_eval
    assert paid == len(_rows(data, "visual_evidence_qa"))  # the rest, and nothing twice


def test_the_random_baseline_gets_a_controls_section_and_score_ignores_the_controls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRVD_PAGE", raising=False)
    sample = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample"
    out = tmp_path / "runs"
    done = drvd("eval", "--model", "random", "--data", sample, "--out", out, "--run-name", "d",
                "--judge", "none", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = out / "d"
    summary = (run / "summary.json").read_bytes()
    done = drvd("controls", run, "--quiet")
    assert done.returncode == 0, done.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    controls = orjson.loads((run / "controls.json").read_bytes())["controls"]
    assert list(controls) == ["no-image", "shuffle", "other-image"]
    for name in controls:
        assert f'data-control="{name}"' in page
    # The random baseline ignores the image: no reliance at all, and the page says so.
    assert controls["no-image"]["files"]["independent_qa"]["reliance"]["value"] == 0.0
    assert "+0.0%" in page
    # A rescore of the run reads its own files only: the controls' rows stay out.
    done = drvd("score", run, "--page", "off")
    assert done.returncode == 0, done.stderr
    assert (run / "summary.json").read_bytes() == summary


def test_other_image_keeps_its_seed(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample"
    out = tmp_path / "runs"
    done = drvd("eval", "--model", "random", "--data", sample, "--out", out, "--run-name", "d",
                "--judge", "none", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = out / "d"
    first = drvd("controls", run, "--controls", "other-image", "--seed", "7", "--quiet")
    assert first.returncode == 0, first.stderr
    rows = lines_of(run / "controls" / "other-image" / "independent_qa.jsonl")
    swapped = [r["control"]["image"] for r in rows]
    # Another image of the item's own modality, never its own.
    shown: dict[str, set[str]] = defaultdict(set)  # image → the modalities rows give it
    for path in sample.glob("*.jsonl"):
        for r in lines_of(path):
            shown[r["image_paths"]].add(r["modality"])
    for row, image in zip(rows, swapped, strict=True):
        assert image != row["image_paths"]
        assert row["modality"] in shown[image]
    other = drvd("controls", run, "--controls", "other-image", "--seed", "8", "--quiet")
    assert other.returncode == 2
    assert "--seed 7" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    seeded = orjson.loads((run / "controls.json").read_bytes())["controls"]["other-image"]
    assert seeded["seed"] == 7
