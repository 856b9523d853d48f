"""On-disk response cache keyed by a hash of the canonical request.

The key covers what changes the answer (model, endpoint, prompt version, system and user text,
the image's file digest and preprocessing, sampling parameters) and nothing else: never the API
key, timeouts, retries or concurrency. Entries are JSON files written to a temporary name and
then renamed, so a `kill -9` never leaves half an entry and two processes can share one cache.
Errors are never stored.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline.files import write_atomic
from pipeline.records import ChatRequest, Completion

CACHE_VERSION = "drvd-cache-1"


def request_key(
    *,
    model: str,
    endpoint: str,
    protocol_version: str,
    request: ChatRequest,
    image_digest: str | None,
    legacy_mime: bool = False,
    extra: Mapping[str, Any] | None = None,
    epoch: int = 0,
) -> str:
    """Return the cache key of one request: a versioned blake2b of canonical JSON.

    An `epoch` k > 0 (the k-th extra answer of `--samples`) also shows in the key as `-s<k>`, so
    a batch line's custom_id (the key) says which sample it is; epoch 0 keeps the plain form.
    """
    canonical = {
        "model": model,
        "endpoint": endpoint,
        "protocol": protocol_version,
        "system": request.system,
        "text": request.text,
        "image": None
        if request.image is None
        else [image_digest, request.image.max_dim, request.image.quality, legacy_mime],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "extra": dict(extra or {}),
        "epoch": epoch,
    }
    digest = hashlib.blake2b(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=20)
    if epoch:
        return f"{CACHE_VERSION}-s{epoch}-{digest.hexdigest()}"
    return f"{CACHE_VERSION}-{digest.hexdigest()}"


class ResponseCache:
    """Completions stored one file per key under `root/responses/<2 hex>/<key>.json`."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "responses"
        self.damaged: set[str] = set()  # keys whose entry was there but unreadable: a miss

    def _path(self, key: str) -> Path:
        return self.dir / key[-2:] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """Return the stored completion, or None on a miss or a damaged entry (then counted)."""
        try:
            data = orjson.loads(self._path(key).read_bytes())
            if not isinstance(data, dict) or data.get("key") != key:
                msg = "not this key's entry"
                raise ValueError(msg)
            return Completion.from_json(data.get("completion"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # orjson.JSONDecodeError is a ValueError
            self.damaged.add(key)
            return None

    def put(self, key: str, completion: Completion) -> None:
        """Store a successful completion durably (callers never store errors)."""
        entry = {"key": key, "completion": completion.to_json()}
        write_atomic(self._path(key), orjson.dumps(entry))

    def damage_note(self) -> str | None:
        """Say how many entries were unreadable (their requests were sent again), if any."""
        if not self.damaged:
            return None
        return (
            f"cache: {len(self.damaged)} damaged entries in {self.dir} were ignored and "
            "their requests sent again"
        )

    def stats(self) -> dict[str, int]:
        """Count entries and bytes."""
        entries = size = 0
        if self.dir.exists():
            for path in self.dir.glob("*/*.json"):
                entries += 1
                size += path.stat().st_size
        return {"entries": entries, "bytes": size}

    def clear(self) -> int:
        """Delete every response (and the encoded-image cache beside it); return the count."""
        count = self.stats()["entries"]
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.dir.parent / "images", ignore_errors=True)
        return count
