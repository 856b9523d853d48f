"""pipeline.scoring.stats against textbook values and independent computations written another way.

The references here share no code with the module: McNemar's p-value as an exact Fraction sum
over a Pascal's-triangle row, by the "as unlikely or less" definition of a two-sided test; the
Wilson interval by bisection on the score test it inverts, with z found by bisection on erf.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scoring.stats import mcnemar_exact, wilson


def pascal_row(n: int) -> list[int]:
    row = [1]
    for _ in range(n):
        row = [a + b for a, b in zip([0, *row], [*row, 0], strict=True)]
    return row


def mcnemar_reference(b: int, c: int) -> Fraction:
    """Two-sided exact binomial test of b in Bin(b+c, 1/2): outcomes no likelier than b."""
    row = pascal_row(b + c)
    return Fraction(sum(x for x in row if x <= row[b]), 2 ** (b + c))


def z_reference(level: float = 0.95) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < 1 - (1 - level) / 2:
            lo = mid
        else:
            hi = mid
    return lo


Z = z_reference()


def wilson_reference(k: int, n: int) -> tuple[float, float]:
    """The p whose score test |p̂ - p| <= z·sqrt(p(1-p)/n) is just accepted, by bisection."""
    phat = k / n

    def inside(p: float) -> bool:
        return (phat - p) ** 2 <= Z * Z * p * (1 - p) / n

    def edge(out: float, inn: float) -> float:
        for _ in range(200):
            mid = (out + inn) / 2
            out, inn = (out, mid) if inside(mid) else (mid, inn)
        return inn

    low = 0.0 if k == 0 else edge(0.0, phat)
    high = 1.0 if k == n else edge(1.0, phat)
    return low, high


def test_textbook_values() -> None:
    assert mcnemar_exact(1, 6) == 0.125  # 2·(1 + 7)/2^7, exactly
    assert mcnemar_exact(6, 1) == 0.125
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == 0.0625
    for (k, n), interval in (((8, 10), (0.4902, 0.9433)), ((81, 263), (0.2553, 0.3662))):
        got = wilson(k, n)  # 81/263: Newcombe (1998), Table I
        assert got is not None
        assert (round(got[0], 4), round(got[1], 4)) == interval
    none_right = wilson(0, 10)
    assert none_right is not None
    assert none_right[0] == 0.0
    assert round(none_right[1], 4) == 0.2775
    assert wilson(0, 0) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 150), st.integers(0, 150))
def test_mcnemar_equals_the_exact_reference(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == float(min(Fraction(1), mcnemar_reference(b, c)))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_equals_the_bisected_score_test(kn: tuple[int, int]) -> None:
    k, n = kn
    got = wilson(k, n)
    assert got is not None
    assert got == pytest.approx(wilson_reference(k, n), abs=1e-9)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_mcnemar_stays_exact_on_a_full_benchmark_of_discordant_pairs() -> None:
    """7,789 discordant items: 2^7789 overflows a float; the p-value must not."""
    b, c = 3800, 3989
    n = b + c
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(b + 1)]
    top = max(logs)
    reference = 2 * math.exp(
        top + math.log(math.fsum(math.exp(x - top) for x in logs)) - n * math.log(2)
    )
    assert mcnemar_exact(b, c) == pytest.approx(reference, rel=1e-9)
    assert 0.0 < mcnemar_exact(b, c) < 0.05
