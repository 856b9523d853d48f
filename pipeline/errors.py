"""Errors raised by drvd-pipeline.

    PipelineError                 base; the CLI turns it into one line and an exit code
    ├── ConfigError               bad flag, env var or missing key          → exit 2
    ├── DataError                 a bad dataset row: file, line, field      → row fails, run goes on
    ├── WriteError                a file of the run cannot be written       → exit 5
    └── APIError                  a provider call went wrong (status, code, message)
        ├── RetryableError        transient: back off and send again
        ├── RowError              permanent for this input: fail the row, never retry
        └── FatalAPIError         account/config problem: stop the whole run → exit 3

Messages say what failed, where, and what to do. They never contain an API key.
"""

from __future__ import annotations

from enum import IntEnum

INTERRUPTED = "interrupted: rerun the same command to resume"  # how a stopped run ends


class ExitCode(IntEnum):
    """The exit statuses of every command, a sweep's being its worst run's (in this order)."""

    OK = 0
    FAILED_ROWS = 1  # some rows failed: rerun the same command to retry them
    USAGE = 2  # a bad flag, variable, file or model name
    FATAL = 3  # the provider refused the account or configuration
    COST = 4  # --max-cost reached
    WRITE = 5  # a file of the run cannot be written
    INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP exit 128 + their number (143, 129)
    INTERNAL = 70  # a bug: one line, the traceback only with DRVD_DEBUG=1


class PipelineError(Exception):
    """Base class for every expected failure."""


class ConfigError(PipelineError):
    """A flag, environment variable or model name is wrong or missing."""


class DataError(PipelineError):
    """A dataset row cannot be used; str() is `FILE:LINE: what is wrong`."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")


class WriteError(PipelineError):
    """A file of the run cannot be written: disk full, quota, read-only, I/O error."""


def os_reason(exc: OSError) -> str:
    """Return the OS's words for a failed file operation ("No space left on device")."""
    return exc.strerror or str(exc)


class APIError(PipelineError):
    """A provider answered with an error, or the call did not complete."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id
        super().__init__(message)

    def __str__(self) -> str:
        head = " ".join(str(p) for p in (self.status, self.code) if p)
        return f"{head}: {self.message}" if head else self.message


class RetryableError(APIError):
    """Transient: rate limit, 5xx, timeout, dropped connection, garbage body."""


class RowError(APIError):
    """Permanent for this row (e.g. image too large, content moderation)."""


class FatalAPIError(APIError):
    """Every later row would fail too (bad key, empty account): stop the run."""
