"""drvd-pipeline: fast, resumable, cache-backed evaluation of vision-language models on DrVD-Bench."""

from __future__ import annotations

from pipeline.config import EvalConfig, load_config
from pipeline.run.runner import RunResult, run_eval
from pipeline.scoring.summary import score_run

__version__ = "0.1.0"

__all__ = ["EvalConfig", "RunResult", "__version__", "load_config", "run_eval", "score_run"]
