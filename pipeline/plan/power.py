"""The smallest accuracy difference between two models that a run can detect (`plan`).

Two models answer the same rows; the test is the paired difference of their accuracies with its
interval clustered by image (what `compare` reports as `diff`, `diff_ci_low`, `diff_ci_high`):
a Wald test whose variance under the alternative is deff·(ψ - δ²)/n, ψ the share of discordant
rows and δ the difference (Connor 1987, Biometrics 43:207-211, the variance of McNemar's
statistic; inflated by the design effect, Donner & Klar 2000, ch. 5). At two-sided level alpha and
power 1 - β it detects δ when δ = (z_{1-alpha/2} + z_{1-β})·sqrt(deff·(ψ - δ²)/n), so

    δ = c·sqrt(ψ / (n/deff + c²)),   c = z_{1-alpha/2} + z_{1-β}.

ψ is taken as 2p(1-p), p the accuracy: two models whose errors are independent given the row.
Models that agree more than chance have a smaller ψ and a smaller detectable δ, so the figure errs
on the safe side. The design effect and p are the last run's (RUN/summary.json `ci`), else the
design effect is the rows per image weighted by size, Σm²/Σm (all rows of an image alike: the
largest it can be) and p is 1/2 (the largest ψ). A design effect below 1 counts as 1, as the
interval never narrows below the rows' own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pipeline.scoring.summary import read_summary

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True, slots=True)
class Detectable:
    """The detectable difference for one file, and what it rests on."""

    stem: str
    rows: int
    images: int
    design_effect: float
    accuracy: float
    measured: bool  # design effect and accuracy from the last run, not assumed
    samples: int  # K answers per row
    difference: float

    def to_json(self) -> dict[str, Any]:
        """Return the figures for `plan --json`."""
        return {
            "rows": self.rows,
            "images": self.images,
            "samples": self.samples,
            "design_effect": round(self.design_effect, 4),
            "accuracy": round(self.accuracy, 4),
            "from": "last run" if self.measured else "assumed",
            "difference": round(self.difference, 4),
        }


def detectable_difference(
    rows: int,
    *,
    design_effect: float,
    accuracy: float,
    samples: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """Return the smallest paired accuracy difference detected with `power` at level `alpha`.

    `design_effect` is per answer (rows x `samples`, as the summary's `ci` measures it).
    """
    if rows <= 0:
        return math.nan
    normal = NormalDist()
    c = normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)
    discordant = 2 * accuracy * (1 - accuracy)
    effective = rows * samples / max(design_effect, 1e-12)
    return c * math.sqrt(discordant / (effective + c * c))


def _measured(section: object) -> tuple[float, float] | None:
    """Return (design effect, accuracy) from a summary file section, when it has them."""
    if not isinstance(section, dict):
        return None
    ci = section.get("ci")
    accuracy = section.get("accuracy", section.get("chain_accuracy", section.get("mean")))
    if not isinstance(ci, dict) or not isinstance(ci.get("design_effect"), (int, float)):
        return None
    if not isinstance(accuracy, (int, float)):
        return None
    return float(ci["design_effect"]), float(accuracy)


def detectable(
    run_dir: Path, files: dict[str, tuple[int, int, float]], *, samples: int = 1
) -> tuple[Detectable, ...]:
    """Return each accuracy file's detectable difference.

    `files` maps a multiple-choice or joint file to (rows, images, Σm²/Σm) over its rows.
    """
    summary = read_summary(run_dir)
    last = summary.get("files") or {}
    sampled = summary.get("samples") or {}
    out = []
    for stem, (rows, images, per_image) in files.items():
        # K answers per row count only when the last run measured its design effect over the same
        # K: more samples shrink the sampling noise, never the spread between items, so a K the
        # last run did not have is credited as one answer per row (the safe side).
        k = samples if samples > 1 and sampled.get("k") == samples else 1
        section = (sampled.get("files") or {}).get(stem) if k > 1 else last.get(stem)
        if k > 1 and isinstance(section, dict) and "chain" in section:
            section = section["chain"]  # a joint file's samples: the chain's mean and ci
        measured = _measured(section)
        deff, accuracy = measured or (per_image, 0.5)
        deff = max(deff, 1.0)  # below 1 is noise of a small run; the interval never narrows
        diff = detectable_difference(rows, design_effect=deff, accuracy=accuracy, samples=k)
        out.append(Detectable(stem, rows, images, deff, accuracy, measured is not None, k, diff))
    return tuple(out)


def detectable_lines(found: tuple[Detectable, ...]) -> list[str]:
    """Return the plan's lines on the detectable differences."""
    if not found:
        return []
    lines = [
        f"detectable difference between two models ({POWER:.0%} power, {ALPHA:.0%} two-sided, "
        "paired, clustered by image):"
    ]
    for d in found:
        source = (
            f"the last run's, accuracy {d.accuracy:.0%}"
            if d.measured
            else "assumed: rows per image, all alike (an upper bound), accuracy 50%"
        )
        lines.append(
            f"  {d.stem}: {100 * d.difference:.1f} points ({d.rows:,} rows x K={d.samples} on "
            f"{d.images:,} images; design effect {d.design_effect:.2f}, {source})"
        )
    return lines
