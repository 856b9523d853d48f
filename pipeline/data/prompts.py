"""Official DrVD-Bench prompts: turn a Sample into a ChatRequest. Pure, no I/O.

Two protocols, both from the authors' code:

    official  (A) `qwen2.5vl_example.py`: per-kind system prompt, image size and sampling
    notebook  (B) the authors' notebook `api_infer`: one system prompt, 1024/85,
                  temperature 0.0, max_tokens 300 for every row

The user text is the same in both. Unlike the official scripts, the template is chosen per
row from the row's own kind, never from the first line of the file (PROTOCOL §2.4, §4 Q7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pipeline.records import ChatRequest, ImageSpec, Sample

# Bump whenever any string or parameter below changes: it is part of every cache key.
PROTOCOL_VERSION = "drvd-prompts-1"

PROTOCOLS = ("official", "notebook")
DEFAULT_PROTOCOL = "official"

SYSTEM_ANALYSIS = "You are a helpful medical image analysis assistant."
SYSTEM_DISCRETE = "Only respond with one capital letter."
SYSTEM_JOINT = "Respond with four or five capital letters (A-H), separated by commas."

# `{options}` is the row's options joined with "\n"; the official code concatenates, so
# braces inside questions are data, never placeholders (str.format does not re-scan values).
ANALYSIS_TEMPLATE = (
    "Question: {question}\nOptions:\n{options}\n\nProvide only the letter as your answer."
)
REPORT_TEMPLATE = (
    "{question}\n\nWrite the image report as a single coherent paragraph, no more than 500 words."
)
DISCRETE_TEMPLATE = (
    "You are participating in an educational exercise based on visual information.\n\n"
    "Question:\n{question}\nOptions:\n{options}\n\n"
    "Please answer with a single letter (A-H) only."
)

# Image preprocessing (longest side, JPEG quality) per the official scripts.
ANALYSIS_IMAGE = (1024, 85)
DISCRETE_IMAGE = (512, 75)

# Protocol A sampling: None means "not sent" (provider default).
DISCRETE_TEMPERATURE = 0.0
DISCRETE_MAX_TOKENS = 50
JOINT_TEMPERATURE = 0.0
JOINT_MAX_TOKENS = 100

# Protocol B (notebook `api_infer` defaults, used for every file).
NOTEBOOK_SYSTEM = SYSTEM_ANALYSIS
NOTEBOOK_IMAGE = (1024, 85)
NOTEBOOK_TEMPERATURE = 0.0
NOTEBOOK_MAX_TOKENS = 300


def _options(row: dict[str, Any]) -> str:
    options: Sequence[str] = row["options"]
    return "\n".join(options)


def user_text(sample: Sample) -> str:
    """Return the user text for a sample; identical in both protocols."""
    row = sample.row
    if sample.kind == "evidence":
        return ANALYSIS_TEMPLATE.format(question=row["question"], options=_options(row))
    if sample.kind == "report":
        return REPORT_TEMPLATE.format(question=row["question"])
    if sample.kind == "independent":
        return DISCRETE_TEMPLATE.format(question=row["question"], options=_options(row))
    text: str = row["joint_prompt"]
    return text


def build_request(
    sample: Sample,
    protocol: str = DEFAULT_PROTOCOL,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    epoch: int = 0,
) -> ChatRequest:
    """Build the official request for a sample under `protocol` ("official" or "notebook").

    Args:
        sample: the row.
        protocol: "official" (the authors' script) or "notebook".
        max_tokens: replaces the protocol's max_tokens on every request (a deviation that
            reasoning models need: their thoughts count against it).
        temperature: replaces the protocol's temperature (0, or the provider's default) on
            every request (a deviation, for `--samples` on files the protocol sends at 0).
        epoch: which of `--samples K` answers the request is for (0: the official one).
    """
    request = _official_request(sample, protocol)
    if max_tokens is not None:
        request = replace(request, max_tokens=max_tokens)
    if temperature is not None:
        request = replace(request, temperature=temperature)
    return replace(request, epoch=epoch) if epoch else request


def _official_request(sample: Sample, protocol: str) -> ChatRequest:
    if protocol not in PROTOCOLS:
        msg = f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}"
        raise ValueError(msg)
    text = user_text(sample)
    if protocol == "notebook":
        return ChatRequest(
            system=NOTEBOOK_SYSTEM,
            text=text,
            image=ImageSpec(sample.image, *NOTEBOOK_IMAGE),
            temperature=NOTEBOOK_TEMPERATURE,
            max_tokens=NOTEBOOK_MAX_TOKENS,
        )
    if sample.kind == "independent":
        return ChatRequest(
            system=SYSTEM_DISCRETE,
            text=text,
            image=ImageSpec(sample.image, *DISCRETE_IMAGE),
            temperature=DISCRETE_TEMPERATURE,
            max_tokens=DISCRETE_MAX_TOKENS,
        )
    if sample.kind == "joint":
        return ChatRequest(
            system=SYSTEM_JOINT,
            text=text,
            image=ImageSpec(sample.image, *ANALYSIS_IMAGE),
            temperature=JOINT_TEMPERATURE,
            max_tokens=JOINT_MAX_TOKENS,
        )
    # evidence and report: the "analysis" mode leaves sampling to the provider.
    return ChatRequest(
        system=SYSTEM_ANALYSIS,
        text=text,
        image=ImageSpec(sample.image, *ANALYSIS_IMAGE),
    )
