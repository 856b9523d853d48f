"""The stages import downwards only: each package (or top-level module) imports its own layer or below.

The order is the run's data flow (docs/ARCHITECTURE.md): the shared types and helpers at the bottom,
then the data, the scoring, the providers' facts, the settings, the model, the plan, the views, the
run, compare, and the command line on top. Imports under `if TYPE_CHECKING:` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "records", "files", "redact", "knobs", "results"),
    ("data",),
    ("scoring",),
    ("providers",),
    ("config",),
    ("model",),
    ("plan",),
    ("views",),
    ("run",),
    ("controls",),
    ("compare",),
    ("share",),
    ("api", "args", "cli", "__init__", "__main__"),
)
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}
MAX_LINES = 400


def _unit(module: str) -> str:
    """Return the layer unit of a dotted module under pipeline: its first component."""
    return module.split(".")[0]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(source: str, own: tuple[str, ...]) -> list[tuple[int, str]]:
    """Return (line, module under pipeline) of every pipeline import in a module's source."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name[9:]) for a in node.names if a.name.startswith("pipeline.")
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(own[: len(own) - node.level])
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "pipeline" or node.module.startswith("pipeline.")):
                mod = node.module[9:]
            else:
                continue
            if mod:
                found.append((node.lineno, mod))
            else:  # from pipeline import x: each name is a module or a top-level name
                found += [(node.lineno, a.name) for a in node.names]
    return sorted(found)


def test_every_package_and_top_module_has_a_layer() -> None:
    units = {_unit(".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in _modules()}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


def _upward(source: str, own: tuple[str, ...]) -> list[str]:
    """Return the imports of a module (its parts under pipeline) that reach a higher layer."""
    here = _unit(".".join(own))
    return [
        f"line {line} imports pipeline.{mod} ({_unit(mod)} is above {here})"
        for line, mod in _imports(source, own)
        if RANK.get(_unit(mod), -1) > RANK[here]
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downwards(path: Path) -> None:
    own = path.relative_to(PACKAGE).with_suffix("").parts
    assert not _upward(path.read_text(), own), "\n".join(_upward(path.read_text(), own))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_check_sees_upward_imports_of_every_form() -> None:
    """The checker itself: absolute, relative and `from pipeline import` forms, lazy ones too."""
    source = (
        "from pipeline.records import Sample\n"
        "from pipeline.run.runner import Run\n"
        "def f():\n    from ..views import page\n"
        "from pipeline import cli\n"
        "import pipeline.compare.tables\n"
    )
    found = _upward(source, ("scoring", "summary"))
    assert [f.split(" (")[0] for f in found] == [
        "line 2 imports pipeline.run.runner",
        "line 4 imports pipeline.views",
        "line 5 imports pipeline.cli",
        "line 6 imports pipeline.compare.tables",
    ]
    assert [f.split(" (")[0] for f in _upward(source, ("compare", "tables"))] == [
        "line 5 imports pipeline.cli"
    ]
