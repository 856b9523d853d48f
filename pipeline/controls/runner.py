"""`drvd controls RUN`: the run's items asked again under each control, as runs of their own.

Each control is a `Run` (the same producer, workers, sink, cache, judge and cost cap) into
RUN/controls/<control>/, over the items RUN answered, with its variants in place of the rows
(pipeline/data/variants.py). So a control is cached, resumable (kill -9: its rows are durable
before they count) and never touches RUN's own results or summary. `--max-cost` caps the
controls together: each starts with the cap less what the others have spent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig
from pipeline.data.dataset import find_root, present_files, samples_within
from pipeline.data.variants import APPLIES, CONTROLS_DIR, ImagePool, variants, without_image
from pipeline.errors import ConfigError, ExitCode
from pipeline.model.budget import Budget
from pipeline.model.cache import ResponseCache
from pipeline.model.factory import make_judge, make_responder
from pipeline.model.responder import Responder
from pipeline.records import ChatRequest, Outcome, Sample
from pipeline.results import read_run
from pipeline.run.runner import Run, RunResult
from pipeline.scoring.summary import read_summary
from pipeline.views.progress import RunProgress

_STOPS = (ExitCode.FATAL, ExitCode.COST, ExitCode.WRITE)  # a control that ends so stops the rest


class WithoutImage:
    """A responder that sends each request without its image (the `no-image` control)."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner
        self.name = inner.name

    async def respond(self, sample: Sample, request: ChatRequest) -> Outcome:
        """Answer the request stripped of its image."""
        return await self.inner.respond(sample, without_image(request))


class ControlRun(Run):
    """A run over one control's variants of the items RUN answered."""

    def __init__(
        self,
        cfg: EvalConfig,
        responder: Responder,
        *,
        control: str,
        items: Mapping[str, Mapping[str, str]],
        pool: ImagePool,
        **kwargs: Any,
    ) -> None:
        super().__init__(cfg, responder, **kwargs)
        self.control = control
        self.items = items
        self.pool = pool

    def _samples(self, stem: str) -> Iterator[Sample]:
        wanted = self.items.get(stem, {})
        for sample in super()._samples(stem):
            if sample.key in wanted and sample.problem is None:
                yield from variants(sample, self.control, self.pool, self.images)

    async def _prepare(self) -> RunProgress:
        progress = await super()._prepare()
        progress.resize(self._requests())
        return progress

    def _requests(self) -> int:
        """Return how many requests the control makes over the run's items (shuffle: n each)."""
        total = 0
        for stem in self.stems:
            wanted = self.items.get(stem, {})
            for s in samples_within(self.root, stem, None, _ignore, check_images=False):
                if s.key in wanted and s.kind in APPLIES[self.control]:
                    total += len(s.row.get("options") or ()) if self.control == "shuffle" else 1
        return total

    def run_info(self) -> dict[str, Any]:
        """Return the run's settings, labelled with the control (a deviation by design)."""
        info = super().run_info()
        info["control"] = {"name": self.control, "seed": self.pool.seed}
        return info


def _ignore(_error: object) -> None:
    """Lines that are no rows: the run reported them already."""


def _same_seed(run_dir: Path, seed: int) -> None:
    """Refuse to mix two seeds' swapped images in one other-image control."""
    recorded = (read_summary(control_dir(run_dir, "other-image")).get("run") or {}).get("control")
    if isinstance(recorded, dict) and recorded.get("seed") not in (None, seed):
        msg = (
            f"{control_dir(run_dir, 'other-image')} was drawn with --seed {recorded['seed']}: "
            f"pass that seed to go on, or remove the folder to draw again with {seed}"
        )
        raise ConfigError(msg)


def control_dir(run_dir: Path, control: str) -> Path:
    """Return the folder of one control's rows."""
    return run_dir / CONTROLS_DIR / control


def spent(run_dir: Path, control: str) -> float:
    """Return what a control's rows have cost so far (model and judge)."""
    total = 0.0
    for _stem, row in read_run(control_dir(run_dir, control)):
        total += row.usage.cost_usd + row.judge_usage.cost_usd
    return total


def control_stems(cfg: EvalConfig, control: str) -> tuple[str, ...]:
    """Return the run's files a control applies to (by the kinds their rows have)."""
    kinds = {"visual_evidence_qa": "evidence", "independent_qa": "independent", "joint_qa": "joint"}
    return tuple(s for s in cfg.files if kinds.get(s) in APPLIES[control])


def image_pool(cfg: EvalConfig, seed: int) -> ImagePool:
    """Collect the dataset's images by modality, over all of its files."""
    root = find_root(cfg.data)
    rows: list[Mapping[str, object]] = []
    for stem in present_files(root):
        rows += [s.row for s in samples_within(root, stem, None, _ignore, check_images=False)]
    return ImagePool.of(rows, seed)


@dataclass(frozen=True, slots=True)
class ControlsResult:
    """How the controls ended: each one's result, in order."""

    results: tuple[tuple[str, RunResult], ...]


async def run_controls(
    cfg: EvalConfig,
    names: tuple[str, ...],
    items: Mapping[str, Mapping[str, str]],
    *,
    seed: int = 0,
    show_progress: bool = True,
) -> ControlsResult:
    """Run each control over RUN's answered items, one after the other.

    Args:
        cfg: RUN's own configuration (controls.settings.run_config).
        names: the controls, from data.variants.CONTROLS.
        items: RUN's answered items per file (controls.settings.answered_items).
        seed: the other-image control's seed.
        show_progress: draw each control's progress.
    """
    run_dir = cfg.run_dir
    if "other-image" in names:
        _same_seed(run_dir, seed)
    pool = image_pool(cfg, seed)
    done: list[tuple[str, RunResult]] = []
    async with AsyncExitStack() as stack:
        cache = ResponseCache(cfg.cache_dir) if cfg.use_cache else None
        for name in names:
            stems = control_stems(cfg, name)
            if not stems:
                continue
            others = sum(spent(run_dir, n) for n in names if n != name)
            cap = None if cfg.max_cost is None else max(0.0, cfg.max_cost - others)
            ccfg = replace(
                cfg, out=run_dir / CONTROLS_DIR, run_name=name, files=stems, max_cost=cap,
                page=False, bert_model=None, batch=False,
            )  # fmt: skip
            budget = Budget(cap)
            responder = await make_responder(ccfg, stack, cache, budget=budget)
            judge = await make_judge(ccfg, stack, cache, budget=budget)
            run = ControlRun(
                ccfg, WithoutImage(responder) if name == "no-image" else responder,
                control=name, items=items, pool=pool, judge=judge, budget=budget,
                show_progress=show_progress,
            )  # fmt: skip
            result = await run.execute()
            done.append((name, result))
            if result.exit_code in _STOPS:
                break
    return ControlsResult(tuple(done))
