"""Records that flow through the pipeline: frozen, slotted, validated only at the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The four DrVD-Bench files, in the order they are run and reported.
FILES = ("visual_evidence_qa", "independent_qa", "joint_qa", "report_generation")

# What a row is, decided per row from its keys (never from the file's first line):
#   evidence     has `task` (and task != "report_generation")   → MCQ, "analysis" prompt
#   independent  has `level`, no `task`                          → MCQ, "discrete" prompt
#   joint        has `joint_prompt`                              → four letters "B,D,A,C"
#   report       task == "report_generation"                     → free-text report
Kind = Literal["evidence", "independent", "joint", "report"]

# The four joint levels the official scorer reads, in answer order.
JOINT_LEVELS = ("modality", "organ", "lesion", "diagnosis")


@dataclass(frozen=True, slots=True)
class Sample:
    """One valid dataset row, ready to prompt."""

    file: str  # stem, e.g. "joint_qa"
    line: int  # 1-based line number in the JSONL file
    key: str  # stable item key derived from the row's content (+ occurrence number)
    kind: Kind
    image: Path  # resolved, existing image file
    row: dict[str, Any] = field(repr=False)  # the input row, untouched


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """An image and the official preprocessing to apply before sending it."""

    path: Path
    max_dim: int  # longest side after resize (never upscaled)
    quality: int  # JPEG quality


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything that determines the model's answer, before the image is encoded."""

    system: str | None  # None: no system message (the official keyword extraction sends none)
    text: str  # user text; sent before the image
    image: ImageSpec | None  # None: a text-only request (judge calls)
    temperature: float | None = None  # None: not sent (provider default)
    max_tokens: int | None = None  # None: not sent


@dataclass(frozen=True, slots=True)
class Completion:
    """A successful reply from a model."""

    text: str
    model: str | None = None  # the model name the response reports
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
