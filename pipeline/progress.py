"""Live progress: a rich bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_EVERY = 10.0  # seconds between plain lines when stdout is not a terminal


class RunProgress:
    """Shows done/total, rate, ETA, running accuracy, cache hits, retries and tokens."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._start = time.monotonic()
        self._last_plain = self._start
        self._bar: Progress | None = None
        self._task: Any = None
        if enabled and self.stream.isatty():
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._bar.add_task("eval", total=total, stats="")
            self._bar.start()

    def line(self, stats: dict[str, Any]) -> str:
        """Return one status line from counters and the running score."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        acc = stats.get("accuracy")
        acc_text = f"{acc:.1%}" if isinstance(acc, float) else "-"
        return (
            f"{self.done}/{self.total} rows  {rate:.1f}/s  eta {eta}  acc {acc_text}  "
            f"cache {stats.get('cache_hits', 0)}  retries {stats.get('retries', 0)}  "
            f"tokens {stats.get('prompt_tokens', 0) + stats.get('completion_tokens', 0)}"
        )

    def advance(self, n: int, stats: dict[str, Any]) -> None:
        """Count `n` more finished rows."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            text = self.line(stats).split("  ", 1)[1]
            self._bar.update(self._task, completed=self.done, stats=text)
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY or self.done == self.total:
            self._last_plain = now
            print(self.line(stats), file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live display."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
