"""Why rows failed, grouped by cause with what to do; and a server no request ever reached.

Every row of the run folder whose latest result is an error is kept here under its cause, so the
end of a run can say "10 rows: Cannot connect to host 127.0.0.1:9 — is the server running? check
--base-url" instead of a bare count.

Never reached: when `UNREACHED_ROWS` rows of this invocation have failed without a connection
(each after all its retries) and no request of it got any HTTP answer, the run stops with exit 3
and that one line; a run with fewer rows to send stops the same way once every one of them has
failed so. One answer of any kind (even an error status) means the server is there, and this
rule never fires for that invocation again. A row's retries span about a minute of backoff, so a
connection that drops for a moment does not stop a run; rows already recorded are kept, and a
rerun sends the failed ones again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.model.retry import CONNECT
from pipeline.records import INPUT_ERROR, ResultRow

UNREACHED_ROWS = 10  # rows failed to connect, none answered, before the run stops (exit 3)
_HOST = re.compile(r"Cannot connect to host (\S+)")
_CUT = ("truncated", "empty")


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Rows that failed for one cause, and what helps."""

    count: int
    cause: str
    advice: str

    def line(self) -> str:
        """Return the group as one line: `N rows: cause — advice`."""
        return f"{self.count} rows: {self.cause} — {self.advice}"


def cause_of(row: ResultRow) -> tuple[str, str]:
    """Return (cause, what to do) of a failed row, from its error's code, status and text."""
    error, status = row.error or "", row.error_status
    if row.error_code == CONNECT:
        host = _HOST.search(error)
        where = f"Cannot connect to host {host.group(1)}" if host else "Cannot connect"
        return where, "is the server running? check --base-url"
    if row.answer_source in _CUT:
        return (
            "reply cut at the token limit, or empty",
            "check --max-tokens and the model's replies",
        )
    if status == 429:
        return "rate limited (429)", "lower --rpm or --concurrency, then rerun"
    if "per-attempt timeout" in error:
        return "no answer within the timeout", "raise --timeout or lower --concurrency, then rerun"
    if status is not None and status >= 500:
        return f"server error {status}", "rerun the same command later"
    if "moderation" in error.lower():
        return (
            "refused by content moderation",
            "a rerun sends them again; they may be refused again",
        )
    text = " ".join(error.split())
    return (text[:77] + "..." if len(text) > 80 else text), "rerun the same command to retry them"


@dataclass(slots=True)
class Failures:
    """The run folder's failed rows by cause, and whether this invocation reached the server."""

    rows: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # → cause, advice
    recorded: int = 0  # rows recorded by this invocation
    unreached: int = 0  # of them, failed to connect while nothing had answered
    reached: bool = False  # some request of this invocation got an HTTP answer
    stopped: bool = False  # this rule stopped the run

    def note(self, stem: str, row: ResultRow) -> None:
        """Keep a row's latest fate: a failed row under its cause, an answered one nowhere."""
        key = (stem, str(row.key))
        if row.error is None or row.error_code == INPUT_ERROR:
            self.rows.pop(key, None)  # input rows are told apart (terminal.failure_lines)
        else:
            self.rows[key] = cause_of(row)

    def record(self, stem: str, row: ResultRow) -> str | None:
        """Note a row recorded by this invocation; return why to stop if the server is unreached."""
        self.note(stem, row)
        if row.error_code == INPUT_ERROR:
            return None  # never sent: says nothing about the server
        self.recorded += 1
        if row.error_code != CONNECT:
            self.reached = True
        elif not self.reached:
            self.unreached += 1
        self.stopped = self.stopped or self.unreached >= UNREACHED_ROWS
        return self.unreached_line() if self.stopped else None

    def unreached_line(self) -> str | None:
        """Return the one line of a run no request of which reached the server, else None."""
        if (
            self.reached
            or not self.unreached
            or self.unreached < min(self.recorded, UNREACHED_ROWS)
        ):
            return None
        cause, advice = next(
            (c for c in self.rows.values() if c[1].startswith("is the server")),
            ("Cannot connect", "is the server running? check --base-url"),
        )
        return (
            f"no request reached the server: {self.unreached} rows: {cause} — {advice}; "
            "then rerun the same command"
        )

    def groups(self) -> list[FailureGroup]:
        """Return the failed rows grouped by cause, the largest group first."""
        counts: dict[tuple[str, str], int] = {}
        for cause in self.rows.values():
            counts[cause] = counts.get(cause, 0) + 1
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [FailureGroup(n, cause, advice) for (cause, advice), n in ordered]
