"""What the judge adds to an answered row: a letter for an unreadable MCQ reply, report keywords.

Runs in the worker after the model answered and before the row is recorded. Judge calls go
through their own `APIModel` (response cache, throttle, retries), so a rerun pays for none twice.
A judge call that still fails raises: the runner fails the row, and a rerun retries it, with the
model's own answer then coming from the cache.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from pipeline.engine import APIModel
from pipeline.judge import JUDGE_SYSTEM, JUDGE_TEMPERATURE, judge_row
from pipeline.keywords import KEYWORD_TEMPERATURE, BertScore, KeywordCache, Variant, keywords_for
from pipeline.records import ChatRequest, Kind
from pipeline.scoring import report_pair


class Grader:
    """Maps unreadable MCQ replies with the judge and extracts report keywords (+ BERTScore)."""

    def __init__(
        self,
        judge: APIModel,
        *,
        variant: Variant,
        keywords: KeywordCache | None,
        bert: BertScore | None,
    ) -> None:
        self.judge = judge
        self.variant = variant
        self.keywords = keywords
        self.bert = bert

    def needs(self, row: dict[str, Any]) -> bool:
        """Say whether a finished row still lacks what this judge adds (it ran without one)."""
        meta = row.get("_meta") or {}
        if row.get("error") is not None:
            return False  # retried anyway
        if meta.get("kind") in ("evidence", "independent"):
            raw = row.get("raw_response")
            unread = meta.get("answer_source") == "none" and not meta.get("judge_model")
            return unread and isinstance(raw, str) and bool(raw.strip())
        return (
            meta.get("kind") == "report"
            and report_pair(row) is not None
            and not row.get("keywords")
        )

    async def grade(self, kind: Kind, row: dict[str, Any]) -> None:
        """Complete an answered results row in place; judge errors propagate."""
        meta = row["_meta"]
        models: set[str] = set()  # what the API reported answering this row's judge calls

        async def ask(system: str | None, prompt: str, temperature: float | None) -> str:
            request = ChatRequest(system, prompt, None, temperature=temperature)
            completion = await self.judge.complete_text(request)
            models.add(completion.model or self.judge.name)
            return completion.text

        if kind in ("evidence", "independent") and meta["answer_source"] == "none":
            letter, source = await judge_row(
                row,
                row["raw_response"],
                complete=partial(ask, JUDGE_SYSTEM, temperature=JUDGE_TEMPERATURE),
            )
            meta["answer_source"] = source
            meta["judge_model"] = ",".join(sorted(models)) or None
            if letter is not None:
                row["model_response"] = letter  # the bare letter, as the official scorer expects
        elif kind == "report" and (pair := report_pair(row)) is not None:
            # As official: a single user message, no system message, temperature 0.
            extract = partial(ask, None, temperature=KEYWORD_TEMPERATURE)
            ref, pred = await asyncio.gather(
                *(
                    keywords_for(text, complete=extract, cache=self.keywords, variant=self.variant)
                    for text in pair[1:]
                )
            )
            row["keywords"] = {
                "variant": self.variant,
                "judge_model": ",".join(sorted(models)) or self.judge.name,  # name: cached
                "reference": ref,
                "prediction": pred,
                "bert_f1": await self._bert_f1(ref, pred),
                "bert_model": self.bert.model if self.bert is not None else None,
            }

    async def _bert_f1(self, reference: str, prediction: str) -> float | None:
        if self.bert is None:
            return None
        if not reference or not prediction:
            return 0.0  # what bert-score gives an empty side (with a warning)
        return await self.bert.f1(reference, prediction)
