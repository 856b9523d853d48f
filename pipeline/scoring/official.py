"""The official per-row scoring rules (PROTOCOL §3), and what one results row contributes.

The rule functions reproduce the official scripts exactly, quirks included (PROTOCOL §4): exact
string equality for MCQ, no strip in the joint split, an empty level answer matching an empty
token, empty reports dropped, error rows counted wrong. `score_row` turns a `ResultRow` into its
`RowScore`; `summary.Scorer` adds those up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.records import INPUT_ERROR, JOINT_LEVELS, Kind, ResultRow, Usage
from pipeline.scoring.metrics import sentence_bleu

Family = Literal["mcq", "joint", "report"]

# Known files are scored as the official script for that file would; others by row kind.
FILE_FAMILY: dict[str, Family] = {
    "visual_evidence_qa": "mcq",
    "independent_qa": "mcq",
    "joint_qa": "joint",
    "report_generation": "report",
}
KIND_FAMILY: dict[Kind, Family] = {
    "evidence": "mcq",
    "independent": "mcq",
    "joint": "joint",
    "report": "report",
}


def mcq_correct(row: Mapping[str, Any], response: object) -> bool:
    """Return the official MCQ hit: the response equals the answer's letter, unstripped (§3.1)."""
    answer = row.get("answer")
    # Missing, None or non-str responses can never equal a str letter; nor in the official code.
    if not isinstance(answer, str) or not isinstance(response, str):
        return False
    return response == answer.split(".")[0].strip()


def mcq_group(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Return the official group: (modality, task) if the row has `task`, else (modality, level)."""
    sub = row["task"] if "task" in row else row.get("level")
    return _opt_str(row.get("modality")), _opt_str(sub)


def joint_hits(row: Mapping[str, Any], response: object) -> list[bool]:
    """Return one official hit per JOINT_LEVELS position (§3.2).

    Tokens are split on "," and not stripped; a level's letter is the first character of
    `<level>_answer`, or "" when that is missing or empty, which then matches an empty token.
    """
    tokens = response.split(",") if isinstance(response, str) else []
    hits = []
    for i, level in enumerate(JOINT_LEVELS):
        answer = row.get(f"{level}_answer")
        letter = answer[0] if isinstance(answer, str) and answer else ""
        hits.append(i < len(tokens) and tokens[i] == letter)
    return hits


def joint_modality(row: Mapping[str, Any]) -> str | None:
    """Return the joint group key: `modality`, "Unknown" only when the key is absent (§3.2)."""
    return _opt_str(row.get("modality", "Unknown"))


def report_pair(row: Mapping[str, Any], response: object) -> tuple[str | None, str, str] | None:
    """Return (modality, reference, prediction), or None when either text is empty (dropped).

    The modality is grouped as the official script does: "Unknown" only when the key is absent.
    """
    answer = row.get("answer")
    if not (isinstance(answer, str) and answer and isinstance(response, str) and response):
        return None
    return _opt_str(row.get("modality", "Unknown")), answer, response


def official_response(row: ResultRow) -> object:
    """Return what the official pipeline would have stored: the stripped raw reply (§4)."""
    if not row.ours:
        return row.model_response  # another tool's line: score what it holds
    return row.raw_response.strip() if row.raw_response is not None else None


@dataclass(frozen=True, slots=True)
class RowScore:
    """What one row contributes: a group, its hits, and bookkeeping."""

    group: tuple[str | None, ...]  # mcq: (modality, task|level); joint/report: (modality,)
    hits: tuple[bool, ...]  # mcq: 1; joint: 4; report: ()
    error: bool
    bad_input: bool  # failed because its input cannot be sent (a rerun alone cannot fix it)
    usage: Usage
    judge_usage: Usage
    ours: bool  # written by our runner, so its usage is known
    bleu: float | None = None  # report only; None: dropped
    keywords: bool = False  # report: bleu is on extracted keywords (official), not raw texts
    bert_f1: float | None = None  # report, on keywords
    source: str | None = None  # how the answer was obtained: extracted, judge, none
    judge_model: str | None = None
    image: str | None = None  # image_paths: the cluster of its intervals; links independent, joint


def score_row(family: Family, row: ResultRow, *, official_quirks: bool = False) -> RowScore:
    """Return the row's contribution; with `official_quirks` the stripped raw reply is scored."""
    response = official_response(row) if official_quirks else row.model_response
    judge = row.judge_model or (row.keywords.judge_model if row.keywords else None)
    base: dict[str, Any] = {
        "error": row.error is not None,
        "bad_input": row.error is not None and row.error_code == INPUT_ERROR,
        "usage": row.usage,
        "judge_usage": row.judge_usage,
        "ours": row.ours,
        "judge_model": judge,
    }
    data = row.row
    image = _opt_str(data.get("image_paths"))
    if family == "mcq":
        hit = (mcq_correct(data, response),)
        return RowScore(mcq_group(data), hit, source=row.answer_source, image=image, **base)
    if family == "joint":
        hits = tuple(joint_hits(data, response))
        return RowScore(
            (joint_modality(data),), hits, source=row.answer_source, image=image, **base
        )
    pair = report_pair(data, response)
    if pair is None:
        return RowScore(("Unknown",), (), source=row.answer_source, image=image, **base)
    modality, reference, prediction = pair
    if (kw := row.keywords) is not None:
        bleu = sentence_bleu(kw.reference, kw.prediction)
        return RowScore(
            (modality,),
            (),
            bleu=bleu,
            keywords=True,
            bert_f1=kw.bert_f1,
            source=row.answer_source,
            image=image,
            **base,
        )
    bleu = sentence_bleu(reference, prediction)
    return RowScore((modality,), (), bleu=bleu, source=row.answer_source, image=image, **base)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
