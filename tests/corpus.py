"""The labelled reply corpus (tests/corpus/replies.jsonl) and how well the answer reader does on it.

Each line is one reply a model could plausibly give, with the reading a careful person would make:
`expect` is the letter ("C"), the joint chain ("B,D,A,C"), or null when the reply gives no answer
(refusals, ambiguity, echoes of the options, truncation). Importable as `corpus` with tests/ on
sys.path; `python tests/corpus.py` prints the numbers and every failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: read the extractor of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.scoring.reader import extract_chain, extract_choice

CORPUS = Path(__file__).with_name("corpus") / "replies.jsonl"

ChoiceFn = Callable[[str | None, Sequence[str]], str | None]
ChainFn = Callable[[str | None], str | None]


def load_corpus(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Return the corpus entries, in file order (blank lines skipped)."""
    lines = Path(path or CORPUS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read(entry: dict[str, Any], choice_fn: ChoiceFn, chain_fn: ChainFn) -> str | None:
    """Return what the reader makes of one entry's reply."""
    if entry["kind"] == "choice":
        return choice_fn(entry["reply"], entry["options"])
    return chain_fn(entry["reply"])


def measure(
    choice_fn: ChoiceFn = extract_choice,
    chain_fn: ChainFn = extract_chain,
    entries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read every corpus reply and count how the reader did.

    `read` counts answerable replies that got their letter(s); `wrong` counts replies given a
    reading other than the expected one (a letter for a null entry included). Precision is correct
    readings over readings given, recall correct readings over answerable replies.
    """
    entries = load_corpus() if entries is None else entries
    answerable = given = correct = wrong = refusals = refusals_none = 0
    failures: list[dict[str, Any]] = []
    for entry in entries:
        got, expect = read(entry, choice_fn, chain_fn), entry["expect"]
        answerable += expect is not None
        given += got is not None
        correct += got is not None and got == expect
        if entry.get("refusal"):
            refusals += 1
            refusals_none += got is None
        if got != expect:
            wrong += got is not None
            failures.append(
                {"id": entry["id"], "reply": entry["reply"], "expect": expect, "got": got}
            )
    return {
        "total": len(entries),
        "answerable": answerable,
        "read": correct,
        "wrong": wrong,
        "precision": correct / given if given else 1.0,
        "recall": correct / answerable if answerable else 1.0,
        "refusals": refusals,
        "refusals_none": refusals_none,
        "failures": failures,
    }


def main() -> None:
    """Print the corpus numbers, then each failure."""
    result = measure()
    for key, value in result.items():
        if key != "failures":
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
    for failure in result["failures"]:
        kind = "WRONG" if failure["got"] is not None else "unread"
        print(f"\n{kind} {failure['id']}: expect {failure['expect']!r}, got {failure['got']!r}")
        print("   " + failure["reply"].replace("\n", "\n   "))


if __name__ == "__main__":
    main()
