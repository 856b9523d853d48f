"""The answer reader against the labelled reply corpora: the tune part and the held-out part."""

from __future__ import annotations

import re
from typing import Any

import pytest
from corpus import load_corpus, measure, read

from pipeline.scoring.reader import extract_chain, extract_choice, is_refusal, option_letters

ENTRIES = load_corpus()
HELDOUT = load_corpus(part="heldout")


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_corpus_reading(entry: dict[str, Any]) -> None:
    assert read(entry, extract_choice, extract_chain) == entry["expect"], entry["phrasing"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_refusals_are_recognised(entry: dict[str, Any]) -> None:
    # A reply with an answer never reaches is_refusal (answers.read_reply reads it first), and an
    # echo such as "B. Cannot be determined" may well sound like one.
    if entry.get("refusal") or entry["expect"] is None:
        assert is_refusal(entry["reply"]) is bool(entry.get("refusal")), entry["phrasing"]


def test_aggregate_thresholds() -> None:
    result = measure()
    assert result["wrong"] == 0, result["failures"]
    assert result["precision"] == 1.0
    assert result["recall"] >= 0.99, result["failures"]
    assert result["refusals_none"] == result["refusals"] > 0


def test_heldout_thresholds() -> None:
    # Measured as a whole only: its failures are not printed, so that it is never tuned on.
    result = measure(entries=HELDOUT)
    assert result["wrong"] == 0, f"{result['wrong']} wrong letters on the held-out part"
    assert result["recall"] >= 0.97, f"held-out recall {result['recall']:.2%}"
    assert result["refusals_none"] == result["refusals"] > 0


def test_measure_counts_wrong_letters_and_misses() -> None:
    entries = [e for e in ENTRIES if e["kind"] == "choice"][:50]
    result = measure(lambda reply, options: "A", extract_chain, entries)
    expected_wrong = sum(e["expect"] != "A" for e in entries)
    assert result["wrong"] == expected_wrong
    assert result["read"] == sum(e["expect"] == "A" for e in entries)
    assert result["total"] == 50
    assert len(result["failures"]) == expected_wrong


@pytest.mark.parametrize(("entries", "size"), [(ENTRIES, 400), (HELDOUT, 300)])
def test_corpus_is_sound(entries: list[dict[str, Any]], size: int) -> None:
    assert len(entries) >= size
    assert len({e["id"] for e in entries}) == len(entries)
    assert not {e["id"] for e in ENTRIES} & {e["id"] for e in HELDOUT}
    assert sum(e["expect"] is None for e in entries) >= 0.15 * len(entries)
    assert {e["kind"] for e in entries} == {"choice", "chain"}
    for entry in entries:
        assert isinstance(entry["reply"], str), entry["id"]
        assert entry["reply"].strip(), entry["id"]
        assert isinstance(entry["phrasing"], str), entry["id"]
        assert entry["phrasing"], entry["id"]
        if entry.get("refusal"):
            assert entry["expect"] is None, entry["id"]
        if entry["kind"] == "choice":
            offered = option_letters(entry["options"])
            assert 2 <= len(offered) == len(entry["options"]) <= 8, entry["id"]
            assert set(offered) <= set("ABCDEFGH"), entry["id"]
            assert entry["expect"] is None or entry["expect"] in offered, entry["id"]
        else:
            assert "options" not in entry, entry["id"]
            expect = entry["expect"]
            assert expect is None or re.fullmatch(r"[A-H](?:,[A-H]){3}", expect), entry["id"]
