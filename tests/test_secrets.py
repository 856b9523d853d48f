"""Credentials in a base URL, echoed secrets and redirects, through real runs of the CLI.

Each run is `python -m pipeline eval` in a subprocess against tests/fakeserver.py run as its own
process; the server's GET /_ledger says what it received.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from procs import drvd, ledger, server_process
from test_cli import assert_one_line_error

from pipeline.data.synthetic import write_dataset
from pipeline.redact import basic_token

KEY = "sk-live/9f8e7d6c5b4a"  # a "/" so the server's JSON escape `\/` matters
PASSWORD = "Pa55-w0rd-7c1e"

Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start fake servers as processes: `serve("--expected-key", "k")` returns http://host:port."""
    with ExitStack() as stack:
        yield lambda *args: stack.enter_context(server_process(*args)).root


def with_password(root: str, password: str = PASSWORD) -> str:
    return root.replace("http://", f"http://user:{password}@") + "/v1"


def run(tmp_path: Path, base_url: str, *extra: str, key: str | None = KEY) -> Any:
    data = tmp_path / "data"
    if not data.exists():
        write_dataset(data, total=12, images=3, sizes=(32,))
    args: list[str | Path] = ["eval", "--model", "openai:m", "--base-url", base_url, "--data", data]
    args += ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--quiet"]
    return drvd(*args, *extra, "--judge", "none", env={"DRVD_API_KEY": key} if key else {})


def assert_nowhere(tmp_path: Path, proc: Any, *secrets: str) -> int:
    """Assert no secret is in stdout/stderr or any file under out/ and cache/; count the files."""
    files = [p for d in ("out", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    return len(files)


def test_key_and_url_credentials_work_together_and_stay_secret(tmp_path, serve):
    root = serve("--expected-key", KEY, "--expected-basic", f"user:{PASSWORD}")
    proc = run(tmp_path, with_password(root))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    seen = ledger(root)
    assert seen["paid"] == seen["requests"] > 0
    assert seen["auth"] == {"Bearer / Basic": seen["requests"]}  # key, then proxy credentials
    summary = orjson.loads((tmp_path / "out" / "openai-m" / "summary.json").read_bytes())
    assert summary["run"]["endpoint"] == root + "/v1"  # the clean URL
    assert assert_nowhere(tmp_path, proc, PASSWORD, KEY) > 5  # rows, summary, cache entries


def test_url_credentials_alone_are_sent_as_basic_auth(tmp_path, serve):
    root = serve("--expected-basic", f"user:{PASSWORD}")
    proc = run(tmp_path, with_password(root), key=None)
    assert proc.returncode == 0, proc.stderr
    assert ledger(root)["auth"] == {"Basic / -": ledger(root)["requests"]}
    assert_nowhere(tmp_path, proc, PASSWORD)


@pytest.mark.parametrize("key", [KEY, None])
def test_a_wrong_url_password_exits_3_and_is_not_shown(tmp_path, serve, key):
    root = serve("--expected-basic", f"user:{PASSWORD}")
    wrong = "Wr0ng-pw-51d2"
    proc = run(tmp_path, with_password(root, wrong), key=key)
    line = assert_one_line_error(proc, 3)
    assert ("407" if key else "401") in line
    assert_nowhere(tmp_path, proc, wrong, *([key] if key else []))


@pytest.mark.parametrize(("outcome", "code"), [("echo_auth", 0), ("echo_auth_401", 3)])
def test_credentials_echoed_json_escaped_reach_no_row_or_message(tmp_path, serve, outcome, code):
    root = serve("--default-outcome", outcome)
    proc = run(tmp_path, with_password(root))
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    token = basic_token(f"user:{PASSWORD}").removeprefix("Basic ")
    # The tails: whatever escape the first characters got, the rest must not be there either.
    assert_nowhere(tmp_path, proc, KEY, PASSWORD, token, KEY[-12:], PASSWORD[-8:], token[-8:])
    if code == 0:  # the replies were recorded, with the echo masked
        rows = (tmp_path / "out" / "openai-m" / "independent_qa.jsonl").read_text()
        assert "You sent *** *** user:***" in rows
    else:
        assert "Incorrect API key provided: *** *** user:***" in proc.stderr


@pytest.mark.parametrize("status", ["307", "302"])
def test_a_redirect_stops_the_run_naming_the_target(tmp_path, serve, status):
    target = serve()
    moved = with_password(target, "Hop-pw-0a9b") + "/chat/completions"
    root = serve("--redirect", status, "--redirect-to", moved)
    proc = run(tmp_path, root + "/v1")
    line = assert_one_line_error(proc, 3)
    assert "configuration error" in line
    fix = f"set --base-url (the judge's: --judge-base-url) to {target}/v1"
    assert fix.replace("//", "//user:***@") in line
    assert ledger(target)["requests"] == 0  # neither re-sent (307) nor fetched with GET (302)
    assert ledger(root)["outcomes"] == {"redirect": ledger(root)["requests"]}
    assert not list((tmp_path / "cache").rglob("drvd-cache-*"))  # nothing cached
    assert_nowhere(tmp_path, proc, "Hop-pw-0a9b", KEY)


@pytest.mark.parametrize(
    ("where", "env"),
    [
        ("--base-url", {}),
        ("DRVD_BASE_URL", {"DRVD_BASE_URL": "localhost:8000/v1"}),
        ("--judge-base-url", {}),
    ],
)
def test_a_base_url_without_scheme_is_refused_before_any_work(tmp_path, where, env):
    args = ["eval", "--model", "openai:m", "--data", tmp_path, "--out", tmp_path / "out"]
    if where == "--base-url":
        args += ["--base-url", "127.0.0.1:8000"]
    if where == "--judge-base-url":
        args += ["--base-url", "http://127.0.0.1:8000/v1", "--judge", "openai:j"]
        args += ["--judge-base-url", "user:PW@localhost:8000/v1"]
    line = assert_one_line_error(drvd(*args, env=env), 2)
    assert line.startswith(f"error: {where}=")
    assert "http:// or https://" in line
    assert "PW" not in line
    assert not (tmp_path / "out").exists()


def test_a_models_file_base_url_is_checked_and_its_password_never_shown(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.mine]\nmodel = "m"\nbase_url = "http://u:{PASSWORD}@h:8000/v1"\n')
    listed = drvd("models", "--models-file", path)
    assert listed.returncode == 0, listed.stderr
    assert "http://u:***@h:8000/v1" in listed.stdout
    assert PASSWORD not in listed.stdout + listed.stderr
    path.write_text('[models.mine]\nmodel = "m"\nbase_url = "h:8000/v1"\n')
    line = assert_one_line_error(drvd("models", "--models-file", path), 2)
    assert "[models.mine]: field 'base_url' must start with http:// or https://" in line
