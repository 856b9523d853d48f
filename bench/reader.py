"""The answer reader on the labelled reply corpora: precision, recall, refusals, time per reply.

The corpora (loaded by `tests/corpus.py`) hold replies written the way models and people phrase
answers, each with the reading a careful person would make, in two parts measured apart: `tune`
(`tests/corpus/replies.jsonl`), which the reader's rules are written against, and `heldout`
(`tests/corpus/heldout.jsonl`), written apart from the reader and never tuned on.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

from bench.proc import REPO
from bench.table import Line
from pipeline.scoring.reader import extract_chain, extract_choice

RECALL_TARGET = {"tune": 0.99, "heldout": 0.97}
FILES = {"tune": "replies.jsonl", "heldout": "heldout.jsonl"}


def section_reader(lines: list[Line]) -> None:
    """Measure the reader on each part of the corpus and append its lines."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    corpus: Any = importlib.import_module("corpus")  # tests/corpus.py
    per_reply = []
    for part, target in RECALL_TARGET.items():
        entries = corpus.load_corpus(part=part)
        start = time.perf_counter()
        got = corpus.measure(extract_choice, extract_chain, entries)
        per_reply.append((time.perf_counter() - start) / len(entries))
        _part_lines(lines, part, entries, got, target)
    lines.append(Line("reader", "time per reply", f"{max(per_reply) * 1e6:.0f} µs"))


def _part_lines(
    lines: list[Line], part: str, entries: list[dict[str, Any]], got: dict[str, Any], target: float
) -> None:
    chains = sum(e["kind"] == "chain" for e in entries)
    nones = sum(e["expect"] is None for e in entries)
    detail = (
        f"{len(entries)} replies ({len(entries) - chains} single-letter, {chains} joint; "
        f"{nones} with no answer, {got['refusals']} refusals) in tests/corpus/{FILES[part]}"
    )
    lines.append(
        Line(
            "reader",
            f"{part}: wrong letters (precision)",
            f"{got['wrong']} ({got['precision']:.2%})",
            target="0",
            met=got["wrong"] == 0,
            detail=detail,
        )
    )
    lines.append(
        Line(
            "reader",
            f"{part}: answerable replies read (recall)",
            f"{got['read']}/{got['answerable']}",
            ratio=f"{got['recall']:.2%}",
            target=f"≥ {target:.0%}",
            met=got["recall"] >= target,
        )
    )
    lines.append(
        Line(
            "reader",
            f"{part}: refusals read as no answer",
            f"{got['refusals_none']}/{got['refusals']}",
            target="all",
            met=got["refusals_none"] == got["refusals"],
        )
    )
