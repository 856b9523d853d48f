"""Run configuration from one place: command-line flag beats DRVD_* variable beats default.

Nothing else in the package reads os.environ.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.data.prompts import DEFAULT_PROTOCOL, PROTOCOLS, build_request
from pipeline.errors import ConfigError
from pipeline.knobs import (
    BERT_LAYERS,
    BERT_MODEL,
    DEFAULT_BATCH_POLL,
    DEFAULT_CACHE_DIR,
    DEFAULT_FAIL_STREAK,
    DEFAULT_HOLD_SECONDS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_OUT,
    DEFAULT_ROW_DEADLINE,
    KNOBS,
    Knob,
)
from pipeline.providers.limits import pace_problem
from pipeline.providers.prices import Price, price_for
from pipeline.providers.registry import (
    DEFAULT_TIMEOUT,
    ModelSpec,
    load_models_file,
    resolve_model,
    split_urls,
    thinking_body,
)
from pipeline.providers.tokens import image_rule
from pipeline.records import FILES, ChatRequest, Sample
from pipeline.redact import show_value, split_url
from pipeline.scoring.judge import DEFAULT_VARIANT, PROMPTS, Variant


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Everything one evaluation run needs; built by `load_config`."""

    spec: ModelSpec
    data: Path
    files: tuple[str, ...]
    out: Path
    run_name: str
    protocol: str = DEFAULT_PROTOCOL
    limit: int | None = None
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    row_deadline: float = DEFAULT_ROW_DEADLINE
    fail_streak: int = DEFAULT_FAIL_STREAK
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    cache_dir: Path = DEFAULT_CACHE_DIR
    use_cache: bool = True
    page: bool = True  # write report.html and plots when the run ends
    seed: int = 0
    legacy_mime: bool = False
    official_quirks: bool = False
    api_key: str | None = field(default=None, repr=False)
    # "user:password" (or None) from each URL of the base URL list, in its order
    url_auth: tuple[str | None, ...] = field(default=(), repr=False)
    judge: ModelSpec | None = None  # None: no judge, no keyword metrics
    judge_key: str | None = field(default=None, repr=False)
    judge_url_auth: tuple[str | None, ...] = field(default=(), repr=False)
    keyword_prompt: Variant = DEFAULT_VARIANT
    bert_model: str | None = None  # None: BERTScore not computed
    bert_layers: int | None = None
    price: Price | None = None  # None: cost unknown (no price on record, none given)
    max_cost: float | None = None  # USD for the whole run folder; None: no cap
    batch: bool = False  # send through the provider's Batch API
    batch_max_mb: float | None = None  # None: the provider's limit
    batch_retry: str = "batch"  # failed batch lines: "batch" (a new batch) or "online"
    batch_poll: float = DEFAULT_BATCH_POLL  # seconds between looks at a pending batch
    samples: int = 1  # answers per row (`--samples`): the official one and samples - 1 draws
    epoch: int = 0  # which of them this run answers: 0 the official run, k in RUN/samples/<k>
    temperature: float | None = None  # replaces the protocol's on every request (a deviation)

    @property
    def run_dir(self) -> Path:
        """Return the folder that holds this run's results and summary."""
        return self.out / self.run_name

    @property
    def deviations(self) -> dict[str, Any]:
        """Return the settings that depart from the official protocol (the summary records them)."""
        out: dict[str, Any] = {}
        if self.spec.max_tokens is not None:
            out["max_tokens"] = self.spec.max_tokens
        if self.spec.thinking is not None:
            out["thinking"] = "on" if self.spec.thinking else "off"
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out

    def request(self, sample: Sample) -> ChatRequest:
        """Return the request this run sends for a row: the protocol's, its deviations, epoch."""
        return build_request(
            sample,
            self.protocol,
            max_tokens=self.spec.max_tokens,
            temperature=self.temperature,
            epoch=self.epoch,
        )

    def judge_config(self) -> EvalConfig | None:
        """Return the settings judge calls run with: the judge's endpoint, key and pace."""
        if self.judge is None:
            return None
        spec = self.judge
        return replace(
            self,
            spec=spec,
            api_key=self.judge_key,
            url_auth=self.judge_url_auth,
            concurrency=spec.concurrency,
            rpm=spec.rpm,
            tpm=spec.tpm,
            timeout=spec.timeout,
            legacy_mime=False,
            price=price_for(spec.model),
            batch=False,  # the judge answers online, as the run needs its answers
        )


def _knob_value(knob: Knob, flags: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    # Flag and variable values pass the same checks.
    if flags.get(knob.name) is not None:
        raw, where = str(flags[knob.name]), f"--{knob.name.replace('_', '-')}"
    else:
        raw, where = env.get(knob.env, "").strip(), knob.env
        if not raw:
            return knob.default
    try:
        return knob.parse(raw)
    except ValueError as exc:
        msg = f"{where}={show_value(raw)!r} is not valid: {exc}"
        raise ConfigError(msg) from exc


def _limit(value: int | None) -> int | None:
    if value is not None and value < 1:
        msg = f"--limit {value}: must be at least 1 (leave it out for every row)"
        raise ConfigError(msg)
    return value


def default_run_name(model: str) -> str:
    """Derive a folder-safe run name from a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "run"


def _parse_files(text: str | None) -> tuple[str, ...]:
    if not text:
        return FILES
    stems = tuple(s.strip().removesuffix(".jsonl") for s in text.split(",") if s.strip())
    unknown = [s for s in stems if s not in FILES]
    if unknown:
        msg = f"--files: unknown file {unknown[0]!r}; choose from {','.join(FILES)}"
        raise ConfigError(msg)
    return stems


def api_key_for(spec: ModelSpec, env: Mapping[str, str], *, required: bool = True) -> str | None:
    """Return the key for a remote model: DRVD_API_KEY overrides the provider's variable."""
    key = env.get("DRVD_API_KEY") or (env.get(spec.key_env) if spec.key_env else None)
    if required and spec.remote and spec.key_env and not key:
        msg = f"model {spec.alias!r} needs an API key: set {spec.key_env} (or DRVD_API_KEY)"
        raise ConfigError(msg)
    return key or None


def judge_for(
    name: str | None,
    base_url: str | None,
    env: Mapping[str, str],
    extra: dict[str, ModelSpec] | None = None,
    *,
    required: bool = True,
) -> tuple[ModelSpec | None, str | None]:
    """Return the judge's spec and key; by default DeepSeek when its key is set, else none."""
    name = name or ("deepseek" if env.get("DEEPSEEK_API_KEY") else "none")
    if name == "none":
        return None, None
    spec = resolve_model(name, base_url=base_url, extra=extra)
    if not spec.remote:
        msg = f"--judge {name!r}: the judge must be an API model (an alias, openai:<id>, or none)"
        raise ConfigError(msg)
    key = env.get("DRVD_JUDGE_API_KEY") or (env.get(spec.key_env) if spec.key_env else None)
    if required and spec.key_env and not key:
        msg = (
            f"judge {name!r} needs an API key: set {spec.key_env} or DRVD_JUDGE_API_KEY, "
            "or pass --judge none"
        )
        raise ConfigError(msg)
    return spec, key or None


def _without_credentials(spec: ModelSpec) -> tuple[ModelSpec, tuple[str | None, ...]]:
    """Return the spec with its base URLs clean (as shown, stored, cache-keyed) and each
    URL's "user:pw" (None where it has none)."""
    if spec.base_url is None:
        return spec, ()
    pairs = [split_url(url) for url in split_urls(spec.base_url)]
    clean = ",".join(url for url, _ in pairs)
    return replace(spec, base_url=clean), tuple(auth for _, auth in pairs)


def _bert(flags: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """Return the BERTScore model and layer, or (None, None) when it is off or not installed."""
    if flags.get("no_bertscore") or importlib.util.find_spec("bert_score") is None:
        return None, None
    model = values["bert_model"]
    layers = values["bert_layers"]
    return model, layers if layers is not None else (BERT_LAYERS if model == BERT_MODEL else None)


def _price(spec: ModelSpec, values: Mapping[str, Any]) -> Price | None:
    """Return the model's price; one of --price-in/--price-out alone for an unpriced model fails."""
    price_in, price_out = values["price_in"], values["price_out"]
    price = price_for(spec.model, price_in, price_out)
    if price is None and (price_in is not None or price_out is not None):
        given = "--price-in (DRVD_PRICE_IN)" if price_in is None else "--price-out (DRVD_PRICE_OUT)"
        msg = f"model {spec.alias!r} has no price on record: give {given} too"
        raise ConfigError(msg)
    if price is None and values["max_cost"] is not None and spec.remote:
        msg = (
            f"--max-cost needs the model's price, and {spec.alias!r} ({spec.model}) has none on "
            "record: pass --price-in and --price-out (USD per 1M tokens)"
        )
        raise ConfigError(msg)
    return price


def load_config(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, *, keys: bool = True
) -> EvalConfig:
    """Build the run configuration from parsed flags and the environment.

    `keys=False` (`plan`, which calls nothing) lets a missing API key pass.
    """
    env = os.environ if env is None else env
    values = {k.name: _knob_value(k, flags, env) for k in KNOBS}
    extra = load_models_file(values["models_file"]) if values["models_file"] else None
    spec = resolve_model(flags["model"], base_url=values["base_url"], extra=extra)
    if values["max_tokens"] is not None:
        spec = replace(spec, max_tokens=values["max_tokens"])
    if values["thinking"] is not None:
        spec = replace(spec, thinking=values["thinking"])
    thinking_body(spec)  # a setting the provider cannot take stops here, before any work
    spec, url_auth = _without_credentials(spec)
    if values["data"] is None:
        msg = "no dataset: pass --data DIR or set DRVD_DATA"
        raise ConfigError(msg)
    if values["keyword_prompt"] not in PROMPTS:
        msg = f"--keyword-prompt {values['keyword_prompt']!r}: choose from {', '.join(PROMPTS)}"
        raise ConfigError(msg)
    judge, judge_key = judge_for(
        values["judge"], values["judge_base_url"], env, extra, required=keys
    )
    judge, judge_url_auth = _without_credentials(judge) if judge else (None, ())
    bert_model, bert_layers = _bert(flags, values)
    protocol = flags.get("protocol") or DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        msg = f"--protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}"
        raise ConfigError(msg)
    cfg = EvalConfig(
        spec=spec,
        data=Path(values["data"]),
        files=_parse_files(flags.get("files")),
        out=Path(flags.get("out") or DEFAULT_OUT),
        run_name=flags.get("run_name") or default_run_name(spec.alias),
        protocol=protocol,
        limit=_limit(flags.get("limit")),
        concurrency=values["concurrency"]
        if values["concurrency"] is not None
        else spec.concurrency,
        rpm=values["rpm"] if values["rpm"] is not None else spec.rpm,
        tpm=values["tpm"] if values["tpm"] is not None else spec.tpm,
        max_retries=values["max_retries"],
        timeout=values["timeout"] if values["timeout"] is not None else spec.timeout,
        cache_dir=Path(values["cache_dir"]),
        hold_seconds=values["hold_seconds"],
        use_cache=not flags.get("no_cache", False),
        page=values["page"],
        seed=flags.get("seed") or 0,
        legacy_mime=bool(flags.get("legacy_mime", False)),
        official_quirks=bool(flags.get("official_quirks", False)),
        api_key=api_key_for(spec, env, required=keys),
        url_auth=url_auth,
        judge=judge,
        judge_key=judge_key,
        judge_url_auth=judge_url_auth,
        keyword_prompt=values["keyword_prompt"],
        bert_model=bert_model,
        bert_layers=bert_layers,
        price=_price(spec, values),
        max_cost=values["max_cost"],
        batch=bool(flags.get("batch", False)),
        batch_max_mb=values["batch_max_mb"],
        batch_retry=flags.get("batch_retry") or "batch",
        batch_poll=values["batch_poll"],
        samples=values["samples"],
        temperature=values["temperature"],
    )
    judged = cfg.judge.concurrency if cfg.judge else 0
    if problem := pace_problem(
        cfg.concurrency, judged, cfg.tpm, spec.max_tokens, image_rule(spec.model, spec.provider)
    ):
        name, why = problem  # said as the user set it: flag, variable, or the model's own
        value, var = str(getattr(cfg, name)).removesuffix(".0"), f"DRVD_{name.upper()}"
        where = f"{name} {value} of model {spec.alias!r} ({spec.source})"
        if flags.get(name) is not None:
            where = f"--{name} {value}"
        elif env.get(var, "").strip():
            where = f"{var}={value}"
        msg = f"{where} {why}"
        raise ConfigError(msg)
    return cfg


def _one_knob(name: str, flag: Any, env: Mapping[str, str] | None) -> Any:
    """Return one setting alone (flag, else variable, else default), for commands other than eval."""
    knob = next(k for k in KNOBS if k.name == name)
    return _knob_value(knob, {name: flag}, os.environ if env is None else env)


def cache_dir(flag: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Return the response-cache folder: `--cache-dir`, else DRVD_CACHE_DIR, else `cache/`."""
    return Path(_one_knob("cache_dir", flag, env))


def page(flag: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Say whether to write the page: `--page`, else DRVD_PAGE, else on."""
    return bool(_one_knob("page", flag, env))


def debug(env: Mapping[str, str] | None = None) -> bool:
    """Say whether DRVD_DEBUG=1 asks for tracebacks of internal errors."""
    return (os.environ if env is None else env).get("DRVD_DEBUG", "").strip() == "1"


def malloc_arenas_set(env: Mapping[str, str] | None = None) -> bool:
    """Say whether the user set MALLOC_ARENA_MAX (then the CLI leaves glibc's arenas alone)."""
    return "MALLOC_ARENA_MAX" in (os.environ if env is None else env)


def child_env(**overrides: str) -> dict[str, str]:
    """Return this process's environment without DRVD_* settings, plus `overrides`.

    For child processes that must not inherit the caller's tuning (the benchmark's runs).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRVD_")}
    return {**env, **overrides}


def user_models(
    flag: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, ModelSpec]:
    """Return the aliases of `--models-file`, else DRVD_MODELS_FILE ({} when neither is set)."""
    path = _one_knob("models_file", flag, env)
    return load_models_file(path) if path else {}
