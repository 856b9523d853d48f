"""Encode images as data URLs exactly as the official `encode_image` does (PROTOCOL §2.5)."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import mimetypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from PIL import Image

from pipeline.files import write_atomic
from pipeline.records import ImageSpec

# Bump when the encoder's output changes for the same input: it is part of the cache key.
IMAGE_VERSION = "drvd-img-1"

# The official limit: `len(jpeg) * 1.37 > 10 MiB` (base64 inflation) triggers a smaller retry.
MAX_ENCODED_BYTES = 10 * 1024 * 1024
_BASE64_INFLATION = 1.37
_SHRINK = 0.9
_RGB_MODES = ("RGBA", "P")  # the only modes the official encoder converts
ENCODE_PIXEL_BUDGET = 16_000_000  # decoded pixels of the encodes in flight (~48 MB as RGB)


def _jpeg(img: Image.Image, max_dim: int, quality: int) -> bytes:
    w, h = img.size
    if max(w, h) > max_dim:
        ratio = max_dim / max(w, h)
        # Truncation, not rounding, as in the official code.
        img = img.resize((int(w * ratio), int(h * ratio)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _compress(path: Path, max_dim: int, quality: int, limit: int) -> bytes:
    with Image.open(path) as original:
        img = original.convert("RGB") if original.mode in _RGB_MODES else original
        # The official code recurses from the original file; a loop over the same decoded
        # image gives the same bytes. max_dim shrinks geometrically, and once it reaches 0
        # Pillow refuses the resize, which ends in the raw-bytes fallback as upstream.
        while True:
            data = _jpeg(img, max_dim, quality)
            if len(data) * _BASE64_INFLATION <= limit:
                return data
            max_dim, quality = int(max_dim * _SHRINK), int(quality * _SHRINK)


def _legacy_mime(path: Path) -> str:
    return mimetypes.guess_type(str(path))[0] or "image/jpeg"


def _raw_mime(path: Path) -> str:
    try:
        with Image.open(path) as img:
            mime = img.get_format_mimetype()
    except Exception:
        mime = None
    return mime or mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def encode_bytes(
    spec: ImageSpec, *, legacy_mime: bool = False, limit: int = MAX_ENCODED_BYTES
) -> tuple[bytes, str]:
    """Return the bytes to send for `spec` and their mime type."""
    try:
        data = _compress(spec.path, spec.max_dim, spec.quality, limit)
        mime = "image/jpeg"
    except Exception:
        # Official behaviour: anything JPEG cannot take (I;16, LA, F, ...) goes out as is.
        data = spec.path.read_bytes()
        mime = _raw_mime(spec.path)
    if legacy_mime:
        # Quirk 12: the label comes from the file name, whatever the bytes are.
        mime = _legacy_mime(spec.path)
    return data, mime


def encode_image(
    spec: ImageSpec, *, legacy_mime: bool = False, limit: int = MAX_ENCODED_BYTES
) -> str:
    """Return `spec` preprocessed and encoded as a `data:` URL."""
    data, mime = encode_bytes(spec, legacy_mime=legacy_mime, limit=limit)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@functools.lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def file_digest(path: Path) -> str:
    """Return the blake2b-128 hex digest of a file, memoized while it is unchanged."""
    st = path.stat()
    return _digest(str(path), st.st_size, st.st_mtime_ns)


def _valid_url(text: str) -> bool:
    head, sep, payload = text.partition(";base64,")
    return head.startswith("data:") and bool(sep) and bool(payload) and len(payload) % 4 == 0


class PixelBudget:
    """Caps the decoded pixels of the encodes in flight; an image over the cap runs alone.

    A 6,000 px scan decodes to ~80 MB; several at once would be the run's peak memory.
    """

    def __init__(self, pixels: int = ENCODE_PIXEL_BUDGET) -> None:
        self.pixels = pixels
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, path: Path) -> Iterator[None]:
        """Wait until `path`'s pixels fit in the budget (or nothing else is encoding)."""
        try:
            with Image.open(path) as img:  # reads the header only
                need = img.width * img.height
        except Exception:
            need = 0  # the encoder falls back to the raw bytes
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + need <= self.pixels)
            self._used += need
        try:
            yield
        finally:
            with self._free:
                self._used -= need
                self._free.notify_all()


class ImageCache:
    """Encoded images on disk under `root/images/`, or no cache when root is None."""

    def __init__(self, root: Path | None, *, warn: Callable[[str], None] | None = None) -> None:
        self._dir = None if root is None else root / "images"
        self._warn = warn or _say  # one line each, as the run's other warnings
        self._budget = PixelBudget()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._warned = False  # a full disk fails every entry: say so once

    def data_url(self, spec: ImageSpec, *, legacy_mime: bool = False) -> str:
        """Return the data URL for `spec`, from disk when already encoded."""
        if self._dir is None:
            with self._budget.hold(spec.path):
                return encode_image(spec, legacy_mime=legacy_mime)
        entry = _entry(self._dir, spec, legacy_mime)
        url = _read(entry, self._warn)
        with self._lock:
            if url is None:
                self.misses += 1
            else:
                self.hits += 1
        if url is not None:
            return url
        with self._budget.hold(spec.path):
            url = encode_image(spec, legacy_mime=legacy_mime)
        try:
            write_atomic(entry, url.encode("ascii"))
        except OSError as exc:
            # The cache only saves work; a full disk must not fail the row.
            if not self._warned:
                self._warned = True
                self._warn(f"warning: cannot write image cache entry {entry}: {exc} (said once)")
        return url


def _entry(root: Path, spec: ImageSpec, legacy_mime: bool) -> Path:
    parts = [IMAGE_VERSION, file_digest(spec.path), spec.max_dim, spec.quality, legacy_mime]
    key = hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()
    return root / key[:2] / f"{key}.txt"


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _read(entry: Path, warn: Callable[[str], None]) -> str | None:
    try:
        text = entry.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        warn(f"warning: image cache entry {entry} is unreadable ({exc}); re-encoding")
        return None
    if not _valid_url(text):
        warn(f"warning: image cache entry {entry} is corrupt; re-encoding")
        return None
    return text
