"""drvd-pipeline: fast, resumable, cache-backed evaluation of vision-language models on DrVD-Bench."""

from __future__ import annotations

from pipeline.config import EvalConfig, load_config
from pipeline.runner import RunResult, run_eval
from pipeline.summary import score_run

__version__ = "0.1.0"

__all__ = ["EvalConfig", "RunResult", "__version__", "load_config", "run_eval", "score_run"]
