"""Live progress: a rich bar on a terminal, plain periodic lines otherwise.

`drvd sweep` gives its runs one `ProgressBoard`: a line per run in one live display, or plain
lines prefixed with the run's model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_EVERY = 10.0  # seconds between plain lines when stdout is not a terminal


def _bar(stream: TextIO) -> Progress:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )
    bar.start()
    return bar


class ProgressBoard:
    """One live display shared by several runs: a bar per run on a terminal, else plain lines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = _bar(self.stream) if self.stream.isatty() else None

    def close(self) -> None:
        """Stop the live display (the last state of every line stays on screen)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class RunProgress:
    """Shows done/total, rate, ETA, running accuracy, cache hits, retries and tokens.

    With a `board`, the run's line is on the shared display and its plain lines start with
    `label` (the model); alone, it draws its own bar.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        board: ProgressBoard | None = None,
        label: str = "eval",
        status: Callable[[], str] | None = None,
    ) -> None:
        self.total = total
        self.status = status  # a responder's own state (batches), shown at the end of the line
        self.done = 0
        self.stream = board.stream if board is not None else stream or sys.stderr
        self.enabled = enabled
        self.prefix = f"{label}: " if board is not None else ""
        self._start = time.monotonic()
        self._last_plain = self._start
        self._shown = -1  # rows counted in the last plain line
        self._stats: dict[str, Any] = {}
        self._own = board is None and enabled and self.stream.isatty()
        shared = board.bar if board is not None and enabled else None
        self._bar: Progress | None = _bar(self.stream) if self._own else shared
        self._task: Any = None
        if self._bar is not None:
            self._task = self._bar.add_task(label, total=total, stats="")

    def resize(self, total: int) -> None:
        """Set the rows to do (a control's run counts its variants, not the file's rows)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

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
            + (f"  ${cost:.4f}" if (cost := stats.get("cost_usd")) else "")
            + (f"  {self.status()}" if self.status is not None else "")
        )

    def refresh(self) -> None:
        """Show the line again with no new row (the responder's state changed)."""
        self.advance(0, self._stats)

    def advance(self, n: int, stats: dict[str, Any]) -> None:
        """Count `n` more finished rows."""
        self.done += n
        self._stats = stats
        if not self.enabled:
            return
        if self._bar is not None:
            text = self.line(stats).split("  ", 1)[1]
            self._bar.update(self._task, completed=self.done, stats=text)
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY or self.done == self.total:
            self._print(now)

    def _print(self, now: float) -> None:
        self._last_plain, self._shown = now, self.done
        print(self.prefix + self.line(self._stats), file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live display; on a shared one, leave its line and print the last count."""
        if self._own and self._bar is not None:
            self._bar.stop()
        elif self.prefix and self.enabled and self._bar is None and self._shown != self.done:
            self._print(time.monotonic())  # where a run that stopped early got to
        self._bar = None
