"""Shared fixtures: an isolated environment for every test, and the fake OpenAI server."""

from __future__ import annotations

import asyncio
import compileall
import heapq
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from fakeserver import FakeServer, running

_KEY_VARS = ("OPENAI_API_KEY", "DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY")
_REPO = Path(__file__).resolve().parent.parent
_CACHES = itertools.count()  # the cache folders of tests without a tmp_path


def pytest_configure(config: pytest.Config) -> None:
    """Compile the bytecode of our code once, for the ~250 processes the tests start.

    With PYTHONDONTWRITEBYTECODE set (as on CI) every `python -m pipeline` and fake server would
    compile our modules from source again, ~0.1 s of CPU each; the installed packages have
    theirs. It goes where Python puts it by default (__pycache__, ignored by git); a process that
    does not write bytecode still reads it. Done once, by the process that starts the workers.
    """
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        for folder in ("pipeline", "tests"):
            compileall.compile_dir(_REPO / folder, quiet=1)


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Drop every DRVD_* and provider key variable; point the cache at a temporary dir.

    The cache is TMP_PATH/cache in a test that has a tmp_path; in one without (most of them: the
    pure functions), a folder of its own that is made only if something writes there, so those
    thousands of tests make no folder each.

    A module that checks nothing of the page sets `PAGE = False`, a test `@pytest.mark.no_page`:
    its CLI runs skip report.html and the plots (DRVD_PAGE=off), a second of CPU per run.
    Every other test gets the page.
    """
    for name in list(os.environ):
        if name.startswith("DRVD_") or name in _KEY_VARS:
            monkeypatch.delenv(name)
    if "tmp_path" in request.fixturenames:
        cache = request.getfixturevalue("tmp_path") / "cache"
    else:
        cache = tmp_path_factory.getbasetemp() / "caches" / str(next(_CACHES))
    monkeypatch.setenv("DRVD_CACHE_DIR", str(cache))
    if not getattr(request.module, "PAGE", True) or request.node.get_closest_marker("no_page"):
        monkeypatch.setenv("DRVD_PAGE", "off")


class VirtualClock:
    """Virtual seconds for pacing tests: sleepers wake in time order, with no real waiting.

    A sleep registers its wake-up time; once the tasks that are ready have run, the clock jumps
    to the earliest wake-up and wakes that sleeper, and so on. Real work between sleeps takes no
    virtual time, so times are exact.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._advancing = False  # an _advance is queued
        # When set and true, time stands still: e.g. while HTTP requests are on the wire, which
        # no task is ready to run, so a sender's time is the time the server receives it.
        self.busy: Callable[[], bool] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._queue, (self.now + max(seconds, 0.0), next(self._order), wake))
        self._schedule()
        await wake

    def _schedule(self) -> None:
        if not self._advancing:  # one at a time, after the tasks already ready have run
            self._advancing = True
            asyncio.get_running_loop().call_soon(self._advance)

    def _advance(self) -> None:
        self._advancing = False
        if not self._queue:
            return
        if self.busy is not None and self.busy():  # work in flight outside the loop's tasks
            self._advancing = True
            asyncio.get_running_loop().call_later(0.0002, self._advance)
            return
        when, _, wake = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        if not wake.done():
            wake.set_result(None)  # the sleeper runs before the next advance
        if self._queue:
            self._schedule()


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock: pass `clock` and `clock.sleep` where a test would otherwise wait."""
    return VirtualClock()


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """Serve the fake OpenAI-compatible API on 127.0.0.1:<free port>; `.url` ends in /v1."""
    async with running() as server:
        yield server


# --- A finished run folder, as our runner leaves it (summary and render tests) -------------------

_CT = {"modality": "CT", "task": "modality_recognition", "answer": "C. CT"}
_JOINT = {
    "joint_prompt": "...",
    "modality_answer": "B. CT",
    "organ_answer": "D. Lung",
    "lesion_answer": "A. Nodule",
    "diagnosis_answer": "C. Cancer",
}
REF = "Mild cardiomegaly. No pleural effusion."
PRED = "Mild cardiomegaly without pleural effusion."


def _result(row, key, response, *, error=None, **meta):
    out = {**row, "raw_response": response, "error": error}
    if response is not None:
        out["model_response"] = response
    usage = {"prompt_tokens": 50, "api_calls": 1, **meta}
    out["_meta"] = {"key": key, "model": "qwen-vl-max", "usage": usage}
    return out


def write_jsonl(path, rows, tail=b""):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + tail)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with results files for three of the four files, one torn by a crash."""
    run = tmp_path / "run-1"
    run.mkdir()
    write_jsonl(
        run / "visual_evidence_qa.jsonl",
        [
            _result(_CT, "a", "C"),
            _result(_CT, "b", None, error="429 limit_requests"),
            _result({**_CT, "task": "organ_recognition", "answer": "B. Lung"}, "c", "A"),
            _result(_CT, "b", "C", cache_hits=1, api_calls=0),  # the retry appended on resume
        ],
        tail=b'{"modality": "CT", "ans',  # torn by a crash mid-write
    )
    write_jsonl(
        run / "joint_qa.jsonl",
        [
            _result({**_JOINT, "modality": "CT"}, "j1", "B,D,A,C"),
            _result({**_JOINT, "modality": "CT"}, "j2", "B, D, A, C"),
            _result({**_JOINT, "modality": "MRI"}, "j3", None, error="content filter"),
        ],
    )
    report = {"task": "report_generation", "modality": "CT", "answer": REF}
    write_jsonl(
        run / "report_generation.jsonl",
        [_result(report, "r1", PRED), _result(report, "r2", "")],
    )
    return run
