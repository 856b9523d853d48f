"""Read a reply that is one offered option written back: "E. No lesion", "**B) Not visible**", "No".

Models answer in the official format when they copy one option, with or without its letter. Such a
reply is read before any rule looks for negations, so the words of an option ("No lesion", "Not
visible", "None of the above", "Cannot be determined") never cancel it. The comparison is made
twice: once on the text with only case, markup, surrounding punctuation and spacing folded, then
on words alone (pipeline.scoring.rules.norm); each time the reply must match exactly one option.
"""

from __future__ import annotations

import re

from pipeline.scoring import rules as rx

# Markdown and list decoration around a whole reply or line: "- ", "### ", "> ", "**", "__", "`".
_DECOR = re.compile(r"^[\s>#*_`\u2022-]*+|[\s*_`]*+$")
# A label in any list style: "A.", "A)", "A:", "(A)", "[A]", "A -", "A \u2013", "Option A", "Option A:".
_LABEL = re.compile(
    r"(?:(?i:option|choice)\s*+)?(?:[(\[]\s*+(?P<a>[A-Za-z])\s*+[)\]]|(?P<b>[A-Za-z])"
    r"(?=[\s.):\]*_\u2013\u2014-]))[*_`]*+(?:\s*+[.):\]])?[*_`]*+\s*+(?:[-\u2013\u2014:]\s*+)?"
)
_SAID = re.compile(r"\(\s*+([A-Za-z])\s*+\)\s*[.!]?\s*$")  # "Cyst (B)": its letter must agree
_EDGE = re.compile(r"^[\s\"'`*_(\[{]+|[\s\"'`*_.,;:!?)\]}]+$")


def echoed(text: str, offered: dict[str, str]) -> str | None:
    """Return the letter of the one option that `text` (a whole reply or line) writes back, or None.

    Args:
        text: the folded reply (rx.fold, rx.unwrap), or one line of it.
        offered: the row's options, letter to text.
    """
    if len(text) > 300 or not offered:  # an option, even a long one, is short
        return None
    body = _DECOR.sub("", text)
    if not body:
        return None
    if (label := _LABEL.match(body)) and (rest := body[label.end() :]).strip():
        letter = (label["a"] or label["b"]).upper()
        if letter in offered and _same(rest, letter, offered):
            return letter
        if _unique(rest, offered) is not None:
            return None  # the label contradicts its text ("A cyst", Cyst being B)
    return _unique(body, offered)  # "B-cell lymphoma" opens like a label but is an option's text


def _unique(body: str, offered: dict[str, str]) -> str | None:
    """The one option whose text alone is `body` (article and a trailing gloss in brackets aside)."""
    said = _SAID.search(body)
    bodies = {body, re.sub(r"^(?i:the|an?)\s+", "", body)}
    bodies |= {re.sub(r"\s*\([^()\n]*\)\s*[.!]?\s*$", "", b) for b in bodies}
    for same in (_close, _words):
        hits = {k for k, v in offered.items() for b in bodies if same(b, v)}
        if len(hits) == 1:
            letter = hits.pop()
            return None if said and said[1].upper() != letter else letter
        if hits:
            return None  # two options read the same: no guess
    return None


def _same(said: str, letter: str, offered: dict[str, str]) -> bool:
    """Say whether `said` is the text of option `letter` (and word for word of no other one)."""
    if _close(said, offered[letter]):
        return True
    return _words(said, offered[letter]) and not any(
        _close(said, text) for k, text in offered.items() if k != letter
    )


def _close(said: str, option: str) -> bool:
    """Equal once case, spacing, markup and surrounding punctuation are folded."""
    a, b = _EDGE.sub("", said), _EDGE.sub("", option)
    return bool(b) and " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _words(said: str, option: str) -> bool:
    """Equal word for word ("B-cell lymphoma." is "b cell lymphoma")."""
    wanted = rx.norm_option(option)
    return bool(wanted) and rx.norm(said) == wanted
