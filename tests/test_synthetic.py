"""The synthetic DrVD-format generator: valid rows, unique prompts, the requested sizes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pipeline.data.dataset import iter_samples, present_files
from pipeline.data.prompts import build_request
from pipeline.data.synthetic import NOTICE, write_dataset, write_images, write_rows
from pipeline.records import FILES


def test_full_split_adds_up_and_every_row_reads_back(tmp_path: Path) -> None:
    counts = write_dataset(tmp_path, total=7789, images=4, sizes=(32,))
    assert sum(counts.values()) == 7789
    assert tuple(counts) == FILES
    errors: list[object] = []
    seen = sum(
        1
        for stem in present_files(tmp_path)
        for _ in iter_samples(tmp_path, stem, on_error=errors.append)
    )
    assert seen == 7789
    assert not errors
    assert "not DrVD-Bench data" in (tmp_path / NOTICE).read_text()


def test_every_prompt_is_unique_even_when_images_repeat(tmp_path: Path) -> None:
    write_dataset(tmp_path, total=400, images=3, sizes=(32,))
    texts = [
        build_request(sample).text
        for stem in present_files(tmp_path)
        for sample in iter_samples(tmp_path, stem, on_error=lambda e: None)
    ]
    assert len(texts) == 400
    assert len(set(texts)) == 400  # so no two rows share a response-cache entry


def test_images_have_the_requested_long_side_and_large_ones_come_last(tmp_path: Path) -> None:
    paths = write_images(tmp_path, count=4, sizes=(96, 200), large=1, texture=False)
    sides = []
    for rel in paths:
        with Image.open(tmp_path / rel) as img:
            sides.append(max(img.size))
    assert sides == [96, 200, 96, 6000]
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "jpg", "jpg", "png"]


def test_rows_over_the_same_images_can_be_written_apart(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "a", count=2, sizes=(32,))
    counts = write_rows(tmp_path / "b", paths, total=100, seed=1)
    assert sum(counts.values()) == 100
    assert {p.name for p in (tmp_path / "b").iterdir()} >= {f"{s}.jsonl" for s in FILES}
