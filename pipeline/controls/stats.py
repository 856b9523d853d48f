"""RUN/controls.json: what each control did to the run's scores, from the rows alone.

Rows are scored by the official rules (scoring/official.py); a joint row gives one score per
level. Statistics pair a control's row with RUN's row of the same item, and cluster by the
item's image (scoring/clustered.py):

    no-image, other-image   accuracy under the control and `reliance` = accuracy with the
                            image minus under the control, with its paired clustered interval
    shuffle                 `circular_accuracy`: items right under every rotation; accuracy by
                            the gold option's position; `position_share`: how often each
                            position is chosen against how often it holds the gold option

Only items answered on both sides count (a failed row is retried on the next run); a shuffled
item counts once every rotation is answered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.data.variants import CONTROLS, CONTROLS_DIR, LETTERS, SKIPPED, item_key
from pipeline.files import write_atomic
from pipeline.records import FILES, JOINT_LEVELS, ResultRow, Usage
from pipeline.results import latest_rows
from pipeline.scoring.clustered import clustered_interval, paired_difference
from pipeline.scoring.official import FILE_FAMILY, KIND_FAMILY, score_row
from pipeline.scoring.summary import read_summary
from pipeline.views.page_controls import CONTROLS_NAME

LABELS = {
    "no-image": "deviation: each request sent without its image",
    "shuffle": "deviation: each multiple-choice item asked under every cyclic rotation of its "
    "options (rotation 0 is the official request)",
    "other-image": "deviation: each image swapped for another of the same modality (seeded)",
}
NOTE = (
    "Controls are deviations from the official protocol, run apart (RUN/controls/<control>/): "
    "they never enter the run's results, summary or official scores."
)
Cell = tuple[tuple[str, str], bool]  # ((modality, task or level), right)


def _cells(stem: str, row: ResultRow, quirks: bool) -> list[Cell]:
    """Return a row's official scores: one (group, hit) for a choice, one per level for joint."""
    family = FILE_FAMILY.get(stem) or KIND_FAMILY[row.kind]
    score = score_row(family, row, official_quirks=quirks)
    modality = str(score.group[0])
    if family == "joint":
        return [
            ((modality, level), hit) for level, hit in zip(JOINT_LEVELS, score.hits, strict=True)
        ]
    return [((modality, str(score.group[1])), score.hits[0])]


def _reliance(
    first: Sequence[float], second: Sequence[float], clusters: Sequence[str]
) -> dict[str, Any]:
    """The paired cell: n, both accuracies, the control's interval and the difference's."""
    n = len(first)
    diff = paired_difference(first, second, clusters)
    ci = clustered_interval(second, clusters)
    return {
        "n": n,
        "accuracy_with": sum(first) / n,
        "accuracy": sum(second) / n,
        "ci": ci.as_dict() if ci is not None else None,
        "reliance": None
        if diff is None
        else {
            "value": round(diff.diff, 6),
            "low": round(diff.low, 6),
            "high": round(diff.high, 6),
            "clusters": diff.clusters,
            "method": diff.method,
        },
    }


def paired_section(
    stem: str, official: Mapping[str, ResultRow], control: Mapping[str, ResultRow], quirks: bool
) -> dict[str, Any] | None:
    """Return a no-image or other-image file's numbers over the items answered on both sides."""
    cells: list[tuple[tuple[str, str], float, float, str]] = []
    missing = 0
    for key, row in official.items():
        if row.error is not None:
            continue
        other = control.get(key)
        if other is None or other.error is not None:
            missing += 1
            continue
        image = str(row.row.get("image_paths"))
        for (group, hit), (_g, hit2) in zip(
            _cells(stem, row, quirks), _cells(stem, other, quirks), strict=True
        ):
            cells.append((group, float(hit), float(hit2), image))
    if not cells:
        return None
    out = _reliance(*_columns(cells))
    out["items"] = sum(
        r.error is None and k in control and control[k].error is None for k, r in official.items()
    )
    out["missing"] = missing
    groups: dict[str, dict[str, Any]] = {}
    for modality, sub in _by_group(cells).items():
        groups[modality] = {name: _reliance(*_columns(rows)) for name, rows in sub.items()}
    out["groups"] = groups
    if FILE_FAMILY.get(stem) == "joint":
        by_level = defaultdict(list)
        for cell in cells:
            by_level[cell[0][1]].append(cell)
        out["levels"] = {
            lv: _reliance(*_columns(by_level[lv])) for lv in JOINT_LEVELS if by_level[lv]
        }
    return out


def _columns(
    cells: Sequence[tuple[Any, float, float, str]],
) -> tuple[list[float], list[float], list[str]]:
    return [c[1] for c in cells], [c[2] for c in cells], [c[3] for c in cells]


def _by_group(
    cells: Sequence[tuple[tuple[str, str], float, float, str]],
) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    for cell in cells:
        modality, name = cell[0]
        out.setdefault(modality, {}).setdefault(name, []).append(cell)
    return out


def _complete(
    official: Mapping[str, ResultRow], control: Mapping[str, ResultRow]
) -> tuple[list[list[ResultRow]], int]:
    """Return each item's rotations (in order) where all are answered, and how many are not."""
    by_item: dict[str, dict[int, ResultRow]] = defaultdict(dict)
    for key, row in control.items():
        base, k = item_key(key)
        if base in official and official[base].error is None:
            by_item[base][k] = row
    complete: list[list[ResultRow]] = []
    for turns in by_item.values():
        n = len(turns[0].row.get("options") or []) if 0 in turns else 0
        ordered = [turns.get(k) for k in range(n)]
        if n and all(r is not None and r.error is None for r in ordered):
            complete.append([r for r in ordered if r is not None])
    return complete, len(by_item) - len(complete)


def shuffle_section(
    stem: str, official: Mapping[str, ResultRow], control: Mapping[str, ResultRow], quirks: bool
) -> dict[str, Any] | None:
    """Return a multiple-choice file's rotation numbers over items answered under every rotation."""
    complete, incomplete = _complete(official, control)
    if not complete:
        return None
    circular: list[float] = []
    clusters: list[str] = []
    groups: dict[tuple[str, str], list[tuple[float, list[bool]]]] = defaultdict(list)
    at_gold: dict[str, list[bool]] = defaultdict(list)
    chosen: dict[str, int] = defaultdict(int)
    for turns in complete:
        hits = []
        for row in turns:
            ((group, hit),) = _cells(stem, row, quirks)
            hits.append(hit)
            at_gold[str(row.row.get("answer", "")).strip()[:1]].append(hit)
            said = row.model_response if isinstance(row.model_response, str) else ""
            chosen[said if said in LETTERS else "other"] += 1
        circular.append(float(all(hits)))
        clusters.append(str(turns[0].row.get("image_paths")))
        groups[group].append((float(all(hits)), hits))
    total = sum(len(h) for h in at_gold.values())
    ci = clustered_interval(circular, clusters)
    positions = sorted(set(at_gold) | {k for k in chosen if k != "other"})
    official_right = [
        _cells(stem, official[item_key(t[0].key or "")[0]], quirks)[0][1] for t in complete
    ]
    return {
        "items": len(complete),
        "incomplete": incomplete,
        "rows": total,
        "accuracy": sum(sum(h) for h in at_gold.values()) / total,
        "accuracy_official": sum(official_right) / len(complete),
        "circular_accuracy": sum(circular) / len(circular),
        "ci": ci.as_dict() if ci is not None else None,
        "by_gold_position": {
            p: {"n": len(at_gold[p]), "accuracy": sum(at_gold[p]) / len(at_gold[p])}
            for p in positions
            if at_gold[p]
        },
        "position_share": {
            **{
                p: {"chosen": chosen[p] / total, "gold": len(at_gold[p]) / total} for p in positions
            },
            "other": {"chosen": chosen["other"] / total, "gold": 0.0},
        },
        "groups": _shuffle_groups(groups),
    }


def _shuffle_groups(
    groups: Mapping[tuple[str, str], list[tuple[float, list[bool]]]],
) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for (modality, name), items in groups.items():
        rows = [h for _, hits in items for h in hits]
        out.setdefault(modality, {})[name] = {
            "items": len(items),
            "circular_accuracy": sum(c for c, _ in items) / len(items),
            "accuracy": sum(rows) / len(rows),
        }
    return out


def controls_summary(run_dir: Path, *, model: str | None, quirks: bool = False) -> dict[str, Any]:
    """Return controls.json for every control RUN has rows of (RUN/controls/<control>/)."""
    official = latest_rows(run_dir)
    out: dict[str, Any] = {"run": run_dir.name, "model": model, "note": NOTE, "controls": {}}
    for name in CONTROLS:
        folder = run_dir / CONTROLS_DIR / name
        if not folder.is_dir():
            continue
        rows = latest_rows(folder)
        usage = Usage()
        files: dict[str, Any] = {}
        for stem in FILES:
            if stem not in rows:
                continue
            for row in rows[stem].values():
                usage = usage + row.usage + row.judge_usage
            section = shuffle_section if name == "shuffle" else paired_section
            if (numbers := section(stem, official.get(stem, {}), rows[stem], quirks)) is not None:
                files[stem] = numbers
        entry: dict[str, Any] = {"label": LABELS[name], "files": files}
        if name == "other-image":
            recorded = read_summary(folder).get("run") or {}
            entry["seed"] = (recorded.get("control") or {}).get("seed")
        entry["skipped"] = _skipped(name, official)
        entry["usage"] = usage.to_json()
        out["controls"][name] = entry
    return out


def _skipped(name: str, official: Mapping[str, Any]) -> dict[str, str]:
    kinds = {"report_generation": "report", "joint_qa": "joint"}
    out = {}
    for stem, kind in kinds.items():
        if stem in official and (kind == "report" or name == "shuffle"):
            out[stem] = SKIPPED[kind]
    return out


def write_controls(run_dir: Path, *, model: str | None, quirks: bool = False) -> dict[str, Any]:
    """Write RUN/controls.json (atomically) from every control's rows; return it."""
    summary = controls_summary(run_dir, model=model, quirks=quirks)
    write_atomic(run_dir / CONTROLS_NAME, orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def controls_lines(summary: Mapping[str, Any]) -> list[str]:
    """Return one line per control and file: the terminal's account of controls.json."""
    lines = []
    for name, entry in summary.get("controls", {}).items():
        for stem, f in entry["files"].items():
            if name == "shuffle":
                lines.append(
                    f"{name} {stem}: circular accuracy {f['circular_accuracy']:.3f} over "
                    f"{f['items']} items (accuracy {f['accuracy']:.3f}; official "
                    f"{f['accuracy_official']:.3f})"
                )
                continue
            r = f["reliance"]
            lines.append(
                f"{name} {stem}: accuracy {f['accuracy']:.3f} (with its image "
                f"{f['accuracy_with']:.3f}); reliance {r['value']:+.3f} "
                f"[{r['low']:+.3f}, {r['high']:+.3f}] over {f['items']} items"
            )
        for stem, why in entry.get("skipped", {}).items():
            lines.append(f"{name} {stem}: skipped ({why})")
    lines.append(f"controls: {CONTROLS_NAME} in the run folder")
    return lines
