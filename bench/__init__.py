"""`make bench`: measure drvd-pipeline against the physical bound and write docs/BENCHMARKS.md.

python -m bench [--quick] [--only SECTION,...] [--keep] [--workdir DIR]

The `mutants` section (last) is the test suite's mutation check: `python -m bench.mutants`.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.proc import REPO, stop_all
from bench.sections import SECTIONS, Bench, Plan, run_sections
from bench.table import Line, load, machine, render_markdown, render_text

FAILED = "section failed"
DEFAULT_OUTPUT = REPO / "docs" / "BENCHMARKS.md"
_METHOD = (
    "simulator: `tests/fakeserver.py` as its own process on 127.0.0.1 (aiohttp, one event "
    "loop), a fresh one per measurement, answering after L seconds (plus U(0, J) jitter)",
    "pipeline: `python -m pipeline eval --model openai:bench-model --base-url <simulator> "
    "--concurrency C --quiet` as its own process; CPU and peak RSS are that process's own "
    "(wait4 rusage)",
    "bound = min(C / L, RPM / 60) rows/s (no RPM cap unless stated); the steady rate is rows / "
    "(last request received - first request received + mean L), on the simulator's clock, so "
    "start-up (spawn → first request, reported apart) and teardown are excluded; the wall "
    "time of each run is given in the method list",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the bench's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark drvd-pipeline against a local latency/fault simulator; print a "
        "table and rewrite docs/BENCHMARKS.md. The full run takes about 6-10 minutes on 2 cores.",
    )
    p.add_argument("--quick", action="store_true", help="small smoke version (about a minute)")
    p.add_argument("--only", help=f"comma list of sections to run: {','.join(SECTIONS)}")
    p.add_argument("--rows", type=int, help="rows of the full-size set (default 7789)")
    p.add_argument("--images", type=int, help="distinct images in the set (default 400)")
    p.add_argument("--workdir", type=Path, help="where data and runs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report path")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    return p


def _terminate(_sig: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds through `finally`, which stops every child


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.rows:
        plan = dataclasses.replace(plan, rows=args.rows)
    if args.images:
        plan = dataclasses.replace(plan, images=args.images)
    only = tuple(s.strip() for s in args.only.split(",")) if args.only else SECTIONS
    if unknown := set(only) - set(SECTIONS):
        print(f"error: unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="drvd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    host = machine()
    bench = Bench(work, plan)
    from bench.limits import section_limits, section_replicas  # imports bench.peer: here too
    from bench.mutants import section_mutants  # here: `python -m bench.mutants` runs it
    from bench.peer import section_peer  # here: `python -m bench.peer` runs it
    from bench.report import section_batch, section_report

    signal.signal(signal.SIGTERM, _terminate)
    # Even when started with SIGINT ignored (a background job), Ctrl-C must stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        more = {
            "limits": section_limits,
            "replicas": section_replicas,
            "report": section_report,
            "batch": section_batch,
        }
        run_sections(
            bench, only, section_peer, on_error=_report_error, mutants=section_mutants, more=more
        )
    except KeyboardInterrupt:
        print("\ninterrupted: every child process stopped", file=sys.stderr)
        return 130
    finally:
        stop_all()
        if not args.keep:
            bench.clean()
    took = time.monotonic() - started
    bench.setup[:0] = _METHOD
    bench.setup.append(f"whole bench: {took / 60:.1f} min" + (" (--quick)" if args.quick else ""))
    print(render_text(bench.lines))
    print(f"\n{took:.0f} s; machine: {host['cores']} x {host['cpu']}, Python {host['python']}")
    if not args.no_write:
        command = " ".join(["python -m bench", *argv])
        text = render_markdown(
            bench.lines,
            command=command,
            host=host,
            load_after=load(),
            setup=bench.setup,
            notes=bench.notes,
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    # Missed targets are results, not errors; only a section that broke fails the command.
    return 1 if any(line.what == FAILED for line in bench.lines) else 0


def _report_error(section: str, exc: BaseException) -> Line:
    traceback.print_exception(exc)
    return Line(section, FAILED, f"{type(exc).__name__}: {exc}", met=False)
