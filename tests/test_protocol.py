"""PROTOCOL §7: decisions (a)-(c) and the rules they touch, checked against drvd-bench 0.2.2.

Each test writes a results folder (by hand or by an eval run), runs the authors' scorer on it and
parses its printout, runs ours through the stable CLI (`python -m pipeline score RUN_DIR
[--official-quirks]`), and compares every (modality, task|level) correct/total, in order. Under
--official-quirks the authors' scorer reads the rows as the official pipeline stores them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from PIL import Image

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_VERSION = "0.2.2"
LEVELS = ("modality", "organ", "lesion", "diagnosis")
CHOICE_FILES = ("visual_evidence_qa", "independent_qa", "joint_qa")
MODES = pytest.mark.parametrize("quirks", [False, True], ids=["extracted", "official-quirks"])
ABSENT = "<absent>"  # as a field value: leave the key out of the row
ANSWERS = {f"{lv}_answer": f"{x}. t" for lv, x in zip(LEVELS, "BDAC", strict=True)}
OPTIONS = {"question": "q", "options": ["A. CT", "B. MRI", "C. X-ray"], "answer": "C. X-ray"}
_MODALITY = re.compile(r"^Modality: (.*)$")
_CELL = re.compile(r"^  \s*(.*): \d+\.\d\d% \((\d+)/(\d+)\)$")
_REPORT = re.compile(r"^(.*): BERTScore F1 = \d+\.\d{4}, BLEU = (\d+\.\d{4})$")

Cell = tuple[str, str, int, int]  # modality as printed, task|level, correct, total
Files = dict[str, list[dict[str, Any]]]  # results file stem -> rows


def _official(name: str) -> Any:
    """Load one module file of drvd-bench alone (its __init__ imports openai and torch)."""
    spec = importlib.util.find_spec("drvd_bench")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"drvd-bench {OFFICIAL_VERSION} is not installed")
    assert importlib.metadata.version("drvd-bench") == OFFICIAL_VERSION
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_drvd_official_{name}", path)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def choice_metric() -> Callable[..., None]:
    return _official("choice_metric").compute_choice_metric  # type: ignore[no-any-return]


@pytest.fixture
def report_metric(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """The official report metric offline: a text's "keywords" are the text itself, F1 is 0."""

    def create(**kwargs: Any) -> Any:
        text = kwargs["messages"][0]["content"].split("\n\n")[1]  # the text inside the prompt
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))])

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    f1 = SimpleNamespace(mean=lambda: SimpleNamespace(item=lambda: 0.0))
    monkeypatch.setitem(sys.modules, "openai", SimpleNamespace(OpenAI=lambda **_: client))
    monkeypatch.setitem(
        sys.modules, "bert_score", SimpleNamespace(score=lambda *_, **__: (0, 0, f1))
    )
    return _official("report_metric").compute_report_generation_metric  # type: ignore[no-any-return]


def printed(compute: Callable[..., None], *args: Any, **kwargs: Any) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compute(*args, **kwargs)
    return out.getvalue().splitlines()


def official_cells(compute: Callable[..., None], path: Path, mode: str) -> list[Cell]:
    cells: list[Cell] = []
    modality = None
    for line in printed(compute, path, mode=mode):
        if m := _MODALITY.match(line):
            modality = m[1]
        elif m := _CELL.match(line):
            assert modality is not None, line
            cells.append((modality, m[1], int(m[2]), int(m[3])))
    return cells


def pipeline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRVD_") or k == "DRVD_PAGE"}
    cmd = [sys.executable, "-m", "pipeline", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def our_summary(run_dir: Path, quirks: bool) -> dict[str, Any]:
    done = pipeline("score", run_dir, *(["--official-quirks"] if quirks else []))
    assert done.returncode == 0, done.stderr
    return orjson.loads((run_dir / "summary.json").read_bytes())  # type: ignore[no-any-return]


def our_cells(summary: dict[str, Any], stem: str) -> list[Cell]:
    section = summary["files"][stem]
    table = section["levels"] if stem == "joint_qa" else section["groups"]
    return [(m, sub, c["correct"], c["n"]) for m, subs in table.items() for sub, c in subs.items()]


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def as_stored(row: dict[str, Any], quirks: bool) -> dict[str, Any]:
    """The row the official scorer reads: ours, or (quirks) as the official pipeline stores it."""
    if not quirks:
        return row
    out = {k: v for k, v in row.items() if k != "model_response"}
    if isinstance(row["raw_response"], str):
        out["model_response"] = row["raw_response"].strip()
    return out


def line(
    n: int, kind: str, raw: str | None, extracted: str | None, row: dict[str, Any]
) -> dict[str, Any]:
    """A results line; `extracted` None: the stripped reply (what we store when none is found)."""
    meta = {"key": f"k{n}", "line": n, "kind": kind, "answer_source": "extracted", "cached": False}
    meta |= {"prompt_tokens": 0, "completion_tokens": 0}
    response = raw.strip() if extracted is None and raw is not None else extracted
    error = "503 server_is_overloaded" if raw is None else None
    fields = {"model_response": response, "raw_response": raw, "error": error, "_meta": meta}
    kept = {k: v for k, v in row.items() if v != ABSENT}
    return {"image_paths": f"images/{n}.png", **kept, **fields}


def mcq(n: int, raw: str | None, extracted: str | None = None, **row: Any) -> dict[str, Any]:
    kind = "evidence" if "task" in row else "independent"
    return line(n, kind, raw, extracted, {**OPTIONS, **row})


def joint(n: int, raw: str | None, extracted: str | None = None, **row: Any) -> dict[str, Any]:
    return line(n, "joint", raw, extracted, {"joint_prompt": "p", **ANSWERS, **row})


def check_parity(
    compute: Callable[..., None], run_dir: Path, quirks: bool, files: Files | None = None
) -> dict[str, list[Cell]]:
    """Write `files` (if given), assert our cells equal the official ones; return the latter."""
    for stem, rows in (files or {}).items():
        write_rows(run_dir / f"{stem}.jsonl", rows)
    summary = our_summary(run_dir, quirks)
    official = {}
    for stem in files or CHOICE_FILES:
        stored = run_dir.parent / "as_stored" / f"{stem}.jsonl"
        write_rows(stored, [as_stored(r, quirks) for r in read_rows(run_dir / f"{stem}.jsonl")])
        mode = "joint" if stem == "joint_qa" else "single"
        official[stem] = official_cells(compute, stored, mode)
        assert official[stem], stem
        assert our_cells(summary, stem) == official[stem], stem
    return official


@MODES
def test_mcq_and_joint_rules_match_official(tmp_path: Path, choice_metric, quirks: bool) -> None:
    """§3.1-3.2: exact match, unstripped joint tokens, failed rows wrong (matches today)."""
    ct = {"task": "modality_recognition", "modality": "CT"}
    replies = [("C", "C"), (" C\n", "C"), ("Answer: C", "C"), ("c", None), (None, None)]
    evidence = [mcq(n, raw, ex, **ct) for n, (raw, ex) in enumerate(replies)]
    evidence += [mcq(6, "", answer="", **ct), mcq(7, "C", **{**ct, "task": None})]  # §4 Q13
    chains: list[tuple[str | None, str | None]] = [
        ("B,D,A,C", None),
        ("B, D, A, C", "B,D,A,C"),
        ("B,D,A,C.", "B,D,A,C"),
    ]
    chains += [("B,E,D,A,C", None), (None, None)]  # five letters shift the later levels
    files = {
        "visual_evidence_qa": evidence,
        "independent_qa": [mcq(8, "**C**", "C", level="organ"), mcq(9, "A", level="lesion")],
        "joint_qa": [joint(10 + n, raw, ex, modality="MRI") for n, (raw, ex) in enumerate(chains)],
    }
    check_parity(choice_metric, tmp_path / "r", quirks, files)


@MODES
def test_null_modality_groups_as_official(tmp_path: Path, choice_metric, quirks: bool) -> None:
    """Decision (c): MCQ groups by modality or None ("None"); joint: absent "Unknown", null None."""
    mods = (ABSENT, None, None, "CT")
    files = {
        "visual_evidence_qa": [
            mcq(n, "CA"[n % 2], task="t", modality=m) for n, m in enumerate(mods)
        ],
        "independent_qa": [mcq(5 + n, "C", level="organ", modality=m) for n, m in enumerate(mods)],
        "joint_qa": [
            joint(10 + n, "B,D,A,C" if n % 2 else "B,A,A,C", modality=m)
            for n, m in enumerate((ABSENT, None, "MRI"))
        ],
    }
    check_parity(choice_metric, tmp_path / "r", quirks, files)


@MODES
def test_report_modality_groups_as_official(tmp_path: Path, report_metric, quirks: bool) -> None:
    """Decision (c), report file: modality absent → "Unknown", null → None, "" stays ""."""
    texts = ("no acute fracture seen", "small cyst in the left kidney", "normal heart size")
    rows = []
    for n, modality in enumerate(("CT", ABSENT, None, "", "CT")):
        reply = "" if n == 4 else f"{texts[(n + 1) % 3]} and {texts[n % 3]}"  # n=4: dropped
        row = {"question": "q", "task": "report_generation", "answer": texts[n % 3]}
        rows.append(line(n, "report", reply, None, {**row, "modality": modality}))
    path = tmp_path / "r" / "report_generation.jsonl"
    write_rows(path, rows)
    theirs = [
        (m[1], m[2]) for text in printed(report_metric, "k", path) if (m := _REPORT.match(text))
    ]
    groups = our_summary(tmp_path / "r", quirks)["files"]["report_generation"]["groups"]
    assert [(m, f"{g['bleu']:.4f}") for m, g in groups.items()] == theirs


@MODES
def test_empty_level_answer_matches_empty_token(
    tmp_path: Path, choice_metric, quirks: bool
) -> None:
    """Decision (b): an empty, null or absent `<level>_answer` is "" and matches an empty token."""
    rows = [
        joint(1, "B,,A,C", organ_answer=""),
        joint(2, "B,,A,C", organ_answer=None),
        joint(3, "B,,A,C", organ_answer=ABSENT),
        joint(4, "B,D,A,", diagnosis_answer=""),
        joint(5, "B,D,A,C", organ_answer=""),  # "D" != "": wrong
        joint(6, "B,,A,C"),  # "" != "D": wrong
    ]
    files = {"joint_qa": [{**r, "modality": "CT"} for r in rows]}
    official = check_parity(choice_metric, tmp_path / "r", quirks, files)
    hits = {"modality": 6, "organ": 4, "lesion": 6, "diagnosis": 6}
    assert official["joint_qa"] == [("CT", level, n, 6) for level, n in hits.items()]


BAD_IMAGES = ("images/missing.png", "images/garbage.jpg")
BROKEN = ("independent_qa", 3)  # a row without `question`: not a result (the official code crashes)


@pytest.fixture(scope="session")  # built once per worker, not again when its module resumes
def image_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[int]]]:
    """An eval run (random model) where one image is missing and one is not an image."""
    data = tmp_path_factory.mktemp("protocol") / "data"
    (data / "images").mkdir(parents=True)
    for name in ("ok0.png", "ok1.png"):
        Image.new("L", (32, 24), 128).save(data / "images" / name)
    (data / "images" / "garbage.jpg").write_bytes(b"this is not an image")
    images = ("images/ok0.png", *BAD_IMAGES, "images/ok1.png")
    kinds: dict[str, dict[str, Any]] = {
        "visual_evidence_qa": {**OPTIONS, "task": "modality_recognition"},
        "independent_qa": {**OPTIONS, "level": "organ"},
        "joint_qa": {"joint_prompt": "1. Which?\nA. x\nB. y", **ANSWERS},
        "report_generation": {"question": "Report.", "task": "report_generation", "answer": "ok"},
    }
    valid = {}
    for stem, fields in kinds.items():
        rows = [
            {"image_paths": images[i % 4], "modality": "CT", **fields, "i": i} for i in range(8)
        ]
        if stem == BROKEN[0]:
            rows.insert(BROKEN[1] - 1, {k: v for k, v in rows[0].items() if k != "question"})
        write_rows(data / f"{stem}.jsonl", rows)
        valid[stem] = [n for n in range(1, len(rows) + 1) if (stem, n) != BROKEN]
    out = data.parent / "out"
    flags = ("--model", "random", "--judge", "none", "--quiet", "--cache-dir", out / "cache")
    done = pipeline("eval", "--data", data, "--out", out, "--run-name", "r", *flags)
    assert done.returncode in (0, 1), done.stderr
    return out / "r", valid


@MODES
def test_unreadable_image_rows_are_failed_rows_counted_wrong(
    image_run: tuple[Path, dict[str, list[int]]], choice_metric, quirks: bool
) -> None:
    """Decision (a): a valid row whose image is missing or does not decode is a failed row."""
    run_dir, valid = image_run
    for stem, lines in valid.items():
        rows = read_rows(run_dir / f"{stem}.jsonl")
        assert sorted(r["_meta"]["line"] for r in rows) == lines, f"{stem}: rows missing"
        for row in rows:
            if row["image_paths"] in BAD_IMAGES:
                assert row["error"], row
                assert row["model_response"] is None, row
    official = check_parity(choice_metric, run_dir, quirks)
    for stem in CHOICE_FILES:  # every valid row is in every cell's denominator
        for level in LEVELS if stem == "joint_qa" else ("",):
            totals = [c[3] for c in official[stem] if c[1] == level or not level]
            assert sum(totals) == len(valid[stem]), (stem, level)
