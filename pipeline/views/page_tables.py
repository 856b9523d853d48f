"""The top of report.html: the run's settings, the modality-by-level (or task) heat maps, and the
`--samples K` table.

Pure functions from the summary to escaped HTML; the page's script adds nothing here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.records import JOINT_LEVELS
from pipeline.redact import show_url
from pipeline.scoring.stats import wilson

_SCORING = {
    "extracted": "answers extracted from the replies, scored as official",
    "official-quirks": "stripped raw replies, exact match (official scripts bit for bit)",
}


def _e(value: object) -> str:
    return html.escape(str(value))


def settings_table(summary: Mapping[str, Any], run_dir: Path) -> str:
    """Return the run's settings as a two-column table (model, endpoint, protocol, judge...)."""
    run = summary.get("run") or {}
    judge = run.get("judge") or {}
    if judge.get("model"):
        judge_text = f"{judge['model']} ({judge.get('model_id')}), keyword prompt "
        judge_text += (
            f"{judge.get('keyword_prompt')}, BERTScore {judge.get('bertscore_model') or 'off'}"
        )
    else:
        judge_text = judge.get("note") or "none recorded"
    deviations = run.get("deviations") or {}
    price = run.get("price")
    rows = [
        ("model", summary.get("model")),
        ("model id", run.get("model_id")),
        ("endpoint", show_url(str(run["endpoint"])) if run.get("endpoint") else None),
        ("run folder", run_dir.resolve()),
        ("data", run.get("data")),
        ("protocol", run.get("protocol")),
        ("scoring", _SCORING.get(summary.get("scoring", ""), summary.get("scoring"))),
        ("judge", judge_text),
        (
            "deviations",
            ", ".join(f"{k}={v}" for k, v in deviations.items()) or "none: the official settings",
        ),
        ("price", None if not price else ", ".join(f"{k}={v}" for k, v in price.items())),
        ("max cost", None if run.get("max_cost_usd") is None else f"${run['max_cost_usd']}"),
        ("stopped", run.get("stopped")),
        ("input lines not rows", len(run.get("invalid_rows") or []) or None),
    ]
    body = "".join(
        f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>"
        for name, value in rows
        if value is not None
    )
    return f'<table id="settings">{body}</table>'


def headline(summary: Mapping[str, Any]) -> str:
    """Return one line per file: its overall score, as the reader's first glance."""
    items = []
    for stem, section in (summary.get("files") or {}).items():
        kind = section.get("kind")
        if kind == "mcq":
            value, detail = section.get("accuracy"), f"{section['correct']}/{section['n']}"
        elif kind == "joint":
            value, detail = (
                section.get("chain_accuracy"),
                f"chains {section['chain_correct']}/{section['n']}",
            )
        else:
            bleu, ci = section.get("bleu"), section.get("bleu_ci") or {}
            text = "—" if bleu is None else f"{bleu:.4f}"
            if ci.get("low") is not None:
                text += f" [{ci['low']:.4f}, {ci['high']:.4f}]"
            items.append(
                f"<li><b>{_e(stem)}</b> BLEU {text} <small>{section['scored']} scored</small></li>"
            )
            continue
        pct = "—" if value is None else f"{value:.2%}"
        errors = f", {section['errors']} failed" if section.get("errors") else ""
        correct = section["correct"] if kind == "mcq" else section["chain_correct"]
        ci = intervals_text(section.get("ci"), correct, section["n"])
        ci = f"; {ci}" if ci else ""
        items.append(f"<li><b>{_e(stem)}</b> {pct} <small>{_e(detail)}{errors}{ci}</small></li>")
    return f'<ul id="headline">{"".join(items)}</ul>'


def intervals_text(ci: Mapping[str, Any] | None, correct: int, n: int) -> str:
    """Say an accuracy's 95% intervals: clustered by image (with its design effect), Wilson's."""
    if not ci or not n:
        return ""
    deff = ci.get("design_effect")
    text = f"95% [{ci['low']:.1%}, {ci['high']:.1%}] by image"
    text += "" if deff is None else f" (design effect {deff:.2f})"
    plain = wilson(correct, n)
    return text if plain is None else f"{text}, Wilson [{plain[0]:.1%}, {plain[1]:.1%}]"


def _colour(accuracy: float | None) -> str:
    if accuracy is None:
        return "#eee"
    return f"hsl({round(120 * accuracy)}, 65%, 82%)"


def _cell(cell: Mapping[str, Any] | None) -> str:
    if not cell or not cell.get("n"):
        return '<td class="empty">—</td>'
    acc = cell.get("accuracy")
    text = f"{acc:.0%}" if acc is not None else "—"
    title = f"{cell['correct']}/{cell['n']} right"
    if ci := intervals_text(cell.get("ci"), cell["correct"], cell["n"]):
        title += f"; {ci}"
    return f'<td style="background:{_colour(acc)}" title="{_e(title)}">{text}<small>{_e(cell["n"])}</small></td>'


def _heat(stem: str, columns: list[str], grid: Mapping[str, Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{_e(modality)}</th>{''.join(_cell(cells.get(c)) for c in columns)}</tr>"
        for modality, cells in grid.items()
    )
    return (
        f'<table class="heat" data-file="{_e(stem)}"><caption>{_e(stem)}</caption>'
        f"<tr><th>modality</th>{head}</tr>{body}</table>"
    )


def heat_maps(summary: Mapping[str, Any]) -> str:
    """Return one accuracy heat map per multiple-choice or joint file: modality by task or level."""
    out = []
    for stem, section in (summary.get("files") or {}).items():
        if section.get("kind") == "mcq" and section.get("groups"):
            groups = section["groups"]
            columns = list(dict.fromkeys(sub for cells in groups.values() for sub in cells))
            out.append(_heat(stem, columns, groups))
        elif section.get("kind") == "joint" and section.get("levels"):
            chains = section.get("chains") or {}
            grid = {m: {**cells, "chain": chains.get(m)} for m, cells in section["levels"].items()}
            out.append(_heat(stem, [*JOINT_LEVELS, "chain"], grid))
    return "".join(out) or "<p>No multiple-choice rows scored.</p>"


_SAMPLE_COLUMNS = ("mean", "sd", "majority", "agreement", "pass_at_k", "pass_all_k")


def samples_table(summary: Mapping[str, Any]) -> str:
    """Return the `--samples K` table (a line per file, joint level and chain), or "" for K = 1."""
    section = summary.get("samples")
    if not isinstance(section, Mapping) or not section.get("files"):
        return ""
    lines: list[tuple[str, Mapping[str, Any]]] = []
    for stem, cell in section["files"].items():
        if "levels" in cell:
            lines += [(f"{stem} · {level}", c) for level, c in cell["levels"].items()]
            lines.append((f"{stem} · chain", cell["chain"]))
        else:
            lines.append((stem, cell))
    head = "".join(f"<th>{_e(c)}</th>" for c in ("file", "items", *_SAMPLE_COLUMNS))
    body = "".join(
        f"<tr><th>{_e(name)}</th><td>{_e(cell.get('n'))}</td>"
        + "".join(f"<td>{_share(cell.get(c))}</td>" for c in _SAMPLE_COLUMNS)
        + "</tr>"
        for name, cell in lines
    )
    k = _e(section.get("k"))
    return (
        f'<section><h2>{k} samples per row</h2><table id="samples"><tr>{head}</tr>{body}</table>'
        f"<p>mean and sd: accuracy over the {k} samples and its spread between them; majority: "
        f"the most frequent answer per item ({_e(section.get('ties'))}); agreement: all {k} "
        "answers the same; pass_at_k / pass_all_k: right in at least one / in every sample.</p>"
        "</section>"
    )


def _share(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * value:.1f}%"
