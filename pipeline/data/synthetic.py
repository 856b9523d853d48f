"""Synthetic datasets in the exact DrVD-Bench format, for tests and benchmarks (never real data).

Images are gradients with a grain texture and a few shapes: cheap to make, and they encode to JPEG
sizes close to real scans. A full-size set reuses a pool of distinct images across its rows, as
the real benchmark asks several questions about one image; every row's prompt is unique, so no
two rows share a response-cache entry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw, ImageFilter

from pipeline.records import FILES, JOINT_LEVELS

MODALITIES = ("CT", "MRI", "Ultrasound", "X-ray", "Pathology")
LEVELS = ("modality", "bodypart", "organ", "lesion", "diagnosis")
TASKS = ("modality_recognition", "organ_recognition", "lesion_recognition")
# Share of each file in a full-size set; the real per-file counts are not published.
DEFAULT_SPLIT = {
    "visual_evidence_qa": 0.45,
    "independent_qa": 0.35,
    "joint_qa": 0.12,
    "report_generation": 0.08,
}
FULL_SIZE = 7789  # rows in DrVD-Bench
# Long sides of a full-size pool (cycled), plus a few whole-slide-like giants.
FULL_SIZES = (256, 384, 512, 640, 768, 1024, 1024, 1280, 1536, 2048)
LARGE_SIZE = 6000
NOTICE = "SYNTHETIC.md"
_WORDS = ("kidney", "liver", "lung", "heart", "spleen", "brain", "bone", "colon", "node", "cyst")
_TEXTURE = 2048  # side of the shared grain texture; larger images stretch it
_GRAIN = 0.25  # share of texture in each pixel: JPEG sizes then resemble real scans


def make_texture(rng: random.Random) -> Image.Image:
    """Return a grey grain texture to blend into images (made once per dataset)."""
    half = _TEXTURE // 2
    noise = Image.frombytes("L", (half, half), rng.randbytes(half * half))
    return noise.filter(ImageFilter.GaussianBlur(1.2)).resize((_TEXTURE, _TEXTURE))


def make_image(
    path: Path, size: int, rng: random.Random, texture: Image.Image | None = None
) -> None:
    """Write one grey or RGB image of `size` px on the long side (JPEG or PNG by suffix)."""
    w, h = size, max(16, int(size * rng.uniform(0.6, 1.0)))
    mode = "RGB" if rng.random() < 0.3 else "L"
    img = Image.linear_gradient("L").resize((w, h))
    if texture is not None:
        if w <= _TEXTURE and h <= _TEXTURE:
            x, y = rng.randrange(_TEXTURE - w + 1), rng.randrange(_TEXTURE - h + 1)
            grain = texture.crop((x, y, x + w, y + h))
        else:
            grain = texture.resize((w, h))
        img = Image.blend(img, grain, _GRAIN)
    img = img.convert(mode)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(4, max(5, size // 6))
        fill = tuple(rng.randrange(256) for _ in range(3)) if mode == "RGB" else rng.randrange(256)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        img.save(path, quality=90)
    else:
        img.save(path, compress_level=1)  # fast: size on disk does not matter here


def write_images(
    root: Path,
    *,
    count: int,
    sizes: Sequence[int] = (64,),
    large: int = 0,
    seed: int = 0,
    texture: bool = True,
) -> list[str]:
    """Write `count` images (the last `large` of them LARGE_SIZE px); return their relative paths."""
    rng = random.Random(seed)
    grain = make_texture(rng) if texture else None
    paths = []
    for i in range(count):
        rel = f"images/synthetic_{i:05d}.{'png' if i % 3 == 0 else 'jpg'}"
        size = LARGE_SIZE if i >= count - large else sizes[i % len(sizes)]
        make_image(root / rel, size, rng, grain)
        paths.append(rel)
    return paths


def _options(rng: random.Random, n: int) -> tuple[list[str], str]:
    words = rng.sample(_WORDS, n)
    options = [f"{chr(65 + i)}. {word}" for i, word in enumerate(words)]
    return options, rng.choice(options)


def make_row(stem: str, image: str, rng: random.Random, index: int) -> dict[str, Any]:
    """Return one synthetic row of the given file; its prompt names `index`, so it is unique."""
    modality = rng.choice(MODALITIES)
    base = {"image_paths": image, "modality": modality, "unique_id": f"synthetic-{stem}-{index}"}
    if stem == "joint_qa":
        blocks, answers = [], {}
        for i, level in enumerate(JOINT_LEVELS, start=1):
            options, answer = _options(rng, 4)
            blocks.append(f"{i}. Which {level} is shown (case {index})?\n" + "\n".join(options))
            answers[f"{level}_answer"] = answer
        prompt = "\n\n".join(blocks) + "\n\nAnswer with four capital letters separated by commas."
        return {**base, "joint_prompt": prompt, **answers}
    if stem == "report_generation":
        words = " ".join(rng.choice(_WORDS) for _ in range(12))
        report = f"Findings: {words}. Impression: no acute abnormality."
        question = f"Please write a report describing the findings of this image (case {index})."
        return {**base, "question": question, "task": "report_generation", "answer": report}
    options, answer = _options(rng, rng.choice((4, 5, 6)))
    row = {**base, "question": f"Which structure is shown? (item {index})", "options": options}
    row["answer"] = answer
    if stem == "visual_evidence_qa":
        row["task"] = rng.choice(TASKS)
    else:
        row["level"] = rng.choice(LEVELS)
    return row


def write_rows(
    root: Path,
    images: Sequence[str],
    *,
    total: int,
    split: dict[str, float] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write the four JSONL files, rows cycling over `images`; return the rows per file."""
    rng = random.Random(f"rows:{seed}")
    split = split or DEFAULT_SPLIT
    counts = {stem: round(total * split.get(stem, 0.0)) for stem in FILES}
    counts = {stem: n for stem, n in counts.items() if n > 0}
    root.mkdir(parents=True, exist_ok=True)
    index = 0
    for stem, n in counts.items():
        lines = []
        for _ in range(n):
            row = make_row(stem, images[index % len(images)], rng, index)
            lines.append(orjson.dumps(row) + b"\n")
            index += 1
        (root / f"{stem}.jsonl").write_bytes(b"".join(lines))
    (root / NOTICE).write_text(
        "# Synthetic data\n\nGenerated by `pipeline.data.synthetic` in the DrVD-Bench file format for "
        "tests and benchmarks. It is **not DrVD-Bench data**: images are generated gradients and "
        "questions are placeholders.\n",
        encoding="utf-8",
    )
    return counts


def write_dataset(
    root: Path,
    *,
    total: int = 40,
    split: dict[str, float] | None = None,
    images: int = 8,
    sizes: tuple[int, ...] = (64,),
    seed: int = 0,
    large: int = 0,
) -> dict[str, int]:
    """Write a synthetic DrVD-format dataset under `root`; return the rows per file."""
    paths = write_images(root, count=images, sizes=sizes, large=large, seed=seed)
    return write_rows(root, paths, total=total, split=split, seed=seed)
