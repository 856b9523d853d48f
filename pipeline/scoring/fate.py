"""Turn a model's outcome for one row into its results row: what became of the reply.

The client has already split the reply into the visible answer and the model's thoughts; only
the answer is read. Each reply gets one fate (`answer_source`), counted per file in the summary:

    extracted  the reader found the answer: "C", "B,D,A,C"         (scored)
    text       a report                                             (scored)
    none       unreadable: kept as the stripped reply, scored as given (wrong, as official);
               the judge, when there is one, may still map it
    refused    a refusal, or the provider's content filter           (scored as given: wrong)
    truncated  cut at the token limit before any answer              → a failed row
    empty      no answer at all                                      → a failed row

A failed row counts wrong in the official denominators, makes the exit status 1 and is sent
again on the next run (such replies are never cached); its error names the flag that helps.
"""

from __future__ import annotations

from pipeline.records import (
    INPUT_ERROR,
    AnswerSource,
    ChatRequest,
    Completion,
    Outcome,
    ResultRow,
    Sample,
)
from pipeline.scoring.reader import extract_chain, extract_choice, is_refusal


def unanswered(sample: Sample, message: str) -> ResultRow:
    """Return the failed row of a sample that could not be sent (its image is unusable)."""
    row = ResultRow(sample.row, sample.key, sample.kind, sample.line)
    return row.failed(message, code=INPUT_ERROR)


def result_row(sample: Sample, request: ChatRequest, outcome: Outcome) -> ResultRow:
    """Build one results row from what the model answered (or the error it ended with)."""
    completion = outcome.completion
    if completion is None:
        row = ResultRow(sample.row, sample.key, sample.kind, sample.line, usage=outcome.usage)
        error = outcome.error
        if error is None:
            return row.failed("no answer")
        return row.failed(str(error), status=error.status, code=error.code)
    fate, answer = read_reply(sample, completion)
    failed = fate in ("truncated", "empty")
    return ResultRow(
        sample.row,
        sample.key,
        sample.kind,
        sample.line,
        model_response=None if failed else answer or completion.text.strip(),
        raw_response=completion.text,
        reasoning_response=completion.reasoning,
        finish_reason=completion.finish_reason,
        error=_why(fate, completion, request) if failed else None,
        answer_source=fate,
        model=completion.model,
        request_id=completion.request_id,
        usage=outcome.usage,
    )


def read_reply(sample: Sample, completion: Completion) -> tuple[AnswerSource, str | None]:
    """Return the reply's fate and, when it was read, the answer in the official format."""
    text = completion.text
    if sample.kind == "report":
        if text.strip() and not is_refusal(text):
            return "text", text.strip()
    else:
        if sample.kind == "joint":
            answer = extract_chain(text)
        else:
            answer = extract_choice(text, sample.row["options"])
        if answer is not None:
            return "extracted", answer
    if completion.finish_reason == "content_filter" or (text.strip() and is_refusal(text)):
        return "refused", None
    if completion.finish_reason == "length":
        return "truncated", None
    if not text.strip():
        return "empty", None
    return "none", None


def _why(fate: AnswerSource, completion: Completion, request: ChatRequest) -> str:
    """Say what happened to a reply that gave no answer, and which flag helps."""
    thought = (
        " (the model spent it thinking)"
        if completion.reasoning_tokens or completion.reasoning
        else ""
    )
    if fate == "truncated":
        limit = f"max_tokens={request.max_tokens}" if request.max_tokens else "the model's limit"
        return (
            f"reply cut at the token limit ({limit}) before an answer{thought}; "
            "raise it with --max-tokens (e.g. --max-tokens 2048), or try --thinking off"
        )
    return (
        f"empty reply (finish_reason {completion.finish_reason!r}){thought}; rerun to retry, and "
        "for a reasoning model raise --max-tokens or pass --thinking off"
    )
