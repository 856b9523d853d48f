"""Controls: the same item asked again under one labelled change. Pure, no I/O but a path lookup.

    no-image     the request without its image (the text and options alone)
    shuffle      every cyclic rotation of a multiple-choice item's options: n variants for n
                 options, the gold letter moving with its text (MMBench's CircularEval)
    other-image  the image swapped for another of the same modality, chosen per item from a
                 seed, so a rerun swaps in the same image

Each variant is a `Sample` the official prompts turn into a request as usual: a rotated row
gives rotated option lines, a swapped image another image digest. Its results row keeps the
item's `image_paths` (the cluster of its statistics) and says what was changed in `control`.
The report file takes no control (its metrics need the judge and BERTScore); shuffle takes only
the multiple-choice files (a joint prompt's options are inside one text).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.data.dataset import ImageFolder
from pipeline.records import ChatRequest, Kind, Sample

CONTROLS = ("no-image", "shuffle", "other-image")
LETTERS = "ABCDEFGH"
# The row kinds each control applies to; the others are skipped, with the reason said.
APPLIES: dict[str, tuple[Kind, ...]] = {
    "no-image": ("evidence", "independent", "joint"),
    "shuffle": ("evidence", "independent"),
    "other-image": ("evidence", "independent", "joint"),
}
SKIPPED = {
    "report": "report generation is scored by keywords and BERTScore through the judge: "
    "no control is run on it",
    "joint": "a joint prompt's options sit inside one text: it is not shuffled",
}
CONTROLS_DIR = "controls"  # RUN/controls/<control>/: each control's rows, apart from the run's
ROTATION_SEP = "@"  # a shuffle variant's key: "<item key>@<rotation>"


def parse_controls(text: str | None) -> tuple[str, ...]:
    """Return the controls named in a comma list (default: all); ValueError on an unknown one."""
    if not text:
        return CONTROLS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if unknown := [n for n in names if n not in CONTROLS]:
        msg = f"unknown control {unknown[0]!r}; choose from {','.join(CONTROLS)}"
        raise ValueError(msg)
    return names


def without_image(request: ChatRequest) -> ChatRequest:
    """Return the request as `no-image` sends it: the same text, no image."""
    return replace(request, image=None)


def rotations(sample: Sample) -> list[Sample] | None:
    """Return the n cyclic rotations of an item's options (rotation 0 first), or None.

    Rotation k puts option (i + k) mod n at position i under letter i, so the gold option
    visits every position once. None when the options are not lettered A, B, C... in order
    or the answer's letter is not one of them.
    """
    options = sample.row.get("options")
    answer = sample.row.get("answer")
    if not isinstance(options, list) or not isinstance(answer, str) or len(options) < 2:
        return None
    if len(options) > len(LETTERS):
        return None
    bodies = []
    for letter, option in zip(LETTERS, options, strict=False):
        text = option.strip() if isinstance(option, str) else ""
        if not text.startswith(letter):
            return None
        bodies.append(text[1:])  # ". CT": the separator and the option's text
    gold = answer.strip()[:1]
    n = len(bodies)
    if gold not in LETTERS[:n]:
        return None
    g = LETTERS.index(gold)
    out = []
    for k in range(n):
        moved = [LETTERS[i] + bodies[(i + k) % n] for i in range(n)]
        new_gold = LETTERS[(g - k) % n]
        row = {
            **sample.row,
            "options": moved,
            "answer": new_gold + answer.strip()[1:],
            "control": {"name": "shuffle", "rotation": k},
        }
        out.append(replace(sample, key=f"{sample.key}{ROTATION_SEP}{k}", row=row))
    return out


def item_key(key: str) -> tuple[str, int]:
    """Return (item key, rotation) of a shuffle variant's key (rotation 0 for any other key)."""
    base, sep, k = key.rpartition(ROTATION_SEP)
    return (base, int(k)) if sep and k.isdigit() else (key, 0)


@dataclass(frozen=True, slots=True)
class ImagePool:
    """The dataset's images by modality, to swap one for another of the same modality."""

    by_modality: Mapping[str, tuple[str, ...]]  # modality → sorted relative image paths
    seed: int = 0

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, object]], seed: int = 0) -> ImagePool:
        """Collect the images of `rows` (any of the dataset's files) by their `modality`."""
        found: dict[str, set[str]] = {}
        for row in rows:
            image, modality = row.get("image_paths"), row.get("modality")
            if isinstance(image, str) and isinstance(modality, str):
                found.setdefault(modality, set()).add(image)
        return cls({m: tuple(sorted(paths)) for m, paths in found.items()}, seed)

    def other(self, key: str, row: Mapping[str, object]) -> str | None:
        """Return the image swapped in for an item: seeded by the item's key; None if none."""
        own, modality = row.get("image_paths"), row.get("modality")
        candidates = [p for p in self.by_modality.get(str(modality), ()) if p != own]
        if not candidates:
            return None
        return random.Random(f"{self.seed}:{key}").choice(candidates)


def swapped(sample: Sample, pool: ImagePool, images: ImageFolder) -> Sample | str:
    """Return the item with another image of its modality, or why it has none."""
    other = pool.other(sample.key, sample.row)
    if other is None:
        return f"no other image of modality {sample.row.get('modality')!r} in the dataset"
    path = _resolve(images, other)
    if path is None:
        return f"the image swapped in, {other}, cannot be read"
    row = {**sample.row, "control": {"name": "other-image", "image": other}}
    return replace(sample, image=path, row=row)


def variants(
    sample: Sample, control: str, pool: ImagePool, images: ImageFolder
) -> Iterator[Sample]:
    """Yield what a control sends for one item (nothing when it does not apply to it)."""
    if sample.kind not in APPLIES[control]:
        return
    if control == "shuffle":
        yield from rotations(sample) or ()
    elif control == "other-image":
        if isinstance(changed := swapped(sample, pool, images), Sample):
            yield changed
    else:
        yield replace(sample, row={**sample.row, "control": {"name": "no-image"}})


def _resolve(images: ImageFolder, rel: str) -> Path | None:
    try:
        return images.resolve(rel)
    except OSError:
        return None
