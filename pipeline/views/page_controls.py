"""The page's Controls section: RUN/controls.json as tables (empty when the run has none).

Pure functions from the JSON to escaped HTML, labelled as deviations: these numbers are not the
run's scores.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

CONTROLS_NAME = "controls.json"


def _e(value: object) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _reliance(cell: Mapping[str, Any]) -> str:
    r = cell.get("reliance")
    if not r:
        return "—"
    return f"{r['value']:+.1%} <small>[{r['low']:+.1%}, {r['high']:+.1%}]</small>"


def _paired(name: str, files: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>file</th><th>modality</th><th>task / level</th><th>n</th>"
        "<th>with the image</th><th>under the control</th><th>reliance [95% CI]</th></tr>"
    )
    rows = []
    for stem, f in files.items():
        rows.append(
            f"<tr class=total><th>{_e(stem)}</th><td>all</td><td>all</td><td>{f['n']}</td>"
            f"<td>{_pct(f['accuracy_with'])}</td><td>{_pct(f['accuracy'])}</td>"
            f"<td>{_reliance(f)}</td></tr>"
        )
        for modality, cells in f.get("groups", {}).items():
            for sub, c in cells.items():
                rows.append(
                    f"<tr><td></td><td>{_e(modality)}</td><td>{_e(sub)}</td><td>{c['n']}</td>"
                    f"<td>{_pct(c['accuracy_with'])}</td><td>{_pct(c['accuracy'])}</td>"
                    f"<td>{_reliance(c)}</td></tr>"
                )
    return f'<table class="controls" data-control="{_e(name)}">{head}{"".join(rows)}</table>'


def _shuffle(files: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>file</th><th>items</th><th>official</th><th>over rotations</th>"
        "<th>circular [95% CI]</th><th>accuracy by gold position</th>"
        "<th>chosen / gold share by position</th></tr>"
    )
    rows = []
    for stem, f in files.items():
        ci = f.get("ci") or {}
        circular = f"{_pct(f['circular_accuracy'])}"
        if ci:
            circular += f" <small>[{_pct(ci['low'])}, {_pct(ci['high'])}]</small>"
        by_gold = " ".join(
            f"{_e(p)} {_pct(c['accuracy'])}" for p, c in f["by_gold_position"].items()
        )
        share = " ".join(
            f"{_e(p)} {s['chosen']:.0%}/{s['gold']:.0%}"
            for p, s in f["position_share"].items()
            if s["chosen"] or s["gold"]
        )
        rows.append(
            f"<tr><th>{_e(stem)}</th><td>{f['items']}</td><td>{_pct(f['accuracy_official'])}</td>"
            f"<td>{_pct(f['accuracy'])}</td><td>{circular}</td><td>{by_gold}</td>"
            f"<td>{share}</td></tr>"
        )
    return f'<table class="controls" data-control="shuffle">{head}{"".join(rows)}</table>'


def controls_section(data: Mapping[str, Any] | None) -> str:
    """Return the Controls section of the page, or "" when the run has no controls.json."""
    if not data or not data.get("controls"):
        return ""
    parts = [
        '<section id="controls"><h2>Controls (deviations, not the run\'s scores)</h2>',
        f"<p>{_e(data.get('note', ''))}</p>",
    ]
    for name, entry in data["controls"].items():
        usage = entry.get("usage") or {}
        cost = f"${usage.get('cost_usd', 0):.4f}, {usage.get('api_calls', 0)} calls"
        seed = f"; seed {entry['seed']}" if entry.get("seed") is not None else ""
        parts.append(f"<h3>{_e(name)}</h3><p>{_e(entry['label'])} ({_e(cost)}{_e(seed)})</p>")
        files = entry.get("files") or {}
        if files:
            parts.append(_shuffle(files) if name == "shuffle" else _paired(name, files))
        skipped = entry.get("skipped") or {}
        parts += [f"<p><small>{_e(stem)}: {_e(why)}</small></p>" for stem, why in skipped.items()]
    parts.append("</section>")
    return "".join(parts)
