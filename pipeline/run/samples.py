"""`--samples K`: the official run and its K-1 extra samples, side by side in one event loop.

    cfg ──▶ Run(sample 0: RUN/)  ┐
        ──▶ Run(sample 1: RUN/samples/1/)  ├─ one responder (one pace, cache, cost cap), one judge
        ──▶ ...                            ┘
        ──▶ RUN/summary.json: sample 0's summary + `samples` (pipeline/scoring/samples.py), page

Each sample is a whole run of its own (resumed, kill -9 safe, its own summary.json), so adding
samples to a finished run pays only for the new ones: sample 0 and every sample already in
RUN/samples/ come from their files and the cache. The summary's samples section is rebuilt from
the files whenever the run ends, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import EvalConfig
from pipeline.errors import ExitCode, os_reason
from pipeline.model.budget import Budget
from pipeline.model.epochs import epoch_configs, fixed_temperature, temperature_warning
from pipeline.model.responder import Responder
from pipeline.run.failures import FailureGroup
from pipeline.run.runner import PageWriter, Run, RunResult
from pipeline.scoring.judge import Judge
from pipeline.scoring.samples import samples_section
from pipeline.scoring.summary import SUMMARY_NAME, read_summary, write_summary
from pipeline.views.progress import ProgressBoard

WORST = tuple(ExitCode)  # exit statuses, least to most serious


class SampledRun:
    """K runs of one model over the same rows; `await sampled.execute()` as a `Run`."""

    def __init__(
        self,
        cfg: EvalConfig,
        responder: Responder,
        *,
        judge: Judge | None = None,
        show_progress: bool = True,
        on_invalid: Callable[[str], None] | None = None,
        board: ProgressBoard | None = None,
        budget: Budget | None = None,
        write_page: PageWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.write_page = write_page
        self.say = on_invalid or (lambda line: print(line, file=sys.stderr))
        self.board = board
        self._own_board = board is None and show_progress
        if self._own_board:
            self.board = ProgressBoard()
        common: dict[str, Any] = {"judge": judge, "show_progress": show_progress, "budget": budget}
        self.runs = [
            Run(each, responder, board=self.board, on_invalid=self._said_by(each.epoch), **common)
            for each in epoch_configs(cfg)
        ]
        self.stems = self.runs[0].stems
        if note := temperature_warning(cfg, self.stems):
            self.say(note)

    def _said_by(self, epoch: int) -> Callable[[str], None]:
        return self.say if epoch == 0 else (lambda line: self.say(f"sample {epoch}: {line}"))

    async def execute(self) -> RunResult:
        """Run every sample at once; return sample 0's summary with the samples section."""
        results: list[RunResult | None] = [None] * len(self.runs)

        async def one(i: int, run: Run) -> None:
            results[i] = await run.execute()

        try:
            async with asyncio.TaskGroup() as group:
                for i, run in enumerate(self.runs):
                    group.create_task(one(i, run))
        except ExceptionGroup as failed:  # as one run would: the first error (the CLI says it)
            raise failed.exceptions[0] from None
        finally:
            if self.board is not None and self._own_board:
                self.board.close()
            summary, failure = self._summary(results[0])
        return await self._finish(summary, failure, results)

    def _summary(self, first: RunResult | None) -> tuple[dict[str, Any], str | None]:
        """Write sample 0's summary with the samples section; return it, and a failed write."""
        cfg = self.cfg
        summary = dict(first.summary) if first is not None else read_summary(cfg.run_dir)
        section = samples_section(cfg.run_dir, cfg.samples, official_quirks=cfg.official_quirks)
        if fixed := fixed_temperature(cfg, self.stems):
            section["temperature_0"] = fixed
        summary["samples"] = section
        try:
            write_summary(cfg.run_dir, summary)
        except OSError as exc:
            return summary, f"cannot write {cfg.run_dir / SUMMARY_NAME}: {os_reason(exc)}"
        return summary, None

    async def _finish(
        self, summary: dict[str, Any], failure: str | None, results: list[RunResult | None]
    ) -> RunResult:
        """Draw the page, and end as the most serious of the K runs ended."""
        cfg = self.cfg
        cache = cfg.cache_dir if cfg.use_cache else None
        if failure is not None:
            return RunResult(summary, ExitCode.WRITE, failure)
        if (
            self.write_page is not None
            and cfg.page
            and (note := await asyncio.to_thread(self.write_page, cfg.run_dir, summary, cache))
        ):
            self.say(note)
        ended = [(r.exit_code, i, r) for i, r in enumerate(results) if r is not None]
        code, epoch, worst = max(ended, key=lambda e: (WORST.index(ExitCode(e[0])), -e[1]))
        fatal = worst.fatal
        if fatal is not None and epoch:
            fatal = f"sample {epoch}: {fatal}"
        return RunResult(summary, code, fatal, _causes(results), worst.unreached)


def _causes(results: list[RunResult | None]) -> tuple[FailureGroup, ...]:
    """The K samples' failed rows by cause, added up, largest first."""
    counts: dict[tuple[str, str], int] = {}
    for result in results:
        for group in result.failures if result is not None else ():
            counts[group.cause, group.advice] = (
                counts.get((group.cause, group.advice), 0) + group.count
            )
    merged = [FailureGroup(n, cause, advice) for (cause, advice), n in counts.items()]
    return tuple(sorted(merged, key=lambda g: -g.count))
