"""Prices per model, dated and sourced, and what a request may cost before it is sent.

USD per 1M tokens, from docs/PROVIDERS.md (checked 2026-11-24); yuan prices converted at
`CNY_PER_USD`. A model without a price here costs "unknown" until `--price-in`/`--price-out`
(DRVD_PRICE_IN/DRVD_PRICE_OUT) give one. Batch prices are what the provider's Batch API bills.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.providers.tokens import completion_bound, image_rule, prompt_tokens
from pipeline.records import ChatRequest

CNY_PER_USD = 7.2  # the rate yuan prices are converted at (2026-11)
MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """What one model bills, in USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None  # the provider's context-cache hits
    batch_input: float | None = None  # None: no Batch API price known (half, if it has one)
    batch_output: float | None = None
    date: str = ""  # when the source showed this price
    source: str = ""  # where it comes from (a URL, or "--price-in/--price-out")

    def rates(self, *, batch: bool = False) -> tuple[float, float]:
        """Return (input, output) USD per 1M tokens; through a Batch API its price, else half."""
        if not batch:
            return self.input, self.output
        return (
            self.batch_input if self.batch_input is not None else self.input / 2,
            self.batch_output if self.batch_output is not None else self.output / 2,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        """Return the USD cost of one call's tokens, at the batch price when `batch`."""
        rate_in, rate_out = self.rates(batch=batch)
        return (prompt_tokens * rate_in + completion_tokens * rate_out) / MILLION


def _cny(prices: tuple[float, float, float, float], date: str, source: str) -> Price:
    """Return yuan prices (input, output, batch input, batch output) in USD."""
    inp, out, batch_in, batch_out = (p / CNY_PER_USD for p in prices)
    return Price(inp, out, batch_input=batch_in, batch_output=batch_out, date=date, source=source)


_OPENAI = "https://developers.openai.com/api/docs/pricing (third-party copies, PROVIDERS §3)"
_DASHSCOPE = "https://help.aliyun.com/zh/dashscope/developer-reference/tongyi-qianwen-vl"
_DEEPSEEK = "https://api-docs.deepseek.com/quick_start/pricing"

# Keyed by API model id. qwen2.5-vl-72b-instruct (the `qwen` alias) has no confirmed price:
# `PRICE_PAGES` says where to read it.
PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25, 1.25, 5.00, "2026-11", _OPENAI),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075, 0.075, 0.30, "2026-11", _OPENAI),
    "qwen-vl-max": _cny((3.0, 9.0, 1.5, 4.5), "2025-02 (Beijing)", _DASHSCOPE),
    "qwen-vl-plus": _cny((1.5, 4.5, 0.75, 2.25), "2025-02 (Beijing)", _DASHSCOPE),
    # Peak hours (the higher price); no Batch API for DeepSeek.
    "deepseek-flash": Price(0.30, 1.20, 0.006, date="2026-11 (peak)", source=_DEEPSEEK),
    "deepseek-v4-pro": Price(1.32, 3.96, 0.044, date="2026-11 (peak)", source=_DEEPSEEK),
}


# Where to read a price we could not confirm (checked 2026-11-24; docs/PROVIDERS.md §8): `plan`
# says so instead of a bare "unknown". Neither the provider's vision page nor any user report we
# found states a per-token price for qwen2.5-vl-72b-instruct; the billing page sends readers to
# the Model Studio model list, which gives each model's current price per region.
_MODEL_STUDIO_PRICES = (
    "https://alibabacloud.com/help/en/model-studio/billing-for-model-studio (its model list; "
    "the Beijing and Singapore prices differ)"
)
PRICE_PAGES: dict[str, str] = {"qwen2.5-vl-72b-instruct": _MODEL_STUDIO_PRICES}


def price_for(
    model_id: str, price_in: float | None = None, price_out: float | None = None
) -> Price | None:
    """Return a model's price: the table's, with `--price-in`/`--price-out` replacing its parts.

    A model the table lacks needs both flags; one alone is a `ConfigError`-worthy gap the
    caller reports (this returns None then).
    """
    known = PRICES.get(model_id)
    if price_in is None and price_out is None:
        return known
    given = "--price-in/--price-out"
    if known is not None:
        changed = replace(known, date="given", source=given, batch_input=None, batch_output=None)
        return replace(
            changed,
            input=price_in if price_in is not None else known.input,
            output=price_out if price_out is not None else known.output,
        )
    if price_in is None or price_out is None:
        return None
    return Price(price_in, price_out, date="given", source=given)


def request_cost(
    price: Price, request: ChatRequest, model_id: str, provider: str, *, batch: bool = False
) -> float:
    """Return what a request may cost before it is sent: estimated prompt, completion bound."""
    prompt = prompt_tokens(request, image_rule(model_id, provider))
    return price.cost(prompt, completion_bound(request), batch=batch)
