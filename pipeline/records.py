"""Records that flow through the pipeline: frozen, slotted, validated only at the edges.

    Sample ──prompts──▶ ChatRequest ──models──▶ Completion ──answers──▶ ResultRow ──▶ results file

`ResultRow` is the one schema of a results line: the runner builds it, the judge completes it, the
results file stores it (`to_json`/`from_json`) and the scorer and summary read it. A field is
added here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from pipeline.errors import APIError

# The four DrVD-Bench files, in the order they are run and reported.
FILES = ("visual_evidence_qa", "independent_qa", "joint_qa", "report_generation")

# What a row is, decided per row from its keys (never from the file's first line):
#   evidence     has `task` (and task != "report_generation")   → MCQ, "analysis" prompt
#   independent  has `level`, no `task`                          → MCQ, "discrete" prompt
#   joint        has `joint_prompt`                              → four letters "B,D,A,C"
#   report       task == "report_generation"                     → free-text report
Kind = Literal["evidence", "independent", "joint", "report"]
KINDS: tuple[Kind, ...] = ("evidence", "independent", "joint", "report")

# The four joint levels the official scorer reads, in answer order (PROTOCOL §3.2).
JOINT_LEVELS = ("modality", "organ", "lesion", "diagnosis")

# What became of a reply (the `answers` counts of the summary):
#   extracted  our reader found the answer          judge   the judge mapped an unreadable reply
#   none       unreadable, scored as given (wrong)   text    a report
#   refused    the model (or its filter) declined    truncated, empty: no answer; the row failed
AnswerSource = Literal["extracted", "judge", "none", "text", "refused", "truncated", "empty"]
ANSWER_SOURCES: tuple[AnswerSource, ...] = (
    "extracted",
    "judge",
    "none",
    "text",
    "refused",
    "truncated",
    "empty",
)


def row_kind(row: Mapping[str, Any]) -> Kind | None:
    """Return what a dataset row is, from its own keys, or None if it is none of the four."""
    if "joint_prompt" in row:
        return "joint"
    if "task" in row:
        return "report" if row["task"] == "report_generation" else "evidence"
    if "level" in row:
        return "independent"
    return None


@dataclass(frozen=True, slots=True)
class Sample:
    """One valid dataset row, ready to prompt."""

    file: str  # stem, e.g. "joint_qa"
    line: int  # 1-based line number in the JSONL file
    key: str  # stable item key derived from the row's content (+ occurrence number)
    kind: Kind
    image: Path  # resolved, existing image file (unless `problem` says otherwise)
    row: dict[str, Any] = field(repr=False)  # the input row, untouched
    problem: str | None = None  # why the row cannot be sent (its image): it fails unasked


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """An image and the official preprocessing to apply before sending it."""

    path: Path
    max_dim: int  # longest side after resize (never upscaled)
    quality: int  # JPEG quality


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything that determines the model's answer, before the image is encoded."""

    system: str | None  # None: no system message (the official keyword extraction sends none)
    text: str  # user text; sent before the image
    image: ImageSpec | None  # None: a text-only request (judge calls)
    temperature: float | None = None  # None: not sent (provider default)
    max_tokens: int | None = None  # None: not sent
    # Which of `--samples K` answers this is: 0 the official one; k > 0 an independent draw of
    # the same request (in the cache key, never sent)
    epoch: int = 0


_COMPLETION_TEXTS = ("model", "request_id", "reasoning", "finish_reason")  # str or None
_COMPLETION_COUNTS = ("prompt_tokens", "completion_tokens", "reasoning_tokens")  # ints >= 0
_COMPLETION_FIELDS = frozenset(("text", *_COMPLETION_TEXTS, *_COMPLETION_COUNTS))


@dataclass(frozen=True, slots=True)
class Completion:
    """A successful reply from a model: what it answered, apart from how it thought."""

    text: str  # the visible answer; never the model's thoughts
    model: str | None = None  # the model name the response reports
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included, as providers bill them
    reasoning: str | None = None  # the thoughts, when the reply carried them
    finish_reason: str | None = None  # "stop", "length", "content_filter", ...
    reasoning_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the completion as a JSON object (what the response cache stores)."""
        return {f.name: getattr(self, f.name) for f in fields(Completion)}

    @classmethod
    def from_json(cls, data: object) -> Completion:
        """Read a completion written by `to_json`; raise ValueError unless every field is sound."""
        # Checked by hand, not by walking `fields`: this runs on every cache hit.
        if (
            isinstance(data, dict)
            and data.keys() <= _COMPLETION_FIELDS
            and isinstance(data.get("text"), str)
            and all(
                (value := data.get(name)) is None or isinstance(value, str)
                for name in _COMPLETION_TEXTS
            )
            and all(
                type(count := data.get(name, 0)) is int and count >= 0
                for name in _COMPLETION_COUNTS
            )
        ):
            return cls(**data)
        msg = "not a completion: a field is missing, unknown or of the wrong type"
        raise ValueError(msg)

    @property
    def keep(self) -> bool:
        """Say whether the reply is worth caching: an empty or cut-off reply is tried again."""
        return bool(self.text.strip()) and self.finish_reason != "length"


@dataclass(frozen=True, slots=True)
class Usage:
    """What answering one row cost (or, summed, a run): calls sent, cache hits and tokens."""

    api_calls: int = 0  # attempts sent, retries included
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included
    reasoning_tokens: int = 0
    batch_calls: int = 0  # of api_calls, those answered through a Batch API
    cost_usd: float = 0.0  # what the calls cost (billed tokens at the price; 0 if unpriced)
    saved_usd: float = 0.0  # what the cache hits would have cost

    def __add__(self, other: Usage) -> Usage:
        return self._combine(other, 1)

    def __sub__(self, other: Usage) -> Usage:
        return self._combine(other, -1)

    def _combine(self, other: Usage, sign: int) -> Usage:
        names = [f.name for f in fields(Usage)]
        values: dict[str, Any] = {n: getattr(self, n) + sign * getattr(other, n) for n in names}
        return Usage(**values)

    def to_json(self) -> dict[str, int | float]:
        """Return the counts as a JSON object (costs rounded to a billionth of a dollar)."""
        out: dict[str, int | float] = {f.name: getattr(self, f.name) for f in fields(Usage)}
        out["cost_usd"] = round(self.cost_usd, 9)
        out["saved_usd"] = round(self.saved_usd, 9)
        return out

    @classmethod
    def from_json(cls, data: object) -> Usage:
        """Read counts written by `to_json`; anything missing or malformed counts 0."""
        if not isinstance(data, Mapping):
            return cls()
        values: dict[str, Any] = {
            f.name: _int(data.get(f.name)) if f.type == "int" else _float(data.get(f.name))
            for f in fields(Usage)
        }
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What answering one request produced: a completion or the error it ended with, and cost."""

    completion: Completion | None
    error: APIError | None = None
    usage: Usage = Usage()
    unsaved: str | None = None  # a paid completion the cache could not store: "PATH: why"


@dataclass(frozen=True, slots=True)
class Keywords:
    """A report row's judge-extracted keywords and the metrics computed on them (PROTOCOL §3.3)."""

    variant: str  # keyword prompt: "repo" or "pypi"
    judge_model: str | None  # the model name the judge's API reported
    reference: str
    prediction: str
    bert_f1: float | None = None  # None: BERTScore not computed
    bert_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the keywords as a JSON object."""
        return {f.name: getattr(self, f.name) for f in fields(Keywords)}

    @classmethod
    def from_json(cls, data: object) -> Keywords | None:
        """Read keywords written by `to_json`; None when they are absent or incomplete."""
        if not isinstance(data, Mapping):
            return None
        ref, pred, f1 = data.get("reference"), data.get("prediction"), data.get("bert_f1")
        if not (isinstance(ref, str) and isinstance(pred, str)):
            return None
        return cls(
            variant=str(data.get("variant") or ""),
            judge_model=_opt_str(data.get("judge_model")),
            reference=ref,
            prediction=pred,
            bert_f1=float(f1) if isinstance(f1, int | float) and not isinstance(f1, bool) else None,
            bert_model=_opt_str(data.get("bert_model")),
        )


# `error_code` of a row whose input cannot be sent (its image is missing or does not decode):
# a rerun alone cannot answer it, unlike a failed API call.
INPUT_ERROR = "input"


# Fields a results line adds to the input row; everything else on the line is the input row.
_OUTPUT_FIELDS = (
    "model_response",
    "raw_response",
    "reasoning_response",
    "error",
    "keywords",
    "_meta",
)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One results line: the input row unchanged, the model's answer, and how it was obtained.

    On disk: `{**row, "model_response", "raw_response", "error", ["keywords"], "_meta"}`, where
    `model_response` is the answer in the official format ("C", "B,D,A,C", the report text) that
    the official scorer reads.
    """

    row: Mapping[str, Any] = field(repr=False)  # the input row, untouched
    key: str | None  # the item key; None: a line written by another tool (never replaced)
    kind: Kind
    line: int = 0  # line in the input file
    model_response: Any = None  # a str from us; whatever another tool stored otherwise
    raw_response: str | None = None  # the model's visible reply, as received
    reasoning_response: str | None = None  # its thoughts, when it showed them (never read)
    finish_reason: str | None = None
    error: str | None = None  # why the row failed (retried on the next run); None: answered
    answer_source: AnswerSource | None = None
    model: str | None = None  # the model name the API reported
    request_id: str | None = None
    usage: Usage = Usage()
    error_status: int | None = None
    error_code: str | None = None
    judge_model: str | None = None  # the name the judge's API reported, when it mapped the answer
    judge_usage: Usage = Usage()
    keywords: Keywords | None = None  # report rows, once the judge extracted them

    @property
    def ours(self) -> bool:
        """Say whether our runner wrote this row (it has a key and usage)."""
        return self.key is not None

    def failed(
        self, message: str, *, status: int | None = None, code: str | None = None
    ) -> ResultRow:
        """Return this row marked failed (scored wrong, retried on the next run)."""
        return replace(self, error=message, error_status=status, error_code=code)

    def to_json(self) -> bytes:
        """Return the results line (without its newline)."""
        out: dict[str, Any] = {
            **self.row,
            "model_response": self.model_response,
            "raw_response": self.raw_response,
            "error": self.error,
        }
        if self.reasoning_response is not None:
            out["reasoning_response"] = self.reasoning_response
        if self.keywords is not None:
            out["keywords"] = self.keywords.to_json()
        meta: dict[str, Any] = {
            "key": self.key,
            "line": self.line,
            "kind": self.kind,
            "answer_source": self.answer_source,
            "model": self.model,
            "request_id": self.request_id,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_json(),
        }
        if self.error is not None:
            meta["error_status"] = self.error_status
            meta["error_code"] = self.error_code
        if self.judge_model is not None or self.judge_usage != Usage():
            meta["judge_model"] = self.judge_model
            meta["judge_usage"] = self.judge_usage.to_json()
        out["_meta"] = meta
        return orjson.dumps(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRow:
        """Read a results line: ours (with `_meta`), or another tool's (scored as it stands)."""
        row = {k: v for k, v in data.items() if k not in _OUTPUT_FIELDS}
        meta = data.get("_meta")
        meta = meta if isinstance(meta, Mapping) else {}
        kind = meta.get("kind")
        if kind not in KINDS:
            kind = row_kind(row) or "evidence"
        key = meta.get("key")
        error = data.get("error")
        source = meta.get("answer_source")
        raw = data.get("raw_response")
        thoughts = data.get("reasoning_response")
        return cls(
            row=row,
            key=key if isinstance(key, str) else None,
            kind=kind,
            line=_int(meta.get("line")),
            model_response=data.get("model_response"),
            raw_response=raw if isinstance(raw, str) else None,
            reasoning_response=thoughts if isinstance(thoughts, str) else None,
            finish_reason=_opt_str(meta.get("finish_reason")),
            error=None if error is None else str(error),
            answer_source=source if source in ANSWER_SOURCES else None,
            model=_opt_str(meta.get("model")),
            request_id=_opt_str(meta.get("request_id")),
            usage=Usage.from_json(meta.get("usage")),
            error_status=meta.get("error_status")
            if isinstance(meta.get("error_status"), int)
            else None,
            error_code=_opt_str(meta.get("error_code")),
            judge_model=_opt_str(meta.get("judge_model")),
            judge_usage=Usage.from_json(meta.get("judge_usage")),
            keywords=Keywords.from_json(data.get("keywords")),
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
