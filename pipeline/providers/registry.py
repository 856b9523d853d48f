"""The model registry: short aliases → provider, API model id, endpoint, key variable, pace.

Built-in aliases cover the providers' vision models whose facts are confirmed (docs/PROVIDERS.md);
a TOML models file (`DRVD_MODELS_FILE`) adds or overrides aliases without touching the code:

    [models.my-o3]                       # alias
    model = "o3"                         # API model id (required)
    provider = "openai"                  # openai | dashscope | deepseek | generic (default)
    base_url = "https://api.openai.com/v1"   # the provider's own by default (generic: none)
    key_env = "OPENAI_API_KEY"               # the provider's own by default (generic: none)
    concurrency = 16                     # also rpm, tpm, timeout
    token_param = "max_completion_tokens"
    max_tokens = 4096                    # replaces the protocol's max_tokens (a deviation)
    thinking = "on"                      # "on" | "off" (a deviation)

`openai:<model-id>` reaches any OpenAI-compatible server (vLLM, SGLang, Ollama, OpenRouter…) given
`--base-url` or `DRVD_BASE_URL`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, os_reason
from pipeline.knobs import url_problem

DEFAULT_TIMEOUT = 120.0  # seconds per attempt, from the moment the request is sent
DASHSCOPE_BEIJING = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_SINGAPORE = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
PROVIDERS = ("openai", "dashscope", "deepseek", "generic")
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
BUILT_IN = "built-in"
# A models-file entry that names its provider gets these unless it sets its own.
PROVIDER_DEFAULTS: dict[str, dict[str, str]] = {
    "dashscope": {"base_url": DASHSCOPE_BEIJING, "key_env": "DASHSCOPE_API_KEY"},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY"},
    "openai": {"base_url": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY"},
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where and how to call one model; `provider` selects the error classification."""

    alias: str
    model: str  # the API model id
    provider: str  # "local" | "openai" | "dashscope" | "deepseek" | "generic"
    base_url: str | None = None
    key_env: str | None = None  # the variable that holds this provider's key
    concurrency: int = 16  # requests in flight
    rpm: float | None = None  # requests per minute; None: no pacing beyond concurrency
    tpm: float | None = None  # tokens per minute
    timeout: float = DEFAULT_TIMEOUT
    token_param: str = "max_tokens"  # o-series and GPT-5 take max_completion_tokens instead
    max_tokens: int | None = None  # None: the protocol's; else replaces it (a deviation)
    thinking: bool | None = None  # None: the provider's default; else sent (a deviation)
    source: str = BUILT_IN  # where the alias comes from: built-in, or a models file

    @property
    def remote(self) -> bool:
        """Say whether calls go over HTTP (and so through cache, limiter and retries)."""
        return self.provider != "local"


MODELS: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("random", "random", "local", concurrency=4),
        # DashScope limits are per account. qwen2.5-vl-72b-instruct publishes none; stay at half
        # of qwen-vl-max's documented 1,200 RPM (PROVIDERS §6).
        ModelSpec(
            "qwen", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE_BEIJING,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=600,
        ),
        ModelSpec(
            "qwen-intl", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE_SINGAPORE,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=600,
        ),
        # qwen-vl-max / -plus: 1,200 RPM and 1M TPM documented (PROVIDERS §6); a margin below.
        ModelSpec(
            "qwen-vl-max", "qwen-vl-max", "dashscope", DASHSCOPE_BEIJING,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=1000, tpm=900_000,
        ),
        ModelSpec(
            "qwen-vl-plus", "qwen-vl-plus", "dashscope", DASHSCOPE_BEIJING,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=1000, tpm=900_000,
        ),
        # DeepSeek limits concurrency per account (2,500 for deepseek-flash), not RPM, and may
        # hold a request in its queue for 10-30 minutes before answering. deepseek-flash sees
        # images and thinks by default; the plain alias answers directly, as the official
        # protocol's max_tokens (50, 100) expect.
        ModelSpec(
            "deepseek", "deepseek-flash", "deepseek", "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY", concurrency=64, timeout=1800.0, thinking=False,
        ),
        ModelSpec(
            "deepseek-thinking", "deepseek-flash", "deepseek", "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY", concurrency=64, timeout=1800.0, thinking=True, max_tokens=8192,
        ),
        # OpenAI limits depend on the account's tier; these are a first tier's (PROVIDERS §6).
        ModelSpec(
            "gpt-4o", "gpt-4o", "openai", "https://api.openai.com/v1",
            "OPENAI_API_KEY", concurrency=32, rpm=500, tpm=30_000,
        ),
        ModelSpec(
            "gpt-4o-mini", "gpt-4o-mini", "openai", "https://api.openai.com/v1",
            "OPENAI_API_KEY", concurrency=32, rpm=500, tpm=30_000,
        ),
    )
}  # fmt: skip


def thinking_body(spec: ModelSpec) -> dict[str, Any]:
    """Return the request fields that turn the model's thinking on or off ({} when unset)."""
    if spec.thinking is None:
        return {}
    on = spec.thinking
    if spec.provider == "dashscope":
        if on:
            msg = (
                f"model {spec.alias!r}: DashScope allows thinking only in streaming calls, "
                "which drvd does not make; use --thinking off"
            )
            raise ConfigError(msg)
        return {"enable_thinking": False}
    if spec.provider == "deepseek":
        return {"thinking": {"type": "enabled" if on else "disabled"}}
    if spec.provider == "openai":
        return {"reasoning_effort": "medium" if on else "minimal"}
    # vLLM and SGLang pass these to the chat template (Qwen3, DeepSeek-R1 distills...).
    return {"chat_template_kwargs": {"enable_thinking": on}}


def split_urls(base_url: str | None) -> list[str]:
    """Return the URLs of a base URL or a comma list of replicas, without trailing slashes."""
    return [u.strip().rstrip("/") for u in (base_url or "").split(",") if u.strip()]


def first_url(base_url: str | None) -> str:
    """Return the first URL of a base URL list ("" for none): the one the cache key names."""
    urls = split_urls(base_url)
    return urls[0] if urls else ""


def resolve_model(
    name: str, *, base_url: str | None = None, extra: dict[str, ModelSpec] | None = None
) -> ModelSpec:
    """Return the spec for an alias (built-in or from `extra`) or `openai:<model-id>`.

    Args:
        name: an alias or `openai:<model-id>`.
        base_url: overrides the alias's endpoint.
        extra: aliases from a models file; they override built-in ones of the same name.
    """
    if name.startswith("openai:"):
        model_id = name.removeprefix("openai:")
        if not model_id:
            msg = "model 'openai:' needs a model id, e.g. --model openai:qwen2.5-vl-7b-instruct"
            raise ConfigError(msg)
        if not base_url:
            msg = f"model {name!r} needs an endpoint: pass --base-url URL or set DRVD_BASE_URL"
            raise ConfigError(msg)
        return ModelSpec(name, model_id, "generic", ",".join(split_urls(base_url)), None)
    known = {**MODELS, **(extra or {})}
    spec = known.get(name)
    if spec is None:
        names = ", ".join(sorted(known))
        msg = f"unknown model {name!r}: use one of {names}, or openai:<model-id> with --base-url"
        raise ConfigError(msg)
    if base_url and spec.remote:
        return replace(spec, base_url=",".join(split_urls(base_url)))
    if spec.remote and not spec.base_url:
        msg = f"model {name!r} has no endpoint: set base_url in {spec.source} or pass --base-url"
        raise ConfigError(msg)
    return spec


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "provider": str,
    "base_url": str,
    "key_env": str,
    "concurrency": int,
    "rpm": (int, float),
    "tpm": (int, float),
    "timeout": (int, float),
    "token_param": str,
    "max_tokens": int,
    "thinking": str,
}


def load_models_file(path: Path) -> dict[str, ModelSpec]:
    """Read the aliases of a TOML models file; any problem is a `ConfigError` naming the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"{path}: cannot read the models file ({os_reason(exc)}); check DRVD_MODELS_FILE"
        raise ConfigError(msg) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path}: not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        msg = f"{path}: no [models.<alias>] table"
        raise ConfigError(msg)
    return {alias: _spec(path, alias, entry) for alias, entry in models.items()}


def _spec(path: Path, alias: str, entry: object) -> ModelSpec:
    where = f"{path}: [models.{alias}]"
    if not isinstance(entry, dict):
        msg = f"{where} must be a table"
        raise ConfigError(msg)
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        msg = f"{where}: unknown field {unknown[0]!r}; known: {', '.join(_FIELDS)}"
        raise ConfigError(msg)
    for name, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, _FIELDS[name]):
            msg = f"{where}: field {name!r} has the wrong type ({type(value).__name__})"
            raise ConfigError(msg)
    if "model" not in entry:
        msg = f"{where}: field 'model' (the API model id) is required"
        raise ConfigError(msg)
    checks = (
        ("provider", entry.get("provider", "generic") in PROVIDERS, ", ".join(PROVIDERS)),
        ("token_param", entry.get("token_param", "max_tokens") in TOKEN_PARAMS, "max_tokens, max_completion_tokens"),
        ("thinking", entry.get("thinking", "on") in ("on", "off"), "on, off"),
    )  # fmt: skip
    for name, ok, choices in checks:
        if not ok:
            msg = f"{where}: field {name!r} must be one of: {choices}"
            raise ConfigError(msg)
    for name in ("concurrency", "rpm", "tpm", "timeout", "max_tokens"):
        if name in entry and not entry[name] > 0:
            msg = f"{where}: field {name!r} must be greater than 0"
            raise ConfigError(msg)
    if "base_url" in entry and (problem := url_problem(entry["base_url"])):
        msg = f"{where}: field 'base_url' {problem}"
        raise ConfigError(msg)
    provider = entry.get("provider", "generic")
    values: dict[str, Any] = {"provider": provider, **PROVIDER_DEFAULTS.get(provider, {}), **entry}
    if "thinking" in values:
        values["thinking"] = values["thinking"] == "on"
    if "base_url" in values:
        values["base_url"] = ",".join(split_urls(values["base_url"]))
    names = {f.name for f in fields(ModelSpec)}
    return ModelSpec(
        alias=alias, source=str(path), **{k: v for k, v in values.items() if k in names}
    )
