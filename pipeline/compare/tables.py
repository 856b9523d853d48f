"""The files `drvd compare` writes: leaderboard (CSV, Markdown, HTML, LaTeX), paired.csv, flips.

Each is built whole in memory and written atomically. The HTML pages are self-contained (inline
style, plots as data: URIs) and open from disk with no network. A flipped item links to its card
in each run's page: `<RUN relative to DIR>/report.html#row-<file>-<key>`, the fragment
percent-encoded (keys hold `#`), which the browser decodes back to the card's id.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.compare.comparison import JOINT, REPORT, Comparison, Flip, Paired, Run
from pipeline.compare.plots import plot_all
from pipeline.files import write_atomic

PAIRED_COLUMNS = (
    "file",
    "run",
    "n_both",
    "only_first_right",
    "only_other_right",
    "p_value",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "diff_samples",
)
_CI_TEXT = "Accuracy % [95% interval clustered by image], n items, design effect (deff)"
_SHOWN = 60  # characters of an answer shown in the flipped lists


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Return every leaderboard column, in order of first appearance."""
    out: dict[str, None] = {}
    for row in rows:
        out.update(dict.fromkeys(row))
    return list(out)


def proportions(cols: Sequence[str]) -> list[str]:
    """Return the prefixes that have an accuracy and interval (file, joint level, chain)."""
    return [c.removesuffix("_accuracy") for c in cols if c.endswith("_accuracy")]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """Return CSV text (UTF-8, \\n line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def leaderboard_csv(c: Comparison) -> bytes:
    cols = columns(c.metrics)
    return to_csv(cols, ([_cell(m.get(k)) for k in cols] for m in c.metrics))


def paired_csv(c: Comparison) -> bytes:
    rows = (
        [p.label, p.run, p.n_both, p.only_first_right, p.only_other_right, f"{p.p_value:.6g}"]
        + [_cell(v) for v in (p.diff, p.diff_low, p.diff_high)]
        + [p.diff_samples]
        for p in c.paired
    )
    return to_csv(PAIRED_COLUMNS, rows)


def _pct(m: dict[str, Any], prefix: str) -> str:
    """Return '52.3 [47.1, 57.4] n=300 deff 2.1', or '' when the run lacks it."""
    acc = m.get(f"{prefix}_accuracy")
    if acc is None:
        return ""
    low, high, n = m[f"{prefix}_ci_low"], m[f"{prefix}_ci_high"], m[f"{prefix}_n"]
    deff = m.get(f"{prefix}_design_effect")
    text = f"{100 * acc:.1f} [{100 * low:.1f}, {100 * high:.1f}] n={n}"
    return text if deff is None else f"{text} deff {deff:.1f}"


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ""


def table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Return the leaderboard as shown: accuracy % [95% CI] per proportion, report scores."""
    cols = columns(c.metrics)
    props = proportions(cols)
    header = ["run", "model", *props]
    report = [k for k in (f"{REPORT}_bleu", f"{REPORT}_bert_f1") if k in cols]
    header += report
    rows = [
        [m["run"], str(m["model"]), *(_pct(m, p) for p in props), *(_num(m.get(k)) for k in report)]
        for m in c.metrics
    ]
    return header, rows


def _md_escape(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in rows]
    return lines


def _paired_rows(c: Comparison) -> list[list[str]]:
    counts = ((p, (p.n_both, p.only_first_right, p.only_other_right)) for p in c.paired)
    return [
        [
            p.label,
            p.run,
            *map(str, n),
            f"{p.p_value:.3g}",
            *_points(p.diff, p.diff_low, p.diff_high),
        ]
        for p, n in counts
    ]


def _points(*values: float | None) -> list[str]:
    """Return differences in accuracy as signed percentage points: '+2.3'."""
    return ["" if v is None else f"{100 * v:+.1f}" for v in values]


def leaderboard_md(c: Comparison) -> bytes:
    header, rows = table(c)
    first = c.runs[0].name
    lines = [
        "# Leaderboard",
        "",
        f"{_CI_TEXT}; failed rows count wrong.",
    ]
    if c.warnings:
        lines += ["", "## Not comparable", "", *(f"- warning: {w}" for w in c.warnings)]
    lines += ["", *md_table(header, rows), "", f"## Paired against {first} (exact McNemar)", ""]
    lines += [
        "Items both runs answered (same key, neither failed); `only_first_right`: "
        f"{first} right, the other wrong; `diff`: the run's accuracy minus {first}'s on those "
        "items, in points, with its 95% interval clustered by image. "
        "Flipped items: [flipped.md](flipped.md).",
        "",
        *md_table(PAIRED_COLUMNS, _paired_rows(c)),
        "",
    ]
    return "\n".join(lines).encode()


def _tex(text: object) -> str:
    out = str(text)
    for char, repl in (("\\", r"\textbackslash{}"), ("{", r"\{"), ("}", r"\}")):
        out = out.replace(char, repl)
    for char in "&%$#_":
        out = out.replace(char, "\\" + char)
    return out.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")


def leaderboard_tex(c: Comparison) -> bytes:
    header, rows = table(c)
    lines = [
        f"% drvd compare: {_CI_TEXT.lower()}. Needs \\usepackage{{booktabs}}.",
        "\\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
        "\\toprule",
        " & ".join(_tex(h) for h in header) + " \\\\",
        "\\midrule",
        *(" & ".join(_tex(cell) for cell in row) + " \\\\" for row in rows),
        "\\bottomrule",
        "\\end{tabular}",
        "",
    ]
    return "\n".join(lines).encode()


def page_link(run: Run, out: Path) -> str:
    """Return the link from DIR to the run's report.html."""
    rel = os.path.relpath(run.path.resolve() / "report.html", out.resolve())
    return quote(Path(rel).as_posix(), safe="/")


def card_link(page: str, file: str, key: str) -> str:
    """Return the link to an item's card: `page#row-<file>-<key>`, the fragment encoded."""
    return page + "#" + quote(f"row-{file}-{key}", safe="")


def _gold(row: dict[str, Any], file: str) -> str:
    if file == JOINT:
        levels = ("modality", "organ", "lesion", "diagnosis")
        return ",".join(str(row.get(f"{lv}_answer") or "")[:1] for lv in levels)
    return str(row.get("answer") or "").split(".")[0].strip()


def _answer(run: Run, flip: Flip, right: bool) -> str:
    row = run.items[flip.file][flip.key].row
    text = row.model_response if isinstance(row.model_response, str) else str(row.model_response)
    shown = " ".join(text.split())[:_SHOWN]
    return f"{shown} {'✓' if right else '✗'}"


def flip_rows(c: Comparison, p: Paired, out: Path) -> list[tuple[str, str, str, str, str, str]]:
    """Return (key, gold, first answer, other answer, first link, other link) per flipped item."""
    first = c.runs[0]
    other = next(r for r in c.runs if r.name == p.run)
    page_a, page_b = page_link(first, out), page_link(other, out)
    return [
        (
            f.key,
            _gold(dict(first.items[f.file][f.key].row.row), f.file),
            _answer(first, f, f.first_right),
            _answer(other, f, not f.first_right),
            card_link(page_a, f.file, f.key),
            card_link(page_b, f.file, f.key),
        )
        for f in p.flips
    ]


def _title(c: Comparison, p: Paired) -> str:
    first = c.runs[0].name
    return f"{p.run} vs {first}: {p.label}: {p.only_first_right} only {first} right, {p.only_other_right} only {p.run} right"


def flipped_md(c: Comparison, out: Path) -> bytes:
    lines = ["# Items that flipped", "", "Links open each item's card in the run's report.html."]
    for p in c.paired:
        lines += ["", f"## {_title(c, p)}", ""]
        if not p.flips:
            lines.append("none")
            continue
        header = ["item", "gold", c.runs[0].name, p.run, "cards"]
        rows = [
            [f"`{key}`", gold, a, b, f"[{c.runs[0].name}]({la}) · [{p.run}]({lb})"]
            for key, gold, a, b, la, lb in flip_rows(c, p, out)
        ]
        lines += md_table(header, rows)
    return ("\n".join(lines) + "\n").encode()


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.warn{color:#a40;margin:.2em 0}img{max-width:100%}"
)


def _page(title: str, body: Sequence[str]) -> bytes:
    head = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    return (
        head + f"<style>{_STYLE}</style></head><body>" + "".join(body) + "</body></html>\n"
    ).encode()


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: int = -1) -> str:
    """Return an HTML table; the cells of column `raw` are already HTML."""
    out = ["<table><tr>", *(f"<th>{html.escape(h)}</th>" for h in header), "</tr>"]
    for row in rows:
        cells = (v if i == raw else html.escape(v) for i, v in enumerate(row))
        out += ["<tr>", *(f"<td>{v}</td>" for v in cells), "</tr>"]
    return "".join([*out, "</table>"])


def leaderboard_html(c: Comparison, images: Sequence[tuple[str, bytes]]) -> bytes:
    header, rows = table(c)
    first = html.escape(c.runs[0].name)
    body = [f"<h1>Leaderboard</h1><p>{html.escape(_CI_TEXT)}; failed rows count wrong.</p>"]
    body += [f'<p class="warn">warning: {html.escape(w)}</p>' for w in c.warnings]
    body.append(html_table(header, rows))
    body.append(f"<h2>Paired against {first} (exact McNemar)</h2>")
    body.append(
        "<p>Items both runs answered (same key, neither failed); diff: the run's accuracy minus "
        "the first's, in points, with its 95% interval clustered by image. "
        '<a href="flipped.html">The items that flipped</a>, linked to their cards.</p>'
    )
    body.append(html_table(PAIRED_COLUMNS, _paired_rows(c)))
    for name, png in images:
        data = base64.b64encode(png).decode()
        body.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'
        )
    return _page("drvd compare: leaderboard", body)


def flipped_html(c: Comparison, out: Path) -> bytes:
    body = [
        "<h1>Items that flipped</h1><p>Links open each item's card in the run's report.html.</p>"
    ]
    for p in c.paired:
        body.append(f"<h2>{html.escape(_title(c, p))}</h2>")
        rows = [
            [key, gold, a, b, f'<a href="{html.escape(la)}">{html.escape(c.runs[0].name)}</a> · '
             f'<a href="{html.escape(lb)}">{html.escape(p.run)}</a>']
            for key, gold, a, b, la, lb in flip_rows(c, p, out)
        ]  # fmt: skip
        header = ["item", "gold", c.runs[0].name, p.run, "cards"]
        body.append(html_table(header, rows, raw=4) if rows else "<p>none</p>")
    return _page("drvd compare: items that flipped", body)


def write_all(c: Comparison, out: Path) -> list[Path]:
    """Write every output file in `out`; return their paths."""
    images = plot_all(c.runs, out)
    pngs = [(p.stem, p.read_bytes()) for p in images if p.suffix == ".png"]
    files = {
        "leaderboard.csv": leaderboard_csv(c),
        "leaderboard.md": leaderboard_md(c),
        "leaderboard.html": leaderboard_html(c, pngs),
        "leaderboard.tex": leaderboard_tex(c),
        "paired.csv": paired_csv(c),
        "flipped.md": flipped_md(c, out),
        "flipped.html": flipped_html(c, out),
    }
    written = []
    for name, data in files.items():
        write_atomic(out / name, data)
        written.append(out / name)
    return written + images
