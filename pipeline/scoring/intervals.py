"""The summary's intervals clustered by image: a `ci` object on every accuracy, and a seeded
cluster bootstrap on every BLEU and BERTScore mean.

Rows that share `image_paths` are one cluster; a row without an image is a cluster of its own.
Each accuracy cell of summary.json (a file, a modality x task or level, a joint level, a chain)
gains `ci` = `clustered.Interval.as_dict()`, over the same rows and the same denominator as its
`accuracy` (a failed row counts wrong). `files.joint_qa.ci` is the whole chain's, as the file's
headline accuracy is `chain_accuracy`. Report means gain `bleu_ci` and `bert_f1_ci`: the 2.5th
and 97.5th percentiles of `REPLICATES` means over images drawn with replacement, by
`random.Random(SEED)`, so a summary rebuilt from the same rows is the same to the byte.

With K samples per row, pass `add_intervals` a `value` giving each row's share of right answers
and K (or give `cell_ci` the per-row means and `trials` = rows x K): the interval then holds both
the item and the sampling variance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.records import JOINT_LEVELS
from pipeline.scoring.clustered import clustered_interval
from pipeline.scoring.official import RowScore

SEED = 0
REPLICATES = 1000
BOOTSTRAP_METHOD = "cluster bootstrap (by image), percentile"


def cluster_ids(rows: Sequence[RowScore]) -> list[Hashable]:
    """Return each row's cluster: its image, or the row itself when it has none."""
    return [r.image if r.image is not None else ("row", i) for i, r in enumerate(rows)]


def cell_ci(
    values: Sequence[float], clusters: Sequence[Hashable], trials: int | None = None
) -> dict[str, Any] | None:
    """Return the `ci` object of one accuracy (per-row scores in 0..1); None without rows."""
    interval = clustered_interval(values, clusters, trials=trials)
    return None if interval is None else interval.as_dict()


def bootstrap_ci(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    seed: int = SEED,
    replicates: int = REPLICATES,
) -> dict[str, Any] | None:
    """Return the cluster bootstrap 95% interval of the mean of `values`; None without rows.

    Each replicate draws as many clusters as there are, with replacement, and takes the mean over
    their rows (a ratio of sums, as the mean of unequal clusters is). Low and high are None with
    fewer than two clusters, where resampling says nothing.
    """
    if not values:
        return None
    sums: dict[Hashable, list[float]] = {}
    for value, cluster in zip(values, clusters, strict=True):
        cell = sums.setdefault(cluster, [0.0, 0.0])
        cell[0] += value
        cell[1] += 1
    # Clusters in a fixed order (not the order rows arrived in, which a live run sets by when
    # replies came back), so the same rows give the same interval live and re-scored.
    cells = [sums[c] for c in sorted(sums, key=repr)]
    totals = [t for t, _ in cells]
    rows = [n for _, n in cells]
    groups = len(totals)
    low = high = None
    if groups >= 2:
        rng = random.Random(seed)
        index = range(groups)
        means = []
        for _ in range(replicates):
            picks = rng.choices(index, k=groups)
            means.append(math.fsum(totals[i] for i in picks) / sum(rows[i] for i in picks))
        means.sort()
        # The inverse of the empirical distribution at 2.5% and 97.5%.
        low = round(means[math.ceil(0.025 * replicates) - 1], 6)
        high = round(means[math.ceil(0.975 * replicates) - 1], 6)
    return {
        "low": low,
        "high": high,
        "clusters": groups,
        "method": BOOTSTRAP_METHOD,
        "seed": seed,
        "replicates": replicates,
    }


# A row's score behind one accuracy: (share of its answers right, answers). `at` is the hit's index
# (0 for multiple choice, a joint level's position), None for the whole joint chain.
RowValue = Callable[[RowScore, int | None], tuple[float, int]]


def one_answer(row: RowScore, at: int | None) -> tuple[float, int]:
    """Return the row's single answer's score: right (1.0) or wrong (0.0), one trial."""
    return float(all(row.hits) if at is None else row.hits[at]), 1


def _hits_ci(rows: Sequence[RowScore], at: int | None, value: RowValue) -> dict[str, Any] | None:
    scores = [value(r, at) for r in rows]
    trials = sum(k for _, k in scores)
    return cell_ci([v for v, _ in scores], cluster_ids(rows), trials or None)


def _by(rows: Iterable[RowScore], at: int) -> dict[str, list[RowScore]]:
    """Group rows by `group[at]`, labelled as the summary labels them."""
    out: dict[str, list[RowScore]] = {}
    for row in rows:
        value = row.group[at] if at < len(row.group) else None
        out.setdefault("None" if value is None else value, []).append(row)
    return out


def _mcq(section: dict[str, Any], rows: list[RowScore], value: RowValue) -> None:
    section["ci"] = _hits_ci(rows, 0, value)
    for modality, in_modality in _by(rows, 0).items():
        for sub, cell_rows in _by(in_modality, 1).items():
            section["groups"][modality][sub]["ci"] = _hits_ci(cell_rows, 0, value)


def _joint(section: dict[str, Any], rows: list[RowScore], value: RowValue) -> None:
    section["ci"] = _hits_ci(rows, None, value)
    for i, level in enumerate(JOINT_LEVELS):
        section["level_totals"][level]["ci"] = _hits_ci(rows, i, value)
    for modality, cell_rows in _by(rows, 0).items():
        for i, level in enumerate(JOINT_LEVELS):
            section["levels"][modality][level]["ci"] = _hits_ci(cell_rows, i, value)
        section["chains"][modality]["ci"] = _hits_ci(cell_rows, None, value)


def _report(section: dict[str, Any], rows: list[RowScore], _value: RowValue) -> None:
    # The rows `summary._report_section` averages: with keywords, only the rows that have them.
    keywords = any(r.keywords for r in rows)
    scored = [r for r in rows if r.bleu is not None and r.keywords == keywords]
    cells = [(section, scored)] + [
        (section["groups"][m], group) for m, group in _by(scored, 0).items()
    ]
    for cell, group in cells:
        clusters = cluster_ids(group)
        cell["bleu_ci"] = bootstrap_ci([float(r.bleu or 0.0) for r in group], clusters)
        if cell.get("bert_f1") is not None:
            bert = [float(r.bert_f1 or 0.0) for r in group]
            cell["bert_f1_ci"] = bootstrap_ci(bert, clusters)


def add_intervals(
    files: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Iterable[RowScore]],
    value: RowValue = one_answer,
) -> None:
    """Add the clustered intervals to each file section of a summary, from that file's rows.

    `value` scores a row for an accuracy; with K samples, pass one that returns the row's share
    of right answers over its K and K, so each interval counts both sources of variance.
    """
    adders = {"mcq": _mcq, "joint": _joint, "report": _report}
    for stem, section in files.items():
        adders[section["kind"]](section, list(rows[stem]), value)
