"""Model registry: aliases, `openai:<id>`, endpoint overrides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.providers.registry import (
    MODELS,
    ModelSpec,
    load_models_file,
    resolve_model,
    thinking_body,
)

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


# --- Reasoning settings and the user's models file -------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "on", "body"),
    [
        ("deepseek", True, {"thinking": {"type": "enabled"}}),
        ("deepseek", False, {"thinking": {"type": "disabled"}}),
        ("dashscope", False, {"enable_thinking": False}),
        ("openai", True, {"reasoning_effort": "medium"}),
        ("openai", False, {"reasoning_effort": "minimal"}),
        ("generic", True, {"chat_template_kwargs": {"enable_thinking": True}}),
        ("generic", None, {}),  # unset: nothing is sent, the provider's default applies
    ],
)
def test_thinking_is_sent_the_way_each_provider_reads_it(provider, on, body) -> None:
    spec = ModelSpec("m", "m", provider, "http://h/v1", thinking=on)
    assert thinking_body(spec) == body


def test_dashscope_thinking_on_is_refused_before_any_call() -> None:
    with pytest.raises(ConfigError, match="streaming"):
        thinking_body(replace(MODELS["qwen"], thinking=True))


def test_deepseek_answers_directly_and_its_thinking_alias_has_room_to_think() -> None:
    assert MODELS["deepseek"].thinking is False
    assert MODELS["deepseek-thinking"].thinking is True
    assert (MODELS["deepseek-thinking"].max_tokens or 0) >= 2048


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_models_file_adds_and_overrides_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[models.my-o3]\nmodel = "o3"\nprovider = "openai"\nbase_url = "https://x/v1/"\n'
        'key_env = "OPENAI_API_KEY"\ntoken_param = "max_completion_tokens"\nmax_tokens = 4096\n'
        'thinking = "on"\nrpm = 60\n\n[models.qwen]\nmodel = "qwen-vl-max"\nprovider = "dashscope"\n',
    )
    extra = load_models_file(path)
    o3 = resolve_model("my-o3", extra=extra)
    assert (o3.model, o3.provider, o3.base_url, o3.key_env) == (
        "o3", "openai", "https://x/v1", "OPENAI_API_KEY",
    )  # fmt: skip
    assert (o3.token_param, o3.max_tokens, o3.thinking, o3.rpm) == (
        "max_completion_tokens", 4096, True, 60,
    )  # fmt: skip
    assert o3.source == str(path)
    qwen = resolve_model("qwen", extra=extra)
    assert qwen.model == "qwen-vl-max"  # the file wins
    assert (qwen.base_url, qwen.key_env) == (DASHSCOPE, "DASHSCOPE_API_KEY")  # the provider's
    assert resolve_model("qwen").model == "qwen2.5-vl-72b-instruct"  # built-ins untouched
    assert resolve_model("gpt-4o", extra=extra).source == "built-in"


def test_an_alias_without_an_endpoint_needs_one(tmp_path: Path) -> None:
    extra = load_models_file(write(tmp_path, '[models.vllm]\nmodel = "m"\n'))
    with pytest.raises(ConfigError, match=r"no endpoint: set base_url in .*models\.toml"):
        resolve_model("vllm", extra=extra)
    assert resolve_model("vllm", base_url="http://h/v1", extra=extra).base_url == "http://h/v1"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[models.x]\nprovider = 'openai'\n", "field 'model' (the API model id) is required"),
        ("[models.x]\nmodel = 'm'\nkind = 'vision'\n", "unknown field 'kind'"),
        ("[models.x]\nmodel = 'm'\nconcurrency = '8'\n", "field 'concurrency' has the wrong type"),
        ("[models.x]\nmodel = 'm'\nconcurrency = 0\n", "'concurrency' must be greater than 0"),
        ("[models.x]\nmodel = 'm'\nprovider = 'azure'\n", "field 'provider' must be one of"),
        ("[models.x]\nmodel = 'm'\nthinking = true\n", "field 'thinking' has the wrong type"),
        ("[models.x]\nmodel = 'm'\nthinking = 'maybe'\n", "field 'thinking' must be one of"),
        ("[models.x]\nmodel = 'm'\ntoken_param = 'tokens'\n", "field 'token_param' must be"),
        ("[model.x]\nmodel = 'm'\n", "no [models.<alias>] table"),
        ("[models.x\nmodel = 'm'\n", "not valid TOML"),
    ],
)
def test_a_bad_models_file_names_the_file_and_field(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_models_file(path)
    assert str(info.value).startswith(str(path))
    assert says in str(info.value)
