"""The benchmark's inputs: a full-size synthetic set, proportional subsets, a warm image cache."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.data.dataset import iter_samples, present_files
from pipeline.data.images import ImageCache
from pipeline.data.prompts import build_request
from pipeline.data.synthetic import FULL_SIZES, LARGE_SIZE, write_images, write_rows
from pipeline.records import ImageSpec


def make_full(root: Path, *, rows: int, images: int, large: int) -> tuple[list[str], str]:
    """Write the full-size synthetic set; return its image paths and a line describing it."""
    t0 = time.perf_counter()
    paths = write_images(root, count=images, sizes=FULL_SIZES, large=large, seed=0)
    write_rows(root, paths, total=rows, seed=0)
    took = time.perf_counter() - t0
    return paths, (
        f"data: {rows:,} synthetic rows in the DrVD-Bench format (`pipeline.data.synthetic`, split "
        f"45/35/12/8 % over the four files) cycling over {images} distinct images, "
        f"{min(FULL_SIZES)}-{max(FULL_SIZES)} px on the long side plus {large} of "
        f"{LARGE_SIZE:,} px, a third of them PNG; every prompt is unique; generated in {took:.1f} s"
    )


def make_scaled(root: Path, full: Path, images: list[str], *, rows: int) -> None:
    """Write `rows` new rows over the same images as `full` (linked, not copied)."""
    write_rows(root, images, total=rows, seed=1)
    (root / "images").symlink_to(full / "images", target_is_directory=True)


def subset(src: Path, dst: Path, rows: int) -> int:
    """Write the first rows of each file of `src` in proportion, `rows` in all; link images."""
    lines = {
        s: (src / f"{s}.jsonl").read_bytes().splitlines(keepends=True) for s in present_files(src)
    }
    total = sum(len(v) for v in lines.values())
    rows = min(rows, total)
    take = {s: rows * len(v) // total for s, v in lines.items()}
    # Largest files take the rounding remainder, so the counts add up to `rows` exactly.
    for s in sorted(lines, key=lambda s: -len(lines[s]))[: rows - sum(take.values())]:
        take[s] += 1
    dst.mkdir(parents=True, exist_ok=True)
    for s, n in take.items():
        (dst / f"{s}.jsonl").write_bytes(b"".join(lines[s][:n]))
    (dst / "images").symlink_to(src / "images", target_is_directory=True)
    return rows


def prewarm(data: Path, cache: Path) -> str:
    """Encode every (image, size/quality) pair of `data` into the image cache; describe it."""
    specs: set[ImageSpec] = set()
    for stem in present_files(data):
        for sample in iter_samples(data, stem, on_error=lambda _e: None):
            if (spec := build_request(sample).image) is not None:
                specs.add(spec)
    images = ImageCache(cache)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(images.data_url, specs))
    took = time.perf_counter() - t0
    return (
        f"encoded-image cache warm for every run after the full run: {len(specs)} (image, "
        f"size/quality) pairs, {images.misses} of them encoded now ({took:.1f} s)"
    )
