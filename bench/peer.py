"""Peer: the same items through inspect-ai's OpenAI-compatible provider, when it is installed.

The child (`python -m bench.peer`) builds each row's messages exactly as the pipeline
does (official prompts; images from the same warm encoded-image cache) before its first request,
then runs one inspect-ai task with `max_connections` = C against the same simulator.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from bench.proc import ChildRun, Sim, clean_env, run_child
from bench.sections import MAIN_C, Bench, Measured
from bench.table import Line, ratio
from pipeline.data.dataset import iter_samples, present_files
from pipeline.data.images import ImageCache
from pipeline.data.prompts import build_request

LATENCIES = (0.5, 0.1)
TARGETS = {0.5: 1.8, 0.1: 5.0}  # issue #5: our steady rows/s over inspect-ai's
_MODEL = "openai-api/bench/bench-model"  # reads BENCH_BASE_URL and BENCH_API_KEY


def section_peer(b: Bench) -> None:
    """Compare steady rows/s with inspect-ai at the same concurrency, or say it was skipped."""
    what = f"ours / inspect-ai, steady rows/s at C={MAIN_C}"
    if importlib.util.find_spec("inspect_ai") is None or importlib.util.find_spec("openai") is None:
        b.lines.append(Line("peer", what, "skipped (pip install inspect-ai openai)"))
        return
    from bench.data import subset

    data = b.fresh("data-peer")
    rows = subset(b.data, data, MAIN_C * b.plan.waves)
    for latency in LATENCIES:
        sim = Sim(latency)
        ours = b.measure(data, rows, MAIN_C, sim)

        def child(url: str, out: Path, timeout: float) -> ChildRun:
            return run_inspect(b, data, url, out, timeout)

        theirs = b.measure(data, rows, MAIN_C, sim, child=child)
        b.lines.append(_line(latency, ours, theirs))


def _line(latency: float, ours: Measured, theirs: Measured) -> Line:
    speedup = ours.steady / theirs.steady if theirs.steady else float("nan")
    target = TARGETS[latency]
    return Line(
        "peer",
        f"ours / inspect-ai at C={MAIN_C}, L={latency:g} s",
        f"{speedup:.2f}x",
        f"ours {ours.steady:.1f}, inspect-ai {theirs.steady:.1f} rows/s; bound {ours.bound:.0f}",
        f"{ratio(theirs.steady, theirs.bound)} of bound for inspect-ai",
        f"≥ {target:g}x",
        speedup >= target,
        f"ours: {ours.detail()}. inspect-ai {_version()} (`max_connections`={MAIN_C}, "
        f"`log_images=False`, no scorer; CPU {theirs.cpu:.2f} s = "
        f"{theirs.cpu / max(theirs.requests, 1) * 1e3:.1f} ms per request incl. start-up): "
        + theirs.detail(),
    )


def _version() -> str:
    try:
        return str(importlib.import_module("inspect_ai").__version__)
    except Exception:
        return "?"


def run_inspect(
    b: Bench, data: Path, url: str, out: Path, timeout: float, *, adaptive: int = 0
) -> ChildRun:
    """Run the peer child; `adaptive` > 0: inspect-ai's adaptive connections up to that many."""
    c = adaptive or MAIN_C
    argv = [sys.executable, "-m", "bench.peer", str(data), url, str(c), str(b.cache)]
    env = clean_env(b.cache) | {
        "BENCH_BASE_URL": url,
        "BENCH_API_KEY": "bench",
        "INSPECT_LOG_DIR": str(out),
        "INSPECT_DISPLAY": "none",
    }
    out.mkdir(parents=True, exist_ok=True)
    argv += [str(out), *(["--adaptive"] if adaptive else [])]
    return run_child(argv, env=env, log=b.work / "peer.log", timeout=timeout)


def _samples(data: Path, cache: Path) -> list[Any]:
    dataset = importlib.import_module("inspect_ai.dataset")
    model = importlib.import_module("inspect_ai.model")
    images = ImageCache(cache)
    samples = []
    for stem in present_files(data):
        for sample in iter_samples(data, stem, on_error=lambda _e: None):
            request = build_request(sample)
            content = [model.ContentText(text=request.text)]
            if request.image is not None:
                content.append(model.ContentImage(image=images.data_url(request.image)))
            messages = [model.ChatMessageUser(content=content)]
            if request.system is not None:
                messages.insert(0, model.ChatMessageSystem(content=request.system))
            samples.append(dataset.Sample(id=f"{stem}-{sample.line}", input=messages, target=""))
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run the items of one dataset folder through inspect-ai (the peer child process)."""
    p = argparse.ArgumentParser(prog="python -m bench.peer")
    for name in ("data", "url", "concurrency", "cache", "log_dir"):
        p.add_argument(name)
    p.add_argument("--adaptive", action="store_true", help="adaptive_connections, not max_")
    args = p.parse_args(argv)
    inspect_ai = importlib.import_module("inspect_ai")
    solver = importlib.import_module("inspect_ai.solver")
    dataset = importlib.import_module("inspect_ai.dataset")
    samples = _samples(Path(args.data), Path(args.cache))
    task = inspect_ai.Task(dataset=dataset.MemoryDataset(samples), solver=solver.generate())
    c = int(args.concurrency)
    # adaptive_connections=N is AdaptiveConcurrency(max=N); an explicit max_connections turns it off
    connections = {"adaptive_connections": c} if args.adaptive else {"max_connections": c}
    logs = inspect_ai.eval(
        task,
        model=_MODEL,
        **connections,
        max_samples=c,
        display="none",
        log_dir=args.log_dir,
        log_images=False,
        score=False,
    )
    status = getattr(logs[0], "status", "?") if logs else "no log"
    print(f"inspect-ai: {len(samples)} samples, status {status}", file=sys.stderr)
    return 0 if status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
