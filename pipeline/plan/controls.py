"""`drvd plan --controls ...`: what each control of a run would send and cost, before paying.

Over the items the run folder answered (all rows within `--limit` when it has none yet), each
control's requests are built as `drvd controls` builds them (pipeline/data/variants.py) and
looked up in the control's folder and the response cache. Shuffle's rotation 0 is the official
request: the run pays for it, so it is counted apart. Prompt tokens are measured as for the run;
reply tokens are the typical reply of the row's kind; time is at the model's limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import EvalConfig
from pipeline.data.dataset import (
    ImageFolder,
    dataset_files,
    find_root,
    present_files,
    samples_within,
)
from pipeline.data.images import file_digest
from pipeline.data.prompts import build_request
from pipeline.data.variants import (
    APPLIES,
    CONTROLS_DIR,
    ImagePool,
    item_key,
    parse_controls,
    variants,
    without_image,
)
from pipeline.errors import ConfigError
from pipeline.model.cache import ResponseCache
from pipeline.model.responder import response_key
from pipeline.plan.estimate import send_seconds, typical_reply
from pipeline.providers.registry import thinking_body
from pipeline.providers.tokens import image_rule, prompt_tokens
from pipeline.results import read_rows


@dataclass(frozen=True, slots=True)
class ControlEstimate:
    """One control over the run's items: its requests, what is done, and what the rest costs."""

    name: str
    items: int = 0  # the run's items it applies to
    requests: int = 0  # all it asks (shuffle: n per item, rotation 0 included)
    official: int = 0  # shuffle's rotation 0: the run's own request
    done: int = 0  # answered in RUN/controls/<name>/ or in the response cache
    send: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0  # None: the model has no price
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the numbers for `plan --json`."""
        out = {
            "items": self.items,
            "requests": self.requests,
            "official": self.official,
            "done": self.done,
            "to_send": self.send,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": None if self.cost is None else round(self.cost, 6),
            "seconds": round(self.seconds),
        }
        return out


def _answered(cfg: EvalConfig, stem: str, folder: str | None = None) -> set[str]:
    """Return the keys answered (no error) in the run folder's (or a control's) file."""
    base = cfg.run_dir if folder is None else cfg.run_dir / CONTROLS_DIR / folder
    path = base / f"{stem}.jsonl"
    if not path.is_file():
        return set()
    latest = {row.key: row for row in read_rows(path, []) if row.key is not None}
    return {key for key, row in latest.items() if row.error is None}


def estimate_controls(
    cfg: EvalConfig, names: Sequence[str], *, seed: int = 0
) -> list[ControlEstimate]:
    """Return what each control of `cfg`'s run folder would take."""
    root, stems, _notes = dataset_files(cfg.data, cfg.files)
    images = ImageFolder(root)
    rows = [
        s.row
        for stem in present_files(find_root(cfg.data))
        for s in samples_within(root, stem, None, lambda _e: None, check_images=False)
    ]
    pool = ImagePool.of(rows, seed)
    cache = ResponseCache(cfg.cache_dir) if cfg.use_cache and cfg.spec.remote else None
    extra = thinking_body(cfg.spec)
    rule = image_rule(cfg.spec.model, cfg.spec.provider)
    out = []
    for name in names:
        counts = [0] * 7  # items, requests, official, done, send, prompt, completion
        for stem in stems:
            ran = _answered(cfg, stem)
            own = _answered(cfg, stem, name)
            for sample in samples_within(root, stem, cfg.limit, lambda _e: None, images=images):
                if sample.problem is not None or (ran and sample.key not in ran):
                    continue
                if sample.kind not in APPLIES[name]:
                    continue
                counts[0] += 1
                for variant in variants(sample, name, pool, images):
                    counts[1] += 1
                    request = build_request(variant, cfg.protocol, max_tokens=cfg.spec.max_tokens)
                    if name == "no-image":
                        request = without_image(request)
                    if name == "shuffle" and item_key(variant.key)[1] == 0:
                        counts[2] += 1
                        continue
                    if variant.key in own or (
                        cache is not None
                        and cache.get(response_key(cfg, extra, request, file_digest(variant.image)))
                        is not None
                    ):
                        counts[3] += 1
                        continue
                    counts[4] += 1
                    counts[5] += prompt_tokens(request, rule) if cfg.spec.remote else 0
                    counts[6] += typical_reply(cfg, request, sample.kind) if cfg.spec.remote else 0
        items, requests, official, done, send, prompt, completion = counts
        cost = None if cfg.price is None else cfg.price.cost(prompt, completion)
        if not cfg.spec.remote:
            cost = 0.0
        reply = completion / send if send else 0.0
        seconds = send_seconds(cfg, send, prompt, reply) if cfg.spec.remote else 0.0
        out.append(
            ControlEstimate(
                name, items, requests, official, done, send, prompt, completion, cost, seconds
            )
        )
    return out


def control_plan(cfg: EvalConfig, names: str | None) -> list[ControlEstimate]:
    """Return `plan --controls NAMES`' estimates (none without the flag)."""
    if names is None:
        return []
    try:
        chosen = parse_controls(names)
    except ValueError as exc:
        msg = f"--controls: {exc}"
        raise ConfigError(msg) from exc
    return estimate_controls(cfg, chosen)


def control_lines(estimates: Sequence[ControlEstimate]) -> list[str]:
    """Return one line per control for `plan`'s report."""
    lines = []
    for e in estimates:
        cost = "unknown (no price)" if e.cost is None else f"${e.cost:,.2f}"
        official = f", {e.official:,} are the run's own (rotation 0)" if e.official else ""
        lines.append(
            f"control {e.name}: {e.items:,} items, {e.requests:,} requests{official}, "
            f"{e.done:,} done, {e.send:,} to send: {e.prompt_tokens:,} prompt + "
            f"{e.completion_tokens:,} completion tokens; cost {cost}; about {_duration(e.seconds)}"
        )
    return lines


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
