"""How a `plan` is shown: a table per file and its totals, one line for `eval`, or JSON."""

from __future__ import annotations

from typing import Any

from pipeline.plan.estimate import (
    BASE_LATENCY,
    THINKING_REPLY,
    TOKENS_PER_SECOND,
    TYPICAL_REPLY,
    Plan,
    thinks,
)
from pipeline.plan.power import detectable_lines
from pipeline.providers.prices import PRICE_PAGES, Price


def plan_json(plan: Plan) -> dict[str, Any]:
    """Return the estimate as one JSON object (`plan --json`)."""
    cfg = plan.cfg
    judge = cfg.judge_config()
    return {
        "model": cfg.spec.alias,
        "model_id": cfg.spec.model,
        "rows": plan.total("rows"),
        "samples": cfg.samples,
        "cached": plan.cached,
        "answered": plan.total("answered"),
        "in_cache": plan.total("in_cache"),
        "cache_probed": plan.probed,
        "to_send": plan.total("send"),
        "invalid": plan.total("invalid"),
        "unsendable": plan.total("unsendable"),
        "prompt_tokens": plan.total("prompt_tokens"),
        "completion_tokens": plan.total("completion_tokens"),
        "cost_usd": _usd(plan.cost),
        "model_cost_usd": _usd(plan.model_cost),
        "judge_cost_usd": _usd(plan.judge_cost),
        "seconds": round(plan.seconds),
        "batch": cfg.batch,
        "price": _price_json(cfg.price, cfg.batch),
        "judge": {
            "model": judge.spec.alias if judge else None,
            "model_id": judge.spec.model if judge else None,
            "calls": plan.total("judge_calls"),
            "prompt_tokens": plan.total("judge_prompt_tokens"),
            "completion_tokens": plan.total("judge_completion_tokens"),
            "unreadable_share": plan.unreadable,
            "unreadable_from": "run" if plan.unreadable_measured else "default",
            "price": _price_json(plan.judge_price, False),
        },
        "limits": {"rpm": cfg.rpm, "tpm": cfg.tpm, "concurrency": cfg.concurrency},
        "assumed": {
            "latency_seconds": BASE_LATENCY,
            "reply_tokens_per_second": TOKENS_PER_SECOND,
            "typical_reply_tokens": dict(TYPICAL_REPLY),
            "thinking_tokens": THINKING_REPLY if thinks(cfg) else 0,
        },
        "files": {f.stem: f.to_json() for f in plan.files},
        "detectable": {d.stem: d.to_json() for d in plan.detectable},
        "notes": list(plan.notes),
    }


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _price_json(price: Price | None, batch: bool) -> dict[str, Any] | None:
    if price is None:
        return None
    rate_in, rate_out = price.rates(batch=batch)
    return {
        "input": rate_in,
        "output": rate_out,
        "batch": batch,
        "date": price.date,
        "source": price.source,
    }


def _count(n: float) -> str:
    """Return a token or row count in a short form: 950, 12.3k, 4.56M."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e4 else f"{round(n):,}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{round(seconds)} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _price_line(who: str, price: Price, batch: bool) -> str:
    rate_in, rate_out = price.rates(batch=batch)
    kind = " (batch)" if batch else ""
    dated = "given" if price.date == "given" else f"dated {price.date or '-'}"
    return (
        f"price{kind}: {who} ${rate_in:g} in, ${rate_out:g} out per 1M tokens; "
        f"{dated}; source {price.source or '-'}"
    )


def _usd_text(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


def cost_text(plan: Plan) -> str:
    """Say the cost, or why it is unknown and how to give the price."""
    cfg = plan.cfg
    if plan.cost is not None:
        judge = f" (judge {_usd_text(plan.judge_cost)})" if plan.judge_cost else ""
        return f"{_usd_text(plan.cost)}{judge}"
    if plan.model_cost is None:
        page = PRICE_PAGES.get(cfg.spec.model)
        where = f" (none confirmed as of 2026-11-24; read it at {page})" if page else ""
        return (
            f"unknown: {cfg.spec.model} has no price on record{where}; give one with --price-in "
            "and --price-out (USD per 1M tokens; or DRVD_PRICE_IN, DRVD_PRICE_OUT)"
        )
    judge = cfg.judge.model if cfg.judge else "the judge"
    model = _usd_text(plan.model_cost)
    return f"unknown: model {model}, and {judge} (the judge) has no price on record"


def time_text(plan: Plan) -> str:
    """Say how long the calls would take, and at which limits and assumptions."""
    cfg = plan.cfg
    if not cfg.spec.remote:
        return "no API calls (offline model)"
    if not plan.total("send"):
        return "nothing to send"
    if cfg.batch and plan.total("send"):
        return "within 24 h (the Batch API's window); batch calls do not count against rpm/tpm"
    limits = f"rpm {cfg.rpm:g}" if cfg.rpm else "no rpm limit"
    limits += f", tpm {cfg.tpm:g}" if cfg.tpm else ""
    return (
        f"~{_duration(plan.seconds)} at {limits}, concurrency {cfg.concurrency}, assuming "
        f"{BASE_LATENCY:g} s + 1 s per {TOKENS_PER_SECOND:g} reply tokens per call"
    )


def plan_lines(plan: Plan) -> list[str]:
    """Return the human report: a table per file, the totals, prices, judge, time."""
    cfg = plan.cfg
    head = ["file", "rows", "answered", "cached", "to send", "prompt", "reply/call", "completion"]
    table = [head]
    for f in plan.files:
        reply = f"{f.reply:.0f} {'run' if f.measured else 'typical'}"
        counts = [f"{n:,}" for n in (f.rows, f.answered, f.in_cache, f.send)]
        tokens = [_count(f.prompt_tokens), reply, _count(f.completion_tokens)]
        table.append([f.stem, *counts, *tokens])
    counts = [f"{plan.total(n):,}" for n in ("rows", "answered", "in_cache", "send")]
    tokens = [_count(plan.total("prompt_tokens")), "", _count(plan.total("completion_tokens"))]
    table.append(["total", *counts, *tokens])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [
        f"plan: {cfg.spec.alias} ({cfg.spec.model}), data {cfg.data}, protocol {cfg.protocol}, "
        f"run folder {cfg.run_dir}{', --batch' if cfg.batch else ''}"
    ]
    if cfg.samples > 1:
        lines.append(
            f"--samples {cfg.samples}: rows, calls, tokens, cost and time count every sample"
        )
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    if not plan.probed:
        lines.append("cached: the response cache was not looked into")
    lines.append(f"cost: {cost_text(plan)}")
    if cfg.price is not None and cfg.spec.remote:
        lines.append(_price_line(cfg.spec.model, cfg.price, cfg.batch))
    lines.append(_judge_line(plan))
    if (judge_price := plan.judge_price) is not None and plan.total("judge_calls"):
        lines.append(_price_line(f"judge {judge_price_name(plan)}", judge_price, False))
    lines.append(f"time: {time_text(plan)}")
    bad = plan.total("invalid") + plan.total("unsendable")
    if bad:
        lines.append(f"{bad} rows fail without a call (lines that are no rows, unreadable images)")
    lines += detectable_lines(plan.detectable)
    lines += [f"note: {n}" for n in plan.notes]
    return lines


def judge_price_name(plan: Plan) -> str:
    """Return the judge's API model id."""
    return plan.cfg.judge.model if plan.cfg.judge else "-"


def _judge_line(plan: Plan) -> str:
    cfg = plan.cfg
    if cfg.judge is None:
        return "judge: none (eval uses deepseek when DEEPSEEK_API_KEY is set; or pass --judge)"
    source = "this run's" if plan.unreadable_measured else "assumed"
    return (
        f"judge: {cfg.judge.alias} ({cfg.judge.model}), {plan.total('judge_calls'):,} calls, "
        f"{_count(plan.total('judge_prompt_tokens'))} prompt + "
        f"{_count(plan.total('judge_completion_tokens'))} completion tokens (report keywords; "
        f"mapper for {plan.unreadable:.0%} unreadable MCQ replies, {source} share)"
    )


def eval_line(plan: Plan) -> str:
    """Return the estimate `eval` prints before it starts, in one line."""
    quick = " (quick: cache not probed, tokens from a sample of rows)" if plan.quick else ""
    if plan.cfg.samples > 1:
        quick += f" (--samples {plan.cfg.samples}: rows count every sample)"
    if not plan.cfg.spec.remote:
        return f"estimate: {plan.total('rows'):,} rows, offline model: no API call, no cost"
    return (
        f"estimate{quick}: {plan.total('rows'):,} rows, {plan.cached:,} done, "
        f"{plan.total('send'):,} to send: {_count(plan.total('prompt_tokens'))} prompt + "
        f"{_count(plan.total('completion_tokens'))} completion tokens, "
        f"{plan.total('judge_calls'):,} judge calls; cost {cost_text(plan)}; {time_text(plan)}"
    )
