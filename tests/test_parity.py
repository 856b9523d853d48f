"""Parity: the authors' `drvd-bench` 0.2.2 `compute_choice_metric` agrees with our scorer per cell.

The official function prints `(correct/total)` per modality and task/level; we run it on our own
results files and compare every printed cell, in order, with `report.score_run`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakeserver import FakeServer

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.records import JOINT_LEVELS
from pipeline.run.runner import run_eval
from pipeline.scoring.summary import score_run

OFFICIAL_VERSION = "0.2.2"
SINGLE = ("visual_evidence_qa", "independent_qa")
# Same-letter variants: only the first one is a hit for the official exact-match scorer.
MCQ_VARIANTS: tuple[Callable[[str], Any], ...] = (
    lambda c: c,
    lambda c: f"{c}.",
    lambda c: f" {c}",
    lambda c: c.lower(),
    lambda c: f"{c}. kidney",
    lambda c: f"Answer: {c}",
    lambda c: f"{c}\n",
    lambda c: "",
    lambda c: "[ERROR] Error code: 429 - limit_requests",
    lambda c: "A" if c != "A" else "B",  # a clean wrong letter
)
JOINT_VARIANTS: tuple[Callable[[list[str]], Any], ...] = (
    lambda x: ",".join(x),
    lambda x: ", ".join(x),
    lambda x: ",".join(x) + ".",
    lambda x: ",".join(x).lower(),
    lambda x: str(x),  # "['B', 'D', 'A', 'C']"
    lambda x: x,  # a JSON list: not a str, so no level scores
    lambda x: ",".join(x[:2]),  # too short
    lambda x: ",".join([x[0], "E", *x[1:]]),  # five letters: later levels shift
    lambda x: ",".join([x[0], "", *x[2:]]),  # an empty token
    lambda x: "",
)
# Protocol A error shapes, and ours: (fields to set, fields to drop).
ERROR_ROWS: tuple[tuple[dict[str, Any], tuple[str, ...]], ...] = (
    ({"model_response": None, "raw_response": None, "error": "503 server_is_overloaded"}, ()),
    ({"error": "Connection error."}, ("model_response",)),  # official single-mode error row
    ({"model_response": {lv: "Error" for lv in JOINT_LEVELS}}, ()),  # official joint error row
)
_MODALITY = re.compile(r"^Modality: (.*)$")
_CELL = re.compile(r"^  \s*(.*): (\d+\.\d\d%) \((\d+)/(\d+)\)$")

Cells = list[tuple[str, str, str, int, int]]


@pytest.fixture(scope="module")
def official() -> Callable[..., None]:
    """Return the package's `compute_choice_metric`, loaded from its file alone."""
    spec = importlib.util.find_spec("drvd_bench")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"drvd-bench {OFFICIAL_VERSION} missing: `make test` installs it --no-deps")
    assert importlib.metadata.version("drvd-bench") == OFFICIAL_VERSION
    # The package __init__ imports openai, bert_score and torch (mapper, report metric);
    # choice_metric.py needs only the standard library, so it is executed on its own.
    path = Path(next(iter(spec.submodule_search_locations))) / "choice_metric.py"
    module_spec = importlib.util.spec_from_file_location("_drvd_official_choice_metric", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.compute_choice_metric  # type: ignore[no-any-return]


def official_cells(compute: Callable[..., None], path: Path, mode: str) -> Cells:
    """Run the official metric on one file and parse its printed cells, in print order."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compute(path, mode=mode)
    cells: Cells = []
    modality = None
    for line in out.getvalue().splitlines():
        if m := _MODALITY.match(line):
            modality = m[1]
        elif m := _CELL.match(line):
            assert modality is not None, line
            cells.append((modality, m[1], m[2], int(m[3]), int(m[4])))
    return cells


def our_cells(run_dir: Path, stem: str, *, official_quirks: bool = False) -> Cells:
    """Return our per-cell counts for one file, in summary order."""
    section = score_run(run_dir, official_quirks=official_quirks)["files"][stem]
    table = section["levels"] if stem == "joint_qa" else section["groups"]
    return [
        (modality, sub, f"{c['accuracy']:.2%}", c["correct"], c["n"])
        for modality, subs in table.items()
        for sub, c in subs.items()
    ]


def assert_parity(
    compute: Callable[..., None],
    run_dir: Path,
    *,
    official_dir: Path | None = None,
    official_quirks: bool = False,
) -> None:
    """Compare per file; the official script reads `official_dir` (default: our own files)."""
    for stem in (*SINGLE, "joint_qa"):
        mode = "joint" if stem == "joint_qa" else "single"
        theirs = official_cells(compute, (official_dir or run_dir) / f"{stem}.jsonl", mode)
        assert theirs, f"official printed no cells for {stem}"
        assert our_cells(run_dir, stem, official_quirks=official_quirks) == theirs, stem


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


async def run_dataset(tmp_path: Path, url: str | None = None) -> Path:
    data = tmp_path / "data"
    write_dataset(data, total=200, seed=7)
    flags = {
        "model": "openai:test-model" if url else "random",
        "data": data,
        "out": tmp_path / "out",
        "run_name": "r",
        "base_url": url,
    }
    result = await run_eval(
        load_config(flags, {"DRVD_CACHE_DIR": str(tmp_path / "cache")}), show_progress=False
    )
    assert result.exit_code == 0, result.summary["usage"]
    return tmp_path / "out" / "r"


def vary(rows: list[dict[str, Any]], stem: str) -> list[dict[str, Any]]:
    """Rewrite each row's answer with the next variant of its correct answer; add odd rows."""
    out = []
    joint = stem == "joint_qa"
    variants: Iterator[Callable[[Any], Any]] = itertools.cycle(
        JOINT_VARIANTS if joint else MCQ_VARIANTS
    )
    for i, row in enumerate(rows):
        row = dict(row)
        if joint:
            row["model_response"] = next(variants)([row[f"{lv}_answer"][0] for lv in JOINT_LEVELS])
        else:
            row["model_response"] = next(variants)(row["answer"].split(".")[0].strip())
        if i % 7 == 3:  # error rows of every shape
            sets, drops = ERROR_ROWS[i % len(ERROR_ROWS)]
            row.update(sets)
            for name in drops:
                row.pop(name, None)
        if i % 11 == 5:
            row.pop("modality")  # "None" (single) or "Unknown" (joint) in the official print
        elif i % 11 == 6:
            row["modality"] = None
        out.append(row)
    return out


async def test_parity_on_random_model_run(tmp_path: Path, official) -> None:
    run_dir = await run_dataset(tmp_path)
    assert_parity(official, run_dir)


async def test_parity_on_varied_answers_and_error_rows(tmp_path: Path, official) -> None:
    run_dir = await run_dataset(tmp_path)
    varied = tmp_path / "varied"
    for stem in (*SINGLE, "joint_qa"):
        write_rows(varied / f"{stem}.jsonl", vary(read_rows(run_dir / f"{stem}.jsonl"), stem))
    assert_parity(official, varied)
    # The variants really exercise both outcomes in every file.
    for stem in (*SINGLE, "joint_qa"):
        cells = our_cells(varied, stem)
        correct, total = sum(c[3] for c in cells), sum(c[4] for c in cells)
        assert 0 < correct < total, stem
    # And the odd group keys showed up.
    assert any(c[0] == "None" for c in our_cells(varied, "independent_qa"))
    assert any(c[0] == "Unknown" for c in our_cells(varied, "joint_qa"))


_REPLIES = (
    "{c}",
    "The answer is {c}.",
    "**{c}**",
    "{c}. because it fits",
    "{l}",
    "I cannot determine this from the image.",
)
_CHAINS = ("{j}", "{js}", "1. {a} 2. {b} 3. {cc} 4. {d}", "Unsure.")


def scripted_reply(payload: dict[str, Any]) -> str:
    """Answer in a rotating free-text style, based on the first offered letter."""
    messages = payload["messages"]
    text = next(p["text"] for p in messages[1]["content"] if p["type"] == "text")
    pick = sum(text.encode()) % 6
    if "comma" in messages[0]["content"].lower():
        letters = ["A", "B", "C", "D"]
        return _CHAINS[pick % len(_CHAINS)].format(
            j=",".join(letters), js=", ".join(letters), a="A", b="B", cc="C", d="D"
        )
    return _REPLIES[pick].format(c="B", l="b")


async def test_parity_on_free_text_replies_through_the_runner(
    tmp_path: Path, official, fake_server: FakeServer
) -> None:
    fake_server.config.answer_fn = scripted_reply
    run_dir = await run_dataset(tmp_path, fake_server.url)
    assert_parity(official, run_dir)
    responses = {r["model_response"] for r in read_rows(run_dir / "independent_qa.jsonl")}
    assert "B" in responses
    assert len(responses) > 1
    # --official-quirks: our files scored as the official pipeline would have stored them
    # (the stripped raw reply; no `model_response` on error rows) give the official counts.
    raw_dir = tmp_path / "as_official"
    for stem in (*SINGLE, "joint_qa"):
        rows = []
        for row in read_rows(run_dir / f"{stem}.jsonl"):
            row = {k: v for k, v in row.items() if k not in ("model_response", "_meta")}
            if isinstance(row["raw_response"], str):
                row["model_response"] = row["raw_response"].strip()
            rows.append(row)
        write_rows(raw_dir / f"{stem}.jsonl", rows)
    assert_parity(official, run_dir, official_dir=raw_dir, official_quirks=True)
    # The two modes really differ on these replies: extraction credits "The answer is B."
    for stem in (*SINGLE, "joint_qa"):
        extracted = sum(c[3] for c in our_cells(run_dir, stem))
        quirks = sum(c[3] for c in our_cells(run_dir, stem, official_quirks=True))
        assert extracted > quirks, stem


def test_official_output_is_parsed(tmp_path: Path, official) -> None:
    row = {"modality": "CT", "level": "organ", "answer": "C. Lung", "model_response": "C"}
    miss = {**row, "model_response": "C."}
    write_rows(tmp_path / "x.jsonl", [row, miss, {**row, "level": "lesion"}])
    assert official_cells(official, tmp_path / "x.jsonl", "single") == [
        ("CT", "organ", "50.00%", 1, 2),
        ("CT", "lesion", "100.00%", 1, 1),
    ]
