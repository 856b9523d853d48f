"""Command line: `drvd eval | sweep | score | cache | models`. The only place that maps errors to exits."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import signal
import sys
from argparse import RawDescriptionHelpFormatter
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeline.cache import ResponseCache
from pipeline.config import cache_dir, debug, load_config, malloc_arenas_set, user_models
from pipeline.errors import ConfigError, FatalAPIError, PipelineError, WriteError, os_reason
from pipeline.knobs import DEFAULT_OUT, KNOBS
from pipeline.lock import run_lock
from pipeline.prompts import PROTOCOLS
from pipeline.records import FILES
from pipeline.redact import show_url
from pipeline.registry import MODELS
from pipeline.render import failure_lines, render
from pipeline.runner import EXIT_FATAL, EXIT_USAGE, EXIT_WRITE, INTERRUPTED, RunResult, run_eval
from pipeline.summary import SUMMARY_NAME, read_summary, score_run, write_summary
from pipeline.sweep import HELP, Sweep, sweep_configs

EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP exit 128 + their number (143, 129)
EXIT_INTERNAL = 70  # a bug: one line, the traceback only with DRVD_DEBUG=1
# A sweep exits with its worst run's status.
WORST = (0, 1, 2, EXIT_FATAL, EXIT_WRITE, EXIT_INTERRUPTED, EXIT_INTERNAL)
# Ctrl-C; docker stop, Slurm, Kubernetes; a closed terminal: all stop the run the same way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
_M_ARENA_MAX = -8  # glibc's mallopt parameter number
SAMPLE_DIR = Path(__file__).parent / "sample"


def _env_help() -> str:
    lines = ["environment (a flag beats its variable, which beats the default):"]
    for knob in KNOBS:
        default = knob.shown if knob.default is None else knob.default
        lines.append(f"  {knob.env:<17} {knob.help} (default: {default})")
    lines += [
        "  DRVD_API_KEY      key for any model; overrides the provider's own variable",
        "  DASHSCOPE_API_KEY, DEEPSEEK_API_KEY, OPENAI_API_KEY   provider keys",
        "  DRVD_JUDGE_API_KEY  key for the judge; overrides its provider's variable",
        "",
        "exit status: 0 every row answered; 1 some rows failed (the message says whether a",
        "             rerun retries them, or the input must be fixed); 2 usage or config error,",
        "             or the run folder is in use by another process; 3 a fatal API error",
        "             stopped the run; 5 a file could not be written (disk full): free space,",
        "             rerun; 130 Ctrl-C; 143 SIGTERM; 129 SIGHUP (these three: partial summary",
        "             written, rerun to resume); 70 a bug (DRVD_DEBUG=1 shows it);",
        "             sweep: the worst of its runs' (70 > 5 > 3 > 2 > 1 > 0)",
        "",
        f"the bundled demo set (not DrVD-Bench data) is at {SAMPLE_DIR}",
    ]
    return "\n".join(lines)


def _run_flags(ev: argparse.ArgumentParser) -> None:
    """Add the flags eval and sweep share: all of eval's but --model and --run-name."""
    ev.add_argument("--data", type=Path, help="DrVD-Bench directory (DRVD_DATA)")
    ev.add_argument("--files", help=f"comma-separated stems (default: all of {','.join(FILES)})")
    ev.add_argument("--limit", type=int, help="only the first N rows of each file")
    ev.add_argument("--out", type=Path, help=f"results folder (default: {DEFAULT_OUT}/)")
    ev.add_argument("--protocol", choices=PROTOCOLS, help="official (default) or notebook")
    ev.add_argument("--base-url", help="OpenAI-compatible endpoint (DRVD_BASE_URL)")
    ev.add_argument("--concurrency", type=int, help="requests in flight (DRVD_CONCURRENCY)")
    ev.add_argument("--rpm", type=float, help="requests per minute (DRVD_RPM)")
    ev.add_argument("--tpm", type=float, help="tokens per minute (DRVD_TPM)")
    ev.add_argument("--max-retries", type=int, help="retries per row (DRVD_MAX_RETRIES)")
    ev.add_argument("--timeout", type=float, help="seconds per attempt (DRVD_TIMEOUT)")
    ev.add_argument(
        "--max-tokens",
        type=int,
        help="max_tokens of every request, replacing the protocol's 50/100: reasoning models "
        "think inside it (DRVD_MAX_TOKENS; recorded as a deviation)",
    )
    ev.add_argument(
        "--thinking",
        choices=("on", "off"),
        help="turn the model's thinking on or off (DRVD_THINKING; recorded as a deviation)",
    )
    ev.add_argument(
        "--models-file", type=Path, help="TOML file of extra aliases (DRVD_MODELS_FILE)"
    )
    ev.add_argument("--cache-dir", type=Path, help="response cache (DRVD_CACHE_DIR)")
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ev.add_argument("--seed", type=int, help="seed of the random baseline (default 0)")
    ev.add_argument(
        "--legacy-mime",
        action="store_true",
        help="label re-encoded PNGs image/png (official quirk)",
    )
    ev.add_argument(
        "--judge",
        help="maps unreadable answers and extracts report keywords: an alias, openai:<id>, "
        "or none (DRVD_JUDGE; default deepseek when DEEPSEEK_API_KEY is set)",
    )
    ev.add_argument("--judge-base-url", help="the judge's endpoint (DRVD_JUDGE_BASE_URL)")
    ev.add_argument(
        "--keyword-prompt",
        choices=("repo", "pypi"),
        help="report keyword prompt of the repo script (default) or the PyPI package",
    )
    ev.add_argument(
        "--bert-model", help="BERTScore model name or local folder (default: PubMedBERT)"
    )
    ev.add_argument("--bert-layers", type=int, help="BERTScore layer (default 12 for PubMedBERT)")
    ev.add_argument(
        "--no-bertscore",
        action="store_true",
        help="skip BERTScore even when bert-score is installed",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress display")
    ev.add_argument(
        "--official-quirks",
        action="store_true",
        help="score the stripped raw reply by exact match, as the official scripts do",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="drvd",
        description="Evaluate vision-language models on DrVD-Bench: fast, resumable, cached.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    shared: dict[str, Any] = {"epilog": _env_help(), "formatter_class": RawDescriptionHelpFormatter}
    ev = sub.add_parser(
        "eval", help="run a model over the dataset (resumes if the run exists)", **shared
    )
    ev.add_argument("--model", required=True, help="alias (see `drvd models`) or openai:<model-id>")
    ev.add_argument("--run-name", help="run folder name (default: derived from the model)")
    sw = sub.add_parser(
        "sweep", help="run several models at once, in one process", description=HELP, **shared
    )
    sw.add_argument("--models", required=True, help="comma-separated, e.g. qwen,gpt-4o,openai:m")
    _run_flags(ev)
    _run_flags(sw)

    sc = sub.add_parser("score", help="re-score a finished run folder offline")
    sc.add_argument("run_dir", type=Path)
    sc.add_argument(
        "--official-quirks",
        action="store_true",
        help="score the stripped raw reply by exact match, as the official scripts do",
    )

    ca = sub.add_parser("cache", help="inspect or clear the response cache")
    ca.add_argument("action", choices=("stats", "clear"))
    ca.add_argument("--cache-dir", type=Path, help="response cache (DRVD_CACHE_DIR)")

    mo = sub.add_parser("models", help="list model aliases and where each comes from")
    mo.add_argument(
        "--models-file", type=Path, help="TOML file of extra aliases (DRVD_MODELS_FILE)"
    )
    return parser


def _eval(args: argparse.Namespace, console: Console) -> int:
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
    try:
        with run_lock(cfg.run_dir, "eval"):
            result = _run(run_eval(cfg, show_progress=not args.quiet))
    except (KeyboardInterrupt, Stopped) as exc:
        # The runner wrote the summary of every row recorded before the interrupt.
        if summary := read_summary(cfg.run_dir):
            render(summary, console)
        return _stopped(exc)
    render(result.summary, console)
    console.print(f"results: {cfg.run_dir}/  summary: {cfg.run_dir / SUMMARY_NAME}")
    return _ended(result)


def _sweep(args: argparse.Namespace, console: Console) -> int:
    sweep = Sweep(sweep_configs(vars(args)), show_progress=not args.quiet)
    console.print(sweep.header(), highlight=False)
    stopped = None
    try:
        _run(sweep.execute())
    except (KeyboardInterrupt, Stopped) as exc:
        stopped = exc  # every run wrote its partial summary
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
        return EXIT_INTERRUPTED  # its partial summary is written
    if result.fatal:  # one line: what stopped the run (the summary has the rest)
        print(f"error: {who}stopped: {result.fatal}", file=sys.stderr)
    for line in [] if result.fatal else failure_lines(result.summary):
        print(who + line, file=sys.stderr)
    return result.exit_code


def _stopped(exc: KeyboardInterrupt | Stopped) -> int:
    """Say a signal stopped the command (the partial summaries are written); return the status."""
    if isinstance(exc, Stopped) and exc.signum != signal.SIGINT:
        print(f"stopped by {exc.name}: {INTERRUPTED}", file=sys.stderr)
        return 128 + exc.signum
    print(INTERRUPTED, file=sys.stderr)
    return EXIT_INTERRUPTED


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
        extra = {"run": old["run"]} if old.get("run") else None
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
    render(summary, console)
    return 0


def _cache(args: argparse.Namespace, console: Console) -> int:
    root = cache_dir(args.cache_dir)
    cache = ResponseCache(root)
    if args.action == "clear":
        console.print(f"removed {cache.clear()} cached responses from {root}")
    else:
        stats = cache.stats()
        console.print(f"{root}: {stats['entries']} responses, {stats['bytes'] / 1e6:.1f} MB")
    return 0


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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return _command(args, console)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code, message = _error(exc)
        print(f"error: {message}", file=sys.stderr)
        return code


def _error(exc: Exception) -> tuple[int, str]:
    """Return the exit status of a failure and its one line (what follows `error: `)."""
    if isinstance(exc, FatalAPIError | WriteError):
        return EXIT_FATAL if isinstance(exc, FatalAPIError) else EXIT_WRITE, str(exc)
    if isinstance(exc, OSError):  # a file we were told to use, or a disk that refuses a write
        code = EXIT_WRITE if exc.errno in _WRITE_ERRNOS else EXIT_USAGE
        return code, f"{exc.filename or 'a file'}: {os_reason(exc)}"
    if isinstance(exc, PipelineError):  # ConfigError, DataError, RunLocked
        return EXIT_USAGE, str(exc)
    if debug():
        raise exc
    return EXIT_INTERNAL, (
        f"internal error ({type(exc).__name__}: {show_url(str(exc))}); this is a bug: please "
        "report it with the output of the same command run with DRVD_DEBUG=1"
    )


def _command(args: argparse.Namespace, console: Console) -> int:
    if args.command == "eval":
        return _eval(args, console)
    if args.command == "sweep":
        return _sweep(args, console)
    if args.command == "score":
        return _score(args, console)
    if args.command == "cache":
        return _cache(args, console)
    return _models(args, console)
