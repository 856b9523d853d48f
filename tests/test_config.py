"""Configuration: flag beats DRVD_* variable beats default; keys, model names and files checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import EvalConfig, cache_dir, default_run_name, load_config
from pipeline.errors import ConfigError
from pipeline.knobs import DEFAULT_CACHE_DIR, DEFAULT_MAX_RETRIES, DEFAULT_OUT, KNOBS
from pipeline.providers.registry import DEFAULT_TIMEOUT, MODELS
from pipeline.records import FILES

KEYS = {"DASHSCOPE_API_KEY": "sk-dash", "DEEPSEEK_API_KEY": "sk-deep", "OPENAI_API_KEY": "sk-oai"}


def load(model: str = "gpt-4o", env: dict[str, str] | None = None, **flags: Any) -> EvalConfig:
    """Load a config with only the given environment (never the process's)."""
    return load_config({"model": model, "data": Path("data"), **flags}, {**KEYS, **(env or {})})


# (knob, flag value, env text, env value, model default for gpt-4o)
PRECEDENCE = [
    ("concurrency", 5, "7", 7, MODELS["gpt-4o"].concurrency),
    ("rpm", 120.0, "240", 240.0, MODELS["gpt-4o"].rpm),
    ("tpm", 1000.0, "2000.5", 2000.5, MODELS["gpt-4o"].tpm),
    ("timeout", 3.5, "9", 9.0, DEFAULT_TIMEOUT),
    ("max_retries", 2, "0", 0, DEFAULT_MAX_RETRIES),
    ("cache_dir", Path("/flag/cache"), "/env/cache", Path("/env/cache"), DEFAULT_CACHE_DIR),
]


@pytest.mark.parametrize(("name", "flag", "text", "from_env", "default"), PRECEDENCE)
def test_flag_beats_env_beats_model_default(
    name: str, flag: Any, text: str, from_env: Any, default: Any
) -> None:
    var = next(k.env for k in KNOBS if k.name == name)
    assert flag != from_env != default  # the three sources are distinguishable
    assert getattr(load(), name) == default
    assert getattr(load(env={var: text}), name) == from_env
    assert getattr(load(env={var: text}, **{name: flag}), name) == flag


def test_model_defaults_differ_per_model() -> None:
    assert load("gpt-4o").concurrency == MODELS["gpt-4o"].concurrency
    assert load("deepseek").concurrency == MODELS["deepseek"].concurrency
    assert load("deepseek").rpm is None  # no pacing beyond concurrency
    assert load("qwen").rpm == MODELS["qwen"].rpm
    # DeepSeek may queue a request for up to 30 minutes: its attempt timeout is its own.
    assert load("deepseek").timeout == MODELS["deepseek"].timeout > DEFAULT_TIMEOUT
    assert load("deepseek", env={"DRVD_TIMEOUT": "30"}).timeout == 30.0
    assert load("deepseek", timeout=5.0, env={"DRVD_TIMEOUT": "30"}).timeout == 5.0


def test_blank_env_value_means_unset() -> None:
    assert load(env={"DRVD_CONCURRENCY": "  "}).concurrency == MODELS["gpt-4o"].concurrency


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("DRVD_CONCURRENCY", "abc"),
        ("DRVD_CONCURRENCY", "0"),
        ("DRVD_CONCURRENCY", "-3"),
        ("DRVD_CONCURRENCY", "1.5"),
        ("DRVD_RPM", "0"),
        ("DRVD_RPM", "-1"),
        ("DRVD_RPM", "fast"),
        ("DRVD_TPM", "-inf"),
        ("DRVD_TIMEOUT", "0"),
        ("DRVD_MAX_RETRIES", "-1"),
        ("DRVD_MAX_RETRIES", "x"),
    ],
)
def test_invalid_env_value_names_the_variable(var: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={var: text})
    assert var in str(info.value)
    assert repr(text) in str(info.value)


def test_nan_rate_is_rejected() -> None:
    with pytest.raises(ConfigError, match="DRVD_RPM"):
        load(env={"DRVD_RPM": "nan"})


@pytest.mark.parametrize(
    ("name", "value"), [("concurrency", 0), ("concurrency", -1), ("max_retries", -1), ("rpm", 0.0)]
)
def test_invalid_flag_value_is_a_config_error(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{name: value})
    var = next(k.env for k in KNOBS if k.name == name)
    assert f"--{name.replace('_', '-')}" in str(info.value) or var in str(info.value)


@pytest.mark.parametrize(
    ("model", "var"),
    [
        ("qwen", "DASHSCOPE_API_KEY"),
        ("qwen-intl", "DASHSCOPE_API_KEY"),
        ("deepseek", "DEEPSEEK_API_KEY"),
        ("gpt-4o", "OPENAI_API_KEY"),
    ],
)
def test_missing_key_names_the_exact_variable(model: str, var: str) -> None:
    others = {k: v for k, v in KEYS.items() if k != var}  # other providers' keys don't count
    with pytest.raises(ConfigError) as info:
        load_config({"model": model, "data": Path("d")}, others)
    message = str(info.value)
    assert var in message
    assert not any(k in message for k in others)
    assert load_config({"model": model, "data": Path("d")}, {var: "sk-x"}).api_key == "sk-x"


def test_drvd_api_key_overrides_provider_key() -> None:
    assert load("gpt-4o", env={"DRVD_API_KEY": "sk-over"}).api_key == "sk-over"
    only = load_config({"model": "qwen", "data": Path("d")}, {"DRVD_API_KEY": "sk-only"})
    assert only.api_key == "sk-only"


def test_local_and_generic_models_need_no_key() -> None:
    assert load_config({"model": "random", "data": Path("d")}, {}).api_key is None
    cfg = load_config({"model": "openai:m", "data": Path("d"), "base_url": "http://h/v1"}, {})
    assert cfg.api_key is None
    cfg = load_config({"model": "openai:m", "data": Path("d")}, {"DRVD_BASE_URL": "http://e/v1"})
    assert cfg.spec.base_url == "http://e/v1"


def test_openai_model_without_base_url_names_flag_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model": "openai:qwen2.5-vl-7b", "data": Path("d")}, {})
    assert "--base-url" in str(info.value)
    assert "DRVD_BASE_URL" in str(info.value)


def test_base_url_flag_beats_env() -> None:
    flags = {"model": "openai:m", "data": Path("d"), "base_url": "http://flag/v1/"}
    cfg = load_config(flags, {"DRVD_BASE_URL": "http://env/v1"})
    assert cfg.spec.base_url == "http://flag/v1"


def test_data_from_flag_or_env_or_error() -> None:
    assert load_config({"model": "random"}, {"DRVD_DATA": "/env/data"}).data == Path("/env/data")
    flags = {"model": "random", "data": Path("/flag")}
    assert load_config(flags, {"DRVD_DATA": "/env"}).data == Path("/flag")
    with pytest.raises(ConfigError, match="DRVD_DATA"):
        load_config({"model": "random"}, {})


def test_files_parsing() -> None:
    assert load().files == FILES
    assert load(files="joint_qa, visual_evidence_qa.jsonl").files == (
        "joint_qa",
        "visual_evidence_qa",
    )
    with pytest.raises(ConfigError) as info:
        load(files="joint_qa,jointqa")
    assert "'jointqa'" in str(info.value)
    assert all(stem in str(info.value) for stem in FILES)


def test_protocol_is_checked() -> None:
    assert load().protocol == "official"
    assert load(protocol="notebook").protocol == "notebook"
    with pytest.raises(ConfigError, match="official"):
        load(protocol="fast")


def test_api_key_is_not_in_repr() -> None:
    secret = "sk-very-secret-0123456789"
    cfg = load(env={"OPENAI_API_KEY": secret})
    assert cfg.api_key == secret
    assert secret not in repr(cfg)
    assert secret not in str(cfg)


def test_flags_that_are_not_knobs() -> None:
    cfg = load(out=Path("o"), run_name="mine", limit=5, seed=7, legacy_mime=True, no_cache=True)
    assert (cfg.out, cfg.run_name, cfg.limit, cfg.seed) == (Path("o"), "mine", 5, 7)
    assert cfg.legacy_mime is True
    assert cfg.use_cache is False
    assert cfg.run_dir == Path("o") / "mine"
    plain = load()
    assert plain.out == DEFAULT_OUT
    assert plain.use_cache is True
    assert plain.seed == 0


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai:Qwen/Qwen2.5-VL-7B-Instruct", "openai-Qwen-Qwen2.5-VL-7B-Instruct"),
        ("openai:a b::c", "openai-a-b-c"),
        ("///", "run"),
    ],
)
def test_default_run_name_is_folder_safe(model: str, name: str) -> None:
    assert default_run_name(model) == name


def test_default_run_name_comes_from_alias() -> None:
    cfg = load_config({"model": "openai:org/m", "data": Path("d"), "base_url": "http://h"}, {})
    assert cfg.run_name == "openai-org-m"
    assert "/" not in cfg.run_name


def test_cache_dir_helper_precedence() -> None:
    assert cache_dir(None, {}) == DEFAULT_CACHE_DIR
    assert cache_dir(None, {"DRVD_CACHE_DIR": "/e"}) == Path("/e")
    assert cache_dir(Path("/f"), {"DRVD_CACHE_DIR": "/e"}) == Path("/f")


def test_judge_defaults_to_deepseek_only_when_its_key_is_set() -> None:
    cfg = load()  # KEYS holds DEEPSEEK_API_KEY
    assert cfg.judge is not None
    assert cfg.judge.alias == "deepseek"
    assert cfg.judge_key == "sk-deep"
    no_deepseek = load_config({"model": "gpt-4o", "data": Path("d")}, {"OPENAI_API_KEY": "k"})
    assert no_deepseek.judge is None
    assert load(judge="none").judge is None
    assert load(env={"DRVD_JUDGE": "none"}).judge is None


def test_judge_key_and_endpoint_are_its_own() -> None:
    cfg = load(
        "openai:m",
        base_url="http://model/v1",
        judge="openai:j",
        judge_base_url="http://judge/v1/",
        env={"DRVD_API_KEY": "model-key", "DRVD_JUDGE_API_KEY": "judge-key"},
    )
    assert cfg.judge is not None
    assert (cfg.judge.model, cfg.judge.base_url, cfg.judge_key) == (
        "j",
        "http://judge/v1",
        "judge-key",
    )
    judge = cfg.judge_config()
    assert judge is not None
    assert judge.api_key == "judge-key"
    assert judge.spec.base_url == "http://judge/v1"
    assert judge.concurrency == cfg.judge.concurrency
    assert "judge-key" not in repr(cfg)
    assert "judge-key" not in repr(judge)
    # The model's DRVD_BASE_URL is not the judge's.
    with pytest.raises(ConfigError, match="needs an endpoint"):
        load("openai:m", base_url="http://model/v1", judge="openai:j")


@pytest.mark.parametrize(
    ("judge", "env", "message"),
    [
        ("random", {}, "must be an API model"),
        ("nobody", {}, "unknown model 'nobody'"),
        ("gpt-4o", {"OPENAI_API_KEY": ""}, "set OPENAI_API_KEY or DRVD_JUDGE_API_KEY"),
    ],
)
def test_bad_judges_are_config_errors(judge: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load("random", judge=judge, env=env)


def test_keyword_prompt_and_bertscore_settings() -> None:
    assert load().keyword_prompt == "repo"
    assert load(env={"DRVD_KEYWORD_PROMPT": "pypi"}).keyword_prompt == "pypi"
    with pytest.raises(ConfigError, match="choose from repo, pypi"):
        load(keyword_prompt="paper")
    assert load(no_bertscore=True).bert_model is None
    cfg = load()  # bert-score is installed by `make setup-report`
    assert (cfg.bert_model, cfg.bert_layers) == (
        "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract",
        12,
    )
    local = load(bert_model="/models/minilm", env={"DRVD_BERT_LAYERS": "6"})
    assert (local.bert_model, local.bert_layers) == ("/models/minilm", 6)
    assert load(bert_model="/models/minilm").bert_layers is None  # bert-score's own table


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ConfigError, match=f"--limit {limit}: must be at least 1"):
        load(limit=limit)
    assert load(limit=2).limit == 2


def test_max_tokens_and_thinking_are_deviations_from_the_protocol(tmp_path: Path) -> None:
    assert load("gpt-4o").deviations == {}
    cfg = load("gpt-4o", env={"DRVD_MAX_TOKENS": "2048", "DRVD_THINKING": "off"})
    assert (cfg.spec.max_tokens, cfg.spec.thinking) == (2048, False)
    assert cfg.deviations == {"max_tokens": 2048, "thinking": "off"}
    flagged = load("gpt-4o", env={"DRVD_MAX_TOKENS": "2048"}, max_tokens=300, thinking="ON")
    assert flagged.deviations == {"max_tokens": 300, "thinking": "on"}  # the flag wins
    assert load("deepseek-thinking").deviations == {"max_tokens": 8192, "thinking": "on"}


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"max_tokens": 0}, "--max-tokens='0' is not valid: must be at least 1"),
        ({"thinking": "maybe"}, "--thinking='maybe' is not valid: must be on or off"),
        ({"model": "qwen", "thinking": "on"}, "DashScope allows thinking only in streaming"),
    ],
)
def test_reasoning_settings_are_checked_before_any_work(flags: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load(**{"model": "gpt-4o", **flags})


def test_models_file_from_the_environment_names_models_and_judges(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.local-vl]\nmodel = "Qwen2.5-VL-7B"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        '[models.local-judge]\nmodel = "qwen3-8b"\nbase_url = "http://127.0.0.1:8001/v1"\n',
        encoding="utf-8",
    )
    env = {"DRVD_MODELS_FILE": str(path), "DRVD_JUDGE": "local-judge"}
    cfg = load("local-vl", env=env)
    assert (cfg.spec.model, cfg.spec.provider, cfg.spec.source) == (
        "Qwen2.5-VL-7B", "generic", str(path),
    )  # fmt: skip
    assert cfg.judge is not None
    assert cfg.judge.base_url == "http://127.0.0.1:8001/v1"
    with pytest.raises(ConfigError, match="unknown model 'local-vl'"):
        load("local-vl")  # without the file the alias does not exist


def test_url_credentials_are_split_from_every_base_url(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.mine]\nmodel = "m"\nbase_url = "http://f:Pw-file@h3/v1"\n')
    env = {"DRVD_BASE_URL": "http://u:Pw-env@h1/v1/", "DRVD_JUDGE_API_KEY": "sk-j"}
    cfg = load("openai:m", env=env, judge="openai:j", judge_base_url="https://j:Pw-judge@h2/v1")
    assert (cfg.spec.base_url, cfg.url_auth) == ("http://h1/v1", ("u:Pw-env",))
    assert cfg.judge is not None
    assert (cfg.judge.base_url, cfg.judge_url_auth) == ("https://h2/v1", ("j:Pw-judge",))
    judge = cfg.judge_config()
    assert judge is not None
    assert (judge.api_key, judge.url_auth) == ("sk-j", ("j:Pw-judge",))
    from_file = load("mine", models_file=path)
    assert (from_file.spec.base_url, from_file.url_auth) == ("http://h3/v1", ("f:Pw-file",))
    for shown in (repr(cfg), repr(from_file), str(cfg)):
        assert "Pw-" not in shown
    # Each replica of a list keeps its own credentials, in order.
    replicas = load("openai:m", base_url="http://a:Pw-a@h1/v1/, http://h2:8001/v1")
    assert replicas.spec.base_url == "http://h1/v1,http://h2:8001/v1"
    assert replicas.url_auth == ("a:Pw-a", None)
    assert "Pw-" not in repr(replicas)
    # The password is not part of what the run shows, stores or keys the cache on.
    other = load("openai:m", env={"DRVD_BASE_URL": "http://u:Pw-other@h1/v1"})
    assert other.spec == cfg.spec


@pytest.mark.parametrize("url", ["localhost:8000/v1", "127.0.0.1:8000", "ftp://h/v1", "http://"])
def test_a_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^DRVD_BASE_URL=.*must start with http:// or https://"):
        load("openai:m", env={"DRVD_BASE_URL": url})


def test_a_bad_base_url_is_echoed_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        load("openai:m", base_url="http://u:Pw-secret@h:port/v1")
    assert "Pw-secret" not in str(info.value)
    assert "'http://u:***@h:port/v1' is not valid: has an invalid port" in str(info.value)


def test_a_tpm_below_one_request_is_refused_wherever_it_is_set(tmp_path: Path) -> None:
    # The smallest request, counted by hand: the 37-character system prompt at 4 characters a
    # token (10), two messages' markers (2 x 4), a 28-px image in one 512-px tile (85 + 170 for
    # gpt-4o), the protocol's 50-token reply.
    smallest = 10 + 8 + 85 + 170 + 50
    assert load(tpm=smallest).tpm == smallest
    with pytest.raises(ConfigError, match=rf"^--tpm {smallest - 1} is less than one request"):
        load(tpm=smallest - 1)
    with pytest.raises(ConfigError, match=r"^DRVD_TPM=900 .* at least 8216"):
        load("deepseek-thinking", env={"DRVD_TPM": "900"})  # replies up to 8192; Qwen's rule: 4 + 2
    models = tmp_path / "models.toml"
    models.write_text('[models.slow]\nmodel = "m"\nbase_url = "http://h/v1"\ntpm = 10\n')
    with pytest.raises(
        ConfigError, match=re.escape(f"tpm 10 of model 'slow' ({models}) is less than")
    ):
        load("slow", models_file=models)


def test_a_concurrency_in_the_millions_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--concurrency 1000000 is more than 4096 requests"):
        load(concurrency=1_000_000)
