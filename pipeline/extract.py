"""Pull the chosen letter(s) out of a free-text reply. This is OUR extension to DrVD-Bench.

Official scoring never parses (FACTS §3.1-3.2): `model_response` must already be a bare letter or
"B,D,A,C". We turn a reply into that format, or into None ("no answer") rather than guess, by trying
a short, ordered list of named patterns. Only letters the row offers are ever returned.

extract_choice, first step that decides wins (each step is the named regex below):
  1. _BOXED      \\boxed{B}
  2. _MARKER     "Answer: B", "The answer is (b)", "The correct option is B: Kidney",
                 "I think it's B", {"answer": "B"}, <answer>B</answer>; also _ANSWER_TEXT
                 ("Answer: Kidney (CT)") and _CALLED ("B is the correct answer"). A "final
                 answer" beats earlier markers; the markers that count must all agree, else None.
  3. _FENCE      the last ```…``` block, read as a whole reply (steps 5-7)
  4. _ECHO_LINE  the reply lists two or more labelled options ("A. CT\\nB. MRI") → None
  5. _BARE       the whole reply is one letter, any case: "b", "B.", "(B)", "**B**", "Option B"
  6. _LABEL      the reply opens with an upper-case label: "B) Kidney", "B. Kidney because …"
  7. (text)      the whole reply is exactly one option's text: "kidney"

Letters never come from words. "CT", "MRI", "T2" and "B-cell" fail the letter boundary. An
upper-case "A" or "I" followed by a lower-case word or an abbreviation ("A patient", "A CT scan",
"I believe") is English. So is any unwrapped
lower-case letter followed by a word. A letter followed by another ("B or C", "A, D") is ambiguous →
None, and so is a label contradicted by the text that follows it ("B. Liver" when Liver is C).

extract_chain accepts a candidate text only when, once numbering ("1.", "2)"), level labels
("Modality:"), brackets, quotes and tags are removed, nothing is left but exactly n letters and
separators. Candidates, in order: the whole reply, the last \\boxed{}, the last fence, the text
after one of the last three "answer" markers; failing those, every paragraph and line that parses,
if they all agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

# A letter token ends here: not "CT", "T2", "B-cell", "A's".
_END = r"(?![A-Za-z0-9]|[-'\u2019][A-Za-z0-9])"
_WRAPPERS = "([{*_'\"`"

_OPTION = re.compile(r"\s*[(\[]?([A-Za-z])\s*[.):\]]\s*(.*)", re.S)
_BOXED = re.compile(
    r"\\boxed\s*+\{[\s{]*+(?:\\text(?:bf)?\s*+\{\s*+)?\(?(?P<letter>[A-Za-z])" + _END
)
_MARKER = re.compile(
    r"(?<![A-Za-z])(?i:(?P<final>final[\s_]+(?:answer|choice)s?)"
    r"|(?:correct|best|right)\s+(?:answer|option|choice)|answer(?:\s+to\s+(?:this|the)\s+question)?"
    r"|I\s+think\s+it(?:['\u2019]s|\s+is)|I(?:['\u2019]d|\s+would)?\s+(?:choose|select|pick|go\s+with))"
    r"(?![A-Za-z])[\s\"'`*_:,=>(\[{\u2013\u2014-]*+"  # possessive: no backtracking on runs of wrappers
    r"(?:(?i:is|would\s+be|should\s+be|will\s+be)\b[\s\"'`*_:,(\[{]*+)?"
    r"(?:(?i:option|choice|letter)\b[\s\"'`*_:(\[{]*+)?"
    r"(?P<letter>[A-Za-z])(?P<close>[)\]}*_'\"`]*+)" + _END
)
_FENCE = re.compile(r"```(?:[\w+-]*\n)?(.*?)```", re.S)
# A line that starts with a label, or holds nothing but a letter: "A. CT", "B)", "C".
_ECHO_LINE = re.compile(r"^[\s*_•-]*+[(\[]?([A-Z])(?:[.):\]]|[ \t]*$)", re.M)
# "B is correct", "Option D is the most likely": only at the start of a sentence or after
# "option", so "Hepatitis B is the most likely diagnosis" gives no letter.
_CALLED = re.compile(
    r"(?:^|(?<=[.!?:;,(]\s)|(?<=\()|(?i:option|choice)\s+)[\[*'\"]*(?P<letter>[A-Z])[)\]*'\"]*+"
    r"\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|most\s+likely))(?![\w-])",
    re.M,
)
_BARE = re.compile(
    r"[\s(\[{*_'\"`.]*+(?:(?i:option|choice|letter)\s*+[:=-]?\s*+[(\[{*_'\"`]*+)?"
    r"(?P<letter>[A-Za-z])[\s)\]}*_'\"`.:,;!]*+"
)
_LABEL = re.compile(
    r"[\s*_`]*+[(\[]?(?P<letter>[A-Z])"
    r"(?:(?:\*\*|__)?[.):\],]|\*\*|[ \t]+[-\u2013\u2014]|(?=[ \t]*(?:\n|$)))" + _END
)
_ANSWER_TEXT = re.compile(
    r"(?<![A-Za-z])(?i:(?P<final>final[\s_]+)?answer(?:\s+is)?)(?![A-Za-z])[\s:*\"'=-]*+"
)
_ALTERNATIVE = re.compile(
    r"[)\]}*_'\"`]*+\s*+(?:[,/&]|(?i:or|and)\b)\s*+(?:(?i:option)\s*+)?[(\[*'\"]*+(?P<letter>[A-Z])"
    + _END
)
_AFTER = 300  # how much text after a letter to inspect; bounded so long replies stay linear
# Words that may follow a chosen "A"/"I" without making it an article or a pronoun.
_CONNECTORS = frozenset({"because", "since", "as", "is", "given", "due", "based", "which", "for"})

_CHAIN_NOISE = re.compile(
    r"\\boxed|\\text(?:bf)?|</?\w+>|(?<![A-Za-z0-9])(?:Q|(?i:question)\s*)?\d{1,2}\s*[.):]"
    r"|(?i:\b(?:modality|body\s*(?:part|region)|bodypart|organ|lesion|diagnosis)\b)\s*[:=-]"
    r"|(?i:\band\b)|[\[\]{}()'\"`*_]"
)
_CHAIN_SHAPE = re.compile(r"\s*+[A-Za-z](?:[\s,;/|&>→-]++[A-Za-z])*+[\s.,;!]*+")
_CHAIN_MARKER = re.compile(r"(?<![A-Za-z])(?i:answers?)(?![A-Za-z])(?:\s+(?i:is|are)\b)?\s*[:=-]?")
_CHAIN_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")


def option_letters(options: Sequence[str]) -> dict[str, str]:
    """Map each option's letter to its text, from strings like "A. CT", "A) CT", "(A) CT"."""
    letters: dict[str, str] = {}
    for option in options:
        match = _OPTION.fullmatch(option) if isinstance(option, str) else None
        if match:
            letters.setdefault(match[1].upper(), match[2].strip())
    return letters


def extract_choice(reply: str | None, options: Sequence[str]) -> str | None:
    """Return the single letter the reply chooses among the row's options, or None.

    Args:
        reply: the model's reply text (None for a failed call).
        options: the row's options, e.g. ["A. CT", "B. MRI"].
    """
    offered = option_letters(options)
    if not isinstance(reply, str) or not offered:
        return None
    text = _unwrap(reply)
    for votes in (_boxed_votes(text), _marker_votes(text, offered)):
        if votes:
            return votes[0] if len(set(votes)) == 1 and votes[0] in offered else None
    fences = _FENCE.findall(text)
    if fences and (letter := _plain(fences[-1], offered)):
        return letter
    return None if _is_echo(text, offered) else _plain(text, offered)


def extract_chain(reply: str | None, n: int = 4, letters: str = "ABCDEFGH") -> str | None:
    """Return a joint answer in the official "B,D,A,C" form, or None.

    Args:
        reply: the model's reply text (None for a failed call).
        n: how many letters the answer must have, exactly.
        letters: the letters a position may take.
    """
    if not isinstance(reply, str) or n < 1:
        return None
    text, allowed = _unwrap(reply), letters.upper()
    for candidate in _chain_candidates(text):
        if chain := _parse_chain(candidate, n, allowed):
            return chain
    # Else one answer line amid prose: every paragraph or line that parses must agree.
    pieces = [*re.split(r"\n\s*\n", text), *text.splitlines()]
    chains = {chain for piece in pieces if (chain := _parse_chain(piece, n, allowed))}
    return chains.pop() if len(chains) == 1 else None


def _parse_chain(candidate: str, n: int, allowed: str) -> str | None:
    cleaned = _CHAIN_NOISE.sub(" ", candidate)
    if not _CHAIN_SHAPE.fullmatch(cleaned):
        return None
    found = [c.upper() for c in re.findall(r"[A-Za-z]", cleaned)]
    return ",".join(found) if len(found) == n and all(c in allowed for c in found) else None


def _unwrap(text: str) -> str:
    text = text.strip()
    for _ in range(3):  # a bounded number of nested fences keeps long junk replies linear
        if not (match := _FENCE.fullmatch(text)):
            break
        text = match[1].strip()
    return text


def _boxed_votes(text: str) -> list[str]:
    votes = []
    for match in _BOXED.finditer(text):
        after = text[match.end() : match.end() + _AFTER]
        votes.append("?" if _has_alternative(after) else match["letter"].upper())
    return votes


def _marker_votes(text: str, offered: dict[str, str]) -> list[str]:
    final: list[str] = []
    other: list[str] = []
    for match in _MARKER.finditer(text):
        letter, after = match["letter"], text[match.end() : match.end() + _AFTER]
        wrapped = text[match.start("letter") - 1] in _WRAPPERS or bool(match["close"])
        if _is_word(letter, wrapped, after):
            continue
        bad = _has_alternative(after) or _contradicts(letter.upper(), after, offered)
        (final if match["final"] else other).append("?" if bad else letter.upper())
    for match in _ANSWER_TEXT.finditer(text):
        # "Answer: B-cell lymphoma" names an option by its text, not by the letter B.
        if letter := _named_option(text[match.end() : match.end() + _AFTER], offered):
            (final if match["final"] else other).append(letter)
    for match in _CALLED.finditer(text):
        # "Neither option A nor option B is correct" names no answer.
        if text[max(0, match.start() - 4) : match.start()].casefold() not in ("nor ", "not "):
            other.append(match["letter"])
    # An explicit final answer overrides whatever the reasoning said before it.
    return final or other


def _plain(text: str, offered: dict[str, str]) -> str | None:
    text = _unwrap(text)
    if match := _BARE.fullmatch(text):
        letter = match["letter"].upper()
        return letter if letter in offered else None
    if match := _LABEL.match(text):
        letter, after = match["letter"], text[match.end() :]
        if _has_alternative(text[match.end("letter") :]) or _contradicts(letter, after, offered):
            return None
        return letter if letter in offered else None
    wanted = _norm(text)
    hits = [k for k, v in offered.items() if wanted and _norm(v) == wanted]
    return hits[0] if len(hits) == 1 else None


def _is_word(letter: str, wrapped: bool, after: str) -> bool:
    """Say whether an unwrapped letter is really an English word ("a", "A patient", "I think")."""
    if wrapped:
        return False
    if letter.islower():
        return not re.match(r"\s*(?:$|[.,;:!?)\]])", after)
    # An article or pronoun is followed by a lower-case word or an abbreviation ("A CT", "A T2"),
    # a chosen letter by a connector or by a new sentence ("A Hope this helps").
    following = re.match(r"[ \t]+([A-Za-z]+\d*)", after)
    if letter not in "AI" or following is None:
        return False
    word = following[1]
    return word.lower() not in _CONNECTORS and (
        not word.istitle() or len(word) == 1 or word[-1].isdigit()
    )


def _has_alternative(after: str) -> bool:
    match = _ALTERNATIVE.match(after)
    return match is not None and not _is_word(match["letter"], False, after[match.end() :])


def _contradicts(letter: str, after: str, offered: dict[str, str]) -> bool:
    """Say whether the text after a label names another option instead ("B. Liver", C = Liver)."""
    said = _norm(after[:_AFTER]) + " "
    if not said.strip() or _starts_with(said, offered.get(letter, "")):
        return False
    return any(_starts_with(said, text) for k, text in offered.items() if k != letter)


def _named_option(after: str, offered: dict[str, str]) -> str | None:
    """Return the option whose text opens `after` (the longest, if texts nest), or None."""
    said = _norm(after) + " "
    hits = {k: len(_norm(v)) for k, v in offered.items() if _starts_with(said, v)}
    longest = [k for k, size in hits.items() if size == max(hits.values())]
    return longest[0] if len(longest) == 1 else None


def _starts_with(said: str, option_text: str) -> bool:
    wanted = _norm(option_text)
    return bool(wanted) and said.startswith(wanted + " ")


def _is_echo(text: str, offered: dict[str, str]) -> bool:
    if len({m[1] for m in _ECHO_LINE.finditer(text)} & offered.keys()) >= 2:
        return True
    pairs = sum(
        1
        for k, v in offered.items()
        if v and re.search(rf"(?<![A-Za-z]){k}\s*[.):]\s*(?i:{re.escape(v)})", text)
    )
    return pairs >= 2


def _chain_candidates(text: str) -> Iterator[str]:
    yield text
    if boxed := _CHAIN_BOXED.findall(text):
        yield boxed[-1]
    if fences := _FENCE.findall(text):
        yield fences[-1]
    # Only the last few markers: trying the rest after every one of them would be quadratic.
    for match in list(_CHAIN_MARKER.finditer(text))[-3:][::-1]:
        rest = text[match.end() :]
        yield rest
        yield rest.strip().split("\n", 1)[0]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())
