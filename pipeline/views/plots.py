"""The run's plots (matplotlib, PNG and SVG under RUN/plots/), from the summary alone.

    levels     accuracy per level: independent vs joint on the same images
    modality   accuracy per modality, one bar per multiple-choice file (joint: whole chains)
    answers    how the answers were obtained, per file

The values plotted go to RUN/plots/data.json, so a test can check them against the summary.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline.files import write_atomic
from pipeline.records import JOINT_LEVELS

PLOTS = "plots"
EXTS = ("png", "svg")
_TITLES = {
    "levels": "Accuracy per level: independent vs joint (same images)",
    "modality": "Accuracy per modality",
    "answers": "How the answers were obtained",
}


def plot_data(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the numbers each plot shows: {plot: {series: {label: value}}}; empty ones left out."""
    files = summary.get("files") or {}
    levels: dict[str, dict[str, float | None]] = {}
    if drop := summary.get("independent_vs_joint"):
        levels["independent"] = {lv: c["independent"] for lv, c in drop.items() if c["pairs"]}
        levels["joint"] = {lv: c["joint"] for lv, c in drop.items() if c["pairs"]}
    elif joint := files.get("joint_qa"):
        levels["joint"] = {lv: joint["level_totals"][lv]["accuracy"] for lv in JOINT_LEVELS}
    modality: dict[str, dict[str, float | None]] = {}
    for stem, section in files.items():
        if section.get("kind") == "mcq":
            per = {}
            for m, cells in section["groups"].items():
                n = sum(c["n"] for c in cells.values())
                per[m] = sum(c["correct"] for c in cells.values()) / n if n else None
            modality[stem] = per
        elif section.get("kind") == "joint":
            modality[f"{stem} (chain)"] = {m: c["accuracy"] for m, c in section["chains"].items()}
    answers = {
        stem: {fate: n for fate, n in (section.get("answers") or {}).items() if n}
        for stem, section in files.items()
    }
    data = {"levels": levels, "modality": modality, "answers": answers}
    return {name: series for name, series in data.items() if any(series.values())}


def write_plots(run_dir: Path, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Write each plot as PNG and SVG, and data.json; return [(name, title)] of those written."""
    data = plot_data(summary)
    folder = run_dir / PLOTS
    titles = [(name, _TITLES[name]) for name in data]
    numbers = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    if _unchanged(folder, numbers, titles):
        return titles  # a rerun with the same numbers: no matplotlib (~2 s saved)
    # Here: ~0.8 s to import, paid only when the numbers changed. The Figure API, not pyplot:
    # no global state, so the runs of a sweep may draw at once in their threads.
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    written = []
    for name, series in data.items():
        fig = Figure(figsize=(8, 3.6), dpi=100)
        ax = fig.subplots()
        if name == "answers":
            _stacked(ax, series)
        else:
            _grouped(ax, series)
        ax.set_title(_TITLES[name])
        fig.tight_layout()
        for ext in EXTS:
            buf = io.BytesIO()
            with rc_context({"svg.hashsalt": "drvd"}):  # the same SVG for the same numbers
                fig.savefig(buf, format=ext, metadata={"Date": None} if ext == "svg" else None)
            write_atomic(folder / f"{name}.{ext}", buf.getvalue())
        written.append((name, _TITLES[name]))
    write_atomic(folder / "data.json", numbers)  # last: it vouches for the files above
    return written


def _unchanged(folder: Path, numbers: bytes, titles: list[tuple[str, str]]) -> bool:
    """Say whether data.json already holds these numbers and every plot file is there."""
    try:
        same = (folder / "data.json").read_bytes() == numbers
    except OSError:
        return False
    return same and all((folder / f"{n}.{ext}").is_file() for n, _ in titles for ext in EXTS)


def _grouped(ax: Any, series: Mapping[str, Mapping[str, float | None]]) -> None:
    """Grouped bars: one group per label, one bar per series; accuracy on 0..1."""
    labels = list(dict.fromkeys(label for values in series.values() for label in values))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(labels))]
        ys = [values.get(label) or 0.0 for label in labels]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper right")


def _stacked(ax: Any, series: Mapping[str, Mapping[str, int]]) -> None:
    """Horizontal stacked bars: one bar per file, one segment per answer source."""
    stems = list(series)
    fates = list(dict.fromkeys(f for values in series.values() for f in values))
    left = [0] * len(stems)
    for fate in fates:
        counts = [series[s].get(fate, 0) for s in stems]
        ax.barh(stems, counts, left=left, label=fate)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlabel("rows")
    ax.legend(fontsize=8, loc="lower right")
