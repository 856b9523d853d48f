"""What K answers per row say (`--samples K`): the spread of a score, and how stable each item is.

    RUN/<file>.jsonl               sample 0: the official run, scored as always
    RUN/samples/<k>/<file>.jsonl   sample k = 1..K-1: the same requests, drawn again

Each sample's file is in the official row format, so it is scored on its own by the same rules.
Over the items every sample holds (latest line per key; a failed row is wrong, as official):

    mean         mean over the K samples of their accuracy
    sd           between-sample standard deviation of that accuracy (n - 1 denominator)
    majority     accuracy of each item's most frequent answer; a tie goes to the answer that
                 came first (the lowest sample index: the official answer when it is tied)
    agreement    share of items whose K answers are all the same (a failed row answers None)
    pass_at_k    share of items right in at least one sample
    pass_all_k   share of items right in every sample
    ci           the 95% interval of `mean` clustered by image, on per-item means with rows x K
                 trials: it holds the item and the sampling variance (scoring/clustered.py)

Joint rows give these per level (the letter at that position) and for the whole chain (the four
letters together). Report rows have no accuracy and are left out.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.records import FILES, JOINT_LEVELS, ResultRow, Usage
from pipeline.results import read_rows
from pipeline.scoring.intervals import cell_ci
from pipeline.scoring.official import FILE_FAMILY, joint_hits, mcq_correct, official_response

SAMPLES_DIR = "samples"
TIES = "a tie goes to the answer given first (the lowest sample index)"


@dataclass(frozen=True, slots=True)
class Draw:
    """One item's answer in one sample, and whether it is right."""

    answer: Hashable  # the letter, the tuple of joint letters; None when there is none
    correct: bool


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    """Return the folder of one sample's results: the run folder itself for sample 0."""
    return run_dir if epoch == 0 else run_dir / SAMPLES_DIR / str(epoch)


def stats(items: Sequence[Sequence[Draw]], k: int | None = None) -> dict[str, Any]:
    """Return k, n, mean, sd, majority, agreement, pass_at_k, pass_all_k over items' K draws.

    Every item has the same number of draws K (`k`, else the first item's), in sample order.
    With no item the shares are None.
    """
    n = len(items)
    k = len(items[0]) if items else k or 0
    if not n or not k:
        return {"k": k, "n": 0, **dict.fromkeys(_SHARES)}
    per_sample = [sum(item[s].correct for item in items) / n for s in range(k)]
    counts = {
        "majority": sum(_majority(item).correct for item in items),
        "agreement": sum(len({d.answer for d in item}) == 1 for item in items),
        "pass_at_k": sum(any(d.correct for d in item) for item in items),
        "pass_all_k": sum(all(d.correct for d in item) for item in items),
    }
    return {
        "k": k,
        "n": n,
        "mean": math.fsum(per_sample) / k,
        "sd": statistics.stdev(per_sample) if k > 1 else None,
        **{name: count / n for name, count in counts.items()},
        "per_sample": per_sample,
    }


_SHARES = ("mean", "sd", "majority", "agreement", "pass_at_k", "pass_all_k", "per_sample")


def _majority(item: Sequence[Draw]) -> Draw:
    """Return the draw of the most frequent answer; among tied answers, the one given first."""
    counts = Counter(d.answer for d in item)
    top = max(counts.values())
    return next(d for d in item if counts[d.answer] == top)


def _latest(path: Path) -> dict[str, ResultRow]:
    """Return the latest row per key of a results file ({} when it is missing)."""
    if not path.is_file():
        return {}
    return {row.key: row for row in read_rows(path, []) if row.key is not None}


def _draws(family: str, row: ResultRow, quirks: bool) -> dict[str, Draw]:
    """Return one row's draws: {"": mcq} or {level: ..., "chain": ...} for a joint row."""
    response = official_response(row) if quirks else row.model_response
    said = response if isinstance(response, str) else None
    if family == "mcq":
        return {"": Draw(said, mcq_correct(row.row, response))}
    hits = joint_hits(row.row, response)
    tokens = said.split(",") if said is not None else []
    letters = tuple(tokens[i] if i < len(tokens) else None for i in range(len(JOINT_LEVELS)))
    out = {level: Draw(letters[i], hits[i]) for i, level in enumerate(JOINT_LEVELS)}
    out["chain"] = Draw(letters, all(hits))
    return out


def _file_items(
    run_dir: Path, stem: str, k: int, quirks: bool
) -> Iterator[tuple[ResultRow, list[dict[str, Draw]]]]:
    """Yield (sample 0's row, its draws per sample) of every item all K samples hold."""
    family = FILE_FAMILY[stem]
    epochs = [_latest(epoch_dir(run_dir, e) / f"{stem}.jsonl") for e in range(k)]
    for key, row in epochs[0].items():
        rows = [rows.get(key) for rows in epochs]
        if all(r is not None for r in rows):
            yield row, [_draws(family, r, quirks) for r in rows if r is not None]


def samples_section(run_dir: Path, k: int, *, official_quirks: bool = False) -> dict[str, Any]:
    """Return the summary's `samples` section for K samples of the run in `run_dir`."""
    files: dict[str, Any] = {}
    for stem in FILES:
        if FILE_FAMILY[stem] == "report":
            continue
        pairs = list(_file_items(run_dir, stem, k, official_quirks))
        if not pairs and not (run_dir / f"{stem}.jsonl").is_file():
            continue
        clusters = [_image(row, i) for i, (row, _) in enumerate(pairs)]
        parts = ("",) if FILE_FAMILY[stem] == "mcq" else (*JOINT_LEVELS, "chain")
        by_part = {p: _part(pairs, p, k, clusters) for p in parts}
        if FILE_FAMILY[stem] == "mcq":
            files[stem] = by_part[""]
            continue
        files[stem] = {"k": k, "n": len(pairs), "levels": by_part, "chain": by_part.pop("chain")}
    return {"k": k, "files": files, "ties": TIES, "usage": _usage(run_dir, k)}


def _image(row: ResultRow, i: int) -> Hashable:
    """The item's cluster: its image, or the item itself when it has none."""
    image = row.row.get("image_paths")
    return image if isinstance(image, str) and image else ("row", i)


def _part(
    pairs: Sequence[tuple[ResultRow, list[dict[str, Draw]]]],
    part: str,
    k: int,
    clusters: Sequence[Hashable],
) -> dict[str, Any]:
    """Return one accuracy's stats over K samples, with `ci`: its interval clustered by image.

    The interval is on the per-item means with rows x K trials, so it holds both the item and
    the sampling variance.
    """
    items = [[d[part] for d in draws] for _, draws in pairs]
    out = stats(items, k)
    means = [sum(d.correct for d in item) / len(item) for item in items]
    out["ci"] = cell_ci(means, clusters, len(items) * k) if items else None
    return out


def _usage(run_dir: Path, k: int) -> dict[str, Any]:
    """Return what the extra samples (1..K-1) used: calls, tokens, cost; their failed rows."""
    used, failed = Usage(), 0
    for epoch in range(1, k):
        for stem in FILES:
            for row in _latest(epoch_dir(run_dir, epoch) / f"{stem}.jsonl").values():
                used = used + row.usage + row.judge_usage
                failed += row.error is not None
    return {**used.to_json(), "failed_rows": failed}


def item_means(
    run_dir: Path, k: int, *, official_quirks: bool = False
) -> dict[str, dict[str, float]]:
    """Return, per accuracy, each item's share of right answers over the K samples.

    Accuracies are named as `compare`'s paired labels: the MCQ file stems, `joint_qa_<level>` and
    `joint_qa_chain`. Items are those every sample holds and answered without failing (a failed
    row says nothing about the model, as `compare` pairs only answered items).
    """
    out: dict[str, dict[str, float]] = {}
    for stem in FILES:
        if FILE_FAMILY[stem] == "report":
            continue
        for row, draws in _file_items(run_dir, stem, k, official_quirks):
            if row.key is None or row.error is not None:
                continue
            for part in draws[0]:
                name = f"{stem}_{part}" if part else stem
                right = sum(d[part].correct for d in draws) / len(draws)
                out.setdefault(name, {})[str(row.key)] = right
    return out
