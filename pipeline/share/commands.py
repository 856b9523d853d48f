"""The `bundle` and `verify` commands, and the Parquet file every run ends with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import ExitCode, os_reason
from pipeline.share.verify import BadBundle, verify


def run_share(args: argparse.Namespace) -> int:
    """Run `bundle` or `verify`; return the exit status (verify: 1 on any difference)."""
    if args.command == "bundle":
        from pipeline.share.bundle import make_bundle

        if not args.run_dir.is_dir():
            print(f"error: {args.run_dir}: no such run folder", file=sys.stderr)
            return ExitCode.USAGE
        print(f"bundle: {make_bundle(args.run_dir, args.out)}")
        return ExitCode.OK
    try:
        lines = verify(args.target, args.dataset)
    except BadBundle as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.FAILED_ROWS
    for line in lines:
        print(line)
    if lines:
        return ExitCode.FAILED_ROWS
    print(f"verified: {args.target}: every number and hash agrees")
    return ExitCode.OK


def try_write_parquet(run_dir: Path) -> None:
    """Write `RUN/results.parquet`; say on stderr (never fail the run) when it cannot."""
    from pipeline.share.parquet import write_run_parquet

    try:
        write_run_parquet(run_dir)
    except (OSError, ImportError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
        print(f"warning: {run_dir / 'results.parquet'} not written: {reason}", file=sys.stderr)
