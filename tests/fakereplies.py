"""Reply shapes for the fake server: reasoning models' thoughts and every odd success or error form.

`fakeserver.py` picks an outcome per request. For a success it builds a `Reply` here, either one
forced shape (`shape_reply`, for the outcomes in `PAID_SHAPES`) or the whole-server reasoning mode
(`mode_reply`, for "ok", which truncates at the request's token budget). The answer is always the
one the server would give plainly; the thoughts name other letters (`wrong_letters`), so a reader
that takes its letter from the thinking picks a wrong one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

# Billed successes whose reply holds the right answer somewhere a careful reader finds it.
ANSWERED_SHAPES = (
    "reasoning",  # thoughts in message.reasoning_content (DeepSeek, DashScope, vLLM parser)
    "reasoning_field",  # thoughts in message.reasoning (OpenRouter)
    "think_inline",  # content "<think>\n…\n</think>\n\n" + answer
    "reasoning_hidden",  # only usage.completion_tokens_details.reasoning_tokens (OpenAI o-series)
    "list_content",  # content as a list of text parts that concatenate to the answer
    "no_usage",  # a plain answer without "usage"
)
# Billed successes with no usable answer.
UNANSWERED_SHAPES = (
    "think_unclosed",  # content "<think>\n…" cut by the token limit, finish_reason "length"
    "length_empty",  # content "", thoughts in reasoning_content, finish_reason "length"
    "length_empty_null",  # the same with content null
    "length_partial",  # an answer cut mid-sentence before any letter, finish_reason "length"
    "content_filter",  # content null, finish_reason "content_filter"
    "content_filter_text",  # a few words, then finish_reason "content_filter"
    "refusal",  # an explicit refusal, finish_reason "stop"
    "null_content",  # content null, finish_reason "stop"
)
PAID_SHAPES = ANSWERED_SHAPES + UNANSWERED_SHAPES
# HTTP 200 whose body is an error (some gateways, vLLM): never billed.
ERROR_200_BODIES: dict[str, dict[str, Any]] = {
    "error_200": {
        "error": {
            "message": "Upstream provider returned an error; please retry.",
            "type": "server_error",
            "code": "upstream_error",
        }
    },
    "error_200_object": {
        "object": "error",
        "message": "Internal server error: the engine failed to process the request.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    },
}
SHAPES = (*PAID_SHAPES, *ERROR_200_BODIES)

# FakeConfig.reasoning: where the whole-server mode puts its thoughts ("none" hides them).
REASONING_STYLES = ("none", "field", "openrouter", "inline")
_STYLE_SHAPE = {
    "none": "reasoning_hidden",
    "field": "reasoning",
    "openrouter": "reasoning_field",
    "inline": "think_inline",
}
_SHAPE_STYLE = {shape: style for style, shape in _STYLE_SHAPE.items()}
_THOUGHT_FIELD = {"field": "reasoning_content", "openrouter": "reasoning"}
DEFAULT_MAX_TOKENS = 4096  # the budget of a request that sets neither max_tokens field

PARTIAL = "The image shows an axial section of the abdomen with a"
FILTERED = "The image shows"
REFUSAL = "I'm sorry, but I can't help with interpreting this medical image."
_LETTER = re.compile(r"\b([A-H])\b")


@dataclass
class Reply:
    """One choice and its token counts, before it becomes a chat.completion body."""

    shape: str  # the shape served, recorded in the ledger
    content: str | list[dict[str, str]] | None
    finish_reason: str = "stop"
    completion_tokens: int = 0
    reasoning_tokens: int | None = None  # None: no usage.completion_tokens_details
    thoughts: tuple[str, str] | None = None  # (message field, text)
    usage: bool = True

    def body(self, *, ident: str, model: str, prompt_tokens: int, empty: bool) -> dict[str, Any]:
        """Return the chat.completion JSON (no choices when `empty`)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thoughts:
            message[self.thoughts[0]] = self.thoughts[1]
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        body: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [] if empty else [choice],
        }
        if self.usage:
            usage: dict[str, Any] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": prompt_tokens + self.completion_tokens,
            }
            if self.reasoning_tokens is not None:
                usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
            body["usage"] = usage
        return body


def count(text: str) -> int:
    """Estimate tokens as the server always has: a quarter of the characters, at least one."""
    return max(1, len(text) // 4)


def budget(payload: dict[str, Any]) -> int:
    """Return the request's completion budget: the smaller max_tokens field it sets, or 4096."""
    limits = [
        v
        for k in ("max_tokens", "max_completion_tokens")
        if isinstance(v := payload.get(k), int) and not isinstance(v, bool) and v > 0
    ]
    return min(limits, default=DEFAULT_MAX_TOKENS)


def wrong_letters(
    answer: str, blocks: list[list[str]], options: dict[str, str] | None = None
) -> list[list[str]]:
    """Return, per question, the offered letters other than the answer's, the next one first.

    The answer's letters are the lone capitals A-H in it, else the option whose text it quotes.
    """
    stripped = answer.strip()
    said = _LETTER.findall(stripped.upper() if len(stripped) == 1 else answer)
    if not said and options:
        said = [k for k, text in options.items() if text.lower() in answer.lower()][:1]
    wrong = []
    for i, block in enumerate(blocks or [list("ABCD")]):
        right = said[i] if i < len(said) else None
        start = block.index(right) + 1 if right in block else 0
        ring = [x for x in (*block[start:], *block[:start]) if x != right]
        wrong.append(ring or [next(x for x in "ABCDEFGH" if x != right)])
    return wrong


def thinking(wrong: list[list[str]], tokens: int = 0) -> str:
    """Write thoughts that settle on wrong letters; `tokens` > 0 pads or cuts them to that size."""
    if len(wrong) == 1:
        first, second = wrong[0][0], wrong[0][1 % len(wrong[0])]
        text = (
            f"Option {first} looks like the best match at first, but {second} could also explain "
            f"this appearance. Let me look at the image again. I would go with {first}. "
            f"Answer: {first}."
        )
    else:
        guess = ",".join(w[0] for w in wrong)
        steps = " ".join(f"Question {i}: option {w[0]} fits." for i, w in enumerate(wrong, 1))
        text = f"First guess: {guess}. Let me go through the questions. {steps} Answer: {guess}."
    if tokens <= 0:
        return text
    pool = [x for w in wrong for x in w]
    i = 0
    while len(text) < tokens * 4:
        text += f" Looking again at the image, option {pool[i % len(pool)]} still seems possible."
        i += 1
    return text[: tokens * 4]


def mode_reply(
    style: str, think_tokens: int, answer: str, wrong: list[list[str]], limit: int
) -> Reply:
    """Answer as a reasoning model: think `think_tokens` first, and stop at `limit` tokens."""
    if style not in _STYLE_SHAPE:
        msg = f"unknown reasoning style {style!r}; use one of {', '.join(REASONING_STYLES)}"
        raise ValueError(msg)
    if style == "none" and think_tokens <= 0:
        return Reply("ok", answer, "stop", count(answer))
    if think_tokens > 0 and limit < think_tokens + count(answer):
        return _thought(style, None, thinking(wrong, limit), limit, "length")
    text = thinking(wrong, think_tokens)
    spent = think_tokens if think_tokens > 0 else count(text)
    return _thought(style, answer, text, spent, "stop")


def shape_reply(
    outcome: str, answer: str, wrong: list[list[str]], limit: int, think_tokens: int = 0
) -> Reply:
    """Build the reply of one of `PAID_SHAPES` (anything else answers plainly)."""
    if outcome in _SHAPE_STYLE:
        text = thinking(wrong, think_tokens)
        spent = think_tokens if think_tokens > 0 else count(text)
        return _thought(_SHAPE_STYLE[outcome], answer, text, spent, "stop")
    if outcome == "think_unclosed":
        return _thought("inline", None, thinking(wrong, limit), limit, "length")
    if outcome in ("length_empty", "length_empty_null"):
        reply = _thought("field", None, thinking(wrong, limit), limit, "length")
        reply.shape = outcome
        reply.content = "" if outcome == "length_empty" else None
        return reply
    fixed: dict[str, tuple[str | None, str, int]] = {  # content, finish_reason, completion tokens
        "length_partial": (PARTIAL, "length", limit),
        "content_filter": (None, "content_filter", 0),
        "content_filter_text": (FILTERED, "content_filter", count(FILTERED)),
        "refusal": (REFUSAL, "stop", count(REFUSAL)),
        "null_content": (None, "stop", 0),
    }
    if outcome in fixed:
        content, finish, tokens = fixed[outcome]
        return Reply(outcome, content, finish, tokens)
    if outcome == "list_content":
        cut = len(answer) // 2
        texts = [answer[:cut], answer[cut:]] if cut else [answer]
        parts = [{"type": "text", "text": t} for t in texts]
        return Reply(outcome, parts, "stop", count(answer))
    if outcome == "no_usage":
        return Reply(outcome, answer, "stop", count(answer), usage=False)
    return Reply("ok", answer, "stop", count(answer))


def _thought(style: str, answer: str | None, text: str, spent: int, finish: str) -> Reply:
    """Place thoughts of `spent` tokens by style; `answer` None means cut before answering."""
    cut = answer is None
    shape = (
        ("think_unclosed" if style == "inline" else "length_empty") if cut else _STYLE_SHAPE[style]
    )
    completion = spent if cut else spent + count(answer or "")
    if style == "inline":
        content = f"<think>\n{text}" if cut else f"<think>\n{text}\n</think>\n\n{answer}"
        return Reply(shape, content, finish, completion, spent)
    thoughts = (_THOUGHT_FIELD[style], text) if style in _THOUGHT_FIELD else None
    return Reply(shape, answer or "", finish, completion, spent, thoughts)
