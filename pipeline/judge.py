"""Judge mapping fallback (FACTS §2.5): ask an LLM which offered option a free-text reply means.

Only rows the deterministic extractor could not read are meant to come here, and only MCQ rows:
the official mapper has no question or options for joint rows and should never map reports. The
prompt is the official repo mapper prompt, byte for byte, including its "A, B, C, or D" wording
even where a row offers E-H (§3.4.6). Unlike the official mapper, the judge's reply is validated
against the row's own letters and kept as the bare letter: the official script stores the full
option text ("C. CT"), which its own scorer then counts wrong (§3.4.5).

The call itself is injected (`complete`), so it goes through whatever client, cache, throttle and
retry policy the caller wires in; it must send JUDGE_SYSTEM as the system message and, like the
official mapper, leave the temperature unset (JUDGE_TEMPERATURE).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from pipeline.extract import option_letters

How = Literal["judge", "none"]
Complete = Callable[[str], Awaitable[str]]

JUDGE_SYSTEM = "You are a helpful assistant."
JUDGE_TEMPERATURE: float | None = None  # the official mapper sends none: provider default

# The reply, once markdown and quotes are stripped: an optional "Answer:" lead-in, one letter,
# optionally bracketed, then nothing, or a closing bracket, punctuation or a line break and free
# text ("C. CT", "(C) CT").
# A letter followed directly by a word ("A chest CT", "CT") is English, never an answer.
_REPLY = re.compile(
    r"(?:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|option|letter|choice)"
    r"(?:\s+is)?\s*[:=-]?\s*)?"
    r"[(\[]?(?P<letter>[A-Za-z])(?:(?:[)\]][.:,]?|[.:,]|[ \t]*\n)\s*(?P<rest>.*))?",
    re.IGNORECASE | re.DOTALL,
)
# A second lone letter right after the first ("C, D", "C. D.") makes the reply ambiguous.
_LONE_LETTER = re.compile(r"[(\[]?[A-Za-z][)\]]?\s*(?:[.,;/]|$)")
_WRAPPERS = " \t\r\n*_`'\""


def mapper_prompt(question: str, options: Sequence[str], response: str) -> str:
    """Return the official repo mapper prompt (map_model_response.py) for one row."""
    opt_text = "\n".join(options)
    return (
        "You are a medical assistant. Given the question, the list of options, and a response "
        "from another model, please map the response to the best matching option letter "
        "(e.g., A, B, C, D). Only output the letter.\n\n"
        f"Question: {question}\n\nOptions:\n{opt_text}\n\n"
        f"Other model's answer: {response}\n\n"
        "Instruction: Only output the letter (A, B, C, or D) that best matches the model's "
        "response. Do not add any other text."
    )


def parse_judge_letter(reply: str, letters: Collection[str]) -> str | None:
    """Return the offered letter the judge's reply names ("C", "c", "C.", "C. CT" → "C"), or None.

    Args:
        reply: the judge's reply text.
        letters: the row's letters; a mapping letter → option text also lets a reply whose
            text names a different option ("C. MRI" when MRI is B) be rejected.
    """
    if not isinstance(reply, str):
        return None
    match = _REPLY.fullmatch(reply.strip(_WRAPPERS))
    if match is None:
        return None
    letter = match["letter"].upper()
    if letter not in {str(x).upper() for x in letters}:
        return None
    rest = (match["rest"] or "").strip(_WRAPPERS)
    if rest and _LONE_LETTER.fullmatch(rest):
        return None
    if rest and isinstance(letters, Mapping) and _names_other_option(rest, letter, letters):
        return None
    return letter


def _names_other_option(rest: str, letter: str, options: Mapping[str, str]) -> bool:
    said = _norm(rest)
    named = {str(k).upper() for k, text in options.items() if _norm(str(text)) == said}
    return bool(named) and letter not in named


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


async def judge_row(
    row: Mapping[str, Any], raw_response: str | None, *, complete: Complete
) -> tuple[str | None, How]:
    """Map one MCQ row's unreadable reply to an offered letter with the judge.

    Returns (letter, "judge") when the judge names an offered letter, else (None, "none").
    Rows without a question and options (joint, report) and empty replies cost no call.
    Errors from `complete` propagate: the caller decides whether the row fails or is retried.

    Args:
        row: the dataset row (needs `question` and `options`).
        raw_response: the model's reply, as received.
        complete: sends one prompt to the judge and returns its reply text.
    """
    question, options = row.get("question"), row.get("options")
    if not isinstance(question, str) or not isinstance(options, list):
        return None, "none"
    texts = [o for o in options if isinstance(o, str)]
    offered = option_letters(texts)
    answer = raw_response.strip() if isinstance(raw_response, str) else ""
    if not offered or not answer:
        return None, "none"
    reply = await complete(mapper_prompt(question, texts, answer))
    letter = parse_judge_letter(reply, offered)
    return (letter, "judge") if letter is not None else (None, "none")
