"""`--samples K`: the settings of each extra answer per row, and when drawing them is pointless.

Sample 0 is the official run, in the run folder, with today's cache keys. Sample k = 1..K-1 is
the same run with `epoch=k`: the same requests, whose cache keys add the epoch (so each is paid
once, and a rerun finds it), written to RUN/samples/<k>/ in the official row format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.config import EvalConfig
from pipeline.data.prompts import build_request
from pipeline.records import FILES, Kind, Sample
from pipeline.scoring.samples import SAMPLES_DIR

# The kind of the rows in each known file, to ask the protocol what it sends for them.
FILE_KINDS: dict[str, Kind] = dict(
    zip(FILES, ("evidence", "independent", "joint", "report"), strict=True)
)
_PROBE = {"question": "", "options": [], "joint_prompt": ""}  # enough of a row to build a request


def epoch_config(cfg: EvalConfig, epoch: int) -> EvalConfig:
    """Return the settings of sample `epoch` of `cfg`'s run (its own folder, no page)."""
    run_name = str(Path(cfg.run_name) / SAMPLES_DIR / str(epoch))
    return replace(cfg, epoch=epoch, run_name=run_name, page=False)


def epoch_configs(cfg: EvalConfig) -> list[EvalConfig]:
    """Return the official run's settings, then those of each extra sample."""
    return [cfg, *(epoch_config(cfg, k) for k in range(1, cfg.samples))]


def fixed_temperature(cfg: EvalConfig, stems: Sequence[str]) -> list[str]:
    """Return those of the run's files (`stems`) whose requests go out at temperature 0."""
    out = []
    for stem in stems:
        probe = Sample(stem, 0, "", FILE_KINDS[stem], Path(), dict(_PROBE))
        request = build_request(probe, cfg.protocol, temperature=cfg.temperature)
        if request.temperature == 0:
            out.append(stem)
    return out


def temperature_warning(cfg: EvalConfig, stems: Sequence[str]) -> str | None:
    """Say when `--samples` asks a model again at temperature 0 (it mostly repeats its answer)."""
    if cfg.samples < 2 or not cfg.spec.remote or not (fixed := fixed_temperature(cfg, stems)):
        return None
    return (
        f"warning: --samples {cfg.samples} on {', '.join(fixed)}, which the {cfg.protocol} "
        "protocol sends at temperature 0: the extra samples measure only the provider's "
        "nondeterminism; pass --temperature T to sample them (recorded as a deviation)"
    )
