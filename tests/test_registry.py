"""Model registry: aliases, `openai:<id>`, endpoint overrides."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.registry import MODELS, resolve_model

DASHSCOPE = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_INTL = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"


@pytest.mark.parametrize(
    ("alias", "model", "provider", "base_url", "key_env"),
    [
        ("qwen", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE, "DASHSCOPE_API_KEY"),
        ("qwen-intl", "qwen2.5-vl-72b-instruct", "dashscope", DASHSCOPE_INTL, "DASHSCOPE_API_KEY"),
        (
            "deepseek",
            "deepseek-flash",
            "deepseek",
            "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY",
        ),
        ("gpt-4o", "gpt-4o", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ],
)
def test_alias_maps_to_documented_model(
    alias: str, model: str, provider: str, base_url: str, key_env: str
) -> None:
    spec = resolve_model(alias)
    assert (spec.alias, spec.model, spec.provider) == (alias, model, provider)
    assert (spec.base_url, spec.key_env) == (base_url, key_env)
    assert spec.remote
    assert spec.concurrency >= 1


def test_random_is_local() -> None:
    spec = resolve_model("random")
    assert spec.provider == "local"
    assert not spec.remote
    assert spec.key_env is None
    assert spec.base_url is None
    # An endpoint means nothing to a local model.
    assert resolve_model("random", base_url="http://h/v1").base_url is None


def test_unknown_alias_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_model("qwen-max")
    message = str(info.value)
    assert "'qwen-max'" in message
    assert all(alias in message for alias in MODELS)
    assert "openai:<model-id>" in message


def test_base_url_overrides_alias_endpoint() -> None:
    spec = resolve_model("qwen", base_url="http://127.0.0.1:8000/v1/")
    assert spec.base_url == "http://127.0.0.1:8000/v1"
    assert spec.model == "qwen2.5-vl-72b-instruct"
    assert spec.key_env == "DASHSCOPE_API_KEY"
    assert MODELS["qwen"].base_url == DASHSCOPE  # the registry itself is untouched


def test_openai_prefix_reaches_any_server() -> None:
    spec = resolve_model("openai:Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://h:1/v1//")
    assert spec.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert spec.alias == "openai:Qwen/Qwen2.5-VL-7B-Instruct"
    assert spec.provider == "generic"
    assert spec.remote
    assert spec.base_url == "http://h:1/v1"
    assert spec.key_env is None


def test_openai_prefix_needs_id_and_endpoint() -> None:
    with pytest.raises(ConfigError, match="model id"):
        resolve_model("openai:", base_url="http://h/v1")
    with pytest.raises(ConfigError) as info:
        resolve_model("openai:m")
    assert "--base-url" in str(info.value)
    assert "DRVD_BASE_URL" in str(info.value)
