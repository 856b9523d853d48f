"""The summary's intervals clustered by image: a `ci` object on every accuracy, and a seeded
cluster bootstrap on every BLEU and BERTScore mean.

Rows that share `image_paths` are one cluster; a row without an image is a cluster of its own.
Each accuracy cell of summary.json (a file, a modality x task or level, a joint level, a chain)
gains `ci` = `clustered.Interval.as_dict()`, over the same rows and the same denominator as its
`accuracy` (a failed row counts wrong). `files.joint_qa.ci` is the whole chain's, as the file's
headline accuracy is `chain_accuracy`. Report means gain `bleu_ci` and `bert_f1_ci`: the 2.5th
and 97.5th percentiles of `REPLICATES` means over images drawn with replacement, by
`random.Random(SEED)`, so a summary rebuilt from the same rows is the same to the byte.

With K samples per row, pass each row's mean correctness (0..1) and `trials` = rows x K to
`cell_ci`: the interval then holds both the item and the sampling variance.
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
    totals = [t for t, _ in sums.values()]
    rows = [n for _, n in sums.values()]
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


def _hits_ci(rows: Sequence[RowScore], hit: Callable[[RowScore], bool]) -> dict[str, Any] | None:
    return cell_ci([float(hit(r)) for r in rows], cluster_ids(rows))


def _by(rows: Iterable[RowScore], at: int) -> dict[str, list[RowScore]]:
    """Group rows by `group[at]`, labelled as the summary labels them."""
    out: dict[str, list[RowScore]] = {}
    for row in rows:
        value = row.group[at] if at < len(row.group) else None
        out.setdefault("None" if value is None else value, []).append(row)
    return out


def _mcq(section: dict[str, Any], rows: list[RowScore]) -> None:
    section["ci"] = _hits_ci(rows, lambda r: r.hits[0])
    for modality, in_modality in _by(rows, 0).items():
        for sub, cell_rows in _by(in_modality, 1).items():
            section["groups"][modality][sub]["ci"] = _hits_ci(cell_rows, lambda r: r.hits[0])


def _joint(section: dict[str, Any], rows: list[RowScore]) -> None:
    section["ci"] = _hits_ci(rows, lambda r: all(r.hits))
    for i, level in enumerate(JOINT_LEVELS):
        section["level_totals"][level]["ci"] = _hits_ci(rows, lambda r, i=i: r.hits[i])  # type: ignore[misc]
    for modality, cell_rows in _by(rows, 0).items():
        for i, level in enumerate(JOINT_LEVELS):
            cell = section["levels"][modality][level]
            cell["ci"] = _hits_ci(cell_rows, lambda r, i=i: r.hits[i])  # type: ignore[misc]
        section["chains"][modality]["ci"] = _hits_ci(cell_rows, lambda r: all(r.hits))


def _report(section: dict[str, Any], rows: list[RowScore]) -> None:
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
    files: Mapping[str, dict[str, Any]], rows: Mapping[str, Iterable[RowScore]]
) -> None:
    """Add the clustered intervals to each file section of a summary, from that file's rows."""
    adders = {"mcq": _mcq, "joint": _joint, "report": _report}
    for stem, section in files.items():
        adders[section["kind"]](section, list(rows[stem]))
