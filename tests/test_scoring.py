from __future__ import annotations

import statistics
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

from pipeline.scoring import (
    USAGE_KEYS,
    Scorer,
    joint_hits,
    mcq_correct,
    mcq_group,
    report_pair,
    row_kind,
    score_rows,
    sentence_bleu,
)

# --- An independent, literal transcription of the official scripts (FACTS §3) -------------------


def official_single(rows):
    """compute_choice_metric.py --type single: per (modality, task|level) correct/total."""
    results = {}
    for data in rows:
        modality = data.get("modality")
        key = data["task"] if "task" in data else data.get("level")
        correct_option = data["answer"].split(".")[0].strip()
        pred = data.get("model_response")
        if modality not in results:
            results[modality] = {}
        if key not in results[modality]:
            results[modality][key] = {"correct": 0, "total": 0}
        results[modality][key]["total"] += 1
        if pred == correct_option:
            results[modality][key]["correct"] += 1
    return results


def official_joint(rows):
    """compute_choice_metric.py --type joint: per modality, four fixed levels."""
    levels = ["modality", "organ", "lesion", "diagnosis"]
    results = {}
    for data in rows:
        modality = data.get("modality", "Unknown")
        resp = data.get("model_response")
        resp_list = resp.split(",") if isinstance(resp, str) else []
        if modality not in results:
            results[modality] = {lvl: {"correct": 0, "total": 0} for lvl in levels}
        for i, lvl in enumerate(levels):
            results[modality][lvl]["total"] += 1
            if i < len(resp_list) and resp_list[i] == data[f"{lvl}_answer"][0]:
                results[modality][lvl]["correct"] += 1
    return results


def official_report_bleu(rows):
    """report_generation_metric.py BLEU part: per-modality mean over non-empty pairs."""
    by_modality = {}
    for data in rows:
        ref = data.get("answer")
        pred = data.get("model_response")
        if ref and pred:
            by_modality.setdefault(data.get("modality") or "Unknown", []).append((ref, pred))
    out = {}
    for modality, pairs in by_modality.items():
        scores = []
        for ref, pred in pairs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores.append(
                    nltk_sentence_bleu(
                        [ref.split()],
                        pred.split(),
                        smoothing_function=SmoothingFunction().method4,
                    )
                )
        out[modality] = (len(scores), sum(scores) / len(scores))
    return out


def as_cells(official):
    """Turn the official nested counts into our summary's label -> label -> (n, correct)."""
    return {
        "None" if m is None else m: {
            "None" if k is None else k: (c["total"], c["correct"]) for k, c in cells.items()
        }
        for m, cells in official.items()
    }


def our_cells(groups):
    return {m: {k: (c["n"], c["correct"]) for k, c in cells.items()} for m, cells in groups.items()}


# --- Hand-made rows --------------------------------------------------------------------------------

CT = {"modality": "CT", "task": "modality_recognition", "answer": "C. CT"}
RESPONSES = ["C", "C.", " C", "c", "C. CT", "Answer: C", "C\n", ""]

EVIDENCE_ROWS = [
    *({**CT, "model_response": r} for r in RESPONSES),
    dict(CT),  # missing model_response
    {**CT, "model_response": None},
    {**CT, "error": "429 limit_requests"},  # official single-mode error row
    {**CT, "model_response": ["C"]},
    {"task": "modality_recognition", "answer": "C. CT", "model_response": "C"},  # no modality
    {**CT, "task": "organ_recognition", "answer": "A. Lung", "model_response": "A"},
    {"modality": "MRI", "task": "modality_recognition", "answer": "B. MRI", "model_response": "B"},
    {**CT, "answer": "", "model_response": ""},  # quirk 13: counts as correct
]

INDEPENDENT_ROWS = [
    {"modality": "CT", "level": "organ", "answer": "D. Liver", "model_response": "D"},
    {"modality": "CT", "level": "organ", "answer": "D. Liver", "model_response": "D "},
    {"modality": "CT", "level": "lesion", "answer": "A. Cyst", "error": "timeout"},
    {"modality": "MRI", "level": "diagnosis", "answer": "B. x", "model_response": "B"},
    {"level": "diagnosis", "answer": "B. x", "model_response": "B"},
]

JOINT_BASE = {
    "modality": "CT",
    "joint_prompt": "...",
    "modality_answer": "B. CT",
    "organ_answer": "D. Lung",
    "lesion_answer": "A. Nodule",
    "diagnosis_answer": "C. Cancer",
}
JOINT_CASES = [
    ("B,D,A,C", [True, True, True, True]),
    ("B, D, A, C", [True, False, False, False]),
    ("B,D,A,C.", [True, True, True, False]),
    ("B,D", [True, True, False, False]),
    ("b,d,a,c", [False, False, False, False]),
    ("B,D,A,C,E", [True, True, True, True]),
    ("B,E,D,A,C", [True, False, False, False]),  # a body-region letter shifts every later level
    ({"modality": "B", "organ": "D"}, [False] * 4),
    (None, [False] * 4),
    (["B", "D", "A", "C"], [False] * 4),
]


def joint_row(response, **changes):
    return {**JOINT_BASE, "model_response": response, **changes}


def keyed(row, key, **meta):
    return {**row, "_meta": {"key": key, **meta}}


# --- Per-row functions ----------------------------------------------------------------------------


@pytest.mark.parametrize("response", RESPONSES)
def test_mcq_correct_is_exact_equality(response):
    assert mcq_correct({**CT, "model_response": response}) is (response == "C")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (dict(CT), False),
        ({**CT, "model_response": None}, False),
        ({**CT, "model_response": ["C"]}, False),
        ({**CT, "model_response": 3}, False),
        ({**CT, "error": "boom"}, False),
        ({**CT, "answer": "", "model_response": ""}, True),
        ({**CT, "answer": " B . Bone", "model_response": "B"}, True),
    ],
)
def test_mcq_correct_edge_rows(row, expected):
    assert mcq_correct(row) is expected


def test_mcq_group_prefers_task_and_keeps_none():
    assert mcq_group(CT) == ("CT", "modality_recognition")
    assert mcq_group({"level": "organ"}) == (None, "organ")
    assert mcq_group({"modality": "CT", "task": None, "level": "organ"}) == ("CT", None)


@pytest.mark.parametrize(("response", "expected"), JOINT_CASES)
def test_joint_hits_split_without_strip(response, expected):
    assert joint_hits(joint_row(response)) == expected


def test_joint_hits_missing_response_scores_zero():
    row = dict(JOINT_BASE)
    assert joint_hits(row) == [False] * 4


def test_report_pair_drops_empty_texts():
    row = {"task": "report_generation", "answer": "ref text", "modality": "CT"}
    assert report_pair({**row, "model_response": "pred"}) == ("CT", "ref text", "pred")
    assert report_pair({**row, "model_response": ""}) is None
    assert report_pair({**row, "model_response": None}) is None
    assert report_pair(row) is None
    assert report_pair({**row, "answer": "", "model_response": "pred"}) is None
    assert report_pair({"answer": "r", "model_response": "p", "modality": None}) == (
        "Unknown",
        "r",
        "p",
    )


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ({"joint_prompt": "x", "task": "t"}, "joint"),
        ({"task": "report_generation"}, "report"),
        ({"task": "modality_recognition"}, "evidence"),
        ({"level": "organ"}, "independent"),
        ({"task": "t", "_meta": {"kind": "independent"}}, "independent"),
        ({"task": "t", "_meta": {"kind": "bogus"}}, "evidence"),
    ],
)
def test_row_kind(row, kind):
    assert row_kind(row) == kind


@pytest.mark.parametrize(
    ("ref", "pred"),
    [
        ("no acute cardiopulmonary abnormality", "no acute abnormality seen"),
        ("lung opacity, pleural effusion", "pleural effusion, opacity,"),
        ("a b c d e", "a"),
        ("a b c", "x y z"),  # zero overlap: nltk warns, tests turn warnings into errors
        ("a b c", "   "),
        ("identical text here now", "identical text here now"),
    ],
)
def test_sentence_bleu_equals_nltk(ref, pred):
    assert_same_as_nltk(ref, pred)


def assert_same_as_nltk(ref: str, pred: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nltk_sentence_bleu(
            [ref.split()], pred.split(), smoothing_function=SmoothingFunction().method4
        )
    got = sentence_bleu(ref, pred)
    assert isinstance(got, float)
    assert got == expected


_WORDS = st.sampled_from(
    ["mass,", "edema", "opacity,", "no", "acute", "normal", "heart", "size,", "lesion", "a"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=14), st.lists(_WORDS, max_size=14))
def test_sentence_bleu_equals_nltk_bit_for_bit_on_random_keyword_lists(ref, pred):
    assert_same_as_nltk(" ".join(ref), " ".join(pred))


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
    chains = [all(joint_hits(r)) for r in rows]
    assert section["chain_correct"] == sum(chains) == 5
    assert section["chain_accuracy"] == pytest.approx(5 / len(rows))
    assert section["chains"]["CT"] == {"n": 12, "correct": 2, "accuracy": pytest.approx(2 / 12)}
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
    scorer = Scorer()
    scorer.add("visual_evidence_qa", keyed({**CT, "error": "429"}, "a"))
    scorer.add("visual_evidence_qa", keyed({**CT, "modality": "MRI", "model_response": "C"}, "b"))
    assert scorer.running() == {"rows": 2, "errors": 1, "n": 2, "correct": 1, "accuracy": 0.5}
    scorer.add("visual_evidence_qa", keyed({**CT, "model_response": "C"}, "a"))
    assert scorer.running() == {"rows": 2, "errors": 0, "n": 2, "correct": 2, "accuracy": 1.0}
    section = scorer.summary(model="m")["files"]["visual_evidence_qa"]
    assert (section["n"], section["correct"], section["errors"]) == (2, 2, 0)
    assert list(section["groups"]) == ["CT", "MRI"]  # the replaced row keeps its place


def test_replacing_a_joint_and_a_report_row_is_exact():
    scorer = Scorer()
    scorer.add("joint_qa", keyed(joint_row("B,D"), "j"))
    scorer.add("joint_qa", keyed(joint_row("B,D,A,C"), "j"))
    ref = {"task": "report_generation", "modality": "CT", "answer": "a b c d"}
    scorer.add("report_generation", keyed({**ref, "model_response": "a b"}, "r"))
    scorer.add("report_generation", keyed({**ref, "model_response": ""}, "r"))
    files = scorer.summary(model="m")["files"]
    assert files["joint_qa"]["levels"]["CT"]["diagnosis"] == {"n": 1, "correct": 1, "accuracy": 1.0}
    assert files["joint_qa"]["chain_correct"] == 1
    assert scorer.running()["n"] == 4
    assert (files["report_generation"]["scored"], files["report_generation"]["dropped"]) == (0, 1)
    assert files["report_generation"]["groups"] == {}
    assert files["report_generation"]["bleu"] is None


def test_rows_without_meta_are_never_replaced():
    scorer = score_rows([("independent_qa", INDEPENDENT_ROWS[0])] * 3)
    assert scorer.running()["rows"] == 3


def test_running_counts_joint_levels_and_ignores_reports():
    scorer = Scorer()
    assert scorer.running()["accuracy"] is None
    scorer.add("joint_qa", joint_row("B, D, A, C"))
    scorer.add(
        "report_generation", {"task": "report_generation", "answer": "x", "model_response": "x"}
    )
    assert scorer.running() == {"rows": 2, "errors": 0, "n": 4, "correct": 1, "accuracy": 0.25}


def test_summary_shape_and_only_files_with_rows():
    summary = score_rows([("independent_qa", INDEPENDENT_ROWS[0])]).summary(
        model="m", usage={"api_calls": 3, "retries": 2}, extra={"protocol": "official"}
    )
    assert list(summary["files"]) == ["independent_qa"]
    assert summary["model"] == "m"
    assert summary["protocol"] == "official"
    assert summary["usage"] == {**dict.fromkeys(USAGE_KEYS, 0), "api_calls": 3, "retries": 2}
    assert any("chain" in a for a in summary["additions"])
    empty = Scorer().summary(model="m")
    assert empty["files"] == {}


def test_extra_cannot_replace_a_summary_field():
    with pytest.raises(ValueError, match="'usage'"):
        Scorer().summary(model="m", extra={"usage": {}})


def test_usage_derived_from_rows():
    meta = {"prompt_tokens": 100, "completion_tokens": 2}
    scorer = Scorer()
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[0], "a", **meta, cached=False))
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[1], "b", **meta, cached=True))
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[2], "c", prompt_tokens=None))
    scorer.add("independent_qa", INDEPENDENT_ROWS[3])
    usage = scorer.summary(model="m")["usage"]
    assert usage == {
        "api_calls": None,  # no row recorded its attempts
        "cache_hits": 1,
        "retries": None,
        "failed_rows": 1,
        "prompt_tokens": 200,
        "completion_tokens": 4,
        "source": "rows",
    }


def test_usage_counts_calls_when_rows_record_attempts():
    scorer = Scorer()
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[0], "a", attempts=3))
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[1], "b", attempts=1))
    scorer.add("independent_qa", keyed(INDEPENDENT_ROWS[3], "c", cached=True))
    usage = scorer.summary(model="m")["usage"]
    assert (usage["api_calls"], usage["retries"], usage["cache_hits"]) == (4, 2, 1)


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
    scorer = Scorer()
    # img1: independent lesion right, joint lesion wrong; img2: both right; img3 has no joint row.
    for row in (_ind("img1", "lesion", True), _ind("img2", "lesion", True),
                _ind("img3", "lesion", False), _ind("img1", "modality", True)):  # fmt: skip
        scorer.add("independent_qa", row)
    scorer.add("joint_qa", _joint("img1", "1101"))
    scorer.add("joint_qa", _joint("img2", "1111"))
    drop = scorer.summary(model="m")["independent_vs_joint"]
    assert drop["lesion"] == {"pairs": 2, "independent": 1.0, "joint": 0.5, "drop": 0.5}
    assert drop["modality"] == {"pairs": 1, "independent": 1.0, "joint": 1.0, "drop": 0.0}
    assert drop["organ"]["pairs"] == 0 and drop["organ"]["drop"] is None


def test_shortcut_counts_right_diagnoses_behind_wrong_lesions() -> None:
    scorer = Scorer()
    for i, hits in enumerate(("1101", "1100", "1111", "0001")):
        scorer.add("joint_qa", _joint(f"j{i}", hits))
    scorer.add("independent_qa", _ind("a", "lesion", False))
    scorer.add("independent_qa", _ind("a", "diagnosis", True))
    scorer.add("independent_qa", _ind("b", "lesion", True))  # no diagnosis row: not a pair
    shortcut = scorer.summary(model="m")["shortcut"]
    # Joint: lesion wrong in rows 0, 1, 3; diagnosis right in 0 and 3.
    assert shortcut["joint"] == {"n": 4, "lesion_wrong": 3, "diagnosis_right": 2, "rate": 2 / 3}
    assert shortcut["independent"] == {"n": 1, "lesion_wrong": 1, "diagnosis_right": 1, "rate": 1.0}
    assert Scorer().summary(model="m")["shortcut"] is None


def test_report_keywords_replace_raw_text_bleu_and_rows_without_them_drop() -> None:
    scorer = Scorer()
    base = {"task": "report_generation", "modality": "CT", "answer": "ref text",
            "model_response": "pred text"}  # fmt: skip
    kw = {"reference": "mass, edema", "prediction": "mass, edema, opacity", "bert_f1": 0.9}
    scorer.add("report_generation", {**base, "keywords": kw, "_meta": {"key": "a"}})
    scorer.add("report_generation", {**base, "_meta": {"key": "b"}})  # extraction failed
    section = scorer.summary(model="m")["files"]["report_generation"]
    assert section["keywords"] == "extracted"
    assert (section["n"], section["scored"], section["dropped"]) == (2, 1, 1)
    assert section["bleu"] == sentence_bleu("mass, edema", "mass, edema, opacity")
    assert section["bert_f1"] == 0.9 and section["groups"]["CT"]["bert_f1"] == 0.9
    assert section["note"] is None
