"""drvd-pipeline: fast, resumable, cache-backed evaluation of vision-language models on DrVD-Bench.

The public names load on first use (PEP 562), so `python -m pipeline score` or `--help` does not
import the runner and its HTTP stack.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from pipeline.api import Comparison, FileScore, RunSummary, compare, evaluate, score
    from pipeline.config import EvalConfig, load_config
    from pipeline.run.runner import RunResult, run_eval
    from pipeline.scoring.summary import score_run

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "EvalConfig",
    "FileScore",
    "RunResult",
    "RunSummary",
    "__version__",
    "compare",
    "evaluate",
    "load_config",
    "run_eval",
    "score",
    "score_run",
]

_HOMES = {
    **dict.fromkeys(
        ("Comparison", "FileScore", "RunSummary", "compare", "evaluate", "score"), "pipeline.api"
    ),
    "EvalConfig": "pipeline.config",
    "load_config": "pipeline.config",
    "RunResult": "pipeline.run.runner",
    "run_eval": "pipeline.run.runner",
    "score_run": "pipeline.scoring.summary",
}


def __getattr__(name: str) -> object:
    """Return a public name, importing its module the first time."""
    if name in _HOMES:
        return getattr(_importlib.import_module(_HOMES[name]), name)
    msg = f"module 'pipeline' has no attribute {name!r}"
    raise AttributeError(msg)
