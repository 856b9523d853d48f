"""`plan`'s detectable difference: a planted difference found 80% of the time, and the plan's lines.

The simulation is the independent check of the formula: two virtual models answer the same
clustered rows, the second better by exactly the printed difference, and the paired difference's
clustered interval (what `compare` reports) excludes zero in about 80% of the runs.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from statistics import NormalDist

import orjson
import pytest
from procs import drvd, lines_of

from pipeline.data.synthetic import write_dataset
from pipeline.plan.power import detectable_difference
from pipeline.scoring.clustered import paired_difference

PAGE = False  # checks nothing of the page


def _abilities(rng: random.Random, mean: float, icc: float) -> float:
    scale = 1 / icc - 1
    return rng.betavariate(mean * scale, (1 - mean) * scale)


def test_a_planted_difference_of_the_printed_size_is_detected_80_percent_of_the_time() -> None:
    images, m, icc = 150, 4, 0.3
    rows, deff = images * m, 1 + (m - 1) * icc  # Kish: each model's design effect
    delta = detectable_difference(rows, design_effect=deff, accuracy=0.5)
    assert 0.09 < delta < 0.13
    rng = random.Random(11)
    clusters = [g for g in range(images) for _ in range(m)]
    runs, found = 800, 0
    for _ in range(runs):
        first: list[float] = []
        second: list[float] = []
        for _ in range(images):
            a = _abilities(rng, 0.5 - delta / 2, icc)
            b = _abilities(rng, 0.5 + delta / 2, icc)
            for _ in range(m):
                first.append(float(rng.random() < a))
                second.append(float(rng.random() < b))
        d = paired_difference(second, first, clusters)
        assert d is not None
        found += d.low > 0 or d.high < 0
    power = found / runs
    print(f"\nplanted difference {delta:.3f}: detected in {power:.1%} of {runs} runs")
    assert power == pytest.approx(0.8, abs=0.045)


def _implicit(rows: int, deff: float, p: float) -> float:
    """Solve δ = c·sqrt(deff·(ψ - δ²)/n) by fixed-point iteration (a second method)."""
    c = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    psi, delta = 2 * p * (1 - p), 0.0
    for _ in range(200):
        delta = c * math.sqrt(deff * (psi - delta * delta) / rows)
    return delta


def test_plan_prints_the_difference_from_the_rows_per_image_then_from_the_last_run(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    write_dataset(data, total=80, images=9, sizes=(32,))
    flags = ["--model", "random", "--data", str(data), "--out", str(tmp_path / "runs")]
    flags += ["--run-name", "r", "--judge", "none", "--cache-dir", str(tmp_path / "cache")]
    before = drvd("plan", *flags, "--json")
    assert before.returncode == 0, before.stderr
    found = orjson.loads(before.stdout)["detectable"]
    assert set(found) == {"visual_evidence_qa", "independent_qa", "joint_qa"}
    for stem, got in found.items():
        sizes = Counter(row["image_paths"] for row in lines_of(data / f"{stem}.jsonl"))
        rows = sum(sizes.values())
        per_image = sum(m * m for m in sizes.values()) / rows
        assert (got["rows"], got["images"], got["from"]) == (rows, len(sizes), "assumed")
        assert got["design_effect"] == pytest.approx(per_image, abs=1e-4)
        assert got["difference"] == pytest.approx(_implicit(rows, per_image, 0.5), abs=1e-4)
    text = drvd("plan", *flags)
    assert "detectable difference between two models (80% power, 5% two-sided" in text.stdout
    assert "assumed: rows per image" in text.stdout

    run = drvd("eval", *flags, "--quiet")
    assert run.returncode == 0, run.stderr
    summary = orjson.loads((tmp_path / "runs" / "r" / "summary.json").read_bytes())["files"]
    after = orjson.loads(drvd("plan", *flags, "--json").stdout)["detectable"]
    for stem in ("visual_evidence_qa", "independent_qa"):
        deff, p = summary[stem]["ci"]["design_effect"], summary[stem]["accuracy"]
        assert after[stem]["from"] == "last run"
        assert after[stem]["design_effect"] == pytest.approx(max(deff, 1.0), abs=1e-4)
        rows = after[stem]["rows"]
        assert after[stem]["difference"] == pytest.approx(
            _implicit(rows, max(deff, 1.0), p), abs=1e-4
        )
