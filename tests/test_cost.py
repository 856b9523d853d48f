"""What a run costs: prices, the cost in rows and summary, and `--max-cost` against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from procs import drvd, lines_of, server_process

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ConfigError
from pipeline.model.budget import Budget, CostCapReached
from pipeline.providers.prices import PRICES, Price, price_for
from pipeline.records import FILES

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)

ROWS = 40
PRICE_IN, PRICE_OUT = 1000.0, 100.0  # USD per 1M tokens: large, so each row costs cents


def test_batch_price_is_the_table_s_or_half() -> None:
    assert Price(2.0, 8.0).cost(1_000_000, 500_000) == pytest.approx(6.0)
    assert Price(2.0, 8.0).cost(1_000_000, 500_000, batch=True) == pytest.approx(3.0)
    gpt = PRICES["gpt-4o"]
    assert gpt.cost(1_000_000, 0, batch=True) == pytest.approx(1.25)
    assert gpt.date
    assert gpt.source


def test_price_flags_replace_the_table_and_price_an_unknown_model() -> None:
    assert price_for("no-such-model") is None
    given = price_for("no-such-model", 1.0, 2.0)
    assert given is not None
    assert (given.input, given.output) == (1.0, 2.0)
    changed = price_for("gpt-4o", price_out=20.0)
    assert changed is not None
    assert (changed.input, changed.output) == (2.5, 20.0)
    assert changed.source == "--price-in/--price-out"


def _cfg(tmp_path: Path, env: dict[str, str] | None = None, **flags: object):
    base = {"model": "openai:m", "data": tmp_path, "base_url": "http://localhost:1/v1"}
    return load_config({**base, **flags}, {"DRVD_JUDGE": "none", **(env or {})})


def test_an_unpriced_model_needs_both_prices_and_a_cap_needs_a_price(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give --price-out"):
        _cfg(tmp_path, price_in=1.0)
    with pytest.raises(ConfigError, match="--max-cost needs the model's price"):
        _cfg(tmp_path, max_cost=5.0)
    cfg = _cfg(tmp_path, {"DRVD_PRICE_IN": "1", "DRVD_PRICE_OUT": "3", "DRVD_MAX_COST": "5"})
    assert cfg.price is not None
    assert (cfg.price.input, cfg.price.output, cfg.max_cost) == (1, 3, 5)
    with pytest.raises(ConfigError, match="DRVD_MAX_COST"):
        _cfg(tmp_path, {"DRVD_MAX_COST": "-1"})


def test_the_budget_counts_what_is_in_flight() -> None:
    budget = Budget(1.0, spent=0.5)
    first = budget.reserve(0.3)
    with pytest.raises(CostCapReached):
        budget.reserve(0.3)  # 0.5 paid + 0.3 in flight + 0.3 > 1.0
    assert budget.reached
    budget.settle(first, 0.1)  # billed less than reserved
    assert budget.spent == pytest.approx(0.6)
    assert budget.reserved == 0.0
    budget.reserve(0.3)  # fits now
    assert Budget(None).reserve(1e9) == 1e9  # no cap


async def test_a_reservation_that_does_not_fit_waits_for_those_in_flight_to_settle() -> None:
    budget = Budget(1.0)
    first, second = budget.reserve(0.4), budget.reserve(0.4)  # bounds; each will bill 0.1
    waiting = asyncio.create_task(budget.reserve_when_free(0.4))  # 0.8 + 0.4 > 1.0: it waits
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.settle(first, 0.1)  # 0.1 + 0.4 + 0.4 fits
    assert await asyncio.wait_for(waiting, 1) == 0.4
    assert not budget.reached
    budget.settle(second, 0.1)
    budget.settle(0.4, 0.1)
    assert budget.spent == pytest.approx(0.3)
    assert budget.open == 0
    # Nothing in flight and the bound still over what is left: refused at once.
    budget.spent = 0.7
    with pytest.raises(CostCapReached, match=r"cost cap \$1.00 reached"):
        await asyncio.wait_for(budget.reserve_when_free(0.4), 1)
    assert budget.reached


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    # 300 px: the estimate's Qwen image tokens (123) exceed the flat 85 the fake server bills.
    assert sum(write_dataset(root, total=ROWS, images=4, sizes=(300,)).values()) == ROWS
    return root


def _args(url: str, data: Path, tmp: Path, run: str, *more: str) -> list[str | Path]:
    return [
        "eval", "--model", "openai:m", "--base-url", url, "--data", data, "--out", tmp / "out",
        "--cache-dir", tmp / "cache", "--quiet", "--judge", "none", "--concurrency", "4",
        "--run-name", run, "--price-in", str(PRICE_IN), "--price-out", str(PRICE_OUT), *more,
    ]  # fmt: skip


def _rows(run: Path) -> list[dict]:
    return [row for stem in FILES for row in lines_of(run / f"{stem}.jsonl")]


def _summary(run: Path) -> dict:
    summary: dict = orjson.loads((run / "summary.json").read_bytes())
    return summary


def _billed(rows: list[dict]) -> float:
    """Recount the cost from each row's billed tokens, independently of the pipeline's sums."""
    usage = [row["_meta"]["usage"] for row in rows]
    cost = sum(u["prompt_tokens"] * PRICE_IN + u["completion_tokens"] * PRICE_OUT for u in usage)
    return float(cost) / 1e6


def test_max_cost_stops_at_the_cap_and_a_higher_cap_finishes_paying_nothing_twice(
    tmp_path: Path, data: Path
) -> None:
    run = tmp_path / "out" / "r"
    with server_process("--latency", "0.05") as server:
        cap = 3.0
        first = drvd(*_args(server.url, data, tmp_path, "r", "--max-cost", str(cap)))
        assert first.returncode == 4, first.stderr
        assert "Traceback" not in first.stderr
        assert "error:" not in first.stderr
        assert f"cost cap ${cap:.2f} reached" in first.stderr
        assert "rerun with a higher --max-cost to go on" in first.stderr
        rows = _rows(run)
        spent = _summary(run)["usage"]["cost_usd"]
        assert 0 < len(rows) < ROWS
        assert spent == pytest.approx(_billed(rows), abs=1e-6)
        # Each request reserved more than it was billed here (its prompt estimate and max_tokens
        # against the server's bill), so counting what was in flight kept the run under the cap.
        assert cap / 3 < spent <= cap
        assert _summary(run)["run"]["stopped"].startswith(f"cost cap ${cap:.2f} reached")
        paid_first = server.ledger()["paid"]
        assert paid_first == len(rows)  # nothing paid that is not in a row

        # The cap covers the run's earlier invocations: the same cap again pays for almost nothing.
        same = drvd(*_args(server.url, data, tmp_path, "r", "--max-cost", str(cap)))
        assert same.returncode == 4, same.stderr
        assert _summary(run)["usage"]["cost_usd"] <= cap

        again = drvd(*_args(server.url, data, tmp_path, "r", "--max-cost", "1000"))
        assert again.returncode == 0, again.stderr
        rows = _rows(run)
        assert len(rows) == ROWS
        assert all(row["error"] is None for row in rows)
        ledger = server.ledger()
        assert ledger["paid"] == ROWS
        assert ledger["duplicates"] == 0
        total = _summary(run)["usage"]
        assert total["cost_usd"] == pytest.approx(_billed(rows), abs=1e-6)
        assert total["cost_usd"] > spent
        assert "cost $" in again.stdout  # the terminal's usage line

        # The same rows in a new run: all from the cache, nothing paid, the saving counted.
        cached = drvd(*_args(server.url, data, tmp_path, "c", "--max-cost", "0"))
        assert cached.returncode == 0, cached.stderr  # cache hits are free: a 0 cap lets them by
        usage = _summary(tmp_path / "out" / "c")["usage"]
        assert (usage["cost_usd"], usage["cache_hits"]) == (0, ROWS)
        assert usage["saved_usd"] == pytest.approx(total["cost_usd"], abs=1e-6)
        assert server.ledger()["paid"] == ROWS


def test_the_progress_line_shows_the_running_cost() -> None:
    from pipeline.views.progress import RunProgress

    progress = RunProgress(10, enabled=False)
    assert "$0.5000" in progress.line({"cost_usd": 0.5})
    assert "$" not in progress.line({"cost_usd": 0.0})  # unpriced: no cost shown


CAP_ROWS = 100
CAP_PRICE_IN = 10.0  # USD per 1M prompt tokens: a row bills ~150 tokens, ~$0.0015


def test_max_cost_spends_most_of_the_cap_and_never_passes_it(tmp_path: Path) -> None:
    # 600 px images: the Qwen-rule estimate (~380 image tokens) is several times the flat 85 the
    # server bills, so each request reserves ~3x what it costs, as real bounds do.
    root = tmp_path / "data"
    write_dataset(root, total=CAP_ROWS, images=4, sizes=(600,))
    cap = 0.05
    with server_process("--latency", "0.05") as server:
        args: list[str | Path] = [
            "eval", "--model", "openai:m", "--base-url", server.url, "--data", root,
            "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--quiet",
            "--judge", "none", "--concurrency", "16", "--run-name", "r",
            "--price-in", str(CAP_PRICE_IN), "--price-out", "0", "--max-cost", str(cap),
        ]  # fmt: skip
        proc = drvd(*args)
        ledger = server.ledger()
    assert proc.returncode == 4, proc.stderr
    # Recounted from what the server billed and the price given, not from our sums.
    paid = ledger["prompt_tokens"] * CAP_PRICE_IN / 1e6
    per_row = paid / ledger["paid"]
    assert 0.001 < per_row < 0.002
    assert paid <= cap + 1e-9
    # Of the rows that fit in the cap, at least 80% were paid (the last reservations stop a
    # request or two short of it; stopping at the first one that did not fit paid about half).
    assert ledger["paid"] >= 0.8 * (cap / per_row)
    assert ledger["paid"] < CAP_ROWS
    assert f"spent ${paid:.4f} of ${cap:.2f}" in proc.stderr
    summary = _summary(tmp_path / "out" / "r")
    assert summary["usage"]["cost_usd"] == pytest.approx(paid, abs=1e-6)
