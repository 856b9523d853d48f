"""The design effect through a whole run: the test server answers as a model of known behaviour
(tests/fakebehaviour.py), and the summary's clustered interval must see it. When an image decides
all of its rows, the design effect is about the rows per image; when every answer is drawn on its
own, about 1. The rows per image are counted here from the data files, not by our code."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fakebehaviour import make_behaviour
from fakeserver import FakeConfig, running
from procs import lines_of

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.run.runner import run_eval
from pipeline.scoring.stats import wilson

PAGE = False
STEMS = ("visual_evidence_qa", "independent_qa")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deff") / "data"
    split = {"visual_evidence_qa": 0.5, "independent_qa": 0.5}
    write_dataset(root, total=600, images=75, sizes=(32,), split=split, seed=5)
    return root


async def _summary(data: Path, tmp: Path, behaviour: str) -> dict:
    fake = FakeConfig(behaviour=make_behaviour(behaviour, data, seed=11))
    async with running(fake) as server:
        flags = {"model": "openai:m", "data": data, "out": tmp, "run_name": "r",
                 "judge": "none", "base_url": server.url, "page": "off"}  # fmt: skip
        cfg = load_config(flags, {"DRVD_CACHE_DIR": str(tmp / "cache")})
        result = await run_eval(cfg, show_progress=False)
    assert result.exit_code == ExitCode.OK, result.fatal
    return result.summary


def _rows_per_image(path: Path) -> float:
    """Σm²/Σm: the rows per image a row sees, which the design effect reaches when an image
    decides all of its rows."""
    sizes = Counter(row["image_paths"] for row in lines_of(path))
    return sum(m * m for m in sizes.values()) / sum(sizes.values())


async def test_rows_decided_by_their_image_have_a_design_effect_near_the_rows_per_image(
    data: Path, tmp_path: Path
) -> None:
    summary = await _summary(data, tmp_path, "image:0.5")
    for stem in STEMS:
        ci = summary["files"][stem]["ci"]
        expected = _rows_per_image(data / f"{stem}.jsonl")
        print(f"\n{stem}: design effect {ci['design_effect']:.2f}, rows per image {expected:.2f}")
        assert expected > 3.5
        assert 0.7 * expected <= ci["design_effect"] <= 1.4 * expected
        file = summary["files"][stem]
        low, high = wilson(file["correct"], file["n"]) or (0.0, 1.0)
        assert ci["high"] - ci["low"] > 1.4 * (high - low)  # wider than the rows' own


async def test_answers_drawn_one_by_one_have_a_design_effect_near_one(
    data: Path, tmp_path: Path
) -> None:
    summary = await _summary(data, tmp_path, "item:0.6")
    for stem in STEMS:
        ci = summary["files"][stem]["ci"]
        print(f"\n{stem}: design effect {ci['design_effect']:.2f} (independent answers)")
        assert 0.6 <= ci["design_effect"] <= 1.5
        assert ci["low"] <= 0.6 <= ci["high"]
