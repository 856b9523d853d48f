"""Issues #13 and #14: what a run leaves to look at, and what `--batch` costs and saves.

report: `python -m pipeline eval --model random --judge none` over the full-size set as a child
process, from a new cache folder and again cached, each into a new run folder; `score RUN` and
`compare RUN1 RUN2`; the sizes of report.html, RUN/report/ (thumbnails), RUN/plots/ and
CACHE/sent/; then the page in Debian's headless Chromium (selenium): navigation timing, a text
search over every row, and the row count it shows.
batch: the same rows online and through the simulator's Batch API (`--batch`), then with 5% of
the batch lines failing once: rows answered, calls, cost at the given prices, lines paid twice.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from PIL import Image

from bench.data import subset
from bench.proc import ChildRun, Server, Sim, clean_env, run_child
from bench.sections import Bench
from bench.table import Line, ratio
from pipeline.records import FILES
from pipeline.views.page import ASSETS, REPORT_NAME, SENT, THUMB_PX

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LOADS = 3  # timed page loads, after one warm-up
OPEN_TARGET = 3.0  # seconds (issue #14)
SEARCH = "(item 7)"  # a question's text: the search reads every row
BATCH_ROWS = 1000
BATCH_DELAY = 2.0  # seconds from a batch's creation to its end, on the simulator
BATCH_POLL = "0.2"  # DRVD_BATCH_POLL: seconds between the pipeline's looks at a batch
FAIL_RATE = 0.05
ONLINE = Sim(0.1)
BATCH_C = 64
PRICES = ("--price-in", "2", "--price-out", "8")


def _eval(b: Bench, name: str, data: Path, out: Path, cache: Path, *flags: str) -> ChildRun:
    argv = [
        sys.executable, "-m", "pipeline", "eval", "--data", str(data), "--out", str(out),
        "--run-name", "run", "--judge", "none", "--quiet", *flags,
    ]  # fmt: skip
    env = clean_env(cache) | {"DRVD_BATCH_POLL": BATCH_POLL}
    run = run_child(argv, env=env, log=b.work / f"{name}.log", timeout=900)
    path = out / "run" / "summary.json"
    summary = orjson.loads(path.read_bytes()) if path.exists() else {}
    return ChildRun(run.start, run.exit, summary)


def _command(b: Bench, cache: Path, *args: str) -> ChildRun:
    argv = [sys.executable, "-m", "pipeline", *args]
    return run_child(argv, env=clean_env(cache), log=b.work / "report.log", timeout=600)


def _size(path: Path) -> tuple[int, int]:
    """Return the bytes and the number of files under `path` (or of the file itself)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _ran(run: ChildRun) -> str:
    return f"exit {run.exit.code}, CPU {run.exit.cpu:.1f} s, peak RSS {run.exit.rss_mb:.0f} MB"


def section_report(b: Bench) -> None:
    """Time eval (cold, cached), score and compare; size the run; open the page in Chromium."""
    data, rows = b.data, b.plan.rows
    cache = b.fresh("report-cache")
    first, again, other = b.fresh("report-run"), b.fresh("report-rerun"), b.fresh("report-seed1")
    cold = _eval(b, "report", data, first, cache, "--model", "random")
    cached = _eval(b, "report", data, again, cache, "--model", "random")
    run = first / "run"
    how = f"`python -m pipeline eval --model random --judge none --quiet` over {rows:,} rows, "
    b.lines.append(
        Line(
            "report",
            f"eval --model random, {rows:,} rows, new cache and run folder",
            f"{cold.wall:.1f} s wall",
            detail=how + f"new cache folder; {_ran(cold)}",
        )
    )
    b.lines.append(
        Line(
            "report",
            "same eval, cached, into a new run folder",
            f"{cached.wall:.1f} s wall",
            f"cold {cold.wall:.1f} s",
            ratio(cached.wall, cold.wall),
            detail=how + f"same cache folder, new --out; {_ran(cached)}",
        )
    )
    scored = _command(b, cache, "score", str(run))
    b.lines.append(
        Line(
            "report",
            "`score RUN` (rescore, rewrite summary and report)",
            f"{scored.wall:.1f} s wall",
            detail=f"on the cold run's folder; {_ran(scored)}",
        )
    )
    _sizes(b, run, cache)
    _page(b, run / REPORT_NAME, rows)
    seeded = _eval(b, "report", data, other, cache, "--model", "random", "--seed", "1")
    done = _command(b, cache, "compare", str(run), str(other / "run"), "--out", str(b.fresh("cmp")))
    b.lines.append(
        Line(
            "report",
            f"`compare RUN1 RUN2`, two {rows:,}-row runs",
            f"{done.wall:.1f} s wall",
            detail=f"leaderboard, tests, plots of the cold run and a --seed 1 run (its eval "
            f"{seeded.wall:.1f} s, exit {seeded.exit.code}); {_ran(done)}",
        )
    )


def _sizes(b: Bench, run: Path, cache: Path) -> None:
    page, _ = _size(run / REPORT_NAME)
    thumbs, n_thumbs = _size(run / ASSETS)
    plots, n_plots = _size(run / "plots")
    sent, n_sent = _size(cache / SENT)
    widest = max((max(Image.open(p).size) for p in (run / ASSETS).rglob("*.jpg")), default=0)
    total = page + thumbs + plots
    b.lines.append(
        Line(
            "report",
            "RUN/report.html",
            _mb(page),
            f"page + thumbnails + plots {_mb(total)}",
            ratio(page, total),
            detail="the page with every row's card data inline (bytes on disk)",
        )
    )
    b.lines.append(
        Line(
            "report",
            f"RUN/{ASSETS}/ (thumbnails)",
            f"{_mb(thumbs)}, {n_thumbs:,} files, ≤ {widest} px",
            f"page + thumbnails + plots {_mb(total)}",
            ratio(thumbs, total),
            f"dominant (> 50%), ≤ {THUMB_PX} px",
            thumbs > total / 2 and 0 < widest <= THUMB_PX,
            "every .jpg opened with PIL for its longest side",
        )
    )
    b.lines.append(Line("report", "RUN/plots/", f"{_mb(plots)}, {n_plots} files"))
    b.lines.append(
        Line(
            "report",
            f"CACHE/{SENT}/ (images as sent, shared by all runs on the cache)",
            f"{_mb(sent)}, {n_sent:,} files",
            detail="written once per (image, size, quality); not in any run folder",
        )
    )


def _page(b: Bench, page: Path, rows: int) -> None:
    """Open the page in headless Chromium: load times, a search, the row count."""
    missing = [str(p) for p in (CHROMIUM, DRIVER) if not p.exists()]
    if importlib.util.find_spec("selenium") is None:
        missing.insert(0, "selenium")
    if missing:
        why = f"skipped ({', '.join(missing)} missing: `make test` installs them)"
        b.lines.append(Line("report", "report.html open time in headless Chromium", why))
        return
    with _chromium() as chrome:
        url = page.resolve().as_uri()
        timings = [_load(chrome, url) for _ in range(LOADS + 1)][1:]
        shown = int(chrome.execute_script(_COUNT_JS))
        found, took = chrome.execute_script(_SEARCH_JS, SEARCH)
    load = statistics.median(t["load"] for t in timings)
    ready = statistics.median(t["dom"] for t in timings)
    each = ", ".join(f"{t['load']:.2f}" for t in timings)
    how = (
        f"{page.stat().st_size / 1e6:.1f} MB page opened from disk (file://) in Debian's "
        "chromium --headless=new via selenium and chromedriver, window 1280x1000; median of "
        f"{LOADS} loads after one warm-up, from navigation timing"
    )
    b.lines.append(
        Line(
            "report",
            f"report.html open time (loadEventEnd), {rows:,} rows",
            f"{load:.2f} s",
            f"DOMContentLoaded {ready:.2f} s",
            target=f"< {OPEN_TARGET:g} s",
            met=load < OPEN_TARGET,
            detail=f"{how}; loadEventEnd of each load {each} s",
        )
    )
    b.lines.append(
        Line(
            "report",
            f"search over all rows ({SEARCH!r} in #search)",
            f"{took * 1e3:.0f} ms",
            f"{found:,} rows match",
            detail="from the input event until #match-count changed (the first search also "
            "builds each row's lower-cased text), on the last load",
        )
    )
    b.lines.append(
        Line(
            "report",
            "#match-count on open = rows of the run",
            f"{shown:,}",
            f"{rows:,} rows",
            target="equal",
            met=shown == rows,
        )
    )


_COUNT_JS = "return document.getElementById('match-count').textContent"
_SEARCH_JS = """
const box = document.getElementById('search'), count = document.getElementById('match-count');
const before = count.textContent, t0 = performance.now();
let after = before;
const seen = new MutationObserver(() => { after = count.textContent; });
seen.observe(count, {childList: true, characterData: true, subtree: true});
box.value = arguments[0];
box.dispatchEvent(new Event('input', {bubbles: true}));
const took = (performance.now() - t0) / 1000;
seen.disconnect();
after = count.textContent;
return [after === before ? -1 : Number(after), took];
"""


def _load(chrome: Any, url: str) -> dict[str, float]:
    chrome.get("about:blank")
    chrome.get(url)  # returns once the load event has fired
    entry: dict[str, float] = chrome.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {load: n.loadEventEnd / 1000, dom: n.domContentLoadedEventEnd / 1000};"
    )
    return entry


@contextmanager
def _chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    try:
        yield chrome
    finally:
        chrome.quit()


def _ledger(server: Server) -> dict[str, Any]:
    root = server.url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_ledger", timeout=10) as resp:
        got: dict[str, Any] = orjson.loads(resp.read())
    return got


def _served(
    b: Bench, data: Path, *flags: str, fail: float = 0.0
) -> tuple[ChildRun, dict[str, Any]]:
    """Run the pipeline over `data` against a new simulator; return the run and its ledger.

    The ledger gets `answered`, the rows of the run folder without an error, and `span`, the
    seconds from the first request (or batch line) received to the last.
    """
    args = ("--batch-delay", f"{BATCH_DELAY:g}", "--batch-fail-rate", f"{fail:g}")
    out = b.fresh("batch-run")
    with Server(ONLINE, b.work, args=args, name="ledger-batch") as server:
        run = _eval(
            b, "batch", data, out, b.cache, "--model", "openai:bench-model", "--base-url",
            server.url, "--concurrency", str(BATCH_C), "--no-cache", *PRICES, *flags,
        )  # fmt: skip
        ledger = _ledger(server)
    got = server.received  # read from its ledger file when it stopped
    span = got[-1] - got[0] if got else 0.0
    return run, ledger | {"answered": _answered(out), "span": span}


def _answered(out: Path) -> int:
    """Count the rows of a run folder's results files that carry no error."""
    paths = (out / "run" / f"{stem}.jsonl" for stem in FILES)
    return sum(
        orjson.loads(line)["error"] is None
        for path in paths
        if path.exists()
        for line in path.read_bytes().splitlines()
    )


def section_batch(b: Bench) -> None:
    """The same rows online and with --batch: calls, cost, batches, lines re-sent, none paid twice."""
    data = b.fresh("data-batch")
    rows = subset(b.data, data, BATCH_ROWS)
    online, on_ledger = _served(b, data)
    batch, ledger = _served(b, data, "--batch")
    failing, f_ledger = _served(b, data, "--batch", fail=FAIL_RATE)
    use, bus, fus = (r.summary.get("usage", {}) for r in (online, batch, failing))
    same = use.get("prompt_tokens") == bus.get("prompt_tokens")
    tokens = f"{use.get('prompt_tokens', 0):,} + {use.get('completion_tokens', 0):,}"
    how = (
        f"{rows:,} rows (the full set's first rows in proportion), `--no-cache`, warm image "
        f"cache, {' '.join(PRICES)}; simulator L={ONLINE.latency:g} s online, a batch ends "
        f"{BATCH_DELAY:g} s after its creation, DRVD_BATCH_POLL={BATCH_POLL}; counts from "
        "the simulator's /_ledger, costs from summary.json"
    )
    b.lines.append(
        Line(
            "batch",
            f"online, C={BATCH_C}: rows answered / API calls / 429s",
            f"{on_ledger['answered']:,} / {use.get('api_calls', 0):,} / "
            f"{on_ledger['outcomes'].get('429', 0)}",
            f"{rows:,} rows",
            target="all rows, no 429",
            met=on_ledger["answered"] == on_ledger["paid"] == rows
            and not on_ledger["outcomes"].get("429"),
            detail=f"{how}; wall {online.wall:.1f} s, of which {on_ledger['span']:.1f} s from "
            f"the first request to the last (bound {rows / (BATCH_C / ONLINE.latency):.1f} s); "
            f"the rest is start-up, report.html and plots; {_ran(online)}; {tokens} tokens",
        )
    )
    b.lines.append(
        Line(
            "batch",
            "--batch: rows answered / batch lines / batches",
            f"{ledger['answered']:,} / {ledger['batch_lines']:,} / {ledger['batches']}",
            f"{rows:,} rows",
            target="all rows, one batch",
            met=ledger["answered"] == ledger["paid"] == rows == ledger["batch_lines"]
            and ledger["batches"] == 1,
            detail=f"{how}; wall {batch.wall:.1f} s with the {BATCH_DELAY:g} s batch delay "
            f"(online {online.wall:.1f} s); {_ran(batch)}; batch_calls {bus.get('batch_calls')}",
        )
    )
    cost_on, cost_b = float(use.get("cost_usd", 0.0)), float(bus.get("cost_usd", 0.0))
    b.lines.append(
        Line(
            "batch",
            "cost_usd, --batch / online",
            f"${cost_b:.4f} / ${cost_on:.4f}",
            "same tokens" if same else "tokens differ",
            ratio(cost_b, cost_on),
            "50%, same tokens",
            same and cost_on > 0 and abs(cost_b / cost_on - 0.5) < 1e-6,
            f"prompt + completion tokens online {tokens}, --batch "
            f"{bus.get('prompt_tokens', 0):,} + {bus.get('completion_tokens', 0):,}",
        )
    )
    resent = f_ledger["batch_lines"] - rows
    dups = f_ledger["duplicates"]
    b.lines.append(
        Line(
            "batch",
            f"--batch, {FAIL_RATE:.0%} lines fail once: re-sent / paid twice",
            f"{resent} / {dups}",
            f"{f_ledger['outcomes'].get('500', 0)} lines failed; {f_ledger['batches']} batches",
            target="re-sent = failed, 0 paid twice",
            met=resent == f_ledger["outcomes"].get("500", 0)
            and dups == 0
            and f_ledger["paid"] == rows == f_ledger["answered"],
            detail=f"{how}; paid {f_ledger['paid']:,}, rows answered {f_ledger['answered']:,}, "
            f"wall {failing.wall:.1f} s, {_ran(failing)}; cost ${fus.get('cost_usd', 0.0):.4f}",
        )
    )
