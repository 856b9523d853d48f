"""The model registry: short aliases → provider, API model id, endpoint, key variable, pace.

Extend by adding a row to MODELS. `openai:<model-id>` reaches any OpenAI-compatible server
(vLLM, SGLang, Ollama, OpenRouter…) given `--base-url` or `DRVD_BASE_URL`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_TIMEOUT = 120.0  # seconds per attempt, from the moment the request is sent
DASHSCOPE_BEIJING = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_SINGAPORE = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"


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

    @property
    def remote(self) -> bool:
        """Say whether calls go over HTTP (and so through cache, limiter and retries)."""
        return self.provider != "local"


MODELS: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("random", "random", "local", concurrency=4),
        # DashScope limits are per account; qwen-vl-max documents 1,200 RPM. Stay under it.
        ModelSpec(
            "qwen", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE_BEIJING,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=600,
        ),
        ModelSpec(
            "qwen-intl", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE_SINGAPORE,
            "DASHSCOPE_API_KEY", concurrency=32, rpm=600,
        ),
        # DeepSeek limits concurrency per account (2,500 for deepseek-flash), not RPM, and may
        # hold a request in its queue for 10-30 minutes before answering.
        ModelSpec(
            "deepseek", "deepseek-flash", "deepseek", "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY", concurrency=64, timeout=1800.0,
        ),
        ModelSpec(
            "gpt-4o", "gpt-4o", "openai", "https://api.openai.com/v1",
            "OPENAI_API_KEY", concurrency=32, rpm=500, tpm=30_000,
        ),
    )
}  # fmt: skip


# Added to every judge call's body. DeepSeek's current models think by default; the official judge
# (deepseek-chat) did not, and thinking mode ignores the keyword call's temperature=0.
JUDGE_BODY: dict[str, dict[str, Any]] = {"deepseek": {"thinking": {"type": "disabled"}}}


def resolve_model(name: str, *, base_url: str | None = None) -> ModelSpec:
    """Return the spec for an alias or `openai:<model-id>`; `base_url` overrides the endpoint."""
    if name.startswith("openai:"):
        model_id = name.removeprefix("openai:")
        if not model_id:
            msg = "model 'openai:' needs a model id, e.g. --model openai:qwen2.5-vl-7b-instruct"
            raise ConfigError(msg)
        if not base_url:
            msg = f"model {name!r} needs an endpoint: pass --base-url URL or set DRVD_BASE_URL"
            raise ConfigError(msg)
        return ModelSpec(name, model_id, "generic", base_url.rstrip("/"), None)
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(sorted(MODELS))
        msg = f"unknown model {name!r}: use one of {known}, or openai:<model-id> with --base-url"
        raise ConfigError(msg)
    return replace(spec, base_url=base_url.rstrip("/")) if base_url and spec.remote else spec
