"""Models of known behaviour for the fake server: answers planted from the dataset's gold.

`python tests/fakeserver.py --truth DIR --behaviour NAME[:P]` (for these names; the sampled
ones, item and image, are in fakebehaviour.py) reads the dataset in DIR (the
four DrVD files and their images) and answers every multiple-choice and joint request by the
behaviour NAME; anything else (reports, judge prompts) gets the server's default answer. A
behaviour is a small class in BEHAVIOURS, so more can be added beside these:

    prior            looks at the image: with the item's own image it answers right; with no
                     image, or another image, it answers by a fixed prior (the first option)
    first-option:P   ignores the image: option A with probability P, else the right answer
                     (drawn per request from a hash of its text, so it is reproducible)

A request is matched to its item by its question and the set of its option texts (so a rotated
item is the same item), or by the whole joint prompt; an image by its nearest 8x8 thumbnail
among the dataset's images. The ledger records each answer (`LedgerEntry.answer`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from PIL import Image

_OPTION = re.compile(r"^\s*([A-H])[.)]\s*(.*?)\s*$")
LEVELS = ("modality", "organ", "lesion", "diagnosis")
Answerer = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class Item:
    """One dataset item as the server knows it: gold option texts (or joint letters), image."""

    gold: str  # MCQ: the gold option's text; joint: "B,C,A,D"
    image: str  # image_paths
    joint: bool = False


@dataclass(frozen=True)
class Asked:
    """What a request asks: its item, its options in order (letter, text), and the image sent."""

    item: Item
    letters: tuple[tuple[str, str], ...]
    image: str | None  # the dataset image the sent one is nearest to; None: no image sent

    def right(self) -> str:
        """Return the right answer to this request."""
        if self.item.joint:
            return self.item.gold
        return next(letter for letter, text in self.letters if text == self.item.gold)

    def first(self) -> str:
        """Return the first option (per question for a joint request)."""
        return "A,A,A,A" if self.item.joint else self.letters[0][0]


def _question(text: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """Return (question, options) of an official MCQ user text, or None."""
    if "Question:" not in text or "Options:" not in text:
        return None
    question = text.split("Question:", 1)[1].split("Options:", 1)[0].strip()
    block = text.split("Options:", 1)[1].strip("\n").split("\n\n")[0]
    options = []
    for line in block.splitlines():
        if m := _OPTION.match(line):
            options.append((m.group(1), m.group(2)))
    return (question, tuple(options)) if options else None


def _thumb(image: Image.Image) -> tuple[int, ...]:
    return tuple(image.convert("L").resize((8, 8)).getdata())


class Truth:
    """The dataset's gold answers and images, read from a DrVD folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mcq: dict[tuple[str, frozenset[str]], Item] = {}
        self.joint: dict[str, Item] = {}
        self._thumbs: dict[str, tuple[int, ...]] | None = None
        for name in ("visual_evidence_qa", "independent_qa", "joint_qa"):
            path = root / f"{name}.jsonl"
            if not path.is_file():
                continue
            for line in path.read_bytes().splitlines():
                if line.strip():
                    self._add(orjson.loads(line))

    def _add(self, row: dict[str, Any]) -> None:
        image = str(row.get("image_paths"))
        if "joint_prompt" in row:
            gold = ",".join(str(row.get(f"{lv}_answer") or " ")[0] for lv in LEVELS)
            self.joint[row["joint_prompt"]] = Item(gold, image, joint=True)
            return
        texts = [_OPTION.match(o) for o in row["options"]]
        answer = _OPTION.match(row["answer"])
        if answer is None or not all(texts):
            return
        key = (row["question"].strip(), frozenset(m.group(2) for m in texts if m))
        self.mcq[key] = Item(answer.group(2), image)

    def _nearest(self, data_url: str) -> str:
        if self._thumbs is None:
            images = {i.image for i in (*self.mcq.values(), *self.joint.values())}
            self._thumbs = {}
            for rel in sorted(images):
                with Image.open(self.root / rel) as img:
                    self._thumbs[rel] = _thumb(img)
        raw = base64.b64decode(data_url.split(",", 1)[1])
        with Image.open(io.BytesIO(raw)) as img:
            sent = _thumb(img)
        thumbs = self._thumbs
        return min(
            thumbs, key=lambda rel: sum(abs(a - b) for a, b in zip(sent, thumbs[rel], strict=True))
        )

    def asked(self, payload: dict[str, Any]) -> Asked | None:
        """Return what a chat request asks, or None when it is no item of the dataset."""
        texts: list[str] = []
        url: str | None = None
        for msg in payload.get("messages") or []:
            content = msg.get("content")
            parts: list[dict[str, Any]] = (
                [{"type": "text", "text": content}] if isinstance(content, str) else content
            )
            for part in parts if msg.get("role") == "user" else []:
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    url = str(part["image_url"]["url"])
        text = "\n".join(texts)
        letters: tuple[tuple[str, str], ...] = ()
        item = self.joint.get(text)
        if item is None and (parsed := _question(text)) is not None:
            question, letters = parsed
            item = self.mcq.get((question, frozenset(t for _, t in letters)))
        if item is None:
            return None
        return Asked(item, letters, self._nearest(url) if url else None)


class Prior:
    """Right with the item's own image; the first option without it or with another image."""

    def __init__(self, truth: Truth, param: float | None) -> None:
        self.truth = truth

    def __call__(self, payload: dict[str, Any]) -> str | None:
        asked = self.truth.asked(payload)
        if asked is None:
            return None
        return asked.right() if asked.image == asked.item.image else asked.first()


class FirstOption:
    """Option A with probability P (default 0.5), else the right answer; the image ignored."""

    def __init__(self, truth: Truth, param: float | None) -> None:
        self.truth = truth
        self.p = 0.5 if param is None else param

    def __call__(self, payload: dict[str, Any]) -> str | None:
        asked = self.truth.asked(payload)
        if asked is None:
            return None
        seed = hashlib.sha256(orjson.dumps(payload.get("messages"), option=orjson.OPT_SORT_KEYS))
        rng = random.Random(seed.hexdigest())
        if asked.item.joint:
            right = asked.right().split(",")
            return ",".join("A" if rng.random() < self.p else r for r in right)
        return asked.first() if rng.random() < self.p else asked.right()


BEHAVIOURS: dict[str, Callable[[Truth, float | None], Answerer]] = {
    "prior": Prior,
    "first-option": FirstOption,
}


def behaviour(spec: str, truth_dir: Path) -> Answerer:
    """Return the answerer `NAME[:P]` names, over the dataset in `truth_dir`."""
    name, _, param = spec.partition(":")
    if name not in BEHAVIOURS:
        msg = f"unknown behaviour {name!r}; choose from {', '.join(BEHAVIOURS)}"
        raise SystemExit(msg)
    return BEHAVIOURS[name](Truth(truth_dir), float(param) if param else None)


def options_of(text: str) -> Sequence[tuple[str, str]]:
    """Return the (letter, text) options of an official MCQ user text (tests recount with it)."""
    parsed = _question(text)
    return parsed[1] if parsed else ()
