from __future__ import annotations

import warnings
from typing import Any

import pytest
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

from pipeline.records import ResultRow
from pipeline.scoring.official import joint_hits, mcq_correct, mcq_group, report_pair

# --- An independent, literal transcription of the official scripts (PROTOCOL §3) ----------------


def official_single(rows):
    """compute_choice_metric.py --type single: per (modality, task|level) correct/total."""
    results: dict = {}
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
            answer = data.get(f"{lvl}_answer", "")
            if i < len(resp_list) and resp_list[i] == (answer[0] if answer else ""):
                results[modality][lvl]["correct"] += 1
    return results


def official_report_bleu(rows):
    """report_generation_metric.py BLEU part: per-modality mean over non-empty pairs."""
    by_modality: dict = {}
    for data in rows:
        ref = data.get("answer")
        pred = data.get("model_response")
        if ref and pred:
            by_modality.setdefault(data.get("modality", "Unknown"), []).append((ref, pred))
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

EVIDENCE_ROWS: list[dict[str, Any]] = [
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

INDEPENDENT_ROWS: list[dict[str, Any]] = [
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
    assert mcq_correct(CT, response) is (response == "C")


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
    assert mcq_correct(row, row.get("model_response")) is expected


def test_mcq_group_prefers_task_and_keeps_none():
    assert mcq_group(CT) == ("CT", "modality_recognition")
    assert mcq_group({"level": "organ"}) == (None, "organ")
    assert mcq_group({"modality": "CT", "task": None, "level": "organ"}) == ("CT", None)


@pytest.mark.parametrize(("response", "expected"), JOINT_CASES)
def test_joint_hits_split_without_strip(response, expected):
    assert joint_hits(JOINT_BASE, response) == expected


def test_joint_hits_missing_response_scores_zero():
    assert joint_hits(JOINT_BASE, None) == [False] * 4


@pytest.mark.parametrize("empty", ["", None])
def test_joint_empty_level_answer_matches_an_empty_token(empty):
    # Official: `ans[0] if ans else ""`, so a missing or empty level answer is "" (PROTOCOL §3.2).
    row = {**JOINT_BASE, "organ_answer": empty}
    if empty is None:
        del row["organ_answer"]
    assert joint_hits(row, "B,,A,C") == [True, True, True, True]
    assert joint_hits(row, "B,D,A,C") == [True, False, True, True]


def test_report_pair_drops_empty_texts():
    row = {"task": "report_generation", "answer": "ref text", "modality": "CT"}
    assert report_pair(row, "pred") == ("CT", "ref text", "pred")
    assert report_pair(row, "") is None
    assert report_pair(row, None) is None
    assert report_pair({**row, "answer": ""}, "pred") is None
    # As official: `item.get("modality", "Unknown")`, so only an absent key is "Unknown".
    assert report_pair({"answer": "r", "modality": None}, "p") == (None, "r", "p")
    assert report_pair({"answer": "r"}, "p") == ("Unknown", "r", "p")


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
def test_results_line_kind(row, kind):
    assert ResultRow.from_json(row).kind == kind
