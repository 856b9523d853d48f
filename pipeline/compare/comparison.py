"""`drvd compare RUN RUN … --out DIR`: a leaderboard with 95% intervals, and paired exact tests.

Every number comes from the runs' results files, scored by `scoring.score_row` in each run's own
scoring mode (`summary.json` says which), exactly as `drvd score` would; `summary.json` also gives
the settings checked for comparability. Writes, in DIR:

- `leaderboard.csv`/`.md`/`.html`/`.tex`: a row per run; per multiple-choice file, per joint level
  and for the whole joint chain `<name>_n`, `_correct`, `_accuracy`, `_ci_low`, `_ci_high` (95%,
  clustered by image: `scoring.clustered`), `_design_effect`, `_wilson_low`, `_wilson_high` (rows
  taken as independent); report BLEU and BERTScore (`report_generation_bleu`, `_bert_f1`). A failed
  row counts wrong here, as the official scoring has it.
- `paired.csv`: each later run against the first, per multiple-choice file, joint level and
  chain: `file`, `run`, `n_both`, `only_first_right`, `only_other_right`, `p_value` (exact McNemar),
  `diff` (the run's accuracy minus the first's on those items), `diff_ci_low`, `diff_ci_high` (its
  95% interval clustered by image; with `--samples` on both sides, over each item's share right
  of its K answers, and `diff_samples` says K for each side). Only items both runs answered
  count: the same item key, and neither row failed (a failed row says nothing about the model, and a rerun retries it), so
  `n_both` may be below both runs' `n`.
- `flipped.md`/`.html`: the items of `paired.csv`'s discordant counts, each linked to its card in
  both runs' `report.html` (`#row-<file>-<key>`).
- bar and radar plots per level and per modality (`compare_plots`), PNG and SVG.

Runs that are not comparable (protocol, scoring mode, judge, deviations such as max_tokens, or
item sets) get one warning line each, on stderr and in the markdown and HTML.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, ExitCode, WriteError, os_reason
from pipeline.records import FILES, JOINT_LEVELS, ResultRow
from pipeline.results import read_run
from pipeline.scoring.clustered import paired_difference
from pipeline.scoring.official import FILE_FAMILY, KIND_FAMILY, RowScore, score_row
from pipeline.scoring.samples import item_means
from pipeline.scoring.stats import mcnemar_exact, wilson
from pipeline.scoring.summary import SUMMARY_NAME, Scorer, read_summary

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EIO)  # the disk, not the folder: exit 5
MCQ_FILES = ("visual_evidence_qa", "independent_qa")
JOINT = "joint_qa"
REPORT = "report_generation"
# What paired.csv tests: each multiple-choice file, each joint level, the joint chain.
LABELS = (*MCQ_FILES, *(f"{JOINT}_{level}" for level in JOINT_LEVELS), f"{JOINT}_chain")


@dataclass(frozen=True, slots=True)
class Item:
    """One keyed results row of a run and what it scored."""

    row: ResultRow
    score: RowScore


@dataclass(frozen=True, slots=True)
class Run:
    """A run folder, read: its settings and every keyed row, scored in the run's own mode."""

    path: Path
    name: str
    settings: dict[str, Any]  # summary.json
    scored: dict[str, Any]  # the summary rebuilt from the rows (what `drvd score` prints)
    items: dict[str, dict[str, Item]]  # file stem -> item key -> item
    samples: int = 1  # K answers per row (`--samples`)
    means: dict[str, dict[str, float]] | None = None  # paired label -> key -> share right of K

    @property
    def run_info(self) -> dict[str, Any]:
        """Return the `run` section of summary.json (settings), or {} for older runs."""
        info = self.settings.get("run")
        return info if isinstance(info, dict) else {}


@dataclass(frozen=True, slots=True)
class Flip:
    """An item one run got right and the other wrong."""

    label: str  # as in LABELS
    file: str  # results file stem
    key: str
    first_right: bool


@dataclass(frozen=True, slots=True)
class Paired:
    """One line of paired.csv, with the items behind its discordant counts."""

    label: str
    run: str  # the later run's name
    n_both: int
    only_first_right: int
    only_other_right: int
    p_value: float
    flips: tuple[Flip, ...]
    diff: float | None = None  # the run's accuracy minus the first's, on the n_both items
    diff_low: float | None = None
    diff_high: float | None = None
    diff_samples: str = "1/1"  # answers per item behind diff: the first run's / this run's


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything the output files show."""

    runs: list[Run]
    metrics: list[dict[str, Any]]  # a leaderboard row per run
    paired: list[Paired]
    warnings: list[str]


def load_run(path: Path, name: str) -> Run:
    """Read and score a run folder; raise ConfigError when it is not one."""
    settings = read_summary(path)
    if not path.is_dir() or "files" not in settings:
        msg = (
            f"{path}: not a run folder (no readable {SUMMARY_NAME}); give folders `drvd eval` wrote"
        )
        raise ConfigError(msg)
    quirks = settings.get("scoring") == "official-quirks"
    scorer = Scorer(official_quirks=quirks)
    items: dict[str, dict[str, Item]] = {}
    for stem, row in read_run(path, lambda note: print(f"warning: {note}", file=sys.stderr)):
        scorer.add(stem, row)
        if row.key is not None:  # another tool's keyless rows can be scored, not paired
            family = FILE_FAMILY.get(stem) or KIND_FAMILY[row.kind]
            score = score_row(family, row, official_quirks=quirks)
            items.setdefault(stem, {})[row.key] = Item(row, score)  # the latest line wins
    scored = scorer.summary(model=str(settings.get("model") or path.name))
    sampled = settings.get("samples")
    k = sampled.get("k") if isinstance(sampled, dict) else None
    if not isinstance(k, int) or k < 2:
        return Run(path, name, settings, scored, items)
    means = item_means(path, k, official_quirks=quirks)
    return Run(path, name, settings, scored, items, k, means)


def run_names(paths: Sequence[Path]) -> list[str]:
    """Name runs by their folder, or by the path as given when two folders share a name."""
    names = [p.resolve().name for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def proportion(prefix: str, correct: int, n: int, ci: dict[str, Any] | None) -> dict[str, Any]:
    """Return the leaderboard cells of one proportion: n, correct, accuracy, its intervals.

    `ci` is the summary's interval clustered by image; Wilson's follows, for the rows alone.
    """
    plain = wilson(correct, n)
    return {
        f"{prefix}_n": n,
        f"{prefix}_correct": correct,
        f"{prefix}_accuracy": correct / n if n else None,
        f"{prefix}_ci_low": ci["low"] if ci else None,
        f"{prefix}_ci_high": ci["high"] if ci else None,
        f"{prefix}_design_effect": ci["design_effect"] if ci else None,
        f"{prefix}_wilson_low": plain[0] if plain else None,
        f"{prefix}_wilson_high": plain[1] if plain else None,
    }


def metrics(run: Run) -> dict[str, Any]:
    """Return the run's leaderboard row (from the rows, as `drvd score` counts them)."""
    files = run.scored["files"]
    info = run.run_info
    judge = info.get("judge") if isinstance(info.get("judge"), dict) else {}
    out: dict[str, Any] = {
        "run": run.name,
        "model": run.scored["model"],
        "protocol": info.get("protocol"),
        "scoring": run.settings.get("scoring"),
        "judge": (judge or {}).get("model"),
    }
    for stem in MCQ_FILES:
        if stem in files:
            cell = files[stem]
            out.update(proportion(stem, cell["correct"], cell["n"], cell.get("ci")))
    if JOINT in files:
        joint = files[JOINT]
        for level in JOINT_LEVELS:
            cell = joint["level_totals"][level]
            out.update(proportion(f"{JOINT}_{level}", cell["correct"], cell["n"], cell.get("ci")))
        chain = proportion(f"{JOINT}_chain", joint["chain_correct"], joint["n"], joint.get("ci"))
        out.update(chain)
    if REPORT in files:
        report = files[REPORT]
        out.update(
            {
                f"{REPORT}_n": report["n"],
                f"{REPORT}_bleu": report["bleu"],
                f"{REPORT}_bert_f1": report["bert_f1"],
            }
        )
    return out


def label_file(label: str) -> str:
    """Return the results file a paired label is read from."""
    return JOINT if label.startswith(f"{JOINT}_") else label


def hits(run: Run, label: str) -> dict[str, bool]:
    """Return key -> right for the answered (not failed) rows behind one paired label."""
    rows = run.items.get(label_file(label), {})
    if label in MCQ_FILES:
        return {k: i.score.hits[0] for k, i in rows.items() if not i.score.error}
    level = label.removeprefix(f"{JOINT}_")
    if level == "chain":
        return {k: all(i.score.hits) for k, i in rows.items() if not i.score.error}
    at = JOINT_LEVELS.index(level)
    return {k: i.score.hits[at] for k, i in rows.items() if not i.score.error}


def pair(first: Run, other: Run) -> list[Paired]:
    """Return the paired tests of `other` against `first`, for each label both runs have."""
    out = []
    for label in LABELS:
        if label_file(label) not in first.items or label_file(label) not in other.items:
            continue
        a, b = hits(first, label), hits(other, label)
        both = [k for k in a if k in b]
        flips = tuple(Flip(label, label_file(label), k, a[k]) for k in both if a[k] != b[k])
        only_first = sum(f.first_right for f in flips)
        only_other = len(flips) - only_first
        p, n = mcnemar_exact(only_first, only_other), len(both)
        # The first run's row gives the image: the same key is the same input row in both.
        rows = first.items[label_file(label)]
        x, y = _means(first, label), _means(other, label)
        over = f"{first.samples}/{other.samples}"
        if x is None or y is None:  # the per-item means need K samples on both sides
            x, y, over = (
                {k: float(v) for k, v in a.items()},
                {k: float(v) for k, v in b.items()},
                "1/1",
            )
        keys = [k for k in both if k in x and k in y]  # with K samples: items every sample has
        clusters = [rows[k].score.image or ("row", k) for k in keys]
        d = paired_difference([y[k] for k in keys], [x[k] for k in keys], clusters)
        diff = {"diff": d.diff, "diff_low": d.low, "diff_high": d.high} if d else {}
        out.append(
            Paired(
                label, other.name, n, only_first, only_other, p, flips, **diff, diff_samples=over
            )
        )
    return out


def _means(run: Run, label: str) -> dict[str, float] | None:
    """Return key -> share right over the run's K samples, or None for a run of one sample."""
    return None if run.means is None else run.means.get(label, {})


_SETTINGS: tuple[tuple[str, Callable[[Run], object]], ...] = (
    ("protocol", lambda r: r.run_info.get("protocol")),
    ("scoring mode", lambda r: r.settings.get("scoring")),
    ("judge", lambda r: (r.run_info.get("judge") or {}).get("model")),
    ("deviations (max_tokens, thinking)", lambda r: r.run_info.get("deviations") or {}),
)


def comparability(runs: Sequence[Run]) -> list[str]:
    """Return one line per way a later run is not comparable with the first."""
    first, lines = runs[0], []
    for other in runs[1:]:
        who = f"{other.name} vs {first.name}"
        for what, get in _SETTINGS:
            if get(first) != get(other):
                lines.append(f"{who}: different {what}: {_show(get(other))} vs {_show(get(first))}")
        stems = set(first.items) | set(other.items)
        for stem in [*(s for s in FILES if s in stems), *sorted(stems - set(FILES))]:
            mine, theirs = set(first.items.get(stem, {})), set(other.items.get(stem, {}))
            if mine != theirs:
                lines.append(
                    f"{who}: different items in {stem}: {len(theirs - mine)} only in "
                    f"{other.name}, {len(mine - theirs)} only in {first.name} "
                    f"({len(mine & theirs)} shared)"
                )
    return lines


def _show(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def build(paths: Sequence[Path]) -> Comparison:
    """Read the runs and compute everything the output files show."""
    if len(paths) < 2:
        msg = f"compare needs at least two run folders, got {len(paths)}; e.g. drvd compare runs/a runs/b --out cmp"
        raise ConfigError(msg)
    runs = [load_run(p, n) for p, n in zip(paths, run_names(paths), strict=True)]
    paired = [p for other in runs[1:] for p in pair(runs[0], other)]
    return Comparison(runs, [metrics(r) for r in runs], paired, comparability(runs))


def run_compare(paths: Sequence[Path], out: Path) -> int:
    """The `compare` command: read, compute, write; warnings on stderr. Return the exit status."""
    from pipeline.compare.tables import write_all  # matplotlib loads only for this command

    comparison = build(paths)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create the output folder {out}: {os_reason(exc)}; choose another --out"
        raise ConfigError(msg) from exc
    for line in comparison.warnings:
        print(f"warning: {line}", file=sys.stderr)
    try:
        written = write_all(comparison, out)
    except OSError as exc:
        if exc.errno in _FULL:
            msg = f"cannot write in {out}: {os_reason(exc)}; free space, then rerun"
            raise WriteError(msg) from exc
        msg = f"cannot write in {out}: {os_reason(exc)}; choose another --out"
        raise ConfigError(msg) from exc
    print(f"compared {len(comparison.runs)} runs: {', '.join(p.name for p in written)} in {out}")
    return ExitCode.OK
