"""What only the run knows, for its summary's `run` section: settings, bad lines, why it stopped."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig
from pipeline.model.responder import APIModel, Responder
from pipeline.providers.prices import Price
from pipeline.scoring.judge import Judge

NO_JUDGE = (
    "no judge: unreadable replies are scored as given (wrong, as official) and report keywords "
    "and BERTScore are not computed; set DEEPSEEK_API_KEY or pass --judge"
)


def run_info(
    cfg: EvalConfig,
    root: Path,
    responder: Responder,
    judge: Judge | None,
    invalid: list[str],
    stopped: str | None,
) -> dict[str, Any]:
    """Return the run's settings, its bad input lines (`FILE:LINE: message`), and why it stopped."""
    judged: dict[str, Any] = {"model": None, "note": NO_JUDGE}
    if judge is not None and (spec := cfg.judge) is not None:
        bert = judge.bert
        judged = {
            "model": spec.alias,
            "model_id": spec.model,
            "endpoint": spec.base_url,
            "keyword_prompt": judge.variant,
            "bertscore_model": bert.model if bert is not None else None,
            "endpoints": _endpoints(judge.model),
        }
    return {
        "protocol": cfg.protocol,
        "model_id": cfg.spec.model,
        "endpoint": cfg.spec.base_url,
        "data": str(root.resolve()),
        "deviations": cfg.deviations,
        "invalid_rows": invalid,
        "stopped": stopped,
        "price": _price_info(cfg.price),
        "max_cost_usd": cfg.max_cost,
        "judge": judged,
        "endpoints": _endpoints(responder),
    }


def _price_info(price: Price | None) -> dict[str, Any] | None:
    """Return the price the run's costs are computed at (USD per 1M tokens), or None."""
    return None if price is None else {f.name: getattr(price, f.name) for f in fields(price)}


def _endpoints(model: object) -> list[dict[str, Any]]:
    """Return what each endpoint of an API model did: requests, 429s, learned rate, latency."""
    return model.replicas.report() if isinstance(model, APIModel) else []
