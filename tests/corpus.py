"""The labelled reply corpora and how well the answer reader does on each part.

Two parts, in the same format: `tune` (tests/corpus/replies.jsonl) is the part the reader's rules
are written against; `heldout` (tests/corpus/heldout.jsonl) was written apart from the reader,
from how models phrase answers, and is only ever measured as a whole, never tuned on: its numbers
say how the reader does on replies it has not seen.

Each line is one reply a model could plausibly give, with the reading a careful person would make:
`expect` is the letter ("C"), the joint chain ("B,D,A,C"), or null when the reply gives no answer
(refusals, ambiguity, echoes of the options, truncation). Importable as `corpus` with tests/ on
sys.path; `python tests/corpus.py` prints the tune part's numbers and every failure, and only the
numbers of the held-out part (`python tests/corpus.py heldout --failures` shows its failures).
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
PARTS = {"tune": CORPUS, "heldout": CORPUS.with_name("heldout.jsonl")}

ChoiceFn = Callable[[str | None, Sequence[str]], str | None]
ChainFn = Callable[[str | None], str | None]


def load_corpus(path: str | Path | None = None, part: str = "tune") -> list[dict[str, Any]]:
    """Return one part's entries ("tune" or "heldout"), or a file's, in order (blank lines skipped)."""
    lines = Path(path or PARTS[part]).read_text(encoding="utf-8").splitlines()
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
    """Print a part's numbers (argv: tune or heldout), then each failure of the tune part."""
    part = sys.argv[1] if len(sys.argv) > 1 else "tune"
    result = measure(entries=load_corpus(part=part))
    for key, value in result.items():
        if key != "failures":
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
    if part != "tune" and "--failures" not in sys.argv:
        return  # the held-out part is measured, not read while tuning
    for failure in result["failures"]:
        kind = "WRONG" if failure["got"] is not None else "unread"
        print(f"\n{kind} {failure['id']}: expect {failure['expect']!r}, got {failure['got']!r}")
        print("   " + failure["reply"].replace("\n", "\n   "))


if __name__ == "__main__":
    main()
