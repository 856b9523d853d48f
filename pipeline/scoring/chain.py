"""Read a joint reply (DrVD-Bench joint_qa) as the official "B,D,A,C". Part of the answer reader.

extract_chain returns n letters (each in `letters`) from the first tier that reads, if that tier's
readings all agree:
  1. the whole reply, once numbering ("1.", "Q2:"), level labels ("Modality:", "器官:"), worded
     brackets ("(CT)"), tags and markup are removed, is only n letters
  2. the last \\boxed{} or the text after "final answer", read the same way
  3. the last fence, the text after one of the last three "answer(s)"/"答案"/"依次为" markers, each
     paragraph and line, each line's value after a lead-in ("For each question: 1) B 2) D ..."),
     and rx.RUN, n letters after "are", "so", ":" ("The answers are C, B, A and D")
  4. items: one letter per level or number anchor (rx.ANCHOR) once negated mentions are dropped
     ("The modality is not CT (A) but MRI (B); the organ is ..."), or n "B for modality" pairs
  5. exactly n bracketed letters, each after the words it names, in a paragraph with no negation:
     "an X-ray (A) of the chest (B) ..."; an echo such as "(A) CT (B) MRI" is not read
A correction ("Wait, ...", "Actually: ...") after a readable chain makes the chain after it stand,
and a chain is not read when another run of letters follows it ("A,B,C,D (or A,B,C,E)").
"""

from __future__ import annotations

import re

from pipeline.scoring import rules as rx


def extract_chain(reply: str | None, n: int = 4, letters: str = "ABCDEFGH") -> str | None:
    """Return a joint answer in the official "B,D,A,C" form, or None.

    Args:
        reply: the model's reply text (None for a failed call).
        n: how many letters the answer must have, exactly.
        letters: the letters a position may take.
    """
    if not isinstance(reply, str) or n < 1:
        return None
    text, allowed = rx.unwrap(rx.fold(reply)), letters.upper()
    if rx.REFUSAL.search(text):
        return None
    marks = [m for m in rx.CORRECTION.finditer(text) if m.start() > 0]
    if marks and (before := _chain(text[: marks[-1].start()], n, allowed)):
        after = _chain(text[marks[-1].end() :], n, allowed)
        return after or before  # "A,C,B,D\nWait, ... A,C,A,D": the corrected answer stands
    chain = _chain(text, n, allowed)
    return None if chain and _contested(text, chain) else chain


def _contested(text: str, chain: str) -> bool:
    """Say whether another run of letters follows the chain read: "A,B,C,D (or A,B,C,E)"."""
    runs = [
        (m.start(), re.findall(r"[A-Z]", m[0].replace("and", ""))) for m in rx.RUN.finditer(text)
    ]
    mine = [pos for pos, found in runs if ",".join(found) == chain]
    return bool(mine) and any(
        pos > mine[-1] and len(found) >= 3 and ",".join(found) != chain for pos, found in runs
    )


def _chain(text: str, n: int, allowed: str) -> str | None:
    """Read a folded, unwrapped reply as a joint answer (the tiers of extract_chain)."""
    if chain := _parse_chain(text, n, allowed):
        return chain
    paragraphs = re.split(r"\n\s*\n", text)
    final, other = _chain_candidates(text)
    lines = text.splitlines()
    # A line's value after a short lead-in: "The answer for each question: 1) B 2) D 3) A 4) C".
    values = [
        v
        for k, _, v in (line.partition(":") for line in lines)
        if v and not rx.ECHOED.search(k[-60:])
    ]
    pieces = [*other, *paragraphs, *lines, *values]
    for readings in (
        {c for piece in final if (c := _parse_chain(piece, n, allowed))},
        {c for piece in pieces if (c := _parse_chain(piece, n, allowed))} | _runs(text, n, allowed),
        {c for block in [text, *paragraphs] if (c := _items(block, n, allowed))},
        {c for block in paragraphs if (c := _bracketed(block, n, allowed))},
    ):
        if readings:  # one tier's readings must agree: "B,D,A,C ... Actually: B,D,C,A" is None
            return readings.pop() if len(readings) == 1 and "?" not in readings else None
    return None


def _chain_candidates(text: str) -> tuple[list[str], list[str]]:
    """Texts that may hold only the chain: (\\boxed{} and "final answer"; fence and markers)."""
    final: list[str] = rx.CHAIN_BOXED.findall(text)[-1:]
    other: list[str] = rx.FENCE.findall(text)[-1:]
    # Only the last few markers: trying the rest after every one of them would be quadratic.
    for match in list(rx.CHAIN_MARKER.finditer(text))[-3:]:
        rest = text[match.end() :]
        group = final if match[0].lower().startswith("final") else other
        group.extend((rest, rest.strip().split("\n", 1)[0]))
    return final, other


def _parse_chain(candidate: str, n: int, allowed: str) -> str | None:
    cleaned = rx.CHAIN_NOISE.sub(" ", candidate)
    if not rx.CHAIN_SHAPE.fullmatch(cleaned):
        return None
    found = [c.upper() for c in re.findall(r"[A-Za-z]", cleaned)]
    return ",".join(found) if len(found) == n and all(c in allowed for c in found) else None


def _runs(text: str, n: int, allowed: str) -> set[str]:
    """Chains written as a run of letters after a lead-in: "The answers are C, B, A and D."."""
    chains = set()
    for line in text.splitlines():
        for match in rx.RUN.finditer(line):
            found = re.findall(r"[A-Z]", match[0].replace("and", ""))
            lead, tail = line[: match.start()], line[match.end() :]
            opening = not lead.strip(" \t*_>-#") and re.match(r"\s*(?:$|[.;:(\u2013\u2014-])", tail)
            if rx.ECHOED.search(lead[-60:]) or not (opening or rx.RUN_LEAD.search(lead[-40:])):
                continue
            if len(found) == n:
                chains.add(",".join(found) if all(c in allowed for c in found) else "?")
    return chains


def _items(block: str, n: int, allowed: str) -> str | None:
    """Read one letter per level anchor ("Modality: B", "the organ is the liver (D)", "Q3: A")."""
    pairs = [m["letter"].upper() for m in rx.LETTER_LEVEL.finditer(block)]
    if len(pairs) == n and all(c in allowed for c in pairs):
        return ",".join(pairs)
    starts: list[int] = []
    previous = None
    for match in rx.ANCHOR.finditer(block):
        gap = block[previous.end() : match.start()] if previous else "\n"
        if "\n" in gap or _segment_letters(gap):  # "Step 1 (modality): A" is one item
            starts.append(match.start())
        previous = match
    found = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(block)
        letters = {c for c in _segment_letters(block[start:end].split("\n", 1)[0]) if c in allowed}
        found.append(letters.pop() if len(letters) == 1 else "?")
    return ",".join(found) if len(found) == n and "?" not in found else None


def _segment_letters(segment: str) -> list[str]:
    """The letters an item names, less negated ones: "not the parotid (B)", "CT (A) is unlikely"."""
    found = []
    for match in rx.SEG_LETTER.finditer(segment):
        letter, rest = match["letter"], segment[match.end() :]
        wrapped = match.start("letter") > match.start() or bool(match["close"])
        before = segment[: match.start()]
        if letter.islower() and not (wrapped or re.search(r"[:=|(\u2013\u2014-]\s*$", before)):
            continue
        if rx.is_word(letter, wrapped, rest) or re.search(r"\b[A-Z][a-z]+\s$", before):
            continue  # "A mass", "Hepatitis B"
        if not (rx.SEG_NEG.search(before[-40:]) or rx.NEG_AFTER.match(rest)):
            found.append(letter.upper())
    return found


def _bracketed(block: str, n: int, allowed: str) -> str | None:
    """Exactly n bracketed letters, each after the words it names, and no negation in the block."""
    found = re.findall(r"(?<=[\w\u3400-\u9fff])\s?\((?:(?i:option)\s+)?([A-Z])\)", block)
    if len(found) != n or rx.NEGATION.search(block) or not all(c in allowed for c in found):
        return None
    return ",".join(found)
