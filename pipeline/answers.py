"""Turn a model's outcome for one row into its results row: the answer read from the reply.

    MCQ     the offered letter the reply chooses (`extract.extract_choice`), else "none"
    joint   the four letters "B,D,A,C" (`extract.extract_chain`), else "none"
    report  the reply, stripped
An unreadable reply keeps the official behaviour: `model_response` is the stripped reply, scored
as given (wrong, unless it is exactly the letter). `raw_response` always keeps the reply.
"""

from __future__ import annotations

from pipeline.extract import extract_chain, extract_choice
from pipeline.records import AnswerSource, Outcome, ResultRow, Sample


def unanswered(sample: Sample, message: str) -> ResultRow:
    """Return the failed row of a sample that could not be sent (its image is unusable)."""
    return ResultRow(sample.row, sample.key, sample.kind, sample.line, error=message)


def result_row(sample: Sample, outcome: Outcome) -> ResultRow:
    """Build one results row from what the model answered (or the error it ended with)."""
    completion = outcome.completion
    row = ResultRow(sample.row, sample.key, sample.kind, sample.line, usage=outcome.usage)
    if completion is None:
        error = outcome.error
        if error is None:
            return row.failed("no answer")
        return row.failed(str(error), status=error.status, code=error.code)
    raw = completion.text
    answer: str | None = None
    source: AnswerSource = "none"
    if sample.kind == "report":
        answer, source = raw.strip(), "text"
    else:
        if sample.kind == "joint":
            answer = extract_chain(raw)
        else:
            answer = extract_choice(raw, sample.row["options"])
        source = "extracted" if answer is not None else "none"
    return ResultRow(
        sample.row,
        sample.key,
        sample.kind,
        sample.line,
        model_response=answer if answer is not None else raw.strip(),
        raw_response=raw,
        answer_source=source,
        model=completion.model,
        request_id=completion.request_id,
        usage=outcome.usage,
    )
