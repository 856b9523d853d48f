"""Whether a run can keep the pace it was given: requests in flight, open files, tokens a minute.

`config.load_config` asks before any work, so a setting the machine or the provider's TPM cannot
hold stops with one line that names it and the fix.
"""

from __future__ import annotations

import sys

from pipeline.data.prompts import DISCRETE_MAX_TOKENS, SYSTEM_DISCRETE
from pipeline.providers.tokens import MESSAGE_OVERHEAD, MIN_SIDE, ImageRule, text_tokens

MAX_CONCURRENCY = 4096  # requests in flight: far beyond any provider's limit
_FD_MARGIN = 64  # files open besides the connections: results, cache entries, images, the loop


def _open_files() -> int | None:
    """Return the soft limit on this process's open files (None: unlimited, or not POSIX)."""
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def pace_problem(
    concurrency: int,
    judge_concurrency: int,
    tpm: float | None,
    max_tokens: int | None,
    image: ImageRule,
) -> tuple[str, str] | None:
    """Return the setting ("concurrency" or "tpm") the run cannot keep and why, with the fix."""
    need, files = concurrency + judge_concurrency + _FD_MARGIN, _open_files()
    if concurrency > MAX_CONCURRENCY:
        return "concurrency", f"is more than {MAX_CONCURRENCY} requests in flight: lower it"
    if files is not None and need > files:
        lower = max(1, concurrency - need + files)
        why = f"needs about {need} open files but this process may open {files}"
        return "concurrency", f"{why}: raise the limit (ulimit -n {need}) or lower it to {lower}"
    # The smallest request: the shortest prompt, the smallest image, the protocol's shortest reply.
    smallest = (
        text_tokens(SYSTEM_DISCRETE)
        + 2 * MESSAGE_OVERHEAD
        + image(MIN_SIDE, MIN_SIDE)
        + (max_tokens or DISCRETE_MAX_TOKENS)
    )
    if tpm is not None and tpm < smallest:
        why = f"is less than one request (about {smallest} tokens with an image)"
        return "tpm", f"{why}: set it to at least {smallest}, or leave it out"
    return None
