"""The benchmark's table: lines of measurements, rendered for the terminal and for BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_HEAD = ("section", "measurement", "result", "bound / reference", "ratio", "target", "met")


@dataclass(frozen=True, slots=True)
class Line:
    """One row of the results table."""

    section: str
    what: str
    result: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target for this line
    detail: str = ""  # how it was measured: rows, wall, CPU, RSS…

    def cells(self) -> tuple[str, ...]:
        """Return the table cells of this line."""
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return (self.section, self.what, self.result, self.reference, self.ratio, self.target, met)


def machine() -> dict[str, str]:
    """Describe this machine: cores, CPU model, Python, OS, load."""
    model = "unknown CPU"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": str(cores),
        "cpu": model,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "load": load(),
    }


def load() -> str:
    """Return the 1/5/15-minute load averages as text."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def ratio(value: float, reference: float) -> str:
    """Return value / reference as a percentage."""
    return f"{value / reference:.1%}" if reference > 0 else "n/a"


def render_text(lines: Sequence[Line]) -> str:
    """Return the table as aligned plain text."""
    rows = [_HEAD, *(line.cells() for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEAD))]
    out = []
    for n, row in enumerate(rows):
        out.append(
            "  ".join(cell.replace("**", "").ljust(w) for cell, w in zip(row, widths, strict=True))
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(
    lines: Sequence[Line],
    *,
    command: str,
    host: dict[str, str],
    load_after: str,
    setup: Sequence[str],
    notes: Sequence[str],
) -> str:
    """Return BENCHMARKS.md: the command, the machine, the setup, the table and the details."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {when}. Every number below comes from that one run on the "
        "machine described here; ratios compare measurements taken in the same run. Rerun "
        "`make bench` to reproduce them on your machine (`python -m bench --help`).",
        "",
        "## Machine",
        "",
        f"- {host['cores']} cores: {host['cpu']}; Python {host['python']}; {host['os']}",
        f"- load average (1/5/15 min) at start {host['load']}, at end {load_after} "
        "(the machine may be shared: load above the core count means contention)",
        "",
        "## Setup",
        "",
        *(f"- {item}" for item in setup),
        "",
        "## Results",
        "",
        _md_row(_HEAD),
        _md_row(["---"] * len(_HEAD)),
        *(_md_row(line.cells()) for line in lines),
        "",
        "## How each line was measured",
        "",
        *(f"- **{line.what}**: {line.detail}" for line in lines if line.detail),
        "",
    ]
    if notes:
        parts += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(parts)
