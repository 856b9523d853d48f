"""Models of known behaviour for the fake server: right with a planted probability, so tests can
check that a statistic recovers the truth.

    --truth DIR --behaviour item:P    every request is right with probability P, drawn anew
    --truth DIR --behaviour image:P   each image is right with probability P, once: all of its
                                      rows right (every level) or all wrong, on every request

The server learns the gold answers from DIR (a dataset in the DrVD format): an MCQ prompt is found
by its question and options, a joint prompt by its whole text (each level right or wrong on its
own). Report prompts, and prompts DIR does not hold, get the server's default answer. A wrong
answer is another offered letter: drawn per request under `item`, the first one under `image`.

Draws are seeded by (seed, prompt, how many times that prompt came before), so they do not depend
on the order concurrent requests arrive in. `BEHAVIOURS` maps a name to its answer function: add a
behaviour there (and nothing else) for a new mode.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

JOINT_LEVELS = ("modality", "organ", "lesion", "diagnosis")  # as the official joint scorer reads
# The question and options of an MCQ prompt (both official templates put them this way).
_MCQ = re.compile(r"Question:[ \n](.*?)\nOptions:\n(.*?)\n\n", re.DOTALL)
_LETTER = re.compile(r"^\s*\(?([A-H])[.)]\s", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Item:
    """A prompt whose gold the server knows: one letter, or one per joint level."""

    image: str
    golds: tuple[str, ...]
    offered: tuple[tuple[str, ...], ...]  # the letters offered, per question


@dataclass
class Behaviour:
    """A named behaviour with its probability, over the gold answers of a dataset."""

    name: str
    p: float
    items: dict[str, Item]  # prompt key (see `prompt_key`) → its item
    seed: int = 0
    seen: Counter[str] = field(default_factory=Counter)  # requests so far per prompt key

    def answer(self, payload: dict[str, Any], text: str) -> str | None:
        """Return this behaviour's answer to a request, or None for the server's default."""
        key = prompt_key(text)
        if key is None or (item := self.items.get(key)) is None:
            return None
        n = self.seen[key]
        self.seen[key] += 1
        return BEHAVIOURS[self.name](self, item, random.Random(f"{self.seed}:{key}:{n}"), payload)


def prompt_key(text: str) -> str | None:
    """Return what finds a prompt's item: question and options of an MCQ, else the whole text."""
    if (found := _MCQ.search(text)) is not None:
        return f"{found.group(1)}\n{found.group(2)}"
    return text if len(_LETTER.findall(text)) > 4 else None  # a joint prompt: several questions


def _wrong(gold: str, offered: tuple[str, ...], rng: random.Random | None) -> str:
    others = [letter for letter in offered if letter != gold] or [x for x in "ABCD" if x != gold]
    return rng.choice(others) if rng is not None else others[0]


def _per_item(b: Behaviour, item: Item, rng: random.Random, _payload: dict[str, Any]) -> str:
    """Each question right with probability p, drawn for every request."""
    letters = [
        gold if rng.random() < b.p else _wrong(gold, offered, rng)
        for gold, offered in zip(item.golds, item.offered, strict=True)
    ]
    return ",".join(letters)


def _per_image(b: Behaviour, item: Item, _rng: random.Random, _payload: dict[str, Any]) -> str:
    """Every question of an image right, or every one wrong: drawn once per image."""
    right = random.Random(f"{b.seed}:image:{item.image}").random() < b.p
    letters = [
        gold if right else _wrong(gold, offered, None)
        for gold, offered in zip(item.golds, item.offered, strict=True)
    ]
    return ",".join(letters)


Answer = Callable[[Behaviour, Item, random.Random, dict[str, Any]], str | None]
BEHAVIOURS: dict[str, Answer] = {"item": _per_item, "image": _per_image}


def load_truth(root: Path) -> dict[str, Item]:
    """Return the items of a DrVD-format dataset by prompt key; a key with two golds is an error."""
    items: dict[str, Item] = {}
    for path in sorted(root.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            row = orjson.loads(line)
            found = _item(row)
            if found is None:
                continue
            key, item = found
            if items.setdefault(key, item) != item:
                msg = f"{path}: two rows ask {key[:60]!r} with different answers or images"
                raise SystemExit(msg)
    return items


def _item(row: dict[str, Any]) -> tuple[str, Item] | None:
    image = str(row.get("image_paths"))
    if isinstance(prompt := row.get("joint_prompt"), str):
        golds = tuple(str(row.get(f"{level}_answer") or " ")[0] for level in JOINT_LEVELS)
        blocks: list[tuple[str, ...]] = [
            tuple(_LETTER.findall(b)) for b in prompt.split("\n\n") if _LETTER.search(b)
        ]
        blocks += [tuple("ABCD")] * (len(JOINT_LEVELS) - len(blocks))
        return prompt, Item(image, golds, tuple(blocks[: len(JOINT_LEVELS)]))
    options, answer = row.get("options"), row.get("answer")
    if row.get("task") == "report_generation" or not isinstance(options, list):
        return None
    gold = str(answer).split(".")[0].strip()
    offered = tuple(str(o).strip()[:1] for o in options if str(o).strip())
    key = f"{row.get('question')}\n" + "\n".join(map(str, options))
    return key, Item(image, (gold,), (offered,))


def make_behaviour(spec: str, truth: Path | None, seed: int = 0) -> Behaviour:
    """Return the behaviour `NAME:P` names (e.g. item:0.6) over the gold answers in `truth`."""
    name, _, p = spec.partition(":")
    if name not in BEHAVIOURS or truth is None:
        msg = f"--behaviour {spec!r}: choose NAME:P from {', '.join(BEHAVIOURS)}, with --truth DIR"
        raise SystemExit(msg)
    try:
        chance = float(p)
    except ValueError:
        chance = -1.0
    if not 0 <= chance <= 1:
        msg = f"--behaviour {spec!r}: P must be a probability from 0 to 1"
        raise SystemExit(msg)
    return Behaviour(name, chance, load_truth(truth), seed)
