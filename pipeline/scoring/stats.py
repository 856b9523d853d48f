"""Small exact statistics for comparing runs: a Wilson interval and McNemar's exact test.

Stdlib only. `wilson` is the score interval for a binomial proportion (Wilson 1927), better than
the normal interval near 0 and 1 and on small samples. `mcnemar_exact` is the two-sided exact
McNemar test: on the discordant pairs (b items only the first run got right, c only the other),
a binomial test of b against Bin(b + c, 1/2).
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Return the Wilson score interval (low, high) for `correct` out of `n`; None when n is 0."""
    if n <= 0:
        return None
    if not 0 <= correct <= n:
        msg = f"wilson: correct={correct} is not within 0..{n}"
        raise ValueError(msg)
    low, high = wilson_fraction(correct / n, n, z)
    # Exactly 0 and 1 at the ends, where rounding would leave a hair off.
    return (0.0 if correct == 0 else low), (1.0 if correct == n else high)


def wilson_fraction(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's interval for a proportion `p` seen on `n` trials, where `n` may be fractional
    (an effective sample size). Needs n > 0."""
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
    scale = 1 + z2 / n
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)


def mcnemar_exact(b: int, c: int) -> float:
    """Return the exact two-sided McNemar p-value: min(1, 2·P(X ≤ min(b, c))), X ~ Bin(b+c, 1/2).

    Summed in exact integers (C(n, i) built term by term) and divided once by 2^n, which Python
    rounds correctly for any size, so the result is exact to the last bit and never overflows.
    No discordant pair (b + c = 0) gives 1: nothing tells the runs apart.
    """
    if b < 0 or c < 0:
        msg = f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}"
        raise ValueError(msg)
    n, k = b + c, min(b, c)
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        tail += term
    p: float = 2 * tail / 2**n  # int / int: correctly rounded
    return min(1.0, p)
