"""Print a run's summary as the terminal tables: the official cells, then our additions; and
say which rows failed and what helps (`failure_lines`).

Accuracies print as {acc:.2%} and report metrics as {:.4f}, as the official scripts do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipeline.records import JOINT_LEVELS
from pipeline.scoring.summary import SUMMARY_NAME
from pipeline.views.page_tables import intervals_text

_GROUP_HEADER = {"visual_evidence_qa": "Task", "independent_qa": "Level"}


def render(summary: Mapping[str, Any], console: Console) -> None:
    """Print one table per scored file, then a usage line (and the samples' lines with K > 1)."""
    mode = {
        "extracted": "answers extracted from the replies, scored as official",
        "official-quirks": "stripped raw replies, exact match (official scripts bit for bit)",
    }.get(summary.get("scoring", ""), "")
    console.print(f"[bold]{escape(str(summary.get('model', '?')))}[/bold]  [dim]{mode}[/dim]")
    for stem, section in summary.get("files", {}).items():
        kind = section.get("kind")
        if kind == "joint":
            table, notes = _joint_table(stem, section)
        elif kind == "report":
            table, notes = _report_table(stem, section)
        else:
            table, notes = _mcq_table(stem, section)
        console.print(table)
        errors = section.get("errors", 0)
        if errors:
            notes.append(f"{errors} row(s) with an error, scored wrong (as official)")
        if answers := section.get("answers"):
            notes.append(_answers_line(answers))
        for note in notes:
            console.print(Text(f"  {note}", style="dim"))
    if drop := summary.get("independent_vs_joint"):
        console.print(_drop_table(drop))
    if (shortcut := summary.get("shortcut")) and shortcut["joint"]["lesion_wrong"]:
        cell = shortcut["joint"]
        console.print(
            Text(
                f"shortcut*: diagnosis right with the lesion wrong in {cell['diagnosis_right']}/"
                f"{cell['lesion_wrong']} joint rows ({_pct(cell['rate'])})",
                style="dim",
            )
        )
    judge = (summary.get("run") or {}).get("judge")
    if judge:
        used = (summary.get("usage") or {}).get("judge") or {}
        console.print(Text(_judge_line(judge, used), style="dim"))
    console.print(_usage_line(summary.get("usage") or {}))
    for line in samples_lines(summary.get("samples") or {}):
        console.print(Text(line, style="dim"))
    endpoints = (summary.get("run") or {}).get("endpoints") or []
    if len(endpoints) > 1 or any(e.get("rate_limited") for e in endpoints):
        for endpoint in endpoints:
            console.print(Text(_endpoint_line(endpoint), style="dim"))


def samples_lines(section: Mapping[str, Any]) -> list[str]:
    """Return a line per file of `--samples K`: mean accuracy and its spread, item stability."""
    lines = []
    for stem, cell in (section.get("files") or {}).items():
        cell = cell.get("chain", cell)  # joint: the whole chain
        what = f"{stem} chain" if "levels" in section["files"][stem] else stem
        lines.append(
            f"samples ({cell.get('k')}): {what} mean {_pct(cell.get('mean'))} "
            f"(sd {_pct(cell.get('sd'))}), majority {_pct(cell.get('majority'))}, agreement "
            f"{_pct(cell.get('agreement'))}, pass@k {_pct(cell.get('pass_at_k'))}"
        )
    if usage := section.get("usage"):
        lines.append(f"extra samples: {_usage_line(usage).removeprefix('usage: ')}")
    return lines


_FATE_WORDS = {
    "extracted": "extracted",
    "text": "reports",
    "judge": "mapped by the judge",
    "none": "unreadable (scored as given)",
    "refused": "refused",
    "truncated": "cut at the token limit (failed)",
    "empty": "empty (failed)",
}


def _answers_line(answers: Mapping[str, int]) -> str:
    """Say what became of the replies; the rare fates only when they happened."""
    always = ("extracted", "text", "judge", "none")
    parts = [
        f"{n:,} {_FATE_WORDS.get(fate, fate)}"
        for fate, n in answers.items()
        if n or (fate in always and fate in answers)
    ]
    return "answers: " + ", ".join(parts)


def _pct(value: float | None) -> str:
    # The official scripts print accuracies as {acc:.2%}.
    return "—" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    # The official report script prints {:.4f}.
    return "—" if value is None else f"{value:.4f}"


def _mcq_table(stem: str, section: Mapping[str, Any]) -> tuple[Table, list[str]]:
    table = Table(title=escape(stem), title_justify="left")
    table.add_column("Modality")
    table.add_column(_GROUP_HEADER.get(stem, "Task/level"))
    table.add_column("Correct/n", justify="right")
    table.add_column("Accuracy", justify="right")
    for modality, cells in section["groups"].items():
        for i, (sub, cell) in enumerate(cells.items()):
            row = (
                escape(modality) if i == 0 else "",
                escape(sub),
                f"{cell['correct']}/{cell['n']}",
            )
            table.add_row(*row, _pct(cell["accuracy"]))
        table.add_section()
    table.add_row(
        "all*",
        "",
        f"{section['correct']}/{section['n']}",
        _pct(section["accuracy"]),
        style="bold",
    )
    notes = ["all*: micro accuracy over every row (our addition)"]
    if ci := intervals_text(section.get("ci"), section["correct"], section["n"]):
        notes.append(f"all*: {ci}")
    return table, notes


def _joint_table(stem: str, section: Mapping[str, Any]) -> tuple[Table, list[str]]:
    table = Table(title=escape(stem), title_justify="left")
    table.add_column("Modality")
    for level in JOINT_LEVELS:
        table.add_column(level, justify="right")
    table.add_column("chain*", justify="right")
    chains = section.get("chains", {})
    for modality, levels in section["levels"].items():
        chain = _frac(chains[modality]) if modality in chains else ""
        table.add_row(escape(modality), *(_frac(levels[lv]) for lv in JOINT_LEVELS), chain)
    table.add_section()
    totals = section["level_totals"]
    overall = {
        "correct": section["chain_correct"],
        "n": section["n"],
        "accuracy": section["chain_accuracy"],
    }
    table.add_row("all*", *(_frac(totals[lv]) for lv in JOINT_LEVELS), _frac(overall))
    notes = ["chain*: all four levels right; *: our addition, not official"]
    if ci := intervals_text(section.get("ci"), section["chain_correct"], section["n"]):
        notes.append(f"chain*, all*: {ci}")
    return table, notes


def _frac(cell: Mapping[str, Any]) -> str:
    return f"{cell['correct']}/{cell['n']} {_pct(cell['accuracy'])}"


def _report_table(stem: str, section: Mapping[str, Any]) -> tuple[Table, list[str]]:
    notes = [
        f"{section['dropped']} of {section['n']} rows dropped (empty prediction or keywords "
        "not extracted, as official)"
    ]
    if section.get("note"):
        notes.append(section["note"])
    notes.append("all*: mean over every scored row (our addition)")
    table = Table(title=escape(stem), title_justify="left")
    table.add_column("Modality")
    table.add_column("n", justify="right")
    table.add_column("BLEU", justify="right")
    table.add_column("BERTScore F1", justify="right")
    for modality, group in section["groups"].items():
        table.add_row(
            escape(modality), str(group["n"]), _num(group["bleu"]), _num(group["bert_f1"])
        )
    table.add_section()
    table.add_row("all*", str(section["scored"]), _num(section["bleu"]), _num(section["bert_f1"]))
    return table, notes


def _drop_table(drop: Mapping[str, Any]) -> Table:
    table = Table(title="independent → joint* (same images)", title_justify="left")
    for name in ("Level", "Pairs", "Independent", "Joint", "Drop"):
        table.add_column(name, justify="left" if name == "Level" else "right")
    for level, cell in drop.items():
        drop_pts = "—" if cell["drop"] is None else f"{cell['drop'] * 100:+.1f} pts"
        table.add_row(
            level,
            str(cell["pairs"]),
            _pct(cell["independent"]),
            _pct(cell["joint"]),
            drop_pts,
        )
    return table


def _judge_line(judge: Mapping[str, Any], used: Mapping[str, Any]) -> str:
    if judge.get("model") is None:
        return str(judge.get("note", "no judge"))
    returned = ", ".join(used.get("models_returned") or []) or "no call"
    return (
        f"judge: {judge['model']} ({judge['model_id']}; API reported: {returned}), "
        f"{used.get('api_calls', 0):,} calls, {used.get('cache_hits', 0):,} cached; keyword "
        f"prompt {judge['keyword_prompt']}; BERTScore {judge.get('bertscore_model') or 'off'}"
    )


def _endpoint_line(e: Mapping[str, Any]) -> str:
    """Say what one endpoint did: requests, 429s, the rate it was paced at, its latency."""
    pace = "unpaced (no 429)" if e.get("rpm") is None else f"paced at {e['rpm']:,} requests/min"
    mean = e.get("mean_latency_s")
    benched = f", benched {e['benched']}x" if e.get("benched") else ""
    return (
        f"endpoint {e.get('url')}: {e.get('requests', 0):,} requests, "
        f"{e.get('rate_limited', 0):,} answered 429, {e.get('errors', 0):,} errors, {pace}, "
        f"mean {'?' if mean is None else f'{mean:.2f}'} s{benched}"
    )


def _usage_line(usage: Mapping[str, Any]) -> str:
    def n(key: str) -> str:
        value = usage.get(key)
        return "?" if value is None else f"{value:,}"

    return (
        f"usage: {n('api_calls')} API calls, {n('retries')} retries, {n('cache_hits')} cache hits, "
        f"{n('failed_rows')} failed rows, {n('prompt_tokens')} prompt + "
        f"{n('completion_tokens')} completion tokens" + _cost_text(usage)
    )


def _cost_text(usage: Mapping[str, Any]) -> str:
    """Return ", cost $X (judge $Y), cache saved $Z" for what the rows cost ("" when nothing)."""
    cost, saved = usage.get("cost_usd") or 0.0, usage.get("saved_usd") or 0.0
    judge = (usage.get("judge") or {}).get("cost_usd") or 0.0
    text = f", cost ${cost:.4f}" if cost else ""
    text += f" (judge ${judge:.4f})" if judge else ""
    return text + (f", cache saved ${saved:.4f}" if saved else "")


class Cause(Protocol):
    """One cause of failed rows: how many, why, and what helps (pipeline/run/failures.py)."""

    def line(self) -> str:
        """Return `N rows: cause — advice`."""
        ...


def failure_lines(summary: dict[str, Any], causes: Sequence[Cause] = ()) -> list[str]:
    """Say which rows failed, by cause, and what helps: a rerun (API errors), or fixing the input."""
    usage = summary["usage"]
    bad_input = usage.get("input_rows", 0)
    retry = usage["failed_rows"] - bad_input
    invalid = len(summary.get("run", {}).get("invalid_rows", ()))
    lines = []
    if retry:
        lines.append(f"{retry} rows failed: rerun the same command to retry them")
        lines += [f"  {cause.line()}" for cause in causes]
    if bad_input or invalid:
        lines.append(
            f"{bad_input + invalid} input rows cannot be used ({invalid} lines that are not rows, "
            f"{bad_input} rows whose image cannot be sent; listed above and in {SUMMARY_NAME} "
            "and the rows' error): fix the dataset, then rerun; a rerun alone will not help"
        )
    return lines
