"""Command line: `drvd eval | sweep | plan | score | view | controls | compare | cache | models`. The only place that maps errors to exits."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import signal
import sys
import webbrowser
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markup import escape

from pipeline.args import SAMPLE_DIR, build_parser
from pipeline.config import cache_dir, debug, load_config, malloc_arenas_set, page, user_models
from pipeline.errors import (
    INTERRUPTED,
    ConfigError,
    ExitCode,
    FatalAPIError,
    PipelineError,
    WriteError,
    os_reason,
)
from pipeline.model.cache import ResponseCache
from pipeline.providers.registry import MODELS
from pipeline.redact import show_url
from pipeline.run.lock import run_lock
from pipeline.scoring.samples import samples_section
from pipeline.scoring.summary import SUMMARY_NAME, read_summary, score_run, write_summary
from pipeline.views.page import REPORT_NAME, try_write_report, write_report
from pipeline.views.terminal import failure_lines, render

if TYPE_CHECKING:  # the commands' modules load when their command runs: a fast --help, score
    from pipeline.run.runner import RunResult

# A sweep exits with its worst run's status.
WORST = tuple(ExitCode)
# Ctrl-C; docker stop, Slurm, Kubernetes; a closed terminal: all stop the run the same way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _eval(args: argparse.Namespace, console: Console) -> int:
    from pipeline.plan.estimate import estimate
    from pipeline.plan.view import eval_line
    from pipeline.run.runner import run_eval

    cfg = load_config(vars(args))
    if cfg.data.resolve() == SAMPLE_DIR.resolve():
        console.print(
            "[yellow]bundled demo set: a few rows in the DrVD format, NOT DrVD-Bench data[/]"
        )
    judge = f"{cfg.judge.alias} ({cfg.judge.model})" if cfg.judge else "none"
    console.print(
        f"[bold]drvd eval[/] model={cfg.spec.alias} ({cfg.spec.model}) data={cfg.data} "
        f"protocol={cfg.protocol} concurrency={cfg.concurrency} judge={judge} → {cfg.run_dir}",
        highlight=False,
    )
    console.print(escape(eval_line(estimate(cfg, quick=True))), highlight=False, soft_wrap=True)
    try:
        with run_lock(cfg.run_dir, "eval"):
            result = _run(run_eval(cfg, show_progress=not args.quiet, write_page=try_write_report))
    except (KeyboardInterrupt, Stopped) as exc:
        # The runner wrote the summary of every row recorded before the interrupt.
        if summary := read_summary(cfg.run_dir):
            render(summary, console)
        return _stopped(exc)
    if not result.unreached:  # not a table of zeros: `_ended` says in one line what to fix
        render(result.summary, console)
    page = f"report: {cfg.run_dir / REPORT_NAME}" if cfg.page else "page: off (`view` draws it)"
    console.print(f"results: {cfg.run_dir}/  summary: {cfg.run_dir / SUMMARY_NAME}  {page}")
    from pipeline.share.commands import try_write_parquet

    if result.exit_code != ExitCode.WRITE:  # a full disk is said once, by the run
        try_write_parquet(cfg.run_dir)
    return _ended(result)


def _sweep(args: argparse.Namespace, console: Console) -> int:
    from pipeline.run.sweep import Sweep, sweep_configs

    sweep = Sweep(
        sweep_configs(vars(args)), show_progress=not args.quiet, write_page=try_write_report
    )
    console.print(sweep.header(), highlight=False)
    stopped = None
    try:
        _run(sweep.execute())
    except (KeyboardInterrupt, Stopped) as exc:
        stopped = exc  # every run wrote its partial summary
    from pipeline.share.commands import try_write_parquet

    for entry in sweep.entries:
        if entry.result is not None and entry.result.exit_code != ExitCode.WRITE:
            try_write_parquet(entry.cfg.run_dir)
    codes = [_ended(e.result, e.error, f"{e.cfg.spec.alias}: ") for e in sweep.entries]
    for line in sweep.report(codes):
        console.print(escape(line), highlight=False, soft_wrap=True)
    return max(codes, key=WORST.index) if stopped is None else _stopped(stopped)


def _ended(result: RunResult | None, error: Exception | None = None, who: str = "") -> int:
    """Say in a line per problem how a run ended; return its exit status."""
    if error is not None:
        code, message = _error(error)
        print(f"error: {who}{message}", file=sys.stderr)
        return code
    if result is None:
        return ExitCode.INTERRUPTED  # its partial summary is written
    if result.exit_code == ExitCode.COST:  # not an error: the cap the user set did its job
        print(f"{who}stopped: {result.fatal}", file=sys.stderr)
        return ExitCode.COST
    if result.fatal:  # one line: what stopped the run (the summary has the rest)
        print(f"error: {who}stopped: {result.fatal}", file=sys.stderr)
    for line in [] if result.fatal else failure_lines(result.summary, result.failures):
        print(who + line, file=sys.stderr)
    return result.exit_code


def _stopped(exc: KeyboardInterrupt | Stopped) -> int:
    """Say a signal stopped the command (the partial summaries are written); return the status."""
    if isinstance(exc, Stopped) and exc.signum != signal.SIGINT:
        print(f"stopped by {exc.name}: {INTERRUPTED}", file=sys.stderr)
        return 128 + exc.signum
    print(INTERRUPTED, file=sys.stderr)
    return ExitCode.INTERRUPTED


class Stopped(Exception):
    """A signal stopped the command (the runner wrote what it had)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


async def _stoppable(coro: Awaitable[Any]) -> Any:
    """Await `coro`; SIGINT, SIGTERM or SIGHUP cancel it, then raise `Stopped`.

    The runner writes the partial summary on its way out; a second signal stops at once.
    One handler for the three keeps Ctrl-C on the same path as `docker stop`.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    got: list[int] = []

    def stop(signum: int) -> None:
        if got:
            raise KeyboardInterrupt  # the second signal: leave now
        if task is not None:
            got.append(signum)
            task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if got:
            raise Stopped(got[0]) from None
        raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (like MALLOC_ARENA_MAX, unless that is set); say if it took.

    glibc gives each encoder thread its own arena, and freed image buffers stay spread across
    them: measured on the full 7,789-row run, peak RSS 254 MB → 174 MB with two arenas, at the
    same throughput (docs/BENCHMARKS.md).
    """
    if sys.platform != "linux" or malloc_arenas_set():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def _run(coro: Awaitable[Any]) -> Any:
    limit_malloc_arenas()  # before any thread exists
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return asyncio.run(_stoppable(coro))
    return uvloop.run(_stoppable(coro))


def _score(args: argparse.Namespace, console: Console) -> int:
    if not args.run_dir.is_dir():
        msg = f"{args.run_dir}: no such run folder"
        raise ConfigError(msg)
    # Keep what only the run knew (its settings, bad input lines); the rest is in the rows.
    with run_lock(args.run_dir, "score"):
        old = read_summary(args.run_dir)
        extra = {"run": old["run"]} if old.get("run") else {}
        sampled = old.get("samples") or {}
        if isinstance(k := sampled.get("k"), int) and k > 1:  # --samples K: from the files too
            quirks = args.official_quirks
            extra["samples"] = samples_section(args.run_dir, k, official_quirks=quirks)
            if "temperature_0" in sampled:
                extra["samples"]["temperature_0"] = sampled["temperature_0"]
        summary = score_run(
            args.run_dir,
            model=old.get("model"),
            extra=extra,
            official_quirks=args.official_quirks,
            on_damage=lambda note: print(f"warning: {note}", file=sys.stderr),
        )
        try:
            write_summary(args.run_dir, summary)
        except OSError as exc:
            path = args.run_dir / SUMMARY_NAME
            msg = f"cannot write {path}: {os_reason(exc)}; free space, then rerun"
            raise WriteError(msg) from exc
        drawn = page(args.page)
        # never changes the exit
        if drawn and (note := try_write_report(args.run_dir, summary, cache_dir())):
            print(note, file=sys.stderr)
    render(summary, console)
    console.print(f"report: {args.run_dir / REPORT_NAME}" if drawn else "page: off")
    return ExitCode.OK


def _view(args: argparse.Namespace, console: Console) -> int:
    """Print the run's report.html (written first if missing); --open shows it in a browser."""
    if not args.run_dir.is_dir():
        msg = f"{args.run_dir}: no such run folder"
        raise ConfigError(msg)
    path = (args.run_dir / REPORT_NAME).resolve()
    if not path.is_file():
        summary = read_summary(args.run_dir) or score_run(args.run_dir)
        write_report(args.run_dir, summary, cache_dir())
    console.print(str(path), highlight=False, soft_wrap=True)
    if args.open:
        webbrowser.open(path.as_uri())
    return ExitCode.OK


def _plan(args: argparse.Namespace, console: Console) -> int:
    from pipeline.plan.controls import control_lines, control_plan
    from pipeline.plan.estimate import estimate
    from pipeline.plan.view import plan_json, plan_lines

    cfg = load_config(vars(args), keys=False)
    plan, controls = estimate(cfg), control_plan(cfg, args.controls)
    if args.json:
        extra = {"controls": {c.name: c.to_json() for c in controls}} if controls else {}
        print(orjson.dumps({**plan_json(plan), **extra}).decode())
        return ExitCode.OK
    for line in plan_lines(plan) + control_lines(controls):
        console.print(escape(line), highlight=False, soft_wrap=True)
    return ExitCode.OK


def _controls(args: argparse.Namespace, console: Console) -> int:
    from pipeline.controls.runner import run_controls
    from pipeline.controls.settings import answered_items, run_config
    from pipeline.controls.stats import controls_lines, write_controls
    from pipeline.data.variants import parse_controls

    try:
        names = parse_controls(args.controls)
    except ValueError as exc:
        msg = f"--controls: {exc}"
        raise ConfigError(msg) from exc
    cfg, run_dir = run_config(args.run_dir, vars(args)), args.run_dir
    if not any((items := answered_items(run_dir)).values()):
        msg = f"{run_dir}: no answered rows to control; run eval first"
        raise ConfigError(msg)
    console.print(
        f"[bold]drvd controls[/] {','.join(names)} of {run_dir} model={cfg.spec.alias} "
        f"({cfg.spec.model}) protocol={cfg.protocol} → {run_dir}/controls/",
        highlight=False,
    )
    with run_lock(run_dir, "controls"):
        try:
            coro = run_controls(
                cfg, names, items, seed=args.control_seed, show_progress=not args.quiet
            )
            result = _run(coro)
        except (KeyboardInterrupt, Stopped) as exc:
            write_controls(
                run_dir, model=cfg.spec.alias, quirks=cfg.official_quirks
            )  # what the rows saved so far say
            return _stopped(exc)
        summary = write_controls(run_dir, model=cfg.spec.alias, quirks=cfg.official_quirks)
        if page(args.page) and (
            note := try_write_report(run_dir, read_summary(run_dir), cfg.cache_dir)
        ):
            print(note, file=sys.stderr)
    for line in controls_lines(summary):
        console.print(escape(line), highlight=False, soft_wrap=True)
    codes = [_ended(r, who=f"{name}: ") for name, r in result.results]
    return max(codes or [ExitCode.OK], key=WORST.index)


def _cache(args: argparse.Namespace, console: Console) -> int:
    root = cache_dir(args.cache_dir)
    cache = ResponseCache(root)
    if args.action == "clear":
        console.print(f"removed {cache.clear()} cached responses from {root}")
    else:
        stats = cache.stats()
        console.print(f"{root}: {stats['entries']} responses, {stats['bytes'] / 1e6:.1f} MB")
    return ExitCode.OK


def _models(args: argparse.Namespace, console: Console) -> int:
    rows = [("alias", "model", "key", "C", "rpm", "max_tokens", "thinking", "endpoint", "from")]
    for spec in {**MODELS, **user_models(args.models_file)}.values():
        rows.append(
            (
                spec.alias,
                spec.model,
                spec.key_env or "-",
                str(spec.concurrency),
                f"{spec.rpm:g}" if spec.rpm else "-",
                str(spec.max_tokens or "-"),
                {None: "-", True: "on", False: "off"}[spec.thinking],
                show_url(spec.base_url or ("-" if spec.remote else "offline")),
                spec.source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        console.print(escape(line.rstrip()), highlight=False, soft_wrap=True)
    console.print("openai:<id> any OpenAI-compatible server, with --base-url (key: DRVD_API_KEY)")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return _command(args, console)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        code, message = _error(exc)
        print(f"error: {message}", file=sys.stderr)
        return code


def _error(exc: Exception) -> tuple[int, str]:
    """Return the exit status of a failure and its one line (what follows `error: `)."""
    if isinstance(exc, FatalAPIError | WriteError):
        return ExitCode.FATAL if isinstance(exc, FatalAPIError) else ExitCode.WRITE, str(exc)
    if isinstance(exc, OSError):  # a file we were told to use, or a disk that refuses a write
        code = ExitCode.WRITE if exc.errno in _WRITE_ERRNOS else ExitCode.USAGE
        return code, f"{exc.filename or 'a file'}: {os_reason(exc)}"
    if isinstance(exc, PipelineError):  # ConfigError, DataError, RunLocked
        return ExitCode.USAGE, str(exc)
    if debug():
        raise exc
    return ExitCode.INTERNAL, (
        f"internal error ({type(exc).__name__}: {show_url(str(exc))}); this is a bug: please "
        "report it with the output of the same command run with DRVD_DEBUG=1"
    )


def _compare(args: argparse.Namespace, _console: Console) -> int:
    from pipeline.compare.comparison import run_compare
    from pipeline.share.parquet import write_runs_parquet

    code = run_compare(args.runs, args.out)
    if code == ExitCode.OK:
        write_runs_parquet(list(args.runs), args.out / "all.parquet")
    return code


def _share(args: argparse.Namespace, _console: Console) -> int:
    from pipeline.share.commands import run_share

    return run_share(args)


def _command(args: argparse.Namespace, console: Console) -> int:
    commands = {"eval": _eval, "sweep": _sweep, "score": _score, "plan": _plan, "view": _view,
                "cache": _cache, "controls": _controls, "compare": _compare, "bundle": _share,
                "verify": _share}  # fmt: skip
    return commands.get(args.command, _models)(args, console)
