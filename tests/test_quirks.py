"""`--official-quirks`: score the stripped raw reply by exact match, as the official scripts do."""

from __future__ import annotations

from pipeline.scoring import Scorer


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


ROWS = [
    ("independent_qa", mcq("1", "C", "C")),
    ("independent_qa", mcq("2", " C\n", "C")),  # official strips the reply: a hit in both
    ("independent_qa", mcq("3", "The answer is C.", "C")),
    ("independent_qa", mcq("4", "**C**", "C")),
    ("independent_qa", mcq("5", None, None, error="500: server error")),
    ("joint_qa", joint("6", "B, D, A, C", "B,D,A,C")),
    ("joint_qa", joint("7", "B,D,A,C.", "B,D,A,C")),
]


def score(quirks: bool) -> dict:
    scorer = Scorer(official_quirks=quirks)
    for stem, row in ROWS:
        scorer.add(stem, row)
    return scorer.summary(model="m")


def test_default_scores_extracted_answers() -> None:
    summary = score(False)
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
    summary = score(True)
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
