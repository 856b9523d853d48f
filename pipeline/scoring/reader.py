"""Pull the chosen letter(s) out of a free-text reply. This is OUR extension to DrVD-Bench.

Official scoring never parses (PROTOCOL §3.1-3.2): `model_response` must already be a bare letter or
"B,D,A,C". We turn a reply into that format, or into None ("no answer") rather than guess: a wrong
letter is worse than None. Only letters the row offers are ever returned. The named patterns live in
pipeline.scoring.rules (rx); they are possessive or bounded, so long replies stay linear.

Every reply is folded first (NFKC turns full-width letters and brackets into ASCII; CJK commas,
stops and brackets become ",", ". ", "[]"); a reasoning model's reply is what follows its last
</think> (an unclosed <think> has no answer yet); a fence around the whole reply is unwrapped.
Before anything else, a reply that is one offered option written back is read (pipeline.scoring.echo):
its letter with its text in any list style or markdown ("E. No lesion", "**B) Not visible**",
"Option B - MRI"), or its text alone when it is exactly one option's ("None of the above", "co2"
for "CO₂"). No negation rule runs on it, so an option's own words never cancel it.
A refusal is None: `is_refusal` ("I can't view the image", "I can't give a diagnosis", 无法回答).

extract_choice collects votes in tiers. The first tier with votes decides, and all of its votes
must name the same offered letter, else None, with two exceptions for self-corrections: votes
after the last rx.CORRECTION that follows a vote ("Wait, that is wrong.", "Actually, ...") stand
alone, and when each vote opens its own answer line ("Answer: A\nAnswer: B"), the last stands:
  0. final     rx.FINAL, then a letter or an option's text: \\boxed{B}, "Final answer: B", 最终答案;
               or rx.TAG in any case: "<ANSWER> b </ANSWER>", "<choice>B</choice>"
  1. explicit  rx.CUE1, then a letter or an option's text: "Answer: B", "The correct option is (b)",
               "I'd go with B", "My pick is C) Liver", {"choice": "C"}, 答案是B, 故选C, 应选B, 结论,
               "Selected: B", "Response: C", "My response is B", "Answer: $D$", and the markers of
               pipeline.scoring.languages (정답은 D입니다, 答えはC, Antwort: B, réponse est C, respuesta);
               or a letter, then rx.PRED1: "B is the correct answer", "选项C正确", "D 是正确答案"
  2. fence     the last ```...``` block, read as a whole reply (rule 3e)
  3. soft      a. rx.CUE2, then a strict letter, or an option's text with its own letter, or a
                  short phrase and a bracketed letter: "most likely B", "consistent with option C",
                  "so this is squamous cell carcinoma (B)", 最可能是B, 考虑为肺炎(A)
               b. a letter, then rx.PRED2: "Option D (Cyst) fits the image best", "E seems best"
               c. rx.TAIL, a sentence that ends naming an option: "It's the liver, option C.",
                  or the reply's last clause does ("Given the enhancement, option A.");
                  rx.BOLD_IS, a bold letter ending a sentence after a copula: "the value is **D**";
                  a last line or clause that writes one option back: "... = 5.55 N. B: 5.55N"
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
CT"), and a label contradicted by its text ("B. Liver", Liver being C) spoil the tier. A label's
own clause may reject other letters without cancelling it: "D. it can't be A or B", "B。不是 A".

extract_chain, the joint answer, is read in pipeline.scoring.chain (re-exported here).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from pipeline.scoring import echo
from pipeline.scoring import rules as rx
from pipeline.scoring.chain import extract_chain

__all__ = ["extract_chain", "extract_choice", "is_refusal", "option_letters"]

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
    if letter := echo.echoed(text, offered):  # before any negation: "E. No lesion", "Not visible"
        return letter
    if rx.REFUSAL.search(text):
        return None
    final = _cue_votes(text, offered, rx.FINAL) + _tagged(text, offered)
    explicit = _cue_votes(text, offered, rx.CUE1) + _called(text, offered, 1)
    if corrected := _corrected(text, final, explicit):
        return _decided(corrected, text, offered)
    for votes in (final, explicit):
        if votes:
            return _decided(votes, text, offered)
    fences = rx.FENCE.findall(text)
    if fences and (letter := _plain(fences[-1], offered)):
        return letter
    return _agreed(_soft_votes(text, offered), offered)


Vote = tuple[int, str]  # where a vote's cue starts, and its letter ("?" when spoiled)


def _agreed(votes: list[str], offered: dict[str, str]) -> str | None:
    return votes[0] if votes and len(set(votes)) == 1 and votes[0] in offered else None


def _decided(votes: list[Vote], text: str, offered: dict[str, str]) -> str | None:
    """One tier's letter: all votes agree, or each is its own answer line and the last stands."""
    letters = [letter for _, letter in sorted(votes)]
    if len(set(letters)) > 1 and letters[-1] != "?" and all(_opens_line(text, p) for p, _ in votes):
        return _agreed(letters[-1:], offered)  # "Answer: A\nAnswer: B": the last answer line
    return _agreed(letters, offered)


def _opens_line(text: str, pos: int) -> bool:
    return not text[text.rfind("\n", 0, pos) + 1 : pos].strip(" \t>*_#-")


def _corrected(text: str, final: list[Vote], explicit: list[Vote]) -> list[Vote]:
    """The votes after the last correction ("Wait, ...", "Actually, ...") that follows a vote."""
    votes = final + explicit
    if len(votes) < 2:
        return []
    first = min(p for p, _ in votes)
    marks = [m.start() for m in rx.CORRECTION.finditer(text) if m.start() > first]
    for mark in reversed(marks):
        after_final = [v for v in final if v[0] > mark]
        after = after_final or [v for v in explicit if v[0] > mark]
        if after:
            return after
    return []


def _tagged(text: str, offered: dict[str, str]) -> list[Vote]:
    """Answers in tags of any case: "<ANSWER> b </ANSWER>", "<choice>C</choice>"."""
    votes = []
    for match in rx.TAG.finditer(text):
        body = match["body"].strip()
        letter = _plain(body, offered) or (
            lone[1].upper()
            if (lone := re.fullmatch(r"[\s*_(\[]*([A-Za-z])[\s*_)\].]*", body))
            else None
        )
        votes.append((match.start(), letter if letter in offered else "?"))
    return votes


def _soft_votes(text: str, offered: dict[str, str]) -> list[str]:
    cued = _cue_votes(text, offered, rx.CUE2, strict=True) + _called(text, offered, 2)
    votes = [letter for _, letter in cued]
    for match in rx.TAIL.finditer(text):
        clause = rx.sentence(text, match.start()) + match[0]
        own = rx.norm(offered.get(match["letter"], "")) or "\0"
        last = (  # the reply's final clause: "…, option A."
            not text[match.end() :].strip(" \t\n.!")
            and re.search(r"(?i:option|choice|answer)", match[0]) is not None
            and not re.search(r"(?<![A-Za-z])[A-Z](?![A-Za-z])", rx.sentence(text, match.start()))
        )
        if not (rx.NEGATION.search(clause) or rx.HEDGE.search(clause)) and (
            own in rx.norm(clause) or rx.DECIDE.search(clause) or last
        ):
            votes.append(match["letter"])
    for match in rx.BOLD_IS.finditer(text):
        clause = rx.sentence(text, match.start())
        if not (rx.NEG_BEFORE.search(clause) or rx.conditional(clause) or rx.HEDGE.search(clause)):
            votes.append(match["letter"])
    if (letter := _last_echo(text, offered)) and not rx.is_echo(text, offered):
        votes.append(letter)
    for match in rx.VERDICT.finditer(text):
        if rx.POSITIVE.search(match["rest"]) and not rx.NEGATION.search(match["rest"]):
            votes.append(match["letter"])
    body = text[m.end() :] if (m := rx.HEADINGS.match(text)) else text
    if not rx.is_echo(text, offered) and (letter := _plain(text, offered) or _plain(body, offered)):
        votes.append(letter)
    return votes


def _last_echo(text: str, offered: dict[str, str]) -> str | None:
    """A reply that ends on one option written back, label and text: "... = 5.55 N. B: 5.55N"."""
    lines = text.rstrip().splitlines()
    if len(lines) > 1 and (letter := echo.echoed(lines[-1], offered)):
        return letter
    clause = re.split(r"(?<=[.!?;])\s+", lines[-1] if lines else "")[-1]
    if clause != text and rx.LABEL.match(clause) and (letter := echo.echoed(clause, offered)):
        return letter
    return None


def _cue_votes(
    text: str, offered: dict[str, str], cue: re.Pattern[str], strict: bool = False
) -> list[Vote]:
    votes = []
    seen: dict[tuple[int, str], str | None] = {}  # a vote depends only on the text around its cue
    for match in cue.finditer(text):
        low = max(0, match.start() - rx.BEFORE)
        key = (match.start() - low, text[low : match.end() + rx.AFTER])
        if key not in seen:
            seen[key] = _cue_vote(text, match, offered, strict)
        if vote := seen[key]:
            votes.append((match.start(), vote))
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
    line = after.split("\n", 1)[0]
    if not strict and (letter := echo.echoed(line, offered)) and not rx.is_echo(after, offered):
        return letter  # "Answer: E. No lesion", "Final answer: Not visible"
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


def _called(text: str, offered: dict[str, str], tier: int) -> list[Vote]:
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
            votes.append((match.start(), letter.upper()))
    return votes


def _plain(text: str, offered: dict[str, str]) -> str | None:
    text = rx.unwrap(text)
    if letter := echo.echoed(text, offered):
        return letter
    if match := rx.BARE.fullmatch(text):
        letter = match["letter"].upper()
        return letter if letter in offered else None
    if match := rx.LABEL.match(text):
        letter, after = match["letter"], text[match.end() :]
        first = re.split(r"[.!?\n](?:\s|$)", after, maxsplit=1)[0]
        if rx.has_alternative(text[match.end("letter") :]):
            return None
        if rx.contradicts(letter.upper(), after, offered) or _negated(letter.upper(), first):
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


def _negated(letter: str, clause: str) -> bool:
    """Say whether a label's first clause holds a negation, other than one rejecting other letters."""
    rejected = "".join(m[0] for m in rx.REJECT.finditer(clause))
    if re.search(rf"(?<![A-Za-z]){letter}(?![A-Za-z])", rejected):
        return True  # "B, not B" or "D. D is wrong"
    return bool(rx.NEGATION.search(rx.REJECT.sub(" ", clause)))
