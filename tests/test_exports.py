"""The package's public surface: a small, sorted, complete `__all__`."""

from __future__ import annotations
import __future__

import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pipeline


def test_all_is_sorted_and_unique() -> None:
    assert list(pipeline.__all__) == sorted(set(pipeline.__all__))


def test_every_exported_name_is_importable_and_public() -> None:
    for name in pipeline.__all__:
        assert not name.startswith("_") or (name.startswith("__") and name.endswith("__")), name
        assert hasattr(pipeline, name), name  # what `from pipeline import name` needs


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name, value in vars(pipeline).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules are reached by their path
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    public |= set(pipeline._HOMES)  # the names loaded on first use
    assert public == {n for n in pipeline.__all__ if not n.startswith("_")}


def test_the_package_and_the_command_line_load_no_http_stack_until_a_run() -> None:
    """`import pipeline` and `drvd score/view/--help` leave the runner and aiohttp unloaded."""
    code = "import sys, pipeline.cli; print(sorted({'pipeline.run.runner', 'aiohttp'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exported_objects_come_from_the_package() -> None:
    for name in pipeline.__all__:
        value = getattr(pipeline, name)
        if callable(value):
            assert value.__module__.startswith("pipeline."), name


def test_version_matches_the_project() -> None:
    project = tomllib.loads((Path(pipeline.__file__).parent.parent / "pyproject.toml").read_text())
    assert pipeline.__version__ == project["project"]["version"]
