"""The judge: what a second model adds to an answered row (PROTOCOL §2.5, §3.3).

    MCQ row the extractor could not read ──mapper prompt──▶ an offered letter, or still "none"
    report row ──keyword prompt, for reference and prediction──▶ keywords, then BERTScore F1

Runs in the worker after the model answered and before the row is recorded. Judge calls go
through their own model (response cache, in-flight dedupe, throttle, retries), so a rerun pays
for none twice and a reference's keywords are paid for once across every evaluated model. A judge
call that still fails fails the row, and a rerun retries it with the model's answer from the
cache; a fatal judge error (bad key) stops the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, Protocol

from pipeline.errors import APIError, FatalAPIError
from pipeline.knobs import DEFAULT_KEYWORD_PROMPT
from pipeline.records import ChatRequest, Completion, Keywords, Outcome, ResultRow, Usage
from pipeline.scoring.metrics import BertScore
from pipeline.scoring.official import report_pair
from pipeline.scoring.reader import extract_choice, option_letters

Variant = Literal["repo", "pypi"]

# The official mapper (map_model_response.py): this system message, temperature not sent.
JUDGE_SYSTEM = "You are a helpful assistant."
JUDGE_TEMPERATURE: float | None = None
# Both official keyword scripts: one user message, no system message, temperature 0.
KEYWORD_TEMPERATURE = 0.0
DEFAULT_VARIANT: Variant = DEFAULT_KEYWORD_PROMPT

# report_generation_metric.py (repo), exact.
REPO_PROMPT = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both **normal "
    "findings** (e.g., 'no lung opacity', 'normal heart size') and **abnormal findings** (e.g., "
    "'fracture', 'tumor mass'). Exclude any details that cannot be inferred from the image "
    "itself (e.g., patient history, lab values).\n\n"
    "{text}\n\n"
    "Return a concise, comma-separated list of visually identifiable clinical features. Do not "
    "include any irrelevant words or phrases, do not include explanations."
)
# drvd_bench/report_metric.py (PyPI 0.2.2), exact.
PYPI_PROMPT = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both normal "
    "findings and abnormal findings.\n\n"
    "{text}\n\n"
    "Return a concise, comma-separated list of visually identifiable features."
)
PROMPTS: dict[str, str] = {"repo": REPO_PROMPT, "pypi": PYPI_PROMPT}


class TextModel(Protocol):
    """A model that answers text-only requests (`models.APIModel`)."""

    name: str

    async def complete_text(self, request: ChatRequest) -> Outcome:
        """Return the reply, or the error it ended with, and what it cost."""
        ...


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


def keyword_prompt(text: str, variant: Variant = DEFAULT_VARIANT) -> str:
    """Return the official keyword-extraction prompt for `text`."""
    # str.format does not re-read the inserted text, so braces in a report are safe.
    return PROMPTS[variant].format(text=text)


class Judge:
    """Maps unreadable MCQ replies to a letter and extracts report keywords (+ BERTScore)."""

    def __init__(self, model: TextModel, *, variant: Variant, bert: BertScore | None) -> None:
        self.model = model
        self.variant = variant
        self.bert = bert

    def needs(self, row: ResultRow) -> bool:
        """Say whether an answered row still lacks what the judge adds (it ran without one)."""
        if row.error is not None:
            return False  # retried anyway
        if row.kind in ("evidence", "independent"):
            unread = row.answer_source == "none" and row.judge_model is None
            return unread and bool((row.raw_response or "").strip())
        return (
            row.kind == "report"
            and row.keywords is None
            and report_pair(row.row, row.model_response) is not None
        )

    async def grade(self, row: ResultRow) -> ResultRow:
        """Return the row completed by the judge, or failed when a judge call failed.

        A `FatalAPIError` propagates: every later row would fail the same way.
        """
        calls = _Calls(self.model)
        try:
            if row.kind in ("evidence", "independent") and row.answer_source == "none":
                row = await self._map(row, calls)
            elif row.kind == "report" and (pair := report_pair(row.row, row.model_response)):
                row = replace(row, keywords=await self._keywords(pair[1:], calls))
        except FatalAPIError:
            raise
        except APIError as exc:
            row = row.failed(f"judge: {exc}", status=exc.status, code=exc.code)
        return replace(row, judge_usage=row.judge_usage + calls.usage)

    async def _map(self, row: ResultRow, calls: _Calls) -> ResultRow:
        """Ask the official mapper question; keep the answer only if it names an offered letter."""
        question, options = row.row.get("question"), row.row.get("options")
        if not isinstance(question, str) or not isinstance(options, list):
            return row
        texts = [o for o in options if isinstance(o, str)]
        answer = (row.raw_response or "").strip()  # stripped, as the official mapper sends it
        if not option_letters(texts) or not answer:
            return row
        request = ChatRequest(
            JUDGE_SYSTEM, mapper_prompt(question, texts, answer), None, JUDGE_TEMPERATURE
        )
        reply = await calls.ask(request)
        # The judge's reply goes through the same reader as the model's; the official mapper
        # stores "C. CT", which its own scorer counts wrong, so we store the bare letter.
        letter = extract_choice(reply.text, texts)
        if letter is None:
            return replace(row, judge_model=calls.model_name())
        return replace(
            row, model_response=letter, answer_source="judge", judge_model=calls.model_name()
        )

    async def _keywords(self, texts: tuple[str, ...], calls: _Calls) -> Keywords:
        """Extract the reference's and the prediction's keywords, then their BERTScore."""

        async def extract(text: str) -> str:
            request = ChatRequest(
                None, keyword_prompt(text, self.variant), None, KEYWORD_TEMPERATURE
            )
            return (await calls.ask(request)).text.strip()  # as official

        reference, prediction = await asyncio.gather(*(extract(t) for t in texts))
        bert = await self.bert.f1(reference, prediction) if self.bert is not None else None
        return Keywords(
            variant=self.variant,
            judge_model=calls.model_name(),
            reference=reference,
            prediction=prediction,
            bert_f1=bert,
            bert_model=self.bert.model if self.bert is not None else None,
        )


class _Calls:
    """The judge calls made for one row: their usage and the model names the API reported."""

    def __init__(self, model: TextModel) -> None:
        self.model = model
        self.usage = Usage()
        self.models: set[str] = set()

    async def ask(self, request: ChatRequest) -> Completion:
        outcome = await self.model.complete_text(request)
        self.usage = self.usage + outcome.usage
        if outcome.completion is None:
            raise outcome.error or APIError("the judge gave no answer")
        self.models.add(outcome.completion.model or self.model.name)
        return outcome.completion

    def model_name(self) -> str:
        return ",".join(sorted(self.models)) or self.model.name
