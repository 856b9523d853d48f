"""Pull the chosen letter(s) out of a free-text reply. This is OUR extension to DrVD-Bench.

Official scoring never parses (PROTOCOL §3.1-3.2): `model_response` must already be a bare letter or
"B,D,A,C". We turn a reply into that format, or into None ("no answer") rather than guess: a wrong
letter is worse than None. Only letters the row offers are ever returned. The named patterns live in
pipeline.scoring.rules (rx); they are possessive or bounded, so long replies stay linear.

Every reply is folded first (NFKC turns full-width letters and brackets into ASCII; CJK commas,
stops and brackets become ",", ". ", "[]"); a reasoning model's reply is what follows its last
</think> (an unclosed <think> has no answer yet); a fence around the whole reply is unwrapped.
A refusal is None: `is_refusal` ("I can't view the image", "I can't give a diagnosis", 无法回答).

extract_choice collects votes in tiers. The first tier with votes decides, and all of its votes
must name the same offered letter, else None:
  0. final     rx.FINAL, then a letter or an option's text: \\boxed{B}, "Final answer: B", 最终答案
  1. explicit  rx.CUE1, then a letter or an option's text: "Answer: B", "The correct option is (b)",
               "I'd go with B", "My pick is C) Liver", {"choice": "C"}, 答案是B, 故选C, 应选B, 结论;
               or a letter, then rx.PRED1: "B is the correct answer", "选项C正确", "D 是正确答案"
  2. fence     the last ```...``` block, read as a whole reply (rule 3e)
  3. soft      a. rx.CUE2, then a strict letter, or an option's text with its own letter, or a
                  short phrase and a bracketed letter: "most likely B", "consistent with option C",
                  "so this is squamous cell carcinoma (B)", 最可能是B, 考虑为肺炎(A)
               b. a letter, then rx.PRED2: "Option D (Cyst) fits the image best", "E seems best"
               c. rx.TAIL, a sentence that ends naming an option: "It's the liver, option C."
               d. rx.VERDICT, a labelled line judged positively: "Option C: ... **Most likely.**"
               e. the whole reply (past any markdown headings), unless it echoes the option list:
                  a bare letter ("b", "(B)", "Option B"), a label ("B) Kidney", "## C. Metastasis"),
                  an option's text alone ("kidney", "No fracture.")
Guards. Letters never come from words: "CT", "T2", "B-cell" fail the letter boundary; "A"/"I" before
a lower-case word or an abbreviation ("A patient", "A CT") is English, and so is an unwrapped
lower-case letter before a word; a soft-tier letter must be followed by punctuation or a connector.
An option's text alone is an answer only after an explicit cue or as the whole reply: "This is a CT
scan." describes, it does not choose. A vote is void when a negation precedes its cue ("not
consistent with"), when a negative verdict follows it ("so B is out"), when its sentence is
conditional ("if it were..., the answer would be A") or, in the soft tier, hedged ("could be") or
taken back ("..., which is absent here"); a tail or a verdict line must hold no negation. A letter
followed by another ("B or C", "A, D", "B和C"), an option's text followed by another ("Ultrasound or
CT"), and a label contradicted by its text ("B. Liver", Liver being C) spoil the tier.

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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from pipeline.scoring import rules as rx

_SHORT = 24  # a reply this short may be a bare letter ("B", "(b)", "**Option C**")


def option_letters(options: Sequence[str]) -> dict[str, str]:
    """Map each option's letter to its text, from strings like "A. CT", "A) CT", "(A) CT"."""
    key = tuple(options)
    try:
        return dict(_letters(key))
    except TypeError:  # an unhashable item (not a valid row): parse without the memo
        return dict(_letters.__wrapped__(key))


@functools.lru_cache(maxsize=1024)  # rows repeat their option lists: parse each list once
def _letters(options: tuple[object, ...]) -> tuple[tuple[str, str], ...]:
    letters: dict[str, str] = {}
    for option in options:
        match = rx.OPTION.fullmatch(rx.fold(option)) if isinstance(option, str) else None
        if match:
            letters.setdefault(match[1].upper(), match[2].strip())
    return tuple(letters.items())


def is_refusal(text: str) -> bool:
    """Say whether a reply refuses or says it cannot answer ("I can't view the image", 无法回答)."""
    return isinstance(text, str) and rx.REFUSAL.search(rx.unwrap(rx.fold(text))) is not None


def extract_choice(reply: str | None, options: Sequence[str]) -> str | None:
    """Return the single letter the reply chooses among the row's options, or None.

    Args:
        reply: the model's reply text (None for a failed call).
        options: the row's options, e.g. ["A. CT", "B. MRI"].
    """
    offered = option_letters(options)
    if not isinstance(reply, str) or not offered:
        return None
    text = rx.unwrap(rx.fold(reply))
    if len(text) <= _SHORT and (bare := rx.BARE.fullmatch(text)):
        # Most replies are a bare letter: what the cascade would end with, read at once.
        letter = bare["letter"].upper()
        return letter if letter in offered else None
    if rx.REFUSAL.search(text):
        return None
    final = _cue_votes(text, offered, rx.FINAL)
    explicit = _cue_votes(text, offered, rx.CUE1) + _called(text, offered, 1)
    for votes in (final, explicit):
        if votes:
            return _agreed(votes, offered)
    fences = rx.FENCE.findall(text)
    if fences and (letter := _plain(fences[-1], offered)):
        return letter
    return _agreed(_soft_votes(text, offered), offered)


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


def _agreed(votes: list[str], offered: dict[str, str]) -> str | None:
    return votes[0] if votes and len(set(votes)) == 1 and votes[0] in offered else None


def _soft_votes(text: str, offered: dict[str, str]) -> list[str]:
    votes = _cue_votes(text, offered, rx.CUE2, strict=True) + _called(text, offered, 2)
    for match in rx.TAIL.finditer(text):
        clause = rx.sentence(text, match.start()) + match[0]
        own = rx.norm(offered.get(match["letter"], "")) or "\0"
        if not (rx.NEGATION.search(clause) or rx.HEDGE.search(clause)) and (
            own in rx.norm(clause) or rx.DECIDE.search(clause)
        ):
            votes.append(match["letter"])
    for match in rx.VERDICT.finditer(text):
        if rx.POSITIVE.search(match["rest"]) and not rx.NEGATION.search(match["rest"]):
            votes.append(match["letter"])
    body = text[m.end() :] if (m := rx.HEADINGS.match(text)) else text
    if not rx.is_echo(text, offered) and (letter := _plain(text, offered) or _plain(body, offered)):
        votes.append(letter)
    return votes


def _cue_votes(
    text: str, offered: dict[str, str], cue: re.Pattern[str], strict: bool = False
) -> list[str]:
    votes = []
    seen: dict[tuple[int, str], str | None] = {}  # a vote depends only on the text around its cue
    for match in cue.finditer(text):
        low = max(0, match.start() - rx.BEFORE)
        key = (match.start() - low, text[low : match.end() + rx.AFTER])
        if key not in seen:
            seen[key] = _cue_vote(text, match, offered, strict)
        if vote := seen[key]:
            votes.append(vote)
    return votes


def _cue_vote(text: str, match: re.Match[str], offered: dict[str, str], strict: bool) -> str | None:
    before = text[max(0, match.start() - rx.BEFORE) : match.start()]
    if rx.NEG_BEFORE.search(before[-16:]) or rx.conditional(rx.sentence(text, match.start())):
        return None
    after = rx.rest_of_sentence(text, match.end())
    if strict and (rx.MODAL.search(before[-30:]) or rx.RETRACT.search(after)):
        return None
    return _read(text, match.end(), offered, strict)


def _read(text: str, pos: int, offered: dict[str, str], strict: bool) -> str | None:
    """Read the answer that starts at `pos`: an option's text or a letter; "?" if it is spoiled."""
    after = text[pos : pos + rx.AFTER]
    if named := _named_at(after, offered, strict):
        return named
    if (match := rx.TOKEN.match(after)) and (vote := _letter_at(text, pos, match, offered, strict)):
        return vote
    if strict and (gap := rx.GAP.match(after)):
        other = rx.named_option(re.sub(r"^\s*(?i:(?:a|an|the)\s+)", "", gap["gap"]), offered)
        spoiled = other not in (None, gap["letter"]) or rx.NEG_AFTER.match(after[gap.end() :])
        return None if spoiled else gap["letter"]
    return None


def _letter_at(
    text: str, pos: int, match: re.Match[str], offered: dict[str, str], strict: bool
) -> str | None:
    letter, rest = match["letter"], match.string[match.end() :]
    wrapped = (
        text[pos - 1 : pos] in rx.WRAPPERS or bool(match["close"]) or match.start("letter") > 0
    )
    own = rx.starts_with(rx.norm(rest) + " ", offered.get(letter.upper(), ""))
    if rx.is_word(letter, wrapped, rest) or rx.NEG_AFTER.match(rest):
        return None
    if strict and not (wrapped or own or rx.FOLLOW.match(rest)):
        return None
    spoiled = rx.has_alternative(rest) or rx.contradicts(letter.upper(), rest, offered)
    return "?" if spoiled or rx.is_echo(rest, offered) else letter.upper()


def _named_at(after: str, offered: dict[str, str], strict: bool) -> str | None:
    """Return the option whose text opens `after` (past an article), checking a "(X)" after it."""
    body = re.sub(r"^(?i:(?:a|an|the)\s+)", "", after)
    letter = rx.named_option(body, offered)
    if letter is None:
        return None
    words = rx.norm(offered[letter]).split()
    span = re.match(r"[\W_]*" + r"[\W_]+".join(map(re.escape, words)), body, re.I)
    rest = body[span.end() :] if span else ""
    if rx.NEG_AFTER.match(rest):
        return None
    more = re.match(r"\s*+(?i:or|and|/|vs\.?|versus|或者?|和)\s*+(?i:(?:a|an|the)\s+)?", rest)
    if more and rx.named_option(rest[more.end() :], offered) not in (None, letter):
        return "?"  # "Answer: Ultrasound or CT"
    if said := rx.SAID.match(rest):
        return letter if (said["letter"] or said["upper"]).upper() == letter else "?"
    return None if strict else letter  # a soft cue needs the letter too: "a hemangioma (B)"


def _called(text: str, offered: dict[str, str], tier: int) -> list[str]:
    """Letters that open a clause and are then judged: "B is correct" (1), "D fits best" (2)."""
    votes = []
    for match in rx.MENTION.finditer(text):
        letter = match["letter"]
        if letter.islower() and not match["pre"]:
            continue
        rest = text[match.end() : match.end() + rx.AFTER]
        own = re.escape(offered.get(letter.upper(), "\0"))
        skip = re.match(
            r"\s*\(([^()\n]{1,60})\)|\s*[-\u2013\u2014.:,]?\s*" + own + ",?", rest, re.I
        )
        rest = rest[skip.end() :] if skip else rest
        if not (rx.PRED1 if tier == 1 else rx.PRED2).match(rest) or (
            tier == 2 and rx.PRED1.match(rest)
        ):
            continue
        before = text[max(0, match.start() - 12) : match.start()]
        if re.search(r"(?i:\b(?:nor|not|neither|no|than|over)\s*$)", before) or rx.NEG_AFTER.match(
            rest
        ):
            continue
        if skip and skip[1] and rx.contradicts(letter.upper(), skip[1], offered):
            continue
        clause = rx.sentence(text, match.start())
        if not (rx.conditional(clause) or rx.RETRACT.search(rx.rest_of_sentence(rest, 0))):
            votes.append(letter.upper())
    return votes


def _plain(text: str, offered: dict[str, str]) -> str | None:
    text = rx.unwrap(text)
    if match := rx.BARE.fullmatch(text):
        letter = match["letter"].upper()
        return letter if letter in offered else None
    if match := rx.LABEL.match(text):
        letter, after = match["letter"], text[match.end() :]
        first = re.split(r"[.!?\n](?:\s|$)", after, maxsplit=1)[0]
        if rx.has_alternative(text[match.end("letter") :]):
            return None
        if rx.contradicts(letter.upper(), after, offered) or rx.NEGATION.search(first):
            return None
        if letter.islower() and not rx.starts_with(
            rx.norm(after) + " ", offered.get(letter.upper(), "")
        ):
            return None  # "b. squamous cell carcinoma" is a label only when its text confirms it
        return letter.upper() if letter.upper() in offered else None
    if len(text) > 200:  # the whole reply as an option's text is short
        return None
    wanted = rx.norm(re.sub(r"\s*\([^()\n]*\)\s*[.!]?\s*$", "", text))
    hits = [k for k, v in offered.items() if wanted and rx.norm(v) == wanted]
    return hits[0] if len(hits) == 1 else None


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
