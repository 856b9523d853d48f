"""A finished run's settings, read back from its folder, so its controls ask exactly as it did.

`summary.json` records what the run sent (`run`: model id, endpoint, protocol, dataset folder,
deviations, price, judge) and its results files which items it answered. The controls take those,
plus only what a run never records (API keys, pace, cache folder) from the flags and environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig, load_config
from pipeline.errors import ConfigError
from pipeline.records import FILES
from pipeline.results import latest_rows
from pipeline.scoring.summary import SUMMARY_NAME, read_summary

GIVEN_PRICE = "--price-in/--price-out"


def run_flags(
    run_dir: Path, summary: Mapping[str, Any], flags: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the flags `eval` would take to ask as the run did; `flags` add pace and keys."""
    run = summary.get("run")
    if not isinstance(run, Mapping) or not summary.get("model") or not run.get("data"):
        msg = f"{run_dir / SUMMARY_NAME}: no recorded settings (model, data); run eval first"
        raise ConfigError(msg)
    deviations = run.get("deviations") or {}
    judge = run.get("judge") or {}
    price = run.get("price") or {}
    given = price.get("source") == GIVEN_PRICE
    stems = [s for s in FILES if (run_dir / f"{s}.jsonl").is_file()]
    out: dict[str, Any] = {
        **flags,
        "model": summary["model"],
        "base_url": flags.get("base_url") or run.get("endpoint"),
        "data": run["data"],
        "files": ",".join(stems),
        "protocol": run.get("protocol"),
        "max_tokens": deviations.get("max_tokens"),
        "thinking": deviations.get("thinking"),
        "judge": judge.get("model") or "none",
        "judge_base_url": flags.get("judge_base_url") or judge.get("endpoint"),
        "keyword_prompt": judge.get("keyword_prompt"),
        "price_in": price.get("input") if given else None,
        "price_out": price.get("output") if given else None,
        "official_quirks": summary.get("scoring") == "official-quirks",
        "out": run_dir.parent,
        "run_name": run_dir.name,
        "batch": False,  # controls answer online
    }
    return out


def run_config(
    run_dir: Path, flags: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> EvalConfig:
    """Return the run's own configuration (its model, endpoint, protocol, data, judge)."""
    if not run_dir.is_dir():
        msg = f"{run_dir}: no such run folder"
        raise ConfigError(msg)
    summary = read_summary(run_dir)
    cfg = load_config(run_flags(run_dir, summary, flags), env)
    model_id = (summary.get("run") or {}).get("model_id")
    if model_id and model_id != cfg.spec.model:
        msg = (
            f"{run_dir}: the run asked model {model_id!r} but alias {cfg.spec.alias!r} now "
            f"names {cfg.spec.model!r}; pass the models file the run used (--models-file)"
        )
        raise ConfigError(msg)
    return replace(cfg, page=False)


def answered_items(run_dir: Path) -> dict[str, dict[str, str]]:
    """Return per file the run's answered items: key → image (the latest line of a key counts)."""
    latest = latest_rows(run_dir)
    return {
        stem: {
            key: str(row.row.get("image_paths")) for key, row in rows.items() if row.error is None
        }
        for stem, rows in latest.items()
    }
