"""What the fake server bills as `usage.prompt_tokens`, written apart from pipeline/providers/tokens.py.

"flat": a quarter of the text's characters plus 85 for any image (like gpt-4o "low").
"qwen28": as DashScope bills Qwen2.5-VL. Each image the request carries is decoded (base64 data
URL → Pillow) and counted at its received size by Qwen's `smart_resize` (qwen_vl_utils): sides
rounded to 28 px, the area fitted into [4, 1280] blocks of 28 x 28, one token per block plus the
vision start and end tokens. Text is counted in pieces a BPE tokenizer makes: a digit, a
punctuation mark, a word (one more token per further 6 letters), plus the chat template's
`<|im_start|>role\\n … <|im_end|>\\n` around each message and the assistant turn's opening.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from typing import Any

from PIL import Image

BILLING = ("flat", "qwen28")
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 4 * 28 * 28
QWEN_MAX_PIXELS = 1280 * 28 * 28  # DashScope's cap without vl_high_resolution_images
QWEN_VISION_MARKERS = 2
TEMPLATE_PER_MESSAGE = 5  # <|im_start|>, role, \n ... <|im_end|>, \n
TEMPLATE_REPLY = 3  # <|im_start|>assistant\n
_PIECES = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def text_pieces(text: str) -> int:
    """Count a text's tokens as word, digit and punctuation pieces."""
    return sum(1 + (len(p) - 1) // 6 if p.isalpha() else 1 for p in _PIECES.findall(text))


def qwen_tokens(width: int, height: int) -> int:
    """Return Qwen2.5-VL's tokens for an image received at this size (qwen_vl_utils)."""
    f = QWEN_FACTOR
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    if h_bar * w_bar > QWEN_MAX_PIXELS:
        beta = math.sqrt(height * width / QWEN_MAX_PIXELS)
        h_bar = math.floor(height / beta / f) * f
        w_bar = math.floor(width / beta / f) * f
    elif h_bar * w_bar < QWEN_MIN_PIXELS:
        beta = math.sqrt(QWEN_MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return (h_bar // f) * (w_bar // f) + QWEN_VISION_MARKERS


def received_size(url: str) -> tuple[int, int] | None:
    """Return the (width, height) of the image a data URL carries, or None if it is none."""
    head, sep, payload = url.partition(";base64,")
    if not head.startswith("data:") or not sep:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload))) as img:
            return img.size
    except (binascii.Error, OSError, ValueError):
        return None


def qwen_prompt_tokens(payload: dict[str, Any]) -> int:
    """Return the prompt tokens DashScope would bill for a chat request to Qwen2.5-VL."""
    tokens = TEMPLATE_REPLY
    for message in payload.get("messages") or []:
        if not isinstance(message, dict):
            continue
        tokens += TEMPLATE_PER_MESSAGE
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                tokens += text_pieces(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url", "") if isinstance(image, dict) else ""
                size = received_size(str(url))
                tokens += qwen_tokens(*size) if size else 0
    return tokens
