"""The clustered interval against references worked out by hand, in exact fractions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline.scoring.clustered import (
    clustered_interval,
    paired_difference,
    robust_variance,
    t_quantile,
)
from pipeline.scoring.stats import wilson

Z = 1.959963984540054
# Student's t, 97.5% quantiles from the printed tables (Abramowitz & Stegun, Table 26.10).
T975 = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 5: 2.5705818, 6: 2.4469119,
        9: 2.2621572, 10: 2.2281389, 11: 2.2009852, 19: 2.0930241, 29: 2.0452296, 39: 2.0226909,
        60: 2.0002978, 120: 1.9799304}  # fmt: skip


@pytest.mark.parametrize(("df", "expected"), sorted(T975.items()))
def test_the_t_quantile_matches_the_table(df: int, expected: float) -> None:
    # The exact distribution inverted up to 10 degrees of freedom; the expansion beyond.
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6 if df <= 10 else 1e-5)


def test_the_robust_variance_of_a_small_example_equals_the_one_worked_by_hand() -> None:
    # Clusters a: 1,1,0  b: 1,0  c: 0 -> totals 2/3, 1/2, 0/1; p = 1/2.
    # Σ (T_g - p n_g)² = (1/2)² + 0² + (1/2)² = 1/2; V = 3/2 · (1/2) / 36 = 1/48.
    values = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    clusters = ["a", "a", "a", "b", "b", "c"]
    assert robust_variance(values, clusters) == pytest.approx(float(Fraction(1, 48)), rel=1e-12)
    ci = clustered_interval(values, clusters)
    assert ci is not None
    # The design effect: V over p(1-p)/n = (1/48) / (1/24) = 1/2; n_eff is truncated at the
    # 6 rows (never narrower than Wilson's on the rows), then scaled by (z/t_2)² for G - 1 = 2
    # degrees of freedom (Korn & Graubard): t_2 = 0.95·sqrt(2/(1 - 0.95²)) in closed form.
    assert ci.design_effect == pytest.approx(0.5)
    t2 = 0.95 * (2 / (1 - 0.95**2)) ** 0.5
    assert (ci.low, ci.high) == pytest.approx(_wilson_float(Fraction(1, 2), 6 * (Z / t2) ** 2))
    rows = wilson(3, 6)
    assert rows is not None
    assert ci.low < rows[0]  # wider than Wilson's on the rows: 3 images say little of the spread
    assert ci.clusters == 3


def test_rows_that_are_their_own_cluster_give_the_sample_variance_of_the_mean() -> None:
    # Second method: with one row per cluster the sandwich is s²/n with s² the sample variance,
    # so the design effect is n/(n-1).
    values = [1.0] * 7 + [0.0] * 13
    n = len(values)
    mean = Fraction(7, 20)
    s2 = sum((Fraction(int(v)) - mean) ** 2 for v in values) / (n - 1)
    assert robust_variance(values, list(range(n))) == pytest.approx(float(s2 / n), rel=1e-12)
    ci = clustered_interval(values, list(range(n)))
    assert ci is not None
    assert ci.design_effect == pytest.approx(n / (n - 1))


def test_identical_rows_within_an_image_have_a_design_effect_near_the_rows_per_image() -> None:
    # G images of m rows, all rows of an image alike: deff = G·m/(G-1) exactly.
    groups, m = 40, 4
    per_image = [1.0 if g % 5 < 3 else 0.0 for g in range(groups)]  # p = 3/5
    values = [v for v in per_image for _ in range(m)]
    clusters = [g for g in range(groups) for _ in range(m)]
    ci = clustered_interval(values, clusters)
    assert ci is not None
    assert ci.design_effect == pytest.approx(groups * m / (groups - 1))
    # Wilson on the effective n = G - 1 (p(1-p)/V) times (z/t_39)², wider than Wilson on all
    # G·m rows.
    n_eff = (groups - 1) * (Z / T975[39]) ** 2
    assert (ci.low, ci.high) == pytest.approx(_wilson_float(Fraction(3, 5), n_eff), rel=1e-6)
    rows = wilson(int(sum(values)), len(values))
    assert rows is not None
    assert ci.high - ci.low > rows[1] - rows[0]


def _wilson_float(p: Fraction, n: float) -> tuple[float, float]:
    # Wilson's interval, written out again from its formula (z to 1e-12).
    z = Z
    centre = float(p) + z * z / (2 * n)
    half = z * (float(p * (1 - p)) / n + z * z / (4 * n * n)) ** 0.5
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_all_right_or_one_image_is_handled_without_dividing_by_zero() -> None:
    ci = clustered_interval([1.0] * 6, ["a", "a", "b", "b", "c", "c"])
    assert ci is not None
    assert ci.high == 1.0
    assert ci.design_effect is None
    # No spread seen: n_eff is the 6 rows, still scaled by (z/t_2)² as 3 images are few.
    t2 = 0.95 * (2 / (1 - 0.95**2)) ** 0.5
    assert ci.low == pytest.approx(_wilson_float(Fraction(1), 6 * (Z / t2) ** 2)[0])
    alone = clustered_interval([1.0, 0.0, 1.0], ["x", "x", "x"])
    assert alone is not None
    assert alone.clusters == 1
    assert alone.design_effect is None
    assert (alone.low, alone.high) == pytest.approx(_wilson_float(Fraction(2, 3), 1))
    assert clustered_interval([], []) is None
    with pytest.raises(ValueError, match="cluster ids"):
        clustered_interval([1.0], [])
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        clustered_interval([2.0], ["a"])


def test_fractional_scores_count_their_trials() -> None:
    # Two samples per row, given as per-row means; trials = rows x samples sets the design effect.
    values = [1.0, 0.5, 0.5, 0.0]
    clusters = [0, 1, 2, 3]
    ci = clustered_interval(values, clusters, trials=8)
    assert ci is not None
    v = robust_variance(values, clusters)
    assert v == pytest.approx(float(Fraction(1, 6) / 4))  # s² = 1/6 (hand), over n = 4
    assert ci.design_effect == pytest.approx(float(Fraction(1, 24) / Fraction(1, 32)))


def test_a_paired_difference_uses_the_per_row_differences() -> None:
    first = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    second = [0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    clusters = ["a", "a", "b", "b", "c", "c"]
    d = paired_difference(first, second, clusters)
    assert d is not None
    assert d.diff == pytest.approx(1 / 6)
    # Differences per cluster: a: 1, b: 1, c: -1 -> totals minus mean·2: 2/3, 2/3, -4/3.
    # V = 3/2 · (4/9 + 4/9 + 16/9) / 36 = 1/9 -> half width t_2/3 = 1.43 (3 clusters: 2 df),
    # clipped to [-1, 1] on both sides.
    assert (d.low, d.high) == (-1.0, 1.0)
    assert d.clusters == 3
    # Ten images of one row: deltas 1,1,1,0 (6 times),-1 -> mean 1/5, s² = (3·16 + 6 + 36)/25/9 = 2/5,
    # V = s²/10 = 1/25 -> half width t_9 · 1/5.
    ten = paired_difference([1.0] * 3 + [0.0] * 7, [0.0] * 9 + [1.0], list(range(10)))
    assert ten is not None
    assert ten.diff == pytest.approx(0.2)
    half = T975[9] / 5
    assert (ten.low, ten.high) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-7)
    same = paired_difference(first, first, clusters)
    assert same is not None
    assert (same.low, same.high) == (0.0, 0.0)
