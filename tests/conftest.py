"""Shared fixtures: an isolated environment for every test, and the fake OpenAI server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakeserver import FakeServer, running

_KEY_VARS = ("OPENAI_API_KEY", "DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop every DRVD_* and provider key variable; point the cache at a temporary dir."""
    for name in list(os.environ):
        if name.startswith("DRVD_") or name in _KEY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("DRVD_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """Serve the fake OpenAI-compatible API on 127.0.0.1:<free port>; `.url` ends in /v1."""
    async with running() as server:
        yield server
