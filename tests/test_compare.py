"""`drvd compare`: real runs (`eval` in subprocesses), compared, every number recounted here.

The recount reads the results files directly (model_response against the gold letter, the raw
reply for a run scored with official quirks, the image of each row), and the intervals and test
come from `test_stats`' and `test_intervals`' references, which share no code with the package.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from once import built_once
from procs import drvd, lines_of, server_process
from test_intervals import check_ci, clustered_reference, difference_reference
from test_stats import mcnemar_reference, wilson_reference

from pipeline.data.synthetic import write_dataset
from pipeline.records import JOINT_LEVELS

MCQ = ("visual_evidence_qa", "independent_qa")
LABELS = (*MCQ, *(f"joint_qa_{lv}" for lv in JOINT_LEVELS), "joint_qa_chain")
PAIRED = ["file", "run", "n_both", "only_first_right", "only_other_right", "p_value"]
PAIRED += ["diff", "diff_ci_low", "diff_ci_high", "diff_samples"]


@pytest.fixture(scope="session")  # built once per session (tests/once.py), read by every worker
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs r1, r2 (random, seeds 1 and 2) and r3 (seed 3, another protocol, max_tokens, items)."""
    return built_once(tmp_path_factory, "compare", _make_runs) / "out"


def _make_runs(root: Path) -> None:
    write_dataset(root / "data", total=120, images=6, sizes=(32,))
    common: list[str | Path] = [
        "--model",
        "random",
        "--data",
        root / "data",
        "--out",
        root / "out",
        "--quiet",
    ]
    common += ["--judge", "none", "--cache-dir", root / "cache"]
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("DRVD_") or n.endswith("_API_KEY")]:
            mp.delenv(name)  # as conftest's isolation does, for a fixture shared by the module
        for name, more in (
            ("r1", ["--seed", "1"]),
            ("r2", ["--seed", "2"]),
            (
                "r3",
                ["--seed", "3", "--limit", "20", "--max-tokens", "64", "--protocol", "notebook"],
            ),
        ):
            proc = drvd("eval", *common, "--run-name", name, *more)
            assert proc.returncode == 0, proc.stderr


def letter(answer: object) -> str:
    return str(answer).split(".")[0].strip()


def recount(run: Path, *, raw: bool = False) -> dict[str, dict[str, bool | None]]:
    """Return label -> key -> right (None: the row failed), read straight from the results files."""
    out: dict[str, dict[str, bool | None]] = {label: {} for label in LABELS}
    for stem in MCQ:
        for row in lines_of(run / f"{stem}.jsonl"):
            said = (row["raw_response"] or "").strip() if raw else row["model_response"]
            right = None if row["error"] else said == letter(row["answer"])
            out[stem][row["_meta"]["key"]] = right
    for row in lines_of(run / "joint_qa.jsonl"):
        said = (row["raw_response"] or "").strip() if raw else row["model_response"]
        tokens = said.split(",") if isinstance(said, str) else []
        levels = [
            i < len(tokens) and tokens[i] == (row[f"{lv}_answer"] or "")[:1]
            for i, lv in enumerate(JOINT_LEVELS)
        ]
        key = row["_meta"]["key"]
        for lv, hit in zip(JOINT_LEVELS, levels, strict=True):
            out[f"joint_qa_{lv}"][key] = None if row["error"] else hit
        out["joint_qa_chain"][key] = None if row["error"] else all(levels)
    return out


def images_of(run: Path) -> dict[str, dict[str, str]]:
    """Return label -> key -> the row's image (its key when it has none): the clusters."""
    out: dict[str, dict[str, str]] = {}
    for stem in (*MCQ, "joint_qa"):
        keys = {
            row["_meta"]["key"]: row.get("image_paths") or row["_meta"]["key"]
            for row in lines_of(run / f"{stem}.jsonl")
        }
        for label in LABELS:
            if label == stem or (stem == "joint_qa" and label.startswith("joint_qa_")):
                out[label] = keys
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_leaderboard(
    row: dict[str, str],
    counts: dict[str, dict[str, bool | None]],
    images: dict[str, dict[str, str]],
) -> None:
    """A leaderboard row against the recount: failed rows are in n and count wrong."""
    for label, items in counts.items():
        n, k = len(items), sum(1 for v in items.values() if v)
        assert int(row[f"{label}_n"]) == n, label
        assert int(row[f"{label}_correct"]) == k, label
        assert float(row[f"{label}_accuracy"]) == pytest.approx(k / n, abs=1e-6)
        low, high = wilson_reference(k, n)
        assert float(row[f"{label}_wilson_low"]) == pytest.approx(low, abs=2e-6), label
        assert float(row[f"{label}_wilson_high"]) == pytest.approx(high, abs=2e-6), label
        values = [1.0 if v else 0.0 for v in items.values()]
        low, high, _, deff = clustered_reference(values, [images[label][key] for key in items])
        assert float(row[f"{label}_ci_low"]) == pytest.approx(low, abs=2e-6), label
        assert float(row[f"{label}_ci_high"]) == pytest.approx(high, abs=2e-6), label
        if deff is None:
            assert row[f"{label}_design_effect"] == "", label
        else:
            assert float(row[f"{label}_design_effect"]) == pytest.approx(deff, abs=1e-4), label


def check_paired(
    got: dict[str, str],
    first: dict[str, bool | None],
    other: dict[str, bool | None],
    images: dict[str, str],
) -> None:
    """A paired.csv line against the recount: keys both have, neither failed."""
    both = [k for k in first if k in other and first[k] is not None and other[k] is not None]
    diff, low, high = difference_reference(
        [float(bool(other[k])) for k in both],
        [float(bool(first[k])) for k in both],
        [images[k] for k in both],
    )
    assert float(got["diff"]) == pytest.approx(diff, abs=1e-6), got["file"]
    assert float(got["diff_ci_low"]) == pytest.approx(low, abs=1e-6), got["file"]
    assert float(got["diff_ci_high"]) == pytest.approx(high, abs=1e-6), got["file"]
    b = sum(1 for k in both if first[k] and not other[k])
    c = sum(1 for k in both if other[k] and not first[k])
    assert (int(got["n_both"]), int(got["only_first_right"]), int(got["only_other_right"])) == (
        len(both),
        b,
        c,
    ), got["file"]
    expected = float(min(Fraction(1), mcnemar_reference(b, c)))
    assert float(got["p_value"]) == pytest.approx(expected, rel=1e-5), got["file"]


def compare(out: Path, *runs: Path) -> Any:
    return drvd("compare", *runs, "--out", out)


def test_leaderboard_and_paired_numbers_equal_an_independent_recount(
    runs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    proc = compare(out, runs / "r1", runs / "r2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # same protocol, settings and items: nothing to warn about
    board = {row["run"]: row for row in read_csv(out / "leaderboard.csv")}
    assert list(board) == ["r1", "r2"]
    counts = {name: recount(runs / name) for name in board}
    for name in board:
        check_leaderboard(board[name], counts[name], images_of(runs / name))
    paired = read_csv(out / "paired.csv")
    assert [(p["file"], p["run"]) for p in paired] == [(label, "r2") for label in LABELS]
    images = images_of(runs / "r1")
    for p in paired:
        check_paired(p, counts["r1"][p["file"]], counts["r2"][p["file"]], images[p["file"]])
    assert sum(int(p["only_first_right"]) + int(p["only_other_right"]) for p in paired) > 0


def test_each_runs_summary_intervals_equal_a_recount_clustered_by_image(runs: Path) -> None:
    # summary.json as `eval` wrote it, against cluster totals recounted from the results files.
    run = runs / "r1"
    files = orjson.loads((run / "summary.json").read_bytes())["files"]
    counts, images = recount(run), images_of(run)

    def check(got: dict[str, Any], label: str, keys: list[str]) -> None:
        values = [1.0 if counts[label][k] else 0.0 for k in keys]
        check_ci(got, values, [images[label][k] for k in keys])

    for stem in MCQ:
        check(files[stem]["ci"], stem, list(counts[stem]))
        cells: dict[tuple[str, str], list[str]] = {}
        for row in lines_of(run / f"{stem}.jsonl"):
            sub = row["task"] if "task" in row else row["level"]
            cells.setdefault((row["modality"], sub), []).append(row["_meta"]["key"])
        assert sum(len(g) for g in files[stem]["groups"].values()) == len(cells)
        for (modality, sub), keys in cells.items():
            check(files[stem]["groups"][modality][sub]["ci"], stem, keys)
    joint = files["joint_qa"]
    check(joint["ci"], "joint_qa_chain", list(counts["joint_qa_chain"]))
    by_modality: dict[str, list[str]] = {}
    for row in lines_of(run / "joint_qa.jsonl"):
        by_modality.setdefault(row["modality"], []).append(row["_meta"]["key"])
    for lv in JOINT_LEVELS:
        check(joint["level_totals"][lv]["ci"], f"joint_qa_{lv}", list(counts[f"joint_qa_{lv}"]))
        for modality, keys in by_modality.items():
            check(joint["levels"][modality][lv]["ci"], f"joint_qa_{lv}", keys)
    for modality, keys in by_modality.items():
        check(joint["chains"][modality]["ci"], "joint_qa_chain", keys)
    # 120 rows over 6 images: every file's rows span them all.
    assert joint["ci"]["clusters"] == files["visual_evidence_qa"]["ci"]["clusters"] == 6
    report = files["report_generation"]
    shown = {row["image_paths"] for row in lines_of(run / "report_generation.jsonl")}
    assert report["bleu_ci"]["clusters"] == len(shown)
    low, high = report["bleu_ci"]["low"], report["bleu_ci"]["high"]
    assert low - 1e-6 <= report["bleu"] <= high + 1e-6  # rounded to 6 decimals


@pytest.mark.no_page  # checks nothing of the page
def test_failed_rows_leave_the_pairs_and_each_run_is_scored_in_its_own_mode(
    runs: Path, tmp_path: Path
) -> None:
    data = runs.parent / "data"
    out = tmp_path / "out"
    # Three rows fail (a 500, no retry); the replies are phrased, so raw != extracted answer.
    faults = ["--content-fault", "(item 2)=500", "--content-fault", "(item 60)=500"]
    faults += ["--content-fault", "(case 100)=500"]
    with server_process("--replies", "varied", *faults) as server:
        proc = drvd(
            "eval", "--model", "openai:m", "--base-url", server.url, "--data", data,
            "--out", out, "--run-name", "served", "--quiet", "--max-retries", "0",
            "--judge", "openai:j", "--judge-base-url", server.url, "--no-bertscore",
            "--cache-dir", tmp_path / "cache",
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the failed rows
    served = out / "served"
    quirks = out / "quirks"
    shutil.copytree(served, quirks)
    assert drvd("score", quirks, "--official-quirks").returncode == 0
    cmp = tmp_path / "cmp"
    proc = compare(cmp, served, runs / "r1", quirks)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert "warning: r1 vs served: different judge: none vs openai:j" in warnings
    assert "warning: quirks vs served: different scoring mode: official-quirks vs extracted" in (
        warnings
    )
    md = (cmp / "leaderboard.md").read_text()
    assert all(line in md for line in warnings)

    board = {row["run"]: row for row in read_csv(cmp / "leaderboard.csv")}
    mine, theirs = recount(served), recount(runs / "r1")
    failed = sum(1 for items in mine.values() for v in items.values() if v is None)
    assert failed == 2 + 5  # two MCQ rows, one joint row in five labels
    check_leaderboard(board["served"], mine, images_of(served))
    check_leaderboard(board["quirks"], recount(quirks, raw=True), images_of(quirks))
    assert int(board["quirks"]["visual_evidence_qa_correct"]) < int(
        board["served"]["visual_evidence_qa_correct"]
    )
    paired = read_csv(cmp / "paired.csv")
    for p in paired:
        other = recount(quirks, raw=True) if p["run"] == "quirks" else theirs
        check_paired(p, mine[p["file"]], other[p["file"]], images_of(served)[p["file"]])
    first = {p["file"]: int(p["n_both"]) for p in paired if p["run"] == "r1"}
    assert first["visual_evidence_qa"] == len(mine["visual_evidence_qa"]) - 1


def test_runs_that_are_not_comparable_are_warned_about(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = compare(out, runs / "r1", runs / "r3")
    assert proc.returncode == 0, proc.stderr
    one, three = recount(runs / "r1"), recount(runs / "r3")
    differ = []
    for stem in MCQ:
        a, b = set(one[stem]), set(three[stem])
        assert b < a  # --limit 20 took the first rows of each file
        differ.append(
            f"warning: r3 vs r1: different items in {stem}: {len(b - a)} only in r3, "
            f"{len(a - b)} only in r1 ({len(a & b)} shared)"
        )
    assert proc.stderr.splitlines() == [
        "warning: r3 vs r1: different protocol: notebook vs official",
        "warning: r3 vs r1: different deviations (max_tokens, thinking): max_tokens=64 vs none",
        *differ,
    ]
    md = (out / "leaderboard.md").read_text()
    html = (out / "leaderboard.html").read_text()
    for line in proc.stderr.splitlines():
        assert f"- {line}" in md
        assert line.removeprefix("warning: ") in html


# A flipped item's line in flipped.md: its key, then the card in each run: [name](link).
FLIP_ROW = re.compile(
    r"^\| `([^`]+)` \|.*\[([^\]]+)\]\(([^)]+)\) · \[([^\]]+)\]\(([^)]+)\) \|$", re.M
)


def test_outputs_have_the_documented_columns_and_link_each_flip_to_its_card(
    runs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    assert compare(out, runs / "r1", runs / "r2", runs / "r3").returncode == 0
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "leaderboard.tex"):
        assert (out / name).stat().st_size > 0, name
    header = read_csv(out / "leaderboard.csv")[0].keys()
    for label in LABELS:
        for suffix in ("accuracy", "ci_low", "ci_high", "design_effect", "wilson_low"):
            assert f"{label}_{suffix}" in header
    assert {"report_generation_bleu", "report_generation_bert_f1"} <= set(header)
    assert (out / "paired.csv").read_text().splitlines()[0].split(",") == PAIRED
    paired = read_csv(out / "paired.csv")
    assert [p["run"] for p in paired] == ["r2"] * len(LABELS) + ["r3"] * len(LABELS)
    for what in ("level", "modality"):
        for kind in ("bars", "radar"):
            assert (out / f"{kind}_{what}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert "<svg" in (out / f"{kind}_{what}.svg").read_text()
    # Self-contained: nothing is fetched (the SVG namespace is a name, not a request).
    page = (out / "leaderboard.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?https?:""", page)
    assert page.count('src="data:image/png;base64,') == 4

    # Each discordant item is listed once per run pair, with a link to each run's own card: the
    # runs share their keys, so each link's page and card id are checked, not only its key.
    items = FLIP_ROW.findall((out / "flipped.md").read_text())
    assert len(items) == sum(
        int(p["only_first_right"]) + int(p["only_other_right"]) for p in paired
    )
    keys = {
        name: {
            stem: {row["_meta"]["key"] for row in lines_of(runs / name / f"{stem}.jsonl")}
            for stem in ("visual_evidence_qa", "independent_qa", "joint_qa")
        }
        for name in ("r1", "r2", "r3")
    }
    others = set()
    for item, first, first_link, other, other_link in items:
        assert first == "r1"
        others.add(other)
        for name, link in ((first, first_link), (other, other_link)):
            assert link.count("#") == 1, link  # RFC 3986: the key's "#" is encoded in a fragment
            path, _, fragment = link.partition("#")
            page_path = (out / unquote(path)).resolve()
            assert page_path == (runs / name / "report.html").resolve(), link  # its own run's
            stem, key = re.fullmatch(
                r"row-(visual_evidence_qa|independent_qa|joint_qa)-(.+)", unquote(fragment)
            ).groups()  # type: ignore[union-attr]
            assert key == item, link  # the card of this item, not another's
            assert key in keys[name][stem], link
            if page_path.exists():  # the run's page (issue 14, part 1) draws a card per row of
                assert key in page_path.read_text()  # its data, with id row-<file>-<key>
    assert others == {"r2", "r3"}


def test_bad_invocations_stop_with_one_line_and_status_2(runs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args, expect in (
        ((runs / "r1",), "at least two run folders"),
        ((runs / "r1", tmp_path), f"{tmp_path}: not a run folder"),
        ((runs / "r1", runs / "r2", "--out", blocker / "sub"), "cannot create the output folder"),
    ):
        more = () if "--out" in args else ("--out", tmp_path / "cmp")
        proc = drvd("compare", *args, *more)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("error: "), proc.stderr
        assert expect in proc.stderr
    assert not (tmp_path / "cmp").exists()
