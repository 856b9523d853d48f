"""The Python API: `evaluate`, `score` and `compare` from a script or a notebook.

Each returns typed records of the summary. They work with or without a running event loop
(Jupyter runs one): inside a loop the run goes to a worker thread with its own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FileScore:
    """One results file of a run: its rows, hits and accuracy (None when it has none)."""

    name: str
    kind: str
    n: int
    correct: int | None
    accuracy: float | None
    errors: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's summary as records; `raw` is summary.json whole."""

    run_dir: Path
    model: str
    files: dict[str, FileScore]
    raw: Mapping[str, Any] = field(repr=False)

    def accuracy(self, name: str) -> float | None:
        """Return the accuracy of one results file ("independent_qa", ...)."""
        return self.files[name].accuracy


@dataclass(frozen=True, slots=True)
class Comparison:
    """What `compare` wrote: its folder, and the runs it compared (the first is the baseline)."""

    out: Path
    runs: list[RunSummary]
    exit_code: int


def _records(run_dir: Path, summary: Mapping[str, Any]) -> RunSummary:
    files = {
        name: FileScore(
            name=name,
            kind=str(section.get("kind", "")),
            n=int(section.get("n", 0)),
            correct=section.get("correct"),
            accuracy=section.get("accuracy"),
            errors=int(section.get("errors", 0)),
        )
        for name, section in (summary.get("files") or {}).items()
    }
    return RunSummary(run_dir, str(summary.get("model", "")), files, summary)


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to the end, in a worker thread when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def evaluate(
    model: str, data: str | Path | None = None, *, out: str | Path = "runs", **flags: Any
) -> RunSummary:
    """Run `drvd eval` (flags as keywords: run_name="a", seed=1, judge="none"); return its summary.

    Writes the run folder as the command does, with RUN/results.parquet.
    """
    from pipeline.args import build_parser
    from pipeline.config import load_config
    from pipeline.run.runner import run_eval
    from pipeline.share.parquet import write_run_parquet
    from pipeline.views.page import try_write_report

    argv = ["eval", "--model", model, "--out", str(out)]
    if data is not None:
        argv += ["--data", str(data)]
    for name, value in flags.items():
        option = "--" + name.replace("_", "-")
        if value is True:
            argv.append(option)
        elif value is not None and value is not False:
            argv += [option, str(value)]
    cfg = load_config(vars(build_parser().parse_args(argv)))
    result = _sync(run_eval(cfg, show_progress=False, write_page=try_write_report))
    write_run_parquet(cfg.run_dir)
    return _records(cfg.run_dir, result.summary)


def score(run_dir: str | Path) -> RunSummary:
    """Return a finished run's summary re-scored from its results files (offline; writes nothing)."""
    from pipeline.scoring.summary import read_summary, score_run

    path = Path(run_dir)
    old = read_summary(path)
    extra = {"run": old["run"]} if "run" in old else None
    return _records(path, score_run(path, model=old.get("model"), extra=extra))


def compare(runs: Sequence[str | Path], out: str | Path) -> Comparison:
    """Run `drvd compare` on run folders (the first is the baseline); write all.parquet too."""
    from pipeline.compare.comparison import run_compare
    from pipeline.scoring.summary import read_summary
    from pipeline.share.parquet import write_runs_parquet

    paths, folder = [Path(r) for r in runs], Path(out)
    code = run_compare(paths, folder)
    write_runs_parquet(paths, folder / "all.parquet")
    return Comparison(folder, [_records(p, read_summary(p)) for p in paths], int(code))
