"""Plots of `drvd compare`: grouped bars and radars, per level and per modality (PNG and SVG).

Per level: each visual-evidence task, each independent level, each joint level and the joint
chain. Per modality: accuracy over the multiple-choice rows (visual evidence and independent).
Failed rows count wrong, as in the leaderboard. matplotlib renders off-screen (Agg); SVG text is
drawn as paths, so the files show the same everywhere.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.compare.comparison import JOINT, MCQ_FILES, Run
from pipeline.files import write_atomic
from pipeline.records import JOINT_LEVELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SHORT = {"visual_evidence_qa": "evidence", "independent_qa": "independent"}
Table = dict[str, list[float | None]]  # category -> accuracy per run (None: the run has none)


_ORDER = ("modality", "bodypart", "organ", "lesion", "diagnosis", "chain")  # then by name


def _rank(category: str) -> tuple[int, int, str]:
    """Sort key: evidence, independent, joint; levels from modality to diagnosis; then by name."""
    prefix, _, name = category.partition(": ")
    files = ("evidence", "independent", "joint")
    at = files.index(prefix) if prefix in files else len(files)
    return at, _ORDER.index(name) if name in _ORDER else len(_ORDER), name


def _table(counts: list[dict[str, list[int]]], *, ranked: bool) -> Table:
    """Turn per-run {category: [correct, n]} into category -> accuracy per run."""
    cats = {cat for c in counts for cat in c}
    return {
        cat: [c[cat][0] / c[cat][1] if cat in c and c[cat][1] else None for c in counts]
        for cat in sorted(cats, key=_rank if ranked else str)
    }


def by_level(runs: Sequence[Run]) -> Table:
    """Return the accuracy per task or level of each multiple-choice file, and per joint level."""
    counts = []
    for run in runs:
        cells: dict[str, list[int]] = {}
        for stem in MCQ_FILES:
            for item in run.items.get(stem, {}).values():
                cell = cells.setdefault(f"{_SHORT[stem]}: {item.score.group[1]}", [0, 0])
                cell[0] += item.score.hits[0]
                cell[1] += 1
        for item in run.items.get(JOINT, {}).values():
            for level, hit in zip(
                (*JOINT_LEVELS, "chain"), (*item.score.hits, all(item.score.hits)), strict=True
            ):
                cell = cells.setdefault(f"joint: {level}", [0, 0])
                cell[0] += hit
                cell[1] += 1
        counts.append(cells)
    return _table(counts, ranked=True)


def by_modality(runs: Sequence[Run]) -> Table:
    """Return the accuracy per modality over the multiple-choice rows of both files."""
    counts = []
    for run in runs:
        cells: dict[str, list[int]] = {}
        items = [i for stem in MCQ_FILES for i in run.items.get(stem, {}).values()]
        for item in items:
            cell = cells.setdefault(str(item.score.group[0]), [0, 0])
            cell[0] += item.score.hits[0]
            cell[1] += 1
        counts.append(cells)
    return _table(counts, ranked=False)


def plot_all(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write the bar and radar plots per level and per modality; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "drvd-compare"  # the same SVG for the same numbers
    names = [r.name for r in runs]
    written: list[Path] = []
    for what, table in (("level", by_level(runs)), ("modality", by_modality(runs))):
        if not table:
            continue
        written += _save(_bars(table, names, what), out / f"bars_{what}")
        if len(table) >= 3:  # a radar needs three axes
            written += _save(_radar(table, names, what), out / f"radar_{what}")
    return written


def _bars(table: Table, names: Sequence[str], what: str) -> Figure:
    import matplotlib.pyplot as plt

    cats = list(table)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(cats) * max(1, len(names)) ** 0.5 + 2), 4.5))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cats))]
        ys = [math.nan if (y := table[c][i]) is None else y for c in cats]  # nan: no bar
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(cats)), cats, rotation=40, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy per {what}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _radar(table: Table, names: Sequence[str], what: str) -> Figure:
    import matplotlib.pyplot as plt

    cats = list(table)
    angles = [2 * math.pi * i / len(cats) for i in range(len(cats))]
    fig = plt.figure(figsize=(6.5, 6.5))
    ax = fig.add_subplot(projection="polar")
    for i, name in enumerate(names):
        ys = [table[c][i] or 0.0 for c in cats]
        ax.plot([*angles, angles[0]], [*ys, ys[0]], label=name)
        ax.fill([*angles, angles[0]], [*ys, ys[0]], alpha=0.1)
    ax.set_xticks(angles, cats, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_title(f"Accuracy per {what}")
    ax.legend(fontsize="small", loc="lower right", bbox_to_anchor=(1.1, -0.1))
    fig.tight_layout()
    return fig


def _save(fig: Figure, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else None)
        write_atomic(stem.with_suffix(f".{fmt}"), buf.getvalue())
        paths.append(stem.with_suffix(f".{fmt}"))
    plt.close(fig)
    return paths
