"""`drvd sweep`: several models in one process, at the same time, then a table comparing them.

    --models a,b,c ──▶ one EvalConfig, run lock, connection pool and pace per model
                       one response cache and one judge for all ──▶ runs side by side
                   ──▶ OUT/sweep-<time>.md and .json: a line per model

Each model's run folder is the one `eval --model X` with the same flags uses, so either command
resumes the other. A run that stops (a bad key) leaves the others going; the exit status is the
worst of the runs. The judge is shared, so a reference report's keywords are paid once in all.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.markup import escape

from pipeline.config import EvalConfig, load_config
from pipeline.errors import ConfigError, ExitCode, WriteError, os_reason
from pipeline.files import write_atomic
from pipeline.model.budget import Budget
from pipeline.model.cache import ResponseCache
from pipeline.model.factory import make_judge, make_responder
from pipeline.records import FILES
from pipeline.run.lock import run_lock
from pipeline.run.runner import PageWriter, Run, RunResult
from pipeline.run.samples import SampledRun
from pipeline.scoring.summary import read_summary
from pipeline.views.progress import ProgressBoard

DISCRETE = tuple(f for f in FILES if f != "report_generation")  # scored by accuracy
STATUS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED_ROWS: "failed rows",
    ExitCode.USAGE: "error",
    ExitCode.FATAL: "stopped",
    ExitCode.COST: "cost cap",
    ExitCode.WRITE: "write error",
    ExitCode.INTERRUPTED: "interrupted",
    ExitCode.INTERNAL: "bug",
}


@dataclass(slots=True)
class Entry:
    """One model of the sweep: its settings, then how its run ended."""

    cfg: EvalConfig
    result: RunResult | None = None
    error: Exception | None = None  # what ended the run before it had a result
    seconds: float = 0.0


def sweep_configs(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[EvalConfig]:
    """Return one run configuration per model of `--models` (the same flags for each)."""
    names = [name.strip() for name in str(flags["models"]).split(",") if name.strip()]
    if not names:
        msg = "--models: name at least one model, e.g. --models qwen,gpt-4o"
        raise ConfigError(msg)
    if twice := next((name for name in names if names.count(name) > 1), None):
        msg = f"--models: {twice!r} is named twice; name each model once"
        raise ConfigError(msg)
    cfgs = [load_config({**flags, "model": name, "run_name": None}, env) for name in names]
    seen: dict[Path, str] = {}
    for cfg in cfgs:
        if (other := seen.setdefault(cfg.run_dir, cfg.spec.alias)) != cfg.spec.alias:
            msg = (
                f"--models: {other!r} and {cfg.spec.alias!r} would share the run folder "
                f"{cfg.run_dir}; run one of them with `eval --run-name`"
            )
            raise ConfigError(msg)
    return cfgs


class Sweep:
    """The runs of several models in one event loop; `await sweep.execute()` runs them all."""

    def __init__(
        self,
        cfgs: Sequence[EvalConfig],
        *,
        show_progress: bool = True,
        write_page: PageWriter | None = None,
    ) -> None:
        self.entries = [Entry(cfg) for cfg in cfgs]
        self.write_page = write_page  # each run's page, when it ends
        self.show_progress = show_progress
        self.started = time.strftime("%Y%m%d-%H%M%S")

    @property
    def cfgs(self) -> list[EvalConfig]:
        """Return the models' settings, in the order of `--models`."""
        return [entry.cfg for entry in self.entries]

    def header(self) -> str:
        """Return what the sweep is about to do: the shared settings, then a line per model."""
        first = self.cfgs[0]
        judge = f"{first.judge.alias} ({first.judge.model})" if first.judge else "none"
        lines = [
            f"[bold]drvd sweep[/] data={escape(str(first.data))} protocol={first.protocol} "
            f"judge={escape(judge)} → {escape(str(first.out))}/"
        ]
        for cfg in self.cfgs:
            lines.append(
                escape(
                    f"  {cfg.spec.alias} ({cfg.spec.model}) concurrency={cfg.concurrency} "
                    f"→ {cfg.run_dir}"
                )
            )
        return "\n".join(lines)

    async def execute(self) -> None:
        """Run every model at once; each entry gets its result, or the error that ended it."""
        first = self.cfgs[0]  # the cache and judge flags are the same for every model
        async with AsyncExitStack() as stack:
            for cfg in self.cfgs:  # all taken before any work, or none (then exit 2)
                stack.enter_context(run_lock(cfg.run_dir, "sweep"))
            cache = ResponseCache(first.cache_dir) if first.use_cache else None
            judge = await make_judge(first, stack, cache)  # one pace and dedupe for all runs
            board = ProgressBoard() if self.show_progress else None
            if board is not None:
                stack.callback(board.close)
            runs = []
            for cfg in self.cfgs:  # each run has its own cap; the shared judge has none
                budget = Budget(cfg.max_cost)
                kind = Run if cfg.samples == 1 else SampledRun
                runs.append(
                    kind(
                        cfg,
                        await make_responder(cfg, stack, cache, budget=budget),
                        judge=judge,
                        write_page=self.write_page,
                        show_progress=self.show_progress,
                        on_invalid=_said_by(cfg.spec.alias),
                        board=board,
                        budget=budget,
                    )
                )
            bert = judge.bert if judge is not None else None
            if bert is not None and any("report_generation" in run.stems for run in runs):
                await asyncio.to_thread(bert.load)  # once, before the runs all ask for it
            # Not gather: on Ctrl-C it returns when the first run has stopped, and leaving cuts
            # short the others' partial summaries; a task group waits for every run.
            async with asyncio.TaskGroup() as group:
                for entry, run in zip(self.entries, runs, strict=True):
                    group.create_task(self._one(entry, run))
            if cache is not None and (note := cache.damage_note()):
                print(note, file=sys.stderr)

    @staticmethod
    async def _one(entry: Entry, run: Run | SampledRun) -> None:
        start = time.monotonic()
        try:
            entry.result = await run.execute()
        except Exception as exc:  # the CLI says what it was; the other runs go on
            entry.error = exc
        finally:  # also when interrupted: the run wrote its partial summary
            entry.seconds = time.monotonic() - start

    def report(self, codes: Sequence[int]) -> list[str]:
        """Write OUT/sweep-<time>.md and .json, a line per model; return the lines to show.

        `codes` are the runs' exit statuses, in the order of the models.
        """
        models = [self._line(entry, code) for entry, code in zip(self.entries, codes, strict=True)]
        stems = [s for s in DISCRETE if any(s in m["files"] for m in models)]
        head = ["model", "rows", "accuracy", *stems, "failed", "time", "status"]
        table = [_cells(head), _cells(["---"] * len(head))]
        for m in models:
            scores = [_pct(m["accuracy"]), *(_pct(m["files"].get(s)) for s in stems)]
            ended = [str(m["failed_rows"]), _took(m["seconds"]), m["status"]]
            table.append(_cells([m["model"], str(m["rows"]), *scores, *ended]))
        first = self.cfgs[0]
        path = first.out / f"sweep-{self.started}"
        judge = first.judge.alias if first.judge else None
        record = {"data": str(first.data), "protocol": first.protocol, "judge": judge}
        try:
            write_atomic(path.with_suffix(".md"), "\n".join(table).encode() + b"\n")
            data = orjson.dumps({**record, "models": models}, option=orjson.OPT_INDENT_2)
            write_atomic(path.with_suffix(".json"), data + b"\n")
        except OSError as exc:
            msg = (
                f"cannot write {path}.md/.json: {os_reason(exc)}; the run folders hold the results"
            )
            raise WriteError(msg) from exc
        return [*table, f"comparison: {path}.md and {path}.json"]

    @staticmethod
    def _line(entry: Entry, code: int) -> dict[str, Any]:
        """Return one model's line of the comparison, from its summary (written even if stopped)."""
        cfg = entry.cfg
        summary = entry.result.summary if entry.result else {}
        if entry.result is None and entry.error is None:
            summary = read_summary(cfg.run_dir)  # interrupted: the partial summary
        files: dict[str, Any] = summary.get("files", {})
        counts = {s: _counts(files[s]) for s in DISCRETE if s in files}
        n, correct = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        return {
            "model": cfg.spec.alias,
            "model_id": cfg.spec.model,
            "run_dir": str(cfg.run_dir),
            "rows": sum(int(f.get("n", 0)) for f in files.values()),
            "accuracy": correct / n if n else None,  # MCQ rows and joint levels, as the progress
            "files": {s: c[1] / c[0] if c[0] else None for s, c in counts.items()},
            "failed_rows": summary.get("usage", {}).get("failed_rows", 0),
            "seconds": round(entry.seconds, 1),
            "exit_code": code,
            "status": STATUS[ExitCode(code)],
        }


def _counts(section: Mapping[str, Any]) -> tuple[int, int]:
    """Return (answers scored, answers right) of a file: its rows, or a joint file's levels."""
    if section.get("kind") == "joint":
        levels = section.get("level_totals", {}).values()
        return sum(c["n"] for c in levels), sum(c["correct"] for c in levels)
    return int(section.get("n", 0)), int(section.get("correct", 0))


def _said_by(alias: str) -> Callable[[str], None]:
    return lambda line: print(f"{alias}: {line}", file=sys.stderr)


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _took(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
