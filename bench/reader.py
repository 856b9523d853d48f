"""The answer reader on the labelled reply corpus: precision, recall, refusals, time per reply.

The corpus (`tests/corpus/replies.jsonl`, loaded by `tests/corpus.py`) holds replies written the
way models and people phrase answers, each with the reading a careful person would make.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

from bench.proc import REPO
from bench.table import Line
from pipeline.scoring.reader import extract_chain, extract_choice

RECALL_TARGET = 0.99


def section_reader(lines: list[Line]) -> None:
    """Measure the reader on the corpus and append its lines."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    corpus: Any = importlib.import_module("corpus")  # tests/corpus.py
    entries = corpus.load_corpus()
    start = time.perf_counter()
    got = corpus.measure(extract_choice, extract_chain)
    per_reply = (time.perf_counter() - start) / len(entries)
    chains = sum(e["kind"] == "chain" for e in entries)
    nones = sum(e["expect"] is None for e in entries)
    detail = (
        f"{len(entries)} replies ({len(entries) - chains} single-letter, {chains} joint; "
        f"{nones} with no answer, {got['refusals']} refusals) in tests/corpus/replies.jsonl"
    )
    lines.append(
        Line(
            "reader",
            "wrong letters (precision)",
            f"{got['wrong']} ({got['precision']:.2%})",
            target="0",
            met=got["wrong"] == 0,
            detail=detail,
        )
    )
    lines.append(
        Line(
            "reader",
            "answerable replies read (recall)",
            f"{got['read']}/{got['answerable']}",
            ratio=f"{got['recall']:.2%}",
            target=f"≥ {RECALL_TARGET:.0%}",
            met=got["recall"] >= RECALL_TARGET,
        )
    )
    lines.append(
        Line(
            "reader",
            "refusals read as no answer",
            f"{got['refusals_none']}/{got['refusals']}",
            target="all",
            met=got["refusals_none"] == got["refusals"],
        )
    )
    lines.append(Line("reader", "time per reply", f"{per_reply * 1e6:.0f} µs"))
