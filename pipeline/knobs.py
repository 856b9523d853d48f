"""The settings a user can tune, each with its flag, `DRVD_*` variable, parser, help and default.

`config.py` reads them (flag beats variable beats default); `--help` lists them from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

DEFAULT_OUT = Path("runs")
DEFAULT_CACHE_DIR = Path("cache")
DEFAULT_MAX_RETRIES = 6  # retries after the first attempt
DEFAULT_ROW_DEADLINE = 900.0  # seconds of retrying per row before it fails
DEFAULT_FAIL_STREAK = 25  # same deterministic error on this many rows in a row stops the run
DEFAULT_BATCH_POLL = 15.0  # seconds between looks at a pending batch
DEFAULT_HOLD_SECONDS = 120.0  # a full disk: how long paid answers no file holds wait for space
DEFAULT_KEYWORD_PROMPT: Final = "repo"  # the judge's keyword prompt: the official repository's
BERT_MODEL = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"  # BERTScore, as the paper
BERT_LAYERS = 12  # PubMedBERT's layer for BERTScore


def url_problem(url: str) -> str | None:
    """Say what is wrong with a base URL or a comma list of them (None when it can be used)."""
    if "," in url:
        entries = [u.strip() for u in url.split(",")]
        if not all(entries):
            return "has an empty entry in its comma list of replicas"
        for i, entry in enumerate(entries, 1):
            if problem := url_problem(entry):
                return f"entry {i} of the list {problem}"
        return None
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must start with http:// or https:// and a host, e.g. http://localhost:8000/v1"
    try:
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        return "has an invalid port (percent-encode any / ? # @ in a password)"
    return None


@dataclass(frozen=True, slots=True)
class Knob:
    """One tunable setting: its flag destination, variable, parser and help."""

    name: str
    env: str
    parse: Callable[[str], Any]
    help: str
    default: Any = None  # None: the model's default (see registry.MODELS)
    shown: str = "per model (see `drvd models`)"  # how --help describes a None default


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be at least 1"
        raise ValueError(msg)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (0 < value < math.inf):
        msg = "must be a number greater than 0"
        raise ValueError(msg)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (0 <= value < math.inf):
        msg = "must be a number, 0 or more"
        raise ValueError(msg)
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not (0 <= value <= 2):
        msg = "must be a number from 0 to 2"
        raise ValueError(msg)
    return value


def _on_off(text: str) -> bool:
    if text.strip().lower() not in ("on", "off"):
        msg = "must be on or off"
        raise ValueError(msg)
    return text.strip().lower() == "on"


def _url(text: str) -> str:
    if problem := url_problem(text):
        raise ValueError(problem)
    return text.strip()


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = "must be 0 or more"
        raise ValueError(msg)
    return value


KNOBS = (
    Knob("concurrency", "DRVD_CONCURRENCY", _positive_int, "requests in flight"),
    Knob(
        "rpm",
        "DRVD_RPM",
        _positive_float,
        "requests per minute per endpoint, a ceiling (default: learned from 429s)",
    ),
    Knob("tpm", "DRVD_TPM", _positive_float, "tokens per minute (estimated per request)"),
    Knob(
        "max_retries", "DRVD_MAX_RETRIES", _non_negative_int, "retries per row", DEFAULT_MAX_RETRIES
    ),
    Knob(
        "timeout",
        "DRVD_TIMEOUT",
        _positive_float,
        "seconds per attempt",
        shown="120; deepseek 1800",
    ),
    Knob(
        "max_tokens",
        "DRVD_MAX_TOKENS",
        _positive_int,
        "max_tokens of every request, replacing the protocol's (a deviation, for reasoning models)",
        shown="the protocol's: 50 independent, 100 joint, unset otherwise",
    ),
    Knob(
        "temperature",
        "DRVD_TEMPERATURE",
        _temperature,
        "temperature of every request, replacing the protocol's (a deviation; for --samples on "
        "files the protocol sends at temperature 0)",
        shown="the protocol's: 0 independent and joint, the provider's otherwise",
    ),
    Knob(
        "samples",
        "DRVD_SAMPLES",
        _positive_int,
        "answers per row: the official one, and K-1 independent draws in RUN/samples/<k>/",
        1,
    ),
    Knob(
        "page",
        "DRVD_PAGE",
        _on_off,
        "write the run's page (report.html) and plots when it ends; off: `view` writes them later",
        True,
    ),
    Knob(
        "thinking",
        "DRVD_THINKING",
        _on_off,
        "turn the model's thinking on or off (a deviation)",
        shown="the provider's default",
    ),
    Knob(
        "price_in",
        "DRVD_PRICE_IN",
        _non_negative_float,
        "USD per 1M prompt tokens, for a model with no price on record or to replace it",
        shown="the registry's (see `drvd models`)",
    ),
    Knob(
        "price_out",
        "DRVD_PRICE_OUT",
        _non_negative_float,
        "USD per 1M completion tokens (reasoning included)",
        shown="the registry's",
    ),
    Knob(
        "max_cost",
        "DRVD_MAX_COST",
        _non_negative_float,
        "stop taking rows before the run's cost (all its invocations) passes this many USD",
        shown="no cap",
    ),
    Knob(
        "batch_max_mb",
        "DRVD_BATCH_MAX_MB",
        _positive_float,
        "--batch: largest input file to upload, in MB (base64 images make them large)",
        shown="the provider's: 200 OpenAI, 100 others",
    ),
    Knob(
        "batch_poll",
        "DRVD_BATCH_POLL",
        _positive_float,
        "--batch: seconds between looks at a pending batch",
        DEFAULT_BATCH_POLL,
    ),
    Knob("models_file", "DRVD_MODELS_FILE", Path, "TOML file of extra model aliases", shown="none"),
    Knob("cache_dir", "DRVD_CACHE_DIR", Path, "response cache directory", DEFAULT_CACHE_DIR),
    Knob(
        "hold_seconds",
        "DRVD_HOLD_SECONDS",
        _positive_float,
        "disk full: seconds to wait for space before paid answers held in memory are lost",
        DEFAULT_HOLD_SECONDS,
    ),
    Knob("data", "DRVD_DATA", Path, "DrVD-Bench directory", shown="none"),
    Knob(
        "base_url",
        "DRVD_BASE_URL",
        _url,
        "endpoint for openai:<model-id> or to override one; U1,U2,... spreads over replicas",
    ),
    Knob(
        "judge",
        "DRVD_JUDGE",
        str,
        "judge for unreadable answers and report keywords: an alias, openai:<id> or none",
        shown="deepseek if DEEPSEEK_API_KEY is set, else none",
    ),
    Knob("judge_base_url", "DRVD_JUDGE_BASE_URL", _url, "endpoint for the judge", shown="its own"),
    Knob(
        "keyword_prompt",
        "DRVD_KEYWORD_PROMPT",
        str,
        "report keyword prompt: repo or pypi (the two official scripts)",
        DEFAULT_KEYWORD_PROMPT,
    ),
    Knob("bert_model", "DRVD_BERT_MODEL", str, "BERTScore model name or folder", BERT_MODEL),
    Knob(
        "bert_layers",
        "DRVD_BERT_LAYERS",
        _positive_int,
        "BERTScore layer",
        shown=f"{BERT_LAYERS} for PubMedBERT, else bert-score's table",
    ),
)
