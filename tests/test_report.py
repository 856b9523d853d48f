from __future__ import annotations

import io
import json

import orjson
import pytest
from rich.console import Console

from pipeline.errors import DataError
from pipeline.report import load_results, render, score_run, write_summary
from pipeline.scoring import USAGE_KEYS, sentence_bleu

CT = {"modality": "CT", "task": "modality_recognition", "answer": "C. CT"}
JOINT = {
    "joint_prompt": "...",
    "modality_answer": "B. CT",
    "organ_answer": "D. Lung",
    "lesion_answer": "A. Nodule",
    "diagnosis_answer": "C. Cancer",
}
REF = "Mild cardiomegaly. No pleural effusion."
PRED = "Mild cardiomegaly without pleural effusion."


def result(row, key, response, *, error=None, **meta):
    out = {**row, "raw_response": response, "error": error}
    if response is not None:
        out["model_response"] = response
    out["_meta"] = {"key": key, "model": "qwen-vl-max", "prompt_tokens": 50, **meta}
    return out


def write_jsonl(path, rows, tail=b""):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + tail)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run-1"
    run.mkdir()
    write_jsonl(
        run / "visual_evidence_qa.jsonl",
        [
            result(CT, "a", "C"),
            result(CT, "b", None, error="429 limit_requests"),
            result({**CT, "task": "organ_recognition", "answer": "B. Lung"}, "c", "A"),
            result(CT, "b", "C", cached=True),  # the retry appended on resume
        ],
        tail=b'{"modality": "CT", "ans',  # torn by a crash mid-write
    )
    write_jsonl(
        run / "joint_qa.jsonl",
        [
            result({**JOINT, "modality": "CT"}, "j1", "B,D,A,C"),
            result({**JOINT, "modality": "CT"}, "j2", "B, D, A, C"),
            result({**JOINT, "modality": "MRI"}, "j3", None, error="content filter"),
        ],
    )
    report = {"task": "report_generation", "modality": "CT", "answer": REF}
    write_jsonl(
        run / "report_generation.jsonl",
        [result(report, "r1", PRED), result(report, "r2", "")],
    )
    return run


def test_load_results_skips_torn_tail_and_missing_files(run_dir):
    stems = [stem for stem, _ in load_results(run_dir)]
    assert stems == ["visual_evidence_qa"] * 4 + ["joint_qa"] * 3 + ["report_generation"] * 2


def test_load_results_rejects_damage_before_the_end(tmp_path):
    path = tmp_path / "independent_qa.jsonl"
    path.write_bytes(b'{"level": "organ"}\n{"broken\n{"level": "lesion"}\n')
    with pytest.raises(DataError, match=r"independent_qa\.jsonl:2:"):
        list(load_results(tmp_path))
    path.write_bytes(b'{"level": "organ"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: a results line must be a JSON object"):
        list(load_results(tmp_path))


def test_score_run_gives_expected_summary(run_dir):
    summary = score_run(run_dir)
    assert summary["model"] == "qwen-vl-max"
    files = summary["files"]
    assert list(files) == ["visual_evidence_qa", "joint_qa", "report_generation"]

    evidence = files["visual_evidence_qa"]
    assert (evidence["n"], evidence["correct"], evidence["errors"]) == (3, 2, 0)
    assert evidence["groups"] == {
        "CT": {
            "modality_recognition": {"n": 2, "correct": 2, "accuracy": 1.0},
            "organ_recognition": {"n": 1, "correct": 0, "accuracy": 0.0},
        }
    }

    joint = files["joint_qa"]
    assert (joint["n"], joint["chain_correct"], joint["errors"]) == (3, 1, 1)
    assert joint["levels"]["CT"]["modality"] == {"n": 2, "correct": 2, "accuracy": 1.0}
    assert joint["levels"]["CT"]["organ"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert joint["levels"]["MRI"]["diagnosis"] == {"n": 1, "correct": 0, "accuracy": 0.0}

    report = files["report_generation"]
    assert (report["n"], report["scored"], report["dropped"]) == (2, 1, 1)
    assert report["groups"]["CT"]["bleu"] == sentence_bleu(REF, PRED)
    assert report["bert_f1"] is None

    usage = summary["usage"]
    assert usage["prompt_tokens"] == 50 * 8  # the replaced row and the torn line do not count
    assert (usage["cache_hits"], usage["failed_rows"]) == (1, 1)


def test_score_run_model_falls_back_to_dir_name(tmp_path):
    run = tmp_path / "gpt-4o-2025"
    run.mkdir()
    write_jsonl(
        run / "independent_qa.jsonl", [{"level": "organ", "answer": "A. x", "model_response": "A"}]
    )
    summary = score_run(run)
    assert summary["model"] == "gpt-4o-2025"
    assert summary["files"]["independent_qa"]["groups"] == {
        "None": {"organ": {"n": 1, "correct": 1, "accuracy": 1.0}}
    }
    assert score_run(run, model="given")["model"] == "given"


def test_render_shows_the_numbers(run_dir):
    summary = score_run(run_dir, usage={"api_calls": 9, "retries": 1, "prompt_tokens": 12345})
    console = Console(record=True, width=120, file=io.StringIO())
    render(summary, console)
    text = console.export_text()
    for expected in (
        "qwen-vl-max",
        "visual_evidence_qa",
        "modality_recognition",
        "2/2",
        "100.00%",
        "0/1",
        "2/3",
        "66.67%",
        "1/2 50.00%",  # joint organ on CT
        "1/3 33.33%",  # whole chains
        f"{sentence_bleu(REF, PRED):.4f}",
        "keyword extraction not run",
        "1 row(s) with an error",
        "9 API calls",
        "12,345 prompt",
    ):
        assert expected in text, expected
    assert "independent_qa" not in text
    assert "\x1b" not in console.file.getvalue()  # not a terminal: plain text


def test_render_marks_missing_values(tmp_path):
    report = {"task": "report_generation", "modality": "CT", "answer": REF, "model_response": ""}
    write_jsonl(tmp_path / "report_generation.jsonl", [report])
    console = Console(record=True, width=100, file=io.StringIO())
    render(score_run(tmp_path, model="m"), console)
    text = console.export_text()
    assert "1 of 1 rows dropped" in text
    assert "—" in text
    assert "? API calls" in text


def test_render_escapes_markup_in_data(tmp_path):
    row = {"modality": "[bold]CT", "level": "organ", "answer": "A. x", "model_response": "A"}
    write_jsonl(tmp_path / "independent_qa.jsonl", [row])
    console = Console(record=True, width=100, file=io.StringIO())
    render(score_run(tmp_path, model="[m]"), console)
    text = console.export_text()
    assert "[bold]CT" in text
    assert "[m]" in text


def test_write_summary_is_atomic_valid_json(run_dir):
    summary = score_run(run_dir)
    path = write_summary(run_dir, summary)
    assert path == run_dir / "summary.json"
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(summary))
    assert {"model", "files", "usage"} <= set(data)
    assert set(USAGE_KEYS) <= set(data["usage"])
    mcq = data["files"]["visual_evidence_qa"]
    assert {"n", "correct", "accuracy", "errors", "groups"} <= set(mcq)
    joint = data["files"]["joint_qa"]
    assert {"n", "chain_correct", "chain_accuracy", "errors", "levels"} <= set(joint)
    report = data["files"]["report_generation"]
    assert {"n", "scored", "dropped", "errors", "bleu", "bert_f1", "groups"} <= set(report)
    assert set(report["groups"]["CT"]) >= {"n", "bleu", "bert_f1"}
    write_summary(run_dir, {**summary, "model": "second"})
    assert json.loads(path.read_text())["model"] == "second"
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
