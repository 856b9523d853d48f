"""Intervals for accuracies whose rows are not independent: rows that share an image are a cluster.

DrVD-Bench asks several questions of one image, so a model that misreads an image tends to be
wrong on all of its rows. The binomial variance p(1-p)/n then understates the uncertainty. We use
the cluster-robust (linearisation, "sandwich") variance of a mean over clusters,

    V = G/(G-1) · Σ_g (T_g - p·n_g)² / n²,

where cluster g has n_g rows whose scores sum to T_g, n = Σ n_g and p = Σ T_g / n. The design
effect is V over the variance of `trials` independent Bernoulli draws, p(1-p)/trials. A score may
be fractional (a row's mean over K samples), so V holds both the item and the sampling variance.

The interval is Wilson's on the effective sample size n_eff = p(1-p)/V (Kish), truncated at
`trials` so a design effect below 1 never narrows it, then scaled by (z/t)², t the 97.5% quantile
of Student's t on G-1 degrees of freedom, because V is estimated from only G cluster totals: the
degrees-of-freedom-adjusted effective n of Korn & Graubard (1998, Survey Methodology 24:193-201).
Near 0 and 1 it stays inside [0, 1] and keeps its coverage where a Wald interval would not. With
fewer than two clusters nothing is known of the spread between clusters, so n_eff is the number of
clusters. tests/test_coverage.py measures the coverage by simulation: 95% from a few hundred
images down to about ten (where z alone gives 92-93%), where Wilson on the rows gives about 80%.

Differences between paired runs (the same rows, two models) use the same variance on the per-row
difference, with a Wald interval on t_{G-1} (Cameron & Miller 2015, J. Human Resources 50:317-372,
§VI), clipped to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from pipeline.scoring.stats import Z95, wilson_fraction

METHOD = "cluster-robust (by image) variance, Wilson on the effective n (Korn-Graubard df)"
DIFF_METHOD = "cluster-robust (by image) variance of the paired difference, Wald on t(G-1)"


def t_quantile(p: float, df: int) -> float:
    """Return Student's t quantile at `p` (above 1/2) on `df` degrees of freedom (df >= 1).

    Up to `_EXACT_DF` degrees of freedom, the exact distribution function (the finite sums of
    Abramowitz & Stegun 26.7.3-4) inverted by bisection; beyond, the Cornish-Fisher expansion of
    t in z (A&S 26.7.5, four terms), within 1e-5 of the table there.
    """
    if df < 1:
        msg = f"t_quantile: df must be >= 1, got {df}"
        raise ValueError(msg)
    if df <= _EXACT_DF:
        low, high = 0.0, 1e3
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if _t_within(mid, df) < 2 * p - 1 else (low, mid)
        return (low + high) / 2
    z = NormalDist().inv_cdf(p)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + math.fsum(term / float(df) ** power for power, term in enumerate(terms, start=1))


_EXACT_DF = 10


def _t_within(t: float, df: int) -> float:
    """Return P(|T| < t) for Student's T on `df` degrees of freedom (A&S 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    start = 2 if df % 2 else 1  # odd: 1, 2/3 c², 2·4/(3·5) c⁴...; even: 1, 1/2 c², 1·3/(2·4) c⁴...
    for k in range(start, df - 1, 2):
        term *= c2 * k / (k + 1)
        total += term
    if df % 2:
        tail = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + tail)
    return math.sin(theta) * total


@dataclass(frozen=True)
class Interval:
    """A 95% interval for a mean of row scores clustered by image."""

    mean: float
    low: float
    high: float
    clusters: int
    design_effect: float | None  # None where p(1-p) is 0 (all right or all wrong) or G < 2
    method: str = METHOD

    def as_dict(self) -> dict[str, object]:
        """The `ci` object of summary.json."""
        deff = None if self.design_effect is None else round(self.design_effect, 4)
        return {
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "clusters": self.clusters,
            "design_effect": deff,
            "method": self.method,
        }


def _totals(values: Sequence[float], clusters: Sequence[Hashable]) -> list[tuple[float, int]]:
    """Per cluster: (sum of scores, rows), in first-seen order."""
    if len(values) != len(clusters):
        msg = f"clustered: {len(values)} values but {len(clusters)} cluster ids"
        raise ValueError(msg)
    sums: dict[Hashable, list[float]] = {}
    for value, cluster in zip(values, clusters, strict=True):
        cell = sums.setdefault(cluster, [0.0, 0])
        cell[0] += value
        cell[1] += 1
    return [(total, int(rows)) for total, rows in sums.values()]


def robust_variance(values: Sequence[float], clusters: Sequence[Hashable]) -> float | None:
    """The cluster-robust variance of the mean of `values`; None with fewer than two clusters."""
    totals = _totals(values, clusters)
    groups = len(totals)
    if groups < 2:
        return None
    n = sum(rows for _, rows in totals)
    mean = sum(total for total, _ in totals) / n
    spread = sum((total - mean * rows) ** 2 for total, rows in totals)
    return groups / (groups - 1) * spread / (n * n)


def clustered_interval(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    trials: int | None = None,
    z: float = Z95,
) -> Interval | None:
    """The 95% interval for the mean of `values` (scores in [0, 1]) clustered by `clusters`.

    `trials` is the number of Bernoulli draws behind the mean (rows x samples); default: rows.
    None when there is no row.
    """
    if not values:
        return None
    if any(not 0.0 <= v <= 1.0 for v in values):
        msg = "clustered_interval: every score must be within 0..1"
        raise ValueError(msg)
    n = len(values)
    trials = trials or n
    groups = len(_totals(values, clusters))
    mean = sum(values) / n
    bernoulli = mean * (1 - mean)
    variance = robust_variance(values, clusters)
    deff: float | None = None
    if variance is None:
        n_eff = float(groups)
    elif bernoulli <= 0 or variance <= 0:
        n_eff = float(trials)
        deff = None if bernoulli <= 0 else 0.0
    else:
        deff = variance / (bernoulli / trials)
        n_eff = min(float(trials), bernoulli / variance)
    if groups >= 2:
        n_eff *= (z / t_quantile(_upper(z), groups - 1)) ** 2
    low, high = wilson_fraction(mean, n_eff, z)
    return Interval(mean, low, high, groups, deff)


@dataclass(frozen=True)
class Difference:
    """A paired difference of means (first - second) with its clustered 95% interval."""

    diff: float
    low: float
    high: float
    clusters: int
    method: str = DIFF_METHOD


def paired_difference(
    first: Sequence[float],
    second: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    z: float = Z95,
) -> Difference | None:
    """The interval of mean(first) - mean(second) over the same rows, clustered by `clusters`."""
    if len(first) != len(second):
        msg = f"paired_difference: {len(first)} rows against {len(second)}"
        raise ValueError(msg)
    if not first:
        return None
    deltas = [a - b for a, b in zip(first, second, strict=True)]
    diff = sum(deltas) / len(deltas)
    variance = robust_variance(deltas, clusters)
    groups = len(_totals(deltas, clusters))
    if variance is None:
        return Difference(diff, -1.0, 1.0, groups)
    half = t_quantile(_upper(z), groups - 1) * math.sqrt(max(variance, 0.0))
    return Difference(diff, max(-1.0, diff - half), min(1.0, diff + half), groups)


def _upper(z: float) -> float:
    """Return the upper probability whose normal quantile is `z` (0.975 for Z95)."""
    return NormalDist().cdf(z)
