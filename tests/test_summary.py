"""The summary: official cells, replacement on resume, usage and our additions, from rows."""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import PRED, REF, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scoring import (
    CT,
    EVIDENCE_ROWS,
    INDEPENDENT_ROWS,
    JOINT_BASE,
    JOINT_CASES,
    as_cells,
    joint_row,
    keyed,
    official_joint,
    official_report_bleu,
    official_single,
    our_cells,
)

from pipeline.records import ResultRow
from pipeline.results import read_run
from pipeline.scoring.metrics import sentence_bleu
from pipeline.scoring.official import joint_hits
from pipeline.scoring.summary import Scorer, score_run, write_summary


def no_ci(value):
    """Drop the intervals clustered by image (test_intervals and test_compare check them)."""
    if isinstance(value, dict):
        return {k: no_ci(v) for k, v in value.items() if k != "ci"}
    return value


class DictScorer(Scorer):
    """A Scorer fed results lines as parsed JSON, the way the results file stores them."""

    def add(self, file, row) -> None:
        super().add(file, row if isinstance(row, ResultRow) else ResultRow.from_json(row))


def running(scorer: Scorer) -> dict:
    keys = ("rows", "errors", "n", "correct", "accuracy")
    return {k: v for k, v in scorer.running().items() if k in keys}


def score_rows(items, **kwargs) -> DictScorer:
    scorer = DictScorer(**kwargs)
    for stem, row in items:
        scorer.add(stem, row)
    return scorer


# --- Scorer parity with the transcription ---------------------------------------------------------


def test_mcq_files_match_official_cells():
    scorer = score_rows(
        [("visual_evidence_qa", r) for r in EVIDENCE_ROWS]
        + [("independent_qa", r) for r in INDEPENDENT_ROWS]
    )
    summary = scorer.summary(model="m")
    for stem, rows in (("visual_evidence_qa", EVIDENCE_ROWS), ("independent_qa", INDEPENDENT_ROWS)):
        section = summary["files"][stem]
        expected = as_cells(official_single(rows))
        assert our_cells(section["groups"]) == expected
        assert list(section["groups"]) == list(expected)  # first-seen order
        assert section["n"] == len(rows)
        assert section["correct"] == sum(
            c for cells in expected.values() for _, c in cells.values()
        )
        assert section["errors"] == sum(r.get("error") is not None for r in rows)
    evidence = summary["files"]["visual_evidence_qa"]
    # "C", the modality-less "C", organ "A", MRI "B" and the empty-answer quirk.
    assert evidence["correct"] == 5
    assert evidence["groups"]["None"]["modality_recognition"]["n"] == 1
    assert evidence["groups"]["CT"]["modality_recognition"]["accuracy"] == pytest.approx(2 / 13)


def test_joint_file_matches_official_levels():
    rows = [joint_row(resp) for resp, _ in JOINT_CASES]
    rows += [joint_row("B,D,A,C", modality="MRI"), dict(JOINT_BASE)]
    rows.append({k: v for k, v in joint_row("B,D,A,C").items() if k != "modality"})
    rows.append(joint_row("B,D,A,C", modality=None))
    rows.append(joint_row(None, error="500 upstream"))
    summary = score_rows(("joint_qa", r) for r in rows).summary(model="m")
    section = summary["files"]["joint_qa"]
    expected = as_cells(official_joint(rows))
    assert our_cells(section["levels"]) == expected
    assert list(section["levels"]) == ["CT", "MRI", "Unknown", "None"]
    assert section["n"] == len(rows)
    assert section["errors"] == 1
    chains = [all(joint_hits(r, r.get("model_response"))) for r in rows]
    assert section["chain_correct"] == sum(chains) == 5
    assert section["chain_accuracy"] == pytest.approx(5 / len(rows))
    assert no_ci(section["chains"]["CT"]) == {
        "n": 12,
        "correct": 2,
        "accuracy": pytest.approx(2 / 12),
    }
    modality_total = section["level_totals"]["modality"]
    assert modality_total["correct"] == sum(
        c["modality"]["correct"] for c in section["levels"].values()
    )


def test_report_file_matches_official_bleu_and_drops_empty():
    base = {"task": "report_generation", "answer": "Mild cardiomegaly. No pleural effusion."}
    rows = [
        {**base, "modality": "CT", "model_response": "Mild cardiomegaly without effusion."},
        {**base, "modality": "CT", "model_response": "Normal chest."},
        {**base, "modality": "CT", "model_response": ""},
        {**base, "modality": "CT", "error": "content filter"},
        {**base, "modality": "MRI", "model_response": "No pleural effusion."},
        {**base, "model_response": "cardiomegaly"},
        {**base, "modality": "MRI", "answer": "", "model_response": "text"},
    ]
    section = score_rows(("report_generation", r) for r in rows).summary(model="m")["files"][
        "report_generation"
    ]
    expected = official_report_bleu(rows)
    assert list(section["groups"]) == list(expected) == ["CT", "MRI", "Unknown"]
    for modality, (n, bleu) in expected.items():
        group = section["groups"][modality]
        assert group["n"] == n
        assert group["bleu"] == pytest.approx(bleu, rel=1e-12)
        assert group["bert_f1"] is None
    assert (section["n"], section["scored"], section["dropped"], section["errors"]) == (7, 4, 3, 1)
    assert section["keywords"] is None
    assert "keyword extraction not run" in section["note"]


def test_known_stem_decides_the_scoring_and_unknown_stem_uses_kind():
    report_like = {"task": "report_generation", "answer": "C. CT", "model_response": "C"}
    summary = score_rows(
        [("visual_evidence_qa", report_like), ("extra_file", report_like)]
    ).summary(model="m")
    assert summary["files"]["visual_evidence_qa"]["kind"] == "mcq"
    assert summary["files"]["visual_evidence_qa"]["correct"] == 1
    assert summary["files"]["extra_file"]["kind"] == "report"
    assert list(summary["files"]) == ["visual_evidence_qa", "extra_file"]


# --- Streaming, replacement, usage ----------------------------------------------------------------


def test_readding_a_key_replaces_the_earlier_row():
    scorer = DictScorer()
    scorer.add("visual_evidence_qa", keyed({**CT, "error": "429"}, "a"))
    scorer.add("visual_evidence_qa", keyed({**CT, "modality": "MRI", "model_response": "C"}, "b"))
    assert running(scorer) == {"rows": 2, "errors": 1, "n": 2, "correct": 1, "accuracy": 0.5}
    scorer.add("visual_evidence_qa", keyed({**CT, "model_response": "C"}, "a"))
    assert running(scorer) == {"rows": 2, "errors": 0, "n": 2, "correct": 2, "accuracy": 1.0}
    section = scorer.summary(model="m")["files"]["visual_evidence_qa"]
    assert (section["n"], section["correct"], section["errors"]) == (2, 2, 0)
    assert list(section["groups"]) == ["CT", "MRI"]  # the replaced row keeps its place


def test_replacing_a_joint_and_a_report_row_is_exact():
    scorer = DictScorer()
    scorer.add("joint_qa", keyed(joint_row("B,D"), "j"))
    scorer.add("joint_qa", keyed(joint_row("B,D,A,C"), "j"))
    ref = {"task": "report_generation", "modality": "CT", "answer": "a b c d"}
    scorer.add("report_generation", keyed({**ref, "model_response": "a b"}, "r"))
    scorer.add("report_generation", keyed({**ref, "model_response": ""}, "r"))
    files = scorer.summary(model="m")["files"]
    assert no_ci(files["joint_qa"]["levels"]["CT"]["diagnosis"]) == {
        "n": 1,
        "correct": 1,
        "accuracy": 1.0,
    }
    assert files["joint_qa"]["chain_correct"] == 1
    assert scorer.running()["n"] == 4
    assert (files["report_generation"]["scored"], files["report_generation"]["dropped"]) == (0, 1)
    assert files["report_generation"]["groups"] == {}
    assert files["report_generation"]["bleu"] is None


def test_rows_without_meta_are_never_replaced():
    scorer = score_rows([("independent_qa", INDEPENDENT_ROWS[0])] * 3)
    assert scorer.running()["rows"] == 3


def test_running_counts_joint_levels_and_ignores_reports():
    scorer = DictScorer()
    assert scorer.running()["accuracy"] is None
    scorer.add("joint_qa", joint_row("B, D, A, C"))
    scorer.add(
        "report_generation", {"task": "report_generation", "answer": "x", "model_response": "x"}
    )
    assert running(scorer) == {"rows": 2, "errors": 0, "n": 4, "correct": 1, "accuracy": 0.25}


def test_summary_shape_and_only_files_with_rows():
    summary = score_rows([("independent_qa", INDEPENDENT_ROWS[0])]).summary(
        model="m", extra={"protocol": "official"}
    )
    assert list(summary["files"]) == ["independent_qa"]
    assert summary["model"] == "m"
    assert summary["protocol"] == "official"
    assert any("chain" in a for a in summary["additions"])
    empty = DictScorer().summary(model="m")
    assert empty["files"] == {}


def test_extra_cannot_replace_a_summary_field():
    with pytest.raises(ValueError, match="'usage'"):
        DictScorer().summary(model="m", extra={"usage": {}})


def metered(row: dict, key: str, model: dict | None = None, judge: dict | None = None) -> dict:
    meta = {"key": key, "usage": model or {}}
    if judge is not None:
        meta.update(judge_usage=judge, judge_model="judge-v1")
    return {**row, "_meta": meta}


def test_usage_is_the_sum_over_the_latest_rows():
    scorer = DictScorer()
    calls = {
        "api_calls": 3,
        "retries": 2,
        "prompt_tokens": 100,
        "completion_tokens": 2,
        "cost_usd": 0.25,
    }
    first = {"api_calls": 7, "retries": 6, "cost_usd": 4.0}  # replaced below: not counted
    scorer.add("independent_qa", metered(INDEPENDENT_ROWS[2], "a", first))
    scorer.add("independent_qa", metered(INDEPENDENT_ROWS[0], "a", calls))  # a retried failure
    hit = {"cache_hits": 1, "saved_usd": 0.125}
    scorer.add("independent_qa", metered(INDEPENDENT_ROWS[1], "b", hit))
    judged = {"api_calls": 1, "cost_usd": 0.0625, "batch_calls": 1}
    scorer.add("independent_qa", metered(INDEPENDENT_ROWS[3], "c", calls, judged))
    got = scorer.summary(model="m")["usage"]
    assert got == {
        "api_calls": 6,
        "retries": 4,
        "cache_hits": 1,
        "prompt_tokens": 200,
        "completion_tokens": 4,
        "reasoning_tokens": 0,
        "batch_calls": 0,
        "cost_usd": 0.5625,  # the model's 0.5 and the judge's 0.0625
        "saved_usd": 0.125,
        "failed_rows": 0,
        "input_rows": 0,
        "judge": {
            "api_calls": 1,
            "retries": 0,
            "cache_hits": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "reasoning_tokens": 0,
            "batch_calls": 1,
            "cost_usd": 0.0625,
            "saved_usd": 0.0,
            "models_returned": ["judge-v1"],
        },
    }
    assert scorer.running()["api_calls"] == 7  # the progress line counts the judge's too


def test_usage_of_rows_from_other_tools_is_unknown():
    scorer = DictScorer()
    scorer.add("independent_qa", metered(INDEPENDENT_ROWS[0], "a", {"api_calls": 1}))
    scorer.add("independent_qa", INDEPENDENT_ROWS[2])  # no _meta: not ours
    got = scorer.summary(model="m")["usage"]
    assert (got["api_calls"], got["retries"], got["failed_rows"]) == (None, None, 1)


# --- Properties -----------------------------------------------------------------------------------

letters = st.sampled_from("ABCD")
mcq_rows = st.builds(
    lambda modality, group, answer, response, key: {
        **({} if modality == "<missing>" else {"modality": modality}),
        **group,
        "answer": f"{answer}. option text",
        **({} if response == "<missing>" else {"model_response": response}),
        "_meta": {"key": key},
    },
    st.sampled_from(["CT", "MRI", None, "<missing>"]),
    st.sampled_from([{"task": "t1"}, {"task": "t2"}, {"level": "organ"}, {"level": "lesion"}]),
    letters,
    st.one_of(letters, st.sampled_from(["A.", " B", "c", "", None, "<missing>"])),
    st.sampled_from([f"k{i}" for i in range(12)]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(mcq_rows, max_size=40))
def test_streamed_accuracy_equals_fmean_of_official_hits(rows):
    scorer = score_rows(("visual_evidence_qa", r) for r in rows)
    latest = {r["_meta"]["key"]: r for r in rows}  # a later row replaces an earlier one
    hits = [r.get("model_response") == r["answer"].split(".")[0].strip() for r in latest.values()]
    running = scorer.running()
    assert running["n"] == len(latest)
    if hits:
        assert running["accuracy"] == statistics.fmean(hits)
        section = scorer.summary(model="m")["files"]["visual_evidence_qa"]
        assert section["accuracy"] == statistics.fmean(hits)
        assert our_cells(section["groups"]) == as_cells(official_single(latest.values()))
    else:
        assert running["accuracy"] is None


def _ind(image: str, level: str, hit: bool) -> dict:
    return {
        "image_paths": image,
        "level": level,
        "modality": "CT",
        "answer": "A. x",
        "model_response": "A" if hit else "B",
    }


def _joint(image: str, hits: str) -> dict:
    letters = ",".join("A" if h == "1" else "B" for h in hits)
    answers = {f"{lv}_answer": "A. x" for lv in ("modality", "organ", "lesion", "diagnosis")}
    return {"image_paths": image, "joint_prompt": "?", "modality": "CT", **answers,
            "model_response": letters}  # fmt: skip


def test_independent_vs_joint_links_rows_by_image_and_counts_the_drop() -> None:
    scorer = DictScorer()
    # img1: independent lesion right, joint lesion wrong; img2: both right; img3 has no joint row.
    for row in (_ind("img1", "lesion", True), _ind("img2", "lesion", True),
                _ind("img3", "lesion", False), _ind("img1", "modality", True)):  # fmt: skip
        scorer.add("independent_qa", row)
    scorer.add("joint_qa", _joint("img1", "1101"))
    scorer.add("joint_qa", _joint("img2", "1111"))
    drop = scorer.summary(model="m")["independent_vs_joint"]
    assert drop["lesion"] == {"pairs": 2, "independent": 1.0, "joint": 0.5, "drop": 0.5}
    assert drop["modality"] == {"pairs": 1, "independent": 1.0, "joint": 1.0, "drop": 0.0}
    assert drop["organ"]["pairs"] == 0
    assert drop["organ"]["drop"] is None


def test_shortcut_counts_right_diagnoses_behind_wrong_lesions() -> None:
    scorer = DictScorer()
    for i, hits in enumerate(("1101", "1100", "1111", "0001")):
        scorer.add("joint_qa", _joint(f"j{i}", hits))
    scorer.add("independent_qa", _ind("a", "lesion", False))
    scorer.add("independent_qa", _ind("a", "diagnosis", True))
    scorer.add("independent_qa", _ind("b", "lesion", True))  # no diagnosis row: not a pair
    shortcut = scorer.summary(model="m")["shortcut"]
    # Joint: lesion wrong in rows 0, 1, 3; diagnosis right in 0 and 3.
    assert shortcut["joint"] == {"n": 4, "lesion_wrong": 3, "diagnosis_right": 2, "rate": 2 / 3}
    assert shortcut["independent"] == {"n": 1, "lesion_wrong": 1, "diagnosis_right": 1, "rate": 1.0}
    assert DictScorer().summary(model="m")["shortcut"] is None


def test_report_keywords_replace_raw_text_bleu_and_rows_without_them_drop() -> None:
    scorer = DictScorer()
    base = {"task": "report_generation", "modality": "CT", "answer": "ref text",
            "model_response": "pred text"}  # fmt: skip
    kw = {"reference": "mass, edema", "prediction": "mass, edema, opacity", "bert_f1": 0.9}
    scorer.add("report_generation", {**base, "keywords": kw, "_meta": {"key": "a"}})
    scorer.add("report_generation", {**base, "_meta": {"key": "b"}})  # extraction failed
    section = scorer.summary(model="m")["files"]["report_generation"]
    assert section["keywords"] == "extracted"
    assert (section["n"], section["scored"], section["dropped"]) == (2, 1, 1)
    assert section["bleu"] == sentence_bleu("mass, edema", "mass, edema, opacity")
    assert section["bert_f1"] == 0.9
    assert section["groups"]["CT"]["bert_f1"] == 0.9
    assert section["note"] is None


# --- --official-quirks: the stripped raw reply, exact match -----------------------------------


def mcq(key: str, raw: str | None, extracted: str | None, error: str | None = None) -> dict:
    return {
        "question": "q",
        "options": ["A. CT", "B. MRI", "C. X-ray"],
        "answer": "C. X-ray",
        "modality": "CT",
        "level": "modality",
        "model_response": extracted,
        "raw_response": raw,
        "error": error,
        "_meta": {"key": key, "kind": "independent"},
    }


def joint(key: str, raw: str, extracted: str) -> dict:
    answers = {
        f"{lvl}_answer": f"{x}. t"
        for lvl, x in zip(("modality", "organ", "lesion", "diagnosis"), "BDAC", strict=True)
    }
    return {
        "joint_prompt": "p",
        "modality": "MRI",
        **answers,
        "model_response": extracted,
        "raw_response": raw,
        "error": None,
        "_meta": {"key": key, "kind": "joint"},
    }


QUIRK_ROWS = [
    ("independent_qa", mcq("1", "C", "C")),
    ("independent_qa", mcq("2", " C\n", "C")),  # official strips the reply: a hit in both
    ("independent_qa", mcq("3", "The answer is C.", "C")),
    ("independent_qa", mcq("4", "**C**", "C")),
    ("independent_qa", mcq("5", None, None, error="500: server error")),
    ("joint_qa", joint("6", "B, D, A, C", "B,D,A,C")),
    ("joint_qa", joint("7", "B,D,A,C.", "B,D,A,C")),
]


def score_quirks(quirks: bool) -> dict:
    scorer = DictScorer(official_quirks=quirks)
    for stem, row in QUIRK_ROWS:
        scorer.add(stem, row)
    return scorer.summary(model="m")


def test_default_scores_extracted_answers() -> None:
    summary = score_quirks(False)
    assert summary["scoring"] == "extracted"
    assert summary["files"]["independent_qa"]["groups"]["CT"]["modality"]["correct"] == 4
    levels = summary["files"]["joint_qa"]["levels"]["MRI"]
    assert [levels[lvl]["correct"] for lvl in ("modality", "organ", "lesion", "diagnosis")] == [
        2,
        2,
        2,
        2,
    ]


def test_official_quirks_scores_stripped_raw_replies_exactly() -> None:
    summary = score_quirks(True)
    assert summary["scoring"] == "official-quirks"
    cell = summary["files"]["independent_qa"]["groups"]["CT"]["modality"]
    assert (cell["correct"], cell["n"]) == (2, 5)  # "C" and " C\n" only
    levels = summary["files"]["joint_qa"]["levels"]["MRI"]
    # "B, D, A, C": only modality; "B,D,A,C.": all but diagnosis.
    assert [levels[lvl]["correct"] for lvl in ("modality", "organ", "lesion", "diagnosis")] == [
        2,
        1,
        1,
        0,
    ]


# --- A run folder rebuilt from its results files -------------------------------------------------


def test_read_run_skips_torn_tail_and_missing_files(run_dir):
    stems = [stem for stem, _ in read_run(run_dir)]
    assert stems == ["visual_evidence_qa"] * 4 + ["joint_qa"] * 3 + ["report_generation"] * 2


def test_score_run_skips_damage_and_says_which_lines(tmp_path):
    path = tmp_path / "independent_qa.jsonl"
    path.write_bytes(b'{"level": "organ"}\n{"broken\n[1, 2]\n{"level": "lesion"}\n{"torn')
    notes: list[str] = []
    summary = score_run(tmp_path, on_damage=notes.append)
    assert summary["files"]["independent_qa"]["n"] == 2
    assert notes == [
        f"2 damaged lines in {path} (lines 2, 3) were skipped: run eval to re-run them"
    ]
    assert score_run(tmp_path)["files"] == summary["files"]  # nobody told: skipped all the same


def test_score_run_gives_expected_summary(run_dir):
    summary = score_run(run_dir)
    assert summary["model"] == "qwen-vl-max"
    files = summary["files"]
    assert list(files) == ["visual_evidence_qa", "joint_qa", "report_generation"]

    evidence = files["visual_evidence_qa"]
    assert (evidence["n"], evidence["correct"], evidence["errors"]) == (3, 2, 0)
    assert no_ci(evidence["groups"]) == {
        "CT": {
            "modality_recognition": {"n": 2, "correct": 2, "accuracy": 1.0},
            "organ_recognition": {"n": 1, "correct": 0, "accuracy": 0.0},
        }
    }

    joint = files["joint_qa"]
    assert (joint["n"], joint["chain_correct"], joint["errors"]) == (3, 1, 1)
    assert no_ci(joint["levels"]["CT"]["modality"]) == {"n": 2, "correct": 2, "accuracy": 1.0}
    assert no_ci(joint["levels"]["CT"]["organ"]) == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert no_ci(joint["levels"]["MRI"]["diagnosis"]) == {"n": 1, "correct": 0, "accuracy": 0.0}

    report = files["report_generation"]
    assert (report["n"], report["scored"], report["dropped"]) == (2, 1, 1)
    assert report["groups"]["CT"]["bleu"] == sentence_bleu(REF, PRED)
    assert report["bert_f1"] is None

    usage = summary["usage"]
    assert usage["prompt_tokens"] == 50 * 8  # the replaced row and the torn line do not count
    assert (usage["api_calls"], usage["cache_hits"], usage["failed_rows"]) == (7, 1, 1)


def test_score_run_model_falls_back_to_dir_name(tmp_path):
    run = tmp_path / "gpt-4o-2025"
    run.mkdir()
    write_jsonl(
        run / "independent_qa.jsonl", [{"level": "organ", "answer": "A. x", "model_response": "A"}]
    )
    summary = score_run(run)
    assert summary["model"] == "gpt-4o-2025"
    assert no_ci(summary["files"]["independent_qa"]["groups"]) == {
        "None": {"organ": {"n": 1, "correct": 1, "accuracy": 1.0}}
    }
    assert score_run(run, model="given")["model"] == "given"


def test_write_summary_is_atomic_valid_json(run_dir):
    summary = score_run(run_dir)
    path = write_summary(run_dir, summary)
    assert path == run_dir / "summary.json"
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(summary))
    assert {"model", "files", "usage"} <= set(data)
    assert {"api_calls", "retries", "cache_hits", "failed_rows", "judge"} <= set(data["usage"])
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
