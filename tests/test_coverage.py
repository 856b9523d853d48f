"""The clustered interval on simulated runs with a planted truth (a virtual model, no HTTP).

Each simulated run draws a few hundred images of 3 to 6 rows (as DrVD-Bench asks several
questions of one image); every image gets a latent ability from a Beta distribution whose mean is
the planted accuracy, and each of its rows is right with that probability. The truth an interval
should cover is the planted mean; Wilson on the rows treats the rows as independent and so is too
narrow by the design effect, 1 + (m̄ - 1)·ICC (Kish 1965).
"""

from __future__ import annotations

import random

import pytest

from pipeline.scoring.clustered import clustered_interval
from pipeline.scoring.stats import wilson

RUNS = 600  # simulated runs: the coverage's standard error is sqrt(.95·.05/600) = 0.9 points


def simulate(
    rng: random.Random, *, images: int, mean: float, icc: float, rows: tuple[int, int]
) -> tuple[list[float], list[int]]:
    """Return (row scores, image per row) of one run of the virtual model."""
    # Beta(a, b) with a + b = 1/icc - 1 has mean a/(a+b) and intra-image correlation icc.
    scale = 1 / icc - 1
    a, b = mean * scale, (1 - mean) * scale
    values: list[float] = []
    clusters: list[int] = []
    for image in range(images):
        ability = rng.betavariate(a, b)
        for _ in range(rng.randint(*rows)):
            values.append(1.0 if rng.random() < ability else 0.0)
            clusters.append(image)
    return values, clusters


def coverage(
    seed: int, *, images: int, mean: float, icc: float, rows: tuple[int, int] = (3, 6)
) -> tuple[float, float, float]:
    """Return (clustered coverage, Wilson coverage, mean design effect) over RUNS runs."""
    rng = random.Random(seed)
    ours = theirs = 0
    deff = 0.0
    for _ in range(RUNS):
        values, clusters = simulate(rng, images=images, mean=mean, icc=icc, rows=rows)
        ci = clustered_interval(values, clusters)
        assert ci is not None
        assert ci.design_effect is not None
        plain = wilson(int(sum(values)), len(values))
        assert plain is not None
        ours += ci.low <= mean <= ci.high
        theirs += plain[0] <= mean <= plain[1]
        deff += ci.design_effect
    return ours / RUNS, theirs / RUNS, deff / RUNS


def test_the_clustered_interval_covers_the_planted_truth_where_wilson_does_not() -> None:
    # 200 images of 3-6 rows, ICC 0.4: design effect 1 + (E[m²]/E[m] - 1)·ICC = 1 + (86/18 - 1)
    # ·0.4 = 2.51, so Wilson's half-width is 1/sqrt(2.51) of what it should be: it covers
    # P(|Z| < 1.24) = 79%.
    ours, theirs, deff = coverage(22, images=200, mean=0.7, icc=0.4)
    print(
        f"\ncoverage over {RUNS} runs: clustered {ours:.1%}, Wilson {theirs:.1%}; deff {deff:.2f}"
    )
    assert 0.93 <= ours <= 0.97
    assert theirs < 0.85
    assert deff == pytest.approx(1 + (86 / 18 - 1) * 0.4, rel=0.05)


def test_few_images_keep_their_coverage_through_the_t_correction() -> None:
    # 6 images: with z in place of t on 5 degrees of freedom the interval covers 89% here.
    ours, theirs, _ = coverage(23, images=6, mean=0.6, icc=0.4)
    print(f"\n6 images, {RUNS} runs: clustered {ours:.1%}, Wilson {theirs:.1%}")
    assert 0.94 <= ours <= 0.99
    assert theirs < 0.85


def test_the_design_effect_is_the_rows_per_image_when_an_image_decides_its_rows() -> None:
    rng = random.Random(5)
    m, images = 4, 300
    # Correct per image: every row of an image agrees (ICC 1), deff = m·G/(G-1) ≈ m.
    per_image = [1.0 if rng.random() < 0.6 else 0.0 for _ in range(images)]
    values = [v for v in per_image for _ in range(m)]
    clusters = [g for g in range(images) for _ in range(m)]
    shared = clustered_interval(values, clusters)
    assert shared is not None
    assert shared.design_effect == pytest.approx(m, rel=0.02)
    # Independent rows on the same images: deff ≈ 1 (its sampling SD here is about 0.09).
    alone = [1.0 if rng.random() < 0.6 else 0.0 for _ in values]
    independent = clustered_interval(alone, clusters)
    assert independent is not None
    assert independent.design_effect == pytest.approx(1.0, abs=0.25)


def test_with_k_samples_per_row_the_interval_covers_item_and_sampling_noise() -> None:
    # K = 3 answers per row. A row the model knows (drawn as above, by its image's ability) is
    # answered right with probability 0.9, one it does not with 0.1, so the planted accuracy is
    # 0.8·mean + 0.1 and the answers carry sampling noise on top of the images'. The interval
    # takes each row's mean over its K answers and trials = rows x K, as `--samples` feeds it.
    rng = random.Random(31)
    k, mean, covered = 3, 0.65, 0
    for _ in range(RUNS // 2):
        values, clusters = simulate(rng, images=100, mean=mean, icc=0.3, rows=(3, 6))
        row_means = [
            sum(rng.random() < min(1.0, max(0.0, v * 0.8 + 0.1)) for _ in range(k)) / k
            for v in values
        ]
        ci = clustered_interval(row_means, clusters, trials=len(values) * k)
        assert ci is not None
        covered += ci.low <= 0.8 * mean + 0.1 <= ci.high
    share = covered / (RUNS // 2)
    print(f"\nK = {k}: clustered interval covers the planted mean in {share:.1%}")
    assert 0.92 <= share <= 0.98
