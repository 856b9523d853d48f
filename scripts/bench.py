"""Benchmark drvd-pipeline against a local simulator and rewrite docs/BENCHMARKS.md (`make bench`)."""

from __future__ import annotations

import sys

from pipeline.bench import main

if __name__ == "__main__":
    sys.exit(main())
