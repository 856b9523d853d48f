"""The terminal tables: official cells, our additions marked, data never read as markup."""

from __future__ import annotations

import io

from conftest import PRED, REF, write_jsonl
from rich.console import Console

from pipeline.scoring.metrics import sentence_bleu
from pipeline.scoring.summary import score_run
from pipeline.views.terminal import render


def test_render_shows_the_numbers(run_dir):
    summary = score_run(run_dir)
    stream = io.StringIO()
    console = Console(record=True, width=120, file=stream)
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
        "7 API calls",
        "400 prompt",
    ):
        assert expected in text, expected
    assert "independent_qa" not in text
    assert "\x1b" not in stream.getvalue()  # not a terminal: plain text


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
