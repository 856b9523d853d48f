"""Token estimates before any call: text by its length, images by each provider's formula.

The image is measured as it will be sent: its header's size, shrunk to the protocol's longest
side exactly as the encoder does (truncating, never upscaling; pipeline/data/images.py), then counted
by the provider's documented rule (docs/PROVIDERS.md §Image tokens):

    Qwen-VL (DashScope, vLLM)  round each side to 28 px (Qwen2.5-VL) or 32 px (Qwen3-VL, current
                               qwen-vl-max/-plus), fit into [min_pixels, max_pixels], one token
                               per block, + 2 for the vision start and end markers
    OpenAI gpt-4o              "high" detail: fit in 2048², shortest side to 768, 170 per
                               512-px tile + 85; gpt-4o-mini bills ≈ 2,833 + 5,667 per tile

Text is counted at `CHARS_PER_TOKEN`: English prose in these tokenizers averages about 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from PIL import Image

from pipeline.records import ChatRequest

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD = 4  # role markers and separators per message
QWEN_MIN_TOKENS = 4
MIN_SIDE = 28  # px: the smallest image a request is assumed to carry
QWEN_MAX_TOKENS = 1280  # DashScope's default cap per image without vl_high_resolution_images
ImageRule = Callable[[int, int], int]


def text_tokens(text: str | None) -> int:
    """Return the estimated tokens of a text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def qwen_image_tokens(
    width: int, height: int, *, block: int = 28, max_tokens: int = QWEN_MAX_TOKENS
) -> int:
    """Return Qwen-VL's tokens for an image of this size (one per square block, + 2)."""
    min_pixels, max_pixels = QWEN_MIN_TOKENS * block * block, max_tokens * block * block
    h = max(block, round(height / block) * block)
    w = max(block, round(width / block) * block)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(block, math.floor(height / beta / block) * block)
        w = max(block, math.floor(width / beta / block) * block)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / block) * block
        w = math.ceil(width * beta / block) * block
    return h * w // (block * block) + 2


def openai_image_tokens(width: int, height: int, *, base: int = 85, per_tile: int = 170) -> int:
    """Return OpenAI's "high" detail tokens: 512-px tiles after fitting 2048² and 768 short."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + per_tile * math.ceil(w / 512) * math.ceil(h / 512)


def image_rule(model_id: str, provider: str) -> ImageRule:
    """Return the image token rule of a model, from its provider and API id."""
    name = model_id.lower()
    if provider == "openai" or name.startswith(("gpt-", "o1", "o3", "o4")):
        if "mini" in name:
            return lambda w, h: openai_image_tokens(w, h, base=2833, per_tile=5667)
        return openai_image_tokens
    if "qwen3" in name or name.startswith(("qwen-vl-max", "qwen-vl-plus")):
        return lambda w, h: qwen_image_tokens(w, h, block=32)
    return qwen_image_tokens  # Qwen2.5-VL, and the default for an unknown model


def sent_size(width: int, height: int, max_dim: int) -> tuple[int, int]:
    """Return the size the encoder sends: longest side down to `max_dim`, truncated."""
    if max(width, height) <= max_dim:
        return width, height
    ratio = max_dim / max(width, height)
    return int(width * ratio), int(height * ratio)


@lru_cache(maxsize=65536)
def _header_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:  # the header only
            return img.size
    except Exception:  # unreadable: the row fails before any call
        return None


def image_size(path: Path) -> tuple[int, int] | None:
    """Return an image file's (width, height) from its header, or None if it cannot be read."""
    return _header_size(str(path))


def prompt_tokens(request: ChatRequest, rule: ImageRule) -> int:
    """Return the estimated prompt tokens of a request: its messages and its image."""
    messages = 2 if request.system is not None else 1
    tokens = text_tokens(request.system) + text_tokens(request.text) + MESSAGE_OVERHEAD * messages
    if request.image is not None and (size := image_size(request.image.path)) is not None:
        tokens += rule(*sent_size(*size, request.image.max_dim))
    return tokens


UNBOUNDED_REPLY = 512  # tokens a request without max_tokens is assumed to take, at most


def completion_bound(request: ChatRequest) -> int:
    """Return the completion tokens a request can take: its max_tokens, else `UNBOUNDED_REPLY`."""
    return request.max_tokens if request.max_tokens is not None else UNBOUNDED_REPLY


def request_tokens(request: ChatRequest, rule: ImageRule) -> int:
    """Return a request's token bound before it is sent: its prompt and its longest reply."""
    return prompt_tokens(request, rule) + completion_bound(request)
