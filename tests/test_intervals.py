"""The summary's clustered intervals: references written apart from the package, and the bootstrap.

`clustered_reference` and `difference_reference` recompute an interval from per-row scores and
images with exact fractions for the cluster totals and variance, Student's t from the printed
table, and Wilson's formula written out; test_compare checks the CLI's summary.json, leaderboard
and paired.csv against them, recounted from the results files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest
from test_clustered import T975, Z

from pipeline.records import ResultRow, Usage
from pipeline.scoring.intervals import REPLICATES, SEED, add_intervals, bootstrap_ci
from pipeline.scoring.official import RowScore
from pipeline.scoring.summary import Scorer


def _totals(values: Sequence[float], clusters: Sequence[Hashable]) -> list[tuple[Fraction, int]]:
    sums: dict[Hashable, tuple[Fraction, int]] = {}
    for value, cluster in zip(values, clusters, strict=True):
        total, rows = sums.get(cluster, (Fraction(0), 0))
        sums[cluster] = (total + Fraction(value), rows + 1)
    return list(sums.values())


def _variance(values: Sequence[float], clusters: Sequence[Hashable]) -> Fraction:
    """The sandwich variance of the mean: G/(G-1)·Σ(T_g - p·n_g)²/n², in exact fractions."""
    totals = _totals(values, clusters)
    n = sum(rows for _, rows in totals)
    p = sum((total for total, _ in totals), Fraction(0)) / n
    g = len(totals)
    spread = sum(((t - p * m) ** 2 for t, m in totals), Fraction(0))
    return Fraction(g, g - 1) * spread / (n * n)


def clustered_reference(
    values: Sequence[float], clusters: Sequence[Hashable], trials: int | None = None
) -> tuple[float, float, int, float | None]:
    """Return (low, high, clusters, design effect) of the 95% interval clustered by image.

    `trials`: the answers behind the mean (rows x K samples); the rows by default.
    """
    totals = _totals(values, clusters)
    g, n = len(totals), trials or len(values)
    p = Fraction(sum(Fraction(v) for v in values)) / len(values)
    bernoulli = p * (1 - p)
    deff: float | None = None
    if g < 2:
        n_eff = float(g)
    else:
        variance = _variance(values, clusters)
        if bernoulli == 0 or variance == 0:
            n_eff = float(n)
            deff = None if bernoulli == 0 else 0.0
        else:
            deff = float(variance / (bernoulli / n))
            n_eff = min(float(n), float(bernoulli / variance))
        n_eff *= (Z / T975[g - 1]) ** 2  # Korn & Graubard's degrees-of-freedom adjustment
    centre = float(p) + Z * Z / (2 * n_eff)
    half = Z * math.sqrt(float(bernoulli) / n_eff + Z * Z / (4 * n_eff * n_eff))
    scale = 1 + Z * Z / n_eff
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale), g, deff


def difference_reference(
    first: Sequence[float], second: Sequence[float], clusters: Sequence[Hashable]
) -> tuple[float, float, float]:
    """Return (mean difference first - second, low, high): Wald on t(G-1), clipped to [-1, 1]."""
    deltas = [a - b for a, b in zip(first, second, strict=True)]
    diff = sum(Fraction(d) for d in deltas) / len(deltas)
    g = len(_totals(deltas, clusters))
    if g < 2:
        return float(diff), -1.0, 1.0
    half = T975[g - 1] * math.sqrt(_variance(deltas, clusters))
    return float(diff), max(-1.0, float(diff) - half), min(1.0, float(diff) + half)


def check_ci(
    got: dict[str, object],
    values: Sequence[float],
    clusters: Sequence[Hashable],
    trials: int | None = None,
) -> None:
    """A `ci` object of summary.json against the reference (summary rounds to 6 decimals)."""
    low, high, groups, deff = clustered_reference(values, clusters, trials)
    assert got["low"] == pytest.approx(low, abs=1e-6)
    assert got["high"] == pytest.approx(high, abs=1e-6)
    assert got["clusters"] == groups
    if deff is None:
        assert got["design_effect"] is None
    else:
        assert got["design_effect"] == pytest.approx(deff, abs=1e-4)


def test_the_bootstrap_agrees_with_the_sandwich_on_many_images() -> None:
    # A second method: on 300 images the bootstrap's percentile interval is close to the normal
    # one, mean ± z·sqrt(V), V the sandwich variance computed here in fractions.
    rng = random.Random(3)
    values: list[float] = []
    clusters: list[int] = []
    for image in range(300):
        level = rng.random() * 0.5
        for _ in range(rng.randint(1, 5)):
            values.append(round(level + rng.random() * 0.2, 4))
            clusters.append(image)
    got = bootstrap_ci(values, clusters)
    assert got is not None
    mean = math.fsum(values) / len(values)
    half = Z * math.sqrt(_variance(values, clusters))
    assert got["low"] == pytest.approx(mean - half, abs=0.1 * half)
    assert got["high"] == pytest.approx(mean + half, abs=0.1 * half)
    # Ignoring the images would be narrower by sqrt(deff): this set's deff is well above 1.
    rows = Z * math.sqrt(_variance(values, list(range(len(values)))))
    assert rows < 0.7 * half
    assert got["clusters"] == 300
    assert (got["seed"], got["replicates"]) == (SEED, REPLICATES)
    assert bootstrap_ci(values, clusters) == got  # seeded: the same rows give the same bytes
    # The rows in another order (a live run records them as replies come back): the same.
    order = list(range(len(values)))
    random.Random(4).shuffle(order)
    shuffled = bootstrap_ci([values[i] for i in order], [clusters[i] for i in order])
    assert shuffled is not None
    assert (shuffled["low"], shuffled["high"]) == pytest.approx((got["low"], got["high"]), abs=1e-9)
    other = bootstrap_ci(values, clusters, seed=SEED + 1)
    assert other is not None
    assert other["low"] != got["low"]


def test_one_image_gives_no_bootstrap_interval() -> None:
    got = bootstrap_ci([0.2, 0.4], ["a", "a"])
    assert got is not None
    assert (got["low"], got["high"], got["clusters"]) == (None, None, 1)
    assert bootstrap_ci([], []) is None


def _row(stem: str, i: int, image: str | None, right: bool) -> ResultRow:
    data = {"question": f"q{i}", "options": ["A. x", "B. y"], "answer": "A. x"}
    data |= {"modality": "CT", "level": "organ"}
    if image is not None:
        data["image_paths"] = image
    return ResultRow(
        row=data,
        kind="independent",
        key=f"{stem}-{i}",
        model="m",
        model_response="A" if right else "B",
        raw_response="A" if right else "B",
        usage=Usage(api_calls=1),
    )


def test_rows_without_an_image_are_each_their_own_cluster_and_failed_rows_count_wrong() -> None:
    scorer = Scorer()
    rights = [True, True, False, True, False, False, True]
    images = ["a", "a", "a", None, None, "b", "b"]
    for i, (right, image) in enumerate(zip(rights, images, strict=True)):
        scorer.add("independent_qa", _row("independent_qa", i, image, right))
    failed = replace(_row("independent_qa", 99, "b", True), model_response=None, raw_response=None)
    scorer.add("independent_qa", failed.failed("boom"))
    section = scorer.summary(model="m")["files"]["independent_qa"]
    values = [float(r) for r in rights] + [0.0]  # the failed row: in n, wrong
    clusters: list[Hashable] = ["a", "a", "a", "x1", "x2", "b", "b", "b"]
    assert section["n"] == 8
    check_ci(section["ci"], values, clusters)
    assert section["ci"]["clusters"] == 4
    check_ci(section["groups"]["CT"]["organ"]["ci"], values, clusters)


def test_k_answers_per_row_enter_as_their_share_right_over_rows_x_k_trials() -> None:
    # Three answers per row: the share right per row, and trials = rows x 3 (the design effect is
    # per answer). The hook `value` is how `--samples` feeds the summary's intervals.
    shares = {"a": [1.0, 2 / 3, 1.0], "b": [0.0, 1 / 3], "c": [2 / 3, 2 / 3], "d": [0.0]}
    rows, values, clusters = [], [], []
    for image, per_row in shares.items():
        for share in per_row:
            rows.append(RowScore(("CT", "organ"), (share > 0.5,), False, False, Usage(), Usage(),
                                 True, image=image))  # fmt: skip
            values.append(share)
            clusters.append(image)
    by_row = {id(r): v for r, v in zip(rows, values, strict=True)}
    files: dict[str, dict[str, Any]] = {
        "independent_qa": {"kind": "mcq", "groups": {"CT": {"organ": {}}}}
    }
    add_intervals(files, {"independent_qa": rows}, lambda r, _at: (by_row[id(r)], 3))
    got = files["independent_qa"]["ci"]
    check_ci(got, values, clusters, trials=3 * len(values))
    assert got == files["independent_qa"]["groups"]["CT"]["organ"]["ci"]
