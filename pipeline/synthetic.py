"""Synthetic datasets in the exact DrVD-Bench format, for tests and benchmarks (never real data).

Images are smooth gradients with a few shapes: cheap to make, realistic to encode.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw

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
_WORDS = ("kidney", "liver", "lung", "heart", "spleen", "brain", "bone", "colon", "node", "cyst")


def make_image(path: Path, size: int, rng: random.Random) -> None:
    """Write one grey or RGB image of `size` px on the long side (JPEG or PNG by suffix)."""
    w, h = size, max(16, int(size * rng.uniform(0.6, 1.0)))
    mode = "RGB" if rng.random() < 0.3 else "L"
    img = Image.linear_gradient("L").resize((w, h)).convert(mode)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(4, max(5, size // 6))
        fill = tuple(rng.randrange(256) for _ in range(3)) if mode == "RGB" else rng.randrange(256)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)


def _options(rng: random.Random, n: int) -> tuple[list[str], str]:
    words = rng.sample(_WORDS, n)
    options = [f"{chr(65 + i)}. {word}" for i, word in enumerate(words)]
    return options, rng.choice(options)


def make_row(stem: str, image: str, rng: random.Random, index: int) -> dict[str, Any]:
    """Return one synthetic row of the given file."""
    modality = rng.choice(MODALITIES)
    base = {"image_paths": image, "modality": modality, "unique_id": f"synthetic-{stem}-{index}"}
    if stem == "joint_qa":
        blocks, answers = [], {}
        for i, level in enumerate(JOINT_LEVELS, start=1):
            options, answer = _options(rng, 4)
            blocks.append(f"{i}. Which {level} is shown?\n" + "\n".join(options))
            answers[f"{level}_answer"] = answer
        prompt = "\n\n".join(blocks) + "\n\nAnswer with four capital letters separated by commas."
        return {**base, "joint_prompt": prompt, **answers}
    if stem == "report_generation":
        words = " ".join(rng.choice(_WORDS) for _ in range(12))
        report = f"Findings: {words}. Impression: no acute abnormality."
        question = "Please write a report describing the findings of this image."
        return {**base, "question": question, "task": "report_generation", "answer": report}
    options, answer = _options(rng, rng.choice((4, 5, 6)))
    row = {**base, "question": f"Which structure is shown? (item {index})", "options": options}
    row["answer"] = answer
    if stem == "visual_evidence_qa":
        row["task"] = rng.choice(TASKS)
    else:
        row["level"] = rng.choice(LEVELS)
    return row


def write_dataset(
    root: Path,
    *,
    total: int = 40,
    split: dict[str, float] | None = None,
    images: int = 8,
    sizes: tuple[int, ...] = (64,),
    seed: int = 0,
) -> dict[str, int]:
    """Write a synthetic DrVD-format dataset under `root`; return the rows per file."""
    rng = random.Random(seed)
    split = split or DEFAULT_SPLIT
    paths = []
    for i in range(images):
        rel = f"images/synthetic_{i:05d}.{'png' if i % 3 == 0 else 'jpg'}"
        make_image(root / rel, sizes[i % len(sizes)], rng)
        paths.append(rel)
    counts = {stem: round(total * split.get(stem, 0.0)) for stem in FILES}
    counts = {stem: n for stem, n in counts.items() if n > 0}
    index = 0
    for stem, n in counts.items():
        with (root / f"{stem}.jsonl").open("wb") as f:
            for _ in range(n):
                row = make_row(stem, paths[index % len(paths)], rng, index)
                f.write(orjson.dumps(row) + b"\n")
                index += 1
    return counts
