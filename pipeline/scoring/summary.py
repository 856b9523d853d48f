"""Add up row scores into the run's summary: per-file official tables, usage, and our additions.

`Scorer` keeps one small `RowScore` per row key, so a row retried on resume replaces its earlier
result exactly, and it is fed the same way live (by the runner's sink) and offline (`score_run`
reading the results files): both give the same summary, usage included, because every number
comes from the rows. Whatever the official scripts do not compute is listed under "additions".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline.files import write_atomic
from pipeline.records import FILES, JOINT_LEVELS, ResultRow, Usage
from pipeline.results import read_run
from pipeline.scoring.intervals import add_intervals
from pipeline.scoring.official import FILE_FAMILY, KIND_FAMILY, Family, RowScore, score_row

SUMMARY_NAME = "summary.json"
FATES = ("extracted", "judge", "none", "refused", "truncated", "empty")  # MCQ and joint replies
REPORT_FATES = ("text", "refused", "truncated", "empty")
ADDITIONS = (
    "files.<mcq>.n/correct/accuracy: micro accuracy over all rows of the file",
    "files.joint_qa.chain_correct/chain_accuracy/chains: rows with all four levels right",
    "files.joint_qa.level_totals: per-level accuracy across modalities",
    "files.report_generation.bleu: mean BLEU over every scored row, all modalities",
    "files.*.errors: rows with an error, counted apart (still wrong, as official)",
    "files.*.answers: what became of each reply (extracted, judge, none, refused, truncated, "
    "empty; text for reports)",
    "files.report_generation.bert_f1 when keywords exist; bleu/bert_f1 all-modality means",
    "independent_vs_joint: per-level accuracy on the same images, independent then joint",
    "shortcut: how often the diagnosis is right while the lesion level is wrong",
    "files.*.ci (every accuracy; joint_qa's is the chain's): 95% interval clustered by image",
    "files.report_generation.bleu_ci/bert_f1_ci: 95% cluster bootstrap by image (seeded)",
)
_KEYWORDS_NOTE = (
    "keyword extraction not run (no judge): BLEU is computed on the raw texts, not on extracted "
    "keywords as the official script does; BERTScore not computed. Set DEEPSEEK_API_KEY or "
    "pass --judge, then rerun (answers come from the cache)"
)
_NO_BERT_NOTE = "BERTScore not computed: pip install '.[report]' (bert-score; torch==2.13.0 first)"


class Scorer:
    """Accumulate official scores row by row; a re-added key replaces its earlier row.

    By default `model_response` (our extracted answer) is scored; with `official_quirks` the
    stripped raw reply is, reproducing the official scripts bit for bit on raw outputs.
    """

    def __init__(self, *, official_quirks: bool = False) -> None:
        self.official_quirks = official_quirks
        self._files: dict[str, dict[str, RowScore]] = {}
        self._family: dict[str, Family] = {}
        self._anonymous = 0
        self._running = [0, 0, 0, 0]  # rows, errors, scored answers, correct answers
        self._usage = Usage()

    def add(self, file: str, row: ResultRow) -> None:
        """Score one results row of `file` (a stem from FILES), replacing any row with its key."""
        family = self._family.setdefault(file, FILE_FAMILY.get(file) or KIND_FAMILY[row.kind])
        key = row.key
        if key is None:
            self._anonymous += 1
            key = f"\0{self._anonymous}"  # rows from other tools: never replaced
        rows = self._files.setdefault(file, {})
        new = score_row(family, row, official_quirks=self.official_quirks)
        if (old := rows.get(key)) is not None:
            self._tally(old, -1)
        # Assigning to an existing key keeps its position, so first-seen order is stable.
        rows[key] = new
        self._tally(new, 1)

    def _tally(self, row: RowScore, sign: int) -> None:
        for i, value in enumerate((1, row.error, len(row.hits), sum(row.hits))):
            self._running[i] += sign * value
        usage = row.usage + row.judge_usage
        self._usage = self._usage + usage if sign > 0 else self._usage - usage

    def running(self) -> dict[str, Any]:
        """Return cheap running totals over MCQ rows and joint levels, for the progress line."""
        rows, errors, n, correct = self._running
        return {
            "rows": rows,
            "errors": errors,
            "n": n,
            "correct": correct,
            "accuracy": _accuracy(correct, n),
            **self._usage.to_json(),
        }

    def summary(self, *, model: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return the full summary of every row added so far."""
        order = [f for f in FILES if f in self._files] + [f for f in self._files if f not in FILES]
        sections = {"mcq": _mcq_section, "joint": _joint_section, "report": _report_section}
        files = {f: sections[self._family[f]](self._files[f].values()) for f in order}
        add_intervals(files, {f: self._files[f].values() for f in order})
        out: dict[str, Any] = {
            "model": model,
            "files": files,
            "independent_vs_joint": self._level_drop(),
            "shortcut": self._shortcut(),
            "usage": self._usage_section(),
            "scoring": "official-quirks" if self.official_quirks else "extracted",
            "additions": list(ADDITIONS),
        }
        for name, value in (extra or {}).items():
            if name in out:
                msg = f"extra key {name!r} would replace a summary field; rename it"
                raise ValueError(msg)
            out[name] = value
        return out

    def _rows(self) -> list[RowScore]:
        return [r for by_key in self._files.values() for r in by_key.values()]

    def _level_drop(self) -> dict[str, Any] | None:
        """Per level: accuracy on images present in both files, independent vs joint."""
        independent = self._files.get("independent_qa", {}).values()
        joint = {r.image: r for r in self._files.get("joint_qa", {}).values() if r.image}
        if not independent or not joint:
            return None
        out: dict[str, Any] = {}
        for i, level in enumerate(JOINT_LEVELS):
            pairs = [
                (r.hits[0], joint[r.image].hits[i])
                for r in independent
                if r.group[1] == level and r.image in joint
            ]
            ind, jnt = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            n = len(pairs)
            out[level] = {
                "pairs": n,
                "independent": _accuracy(ind, n),
                "joint": _accuracy(jnt, n),
                "drop": (ind - jnt) / n if n else None,
            }
        return out

    def _shortcut(self) -> dict[str, Any] | None:
        """Diagnosis right while the lesion is wrong: joint rows, and independent rows per image."""
        lesion, diagnosis = JOINT_LEVELS.index("lesion"), JOINT_LEVELS.index("diagnosis")
        joint = [
            (r.hits[lesion], r.hits[diagnosis]) for r in self._files.get("joint_qa", {}).values()
        ]
        by_image: dict[str, dict[str, bool]] = {}
        for r in self._files.get("independent_qa", {}).values():
            if r.image and r.group[1] in ("lesion", "diagnosis"):
                by_image.setdefault(r.image, {})[str(r.group[1])] = r.hits[0]
        independent = [
            (levels["lesion"], levels["diagnosis"])
            for levels in by_image.values()
            if len(levels) == 2
        ]
        if not joint and not independent:
            return None
        return {"joint": _shortcut_cell(joint), "independent": _shortcut_cell(independent)}

    def _usage_section(self) -> dict[str, Any]:
        """Usage over the rows: the model's calls, then the judge's; None where not recorded.

        `cost_usd` and `saved_usd` are the run's whole: the model's and the judge's together.
        """
        rows = self._rows()
        known = all(r.ours for r in rows)  # another tool's rows carry no usage
        used = sum((r.usage for r in rows), Usage())
        judged = sum((r.judge_usage for r in rows), Usage())
        model: dict[str, Any] = used.to_json()
        if not known:
            model.update(api_calls=None, retries=None)
        models = sorted({r.judge_model for r in rows if r.judge_model})
        return {
            **model,
            "cost_usd": round(used.cost_usd + judged.cost_usd, 6),
            "saved_usd": round(used.saved_usd + judged.saved_usd, 6),
            "failed_rows": sum(r.error for r in rows),
            "input_rows": sum(r.bad_input for r in rows),  # of the failed rows
            "judge": {
                **judged.to_json(),
                "cost_usd": round(judged.cost_usd, 6),
                "saved_usd": round(judged.saved_usd, 6),
                "models_returned": models,
            },
        }


def _accuracy(correct: int, n: int) -> float | None:
    return correct / n if n else None


def _label(value: str | None) -> str:
    return "None" if value is None else value


def _shortcut_cell(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Among (lesion hit, diagnosis hit) pairs with the lesion wrong, how many got the diagnosis."""
    wrong = [diagnosis for lesion, diagnosis in pairs if not lesion]
    return {
        "n": len(pairs),
        "lesion_wrong": len(wrong),
        "diagnosis_right": sum(wrong),
        "rate": _accuracy(sum(wrong), len(wrong)),
    }


def _sources(rows: Iterable[RowScore], kinds: tuple[str, ...] = FATES) -> dict[str, int]:
    """Count what became of each reply (`answers.py`): extracted, judge, none, refused..."""
    counts = dict.fromkeys(kinds, 0)
    for row in rows:
        if row.source in counts:
            counts[row.source] += 1
    return counts


def _cell(n: int, correct: int) -> dict[str, Any]:
    return {"n": n, "correct": correct, "accuracy": _accuracy(correct, n)}


def _mcq_section(rows: Iterable[RowScore]) -> dict[str, Any]:
    rows = list(rows)
    cells: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        modality, sub = row.group
        cell = cells.setdefault(_label(modality), {}).setdefault(_label(sub), [0, 0])
        cell[0] += 1
        cell[1] += row.hits[0]
    return {
        "kind": "mcq",
        **_cell(len(rows), sum(r.hits[0] for r in rows)),
        "errors": sum(r.error for r in rows),
        "answers": _sources(rows),
        "groups": {m: {s: _cell(*c) for s, c in subs.items()} for m, subs in cells.items()},
    }


def _joint_section(rows: Iterable[RowScore]) -> dict[str, Any]:
    rows = list(rows)
    # modality -> [n, correct per level..., whole chain correct]
    levels: dict[str, list[int]] = {}
    for row in rows:
        counts = levels.setdefault(_label(row.group[0]), [0] * (2 + len(JOINT_LEVELS)))
        counts[0] += 1
        for i, hit in enumerate(row.hits, start=1):
            counts[i] += hit
        counts[-1] += all(row.hits)
    n = len(rows)
    chain = sum(c[-1] for c in levels.values())
    return {
        "kind": "joint",
        "n": n,
        "chain_correct": chain,
        "chain_accuracy": _accuracy(chain, n),
        "errors": sum(r.error for r in rows),
        "levels": {
            m: {level: _cell(c[0], c[i]) for i, level in enumerate(JOINT_LEVELS, start=1)}
            for m, c in levels.items()
        },
        "level_totals": {
            level: _cell(n, sum(c[i] for c in levels.values()))
            for i, level in enumerate(JOINT_LEVELS, start=1)
        },
        "chains": {m: _cell(c[0], c[-1]) for m, c in levels.items()},
        "answers": _sources(rows),
    }


def _report_section(rows: Iterable[RowScore]) -> dict[str, Any]:
    rows = list(rows)
    keywords = any(row.keywords for row in rows)
    bleu: dict[str, list[float]] = {}
    bert: dict[str, list[float]] = {}
    for row in rows:
        # With keywords, rows without them are dropped, as official drops failed extractions.
        if row.bleu is not None and row.keywords == keywords:
            bleu.setdefault(_label(row.group[0]), []).append(row.bleu)
            if row.bert_f1 is not None:
                bert.setdefault(_label(row.group[0]), []).append(row.bert_f1)
    every = [s for group in bleu.values() for s in group]
    every_bert = [s for group in bert.values() for s in group]
    note = None if keywords else _KEYWORDS_NOTE
    if keywords and len(every_bert) < len(every):
        note = _NO_BERT_NOTE
    return {
        "kind": "report",
        "n": len(rows),
        "scored": len(every),
        "dropped": len(rows) - len(every),
        "errors": sum(r.error for r in rows),
        "bleu": _mean(every),
        "bert_f1": _mean(every_bert) if len(every_bert) == len(every) else None,
        "keywords": "extracted" if keywords else None,
        "note": note,
        "answers": _sources(rows, REPORT_FATES),
        "groups": {
            m: {
                "n": len(s),
                "bleu": _mean(s),
                "bert_f1": _mean(bert.get(m, [])) if len(bert.get(m, [])) == len(s) else None,
            }
            for m, s in bleu.items()
        },
    }


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def score_run(
    run_dir: Path,
    *,
    model: str | None = None,
    extra: Mapping[str, Any] | None = None,
    official_quirks: bool = False,
    on_damage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Return the summary of a run folder from its results files alone (no API calls).

    Damaged lines are skipped, and `on_damage` is told which.
    """
    scorer = Scorer(official_quirks=official_quirks)
    seen_model: str | None = None
    for stem, row in read_run(run_dir, on_damage):
        scorer.add(stem, row)
        seen_model = seen_model or row.model
    name = model or seen_model or run_dir.resolve().name
    return scorer.summary(model=name, extra=extra)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write `run_dir/summary.json` atomically and return its path."""
    path = run_dir / SUMMARY_NAME
    write_atomic(path, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Return the run's summary.json, or {} when it is missing or unreadable."""
    try:
        data = orjson.loads((run_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
