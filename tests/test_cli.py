"""The command line as a user runs it: `python -m pipeline …` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from procs import REPO, drvd, server_process

from pipeline.data.synthetic import write_dataset
from pipeline.knobs import KNOBS
from pipeline.model.cache import ResponseCache
from pipeline.providers.registry import MODELS
from pipeline.records import FILES, Completion

SAMPLE = REPO / "pipeline" / "data" / "sample"
VARIABLES = (
    "DRVD_CONCURRENCY",
    "DRVD_RPM",
    "DRVD_TPM",
    "DRVD_MAX_RETRIES",
    "DRVD_TIMEOUT",
    "DRVD_CACHE_DIR",
    "DRVD_DATA",
    "DRVD_BASE_URL",
    "DRVD_API_KEY",
)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_eval_help_lists_every_variable_default_and_exit_code() -> None:
    proc = drvd("eval", "--help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for var in VARIABLES:
        assert any(line.strip().startswith(var) for line in lines), var
    for knob in KNOBS:
        line = next(x for x in lines if x.strip().startswith(knob.env))
        shown = knob.shown if knob.default is None else knob.default
        assert f"(default: {shown})" in line, line
    assert "(default: 6)" in proc.stdout
    assert "(default: cache)" in proc.stdout
    status = proc.stdout[proc.stdout.index("exit status") :]
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f"{code} " in status, code


def test_every_command_s_help_is_shown_without_a_traceback() -> None:
    from pipeline.args import build_parser

    parser = build_parser()
    names = ("eval", "sweep", "plan", "score", "compare", "view", "cache", "models")
    commands: list[list[str]] = [[], *([name] for name in names)]
    for command in commands:
        with pytest.raises(SystemExit) as shown:
            parser.parse_args([*command, "--help"])  # argparse formats every help string here
        assert shown.value.code == 0, command


@pytest.mark.parametrize(
    ("model", "var"),
    [("qwen", "DASHSCOPE_API_KEY"), ("deepseek", "DEEPSEEK_API_KEY"), ("gpt-4o", "OPENAI_API_KEY")],
)
def test_missing_key_exits_2_naming_the_variable(tmp_path: Path, model: str, var: str) -> None:
    proc = drvd("eval", "--model", model, "--data", SAMPLE, "--out", tmp_path / "out")
    assert var in assert_one_line_error(proc, 2)
    assert not (tmp_path / "out").exists()  # stopped before any work


def test_unknown_model_exits_2() -> None:
    proc = drvd("eval", "--model", "gpt-5-vision", "--data", SAMPLE)
    line = assert_one_line_error(proc, 2)
    assert "gpt-5-vision" in line
    assert "qwen" in line


def test_missing_data_dir_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    proc = drvd("eval", "--model", "random", "--data", missing, "--out", tmp_path / "out")
    assert str(missing) in assert_one_line_error(proc, 2)


def test_score_of_missing_run_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(drvd("score", tmp_path / "nothing"), 2)


def test_invalid_flag_value_exits_2(tmp_path: Path) -> None:
    proc = drvd(
        "eval", "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--data", SAMPLE,
        "--out", tmp_path / "out", "--quiet", "--concurrency", "-1",
    )  # fmt: skip
    assert "concurrency" in assert_one_line_error(proc, 2).lower()


@pytest.mark.no_page  # checks nothing of the page
def test_random_eval_then_score_reproduces_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = drvd("eval", "--model", "random", "--data", SAMPLE, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for stem in FILES:
        assert stem in proc.stdout  # one table per file
    assert "Accuracy" in proc.stdout
    run = out / "random"
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert set(summary["files"]) == set(FILES)
    for stem in FILES:
        assert (run / f"{stem}.jsonl").is_file()

    rescored = drvd("score", run)
    assert rescored.returncode == 0, rescored.stderr
    again = orjson.loads((run / "summary.json").read_bytes())
    assert again["files"] == summary["files"]
    assert again["usage"] == summary["usage"]


@pytest.mark.no_page  # checks nothing of the page
def test_cache_stats_and_clear(tmp_path: Path) -> None:
    root = tmp_path / "mycache"
    cache = ResponseCache(root)
    for i in range(3):
        cache.put(f"drvd-cache-1-{i:040x}", Completion(f"answer {i}"))
    (root / "images" / "ab").mkdir(parents=True)
    (root / "images" / "ab" / "x.txt").write_text("data:image/jpeg;base64,AAAA")

    stats = drvd("cache", "stats", "--cache-dir", root)
    assert stats.returncode == 0
    assert "3 responses" in stats.stdout
    by_env = drvd("cache", "stats", env={"DRVD_CACHE_DIR": str(root)})
    assert by_env.returncode == 0
    assert "3 responses" in by_env.stdout
    default = drvd("cache", "stats")  # conftest's DRVD_CACHE_DIR: another, empty cache
    assert default.returncode == 0
    assert "0 responses" in default.stdout

    cleared = drvd("cache", "clear", "--cache-dir", root)
    assert cleared.returncode == 0
    assert "removed 3" in cleared.stdout
    assert cache.stats()["entries"] == 0
    assert not (root / "images").exists()
    assert "0 responses" in drvd("cache", "stats", "--cache-dir", root).stdout


def test_models_lists_every_alias_and_where_it_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.mine]\nmodel = "o3"\nmax_tokens = 4096\nthinking = "on"\n')
    proc = drvd("models", env={"DRVD_MODELS_FILE": str(path)})
    assert proc.returncode == 0
    for spec in MODELS.values():
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"{spec.alias} "))
        assert spec.model in line
        assert (spec.key_env or "-") in line
        assert (spec.base_url or "offline") in line
        assert line.endswith("built-in")
    mine = next(x for x in proc.stdout.splitlines() if x.startswith("mine "))
    assert mine.split() == ["mine", "o3", "-", "16", "-", "4096", "on", "-", str(path)]
    assert "openai:<id>" in proc.stdout


def test_a_setting_the_provider_cannot_take_is_one_line(tmp_path: Path) -> None:
    args = ["eval", "--model", "qwen", "--data", str(tmp_path), "--thinking", "on"]
    line = assert_one_line_error(drvd(*args, env={"DASHSCOPE_API_KEY": "sk-x"}), 2)
    assert "use --thinking off" in line


@pytest.fixture
def key_checking_server() -> Iterator[str]:
    """Run tests/fakeserver.py as its own process, accepting only `sk-right`; yield its URL."""
    with server_process("--expected-key", "sk-right") as server:
        yield server.url


def test_wrong_key_exits_3_and_the_key_is_nowhere(tmp_path: Path, key_checking_server: str) -> None:
    data, out, cache = tmp_path / "data", tmp_path / "out", tmp_path / "cache"
    write_dataset(data, total=30, images=3, sizes=(32,))
    secret = "sk-WRONG-5f3c9a0e17b24d68"
    proc = drvd(
        "eval", "--model", "openai:m", "--base-url", key_checking_server, "--data", data,
        "--out", out, "--cache-dir", cache, "--quiet", "--concurrency", "2",
        env={"DRVD_API_KEY": secret},
    )  # fmt: skip
    line = assert_one_line_error(proc, 3)
    assert "401" in line
    assert secret not in proc.stdout + proc.stderr
    checked = 0
    for folder in (out, cache):
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
                checked += 1
    assert checked >= 1  # the run left files behind (results folder, summary), all clean


def test_malloc_arenas_are_capped_unless_the_user_set_them(monkeypatch) -> None:
    from pipeline.cli import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False  # the user's own setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is (sys.platform == "linux")  # glibc here
