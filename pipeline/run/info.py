"""What the summary's `run` section says beyond the rows: the price, the endpoints, the judge."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pipeline.model.responder import APIModel
from pipeline.providers.prices import Price

NO_JUDGE = (
    "no judge: unreadable replies are scored as given (wrong, as official) and report keywords "
    "and BERTScore are not computed; set DEEPSEEK_API_KEY or pass --judge"
)


def price_info(price: Price | None) -> dict[str, Any] | None:
    """Return the price the run's costs are computed at (USD per 1M tokens), or None."""
    return None if price is None else {f.name: getattr(price, f.name) for f in fields(price)}


def endpoints(model: object) -> list[dict[str, Any]]:
    """Return what each endpoint of an API model did: requests, 429s, learned rate, latency."""
    return model.replicas.report() if isinstance(model, APIModel) else []
