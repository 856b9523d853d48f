"""Official DrVD-Bench scoring, streamed row by row (FACTS §3).

The per-row functions reproduce the official scripts exactly, quirks included (§3.4): exact string
equality for MCQ, no strip in the joint split, empty reports dropped, error rows counted wrong.
`Scorer` keeps one small contribution per row key, so a row retried on resume replaces its earlier
result exactly. Whatever the official scripts do not compute is listed under "additions".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from pipeline.records import FILES, JOINT_LEVELS, Kind

Family = Literal["mcq", "joint", "report"]

USAGE_KEYS = (
    "api_calls",
    "cache_hits",
    "retries",
    "failed_rows",
    "prompt_tokens",
    "completion_tokens",
)

ADDITIONS = (
    "files.<mcq>.n/correct/accuracy: micro accuracy over all rows of the file",
    "files.joint_qa.chain_correct/chain_accuracy/chains: rows with all four levels right",
    "files.joint_qa.level_totals: per-level accuracy across modalities",
    "files.report_generation.bleu: mean BLEU over every scored row, all modalities",
    "files.*.errors: rows with an error, counted apart (still wrong, as official)",
    "files.*.answers: how each answer was obtained (extracted, judge, none)",
    "files.report_generation.bert_f1 when keywords exist; bleu/bert_f1 all-modality means",
    "independent_vs_joint: per-level accuracy on the same images, independent then joint",
    "shortcut: how often the diagnosis is right while the lesion level is wrong",
)

_FILE_FAMILY: dict[str, Family] = {
    "visual_evidence_qa": "mcq",
    "independent_qa": "mcq",
    "joint_qa": "joint",
    "report_generation": "report",
}
_KIND_FAMILY: dict[str, Family] = {
    "evidence": "mcq",
    "independent": "mcq",
    "joint": "joint",
    "report": "report",
}
_KEYWORDS_NOTE = (
    "keyword extraction not run (no judge): BLEU is computed on the raw texts, not on extracted "
    "keywords as the official script does; BERTScore not computed. Set DEEPSEEK_API_KEY or "
    "pass --judge, then rerun (answers come from the cache)"
)
_NO_BERT_NOTE = "BERTScore not computed: pip install '.[report]' (bert-score; torch==2.13.0 first)"


def row_kind(row: Mapping[str, Any]) -> Kind:
    """Return the row's kind: `_meta.kind` if present, else decided from its keys."""
    meta = row.get("_meta")
    if isinstance(meta, Mapping) and meta.get("kind") in _KIND_FAMILY:
        return cast(Kind, meta["kind"])
    if "joint_prompt" in row:
        return "joint"
    if row.get("task") == "report_generation":
        return "report"
    return "evidence" if "task" in row else "independent"


def mcq_correct(row: Mapping[str, Any]) -> bool:
    """Return the official MCQ hit: the response equals the answer's letter, unstripped."""
    answer = row.get("answer")
    response = row.get("model_response")
    # Missing, None or non-str responses can never equal a str letter; nor in the official code.
    if not isinstance(answer, str) or not isinstance(response, str):
        return False
    return response == answer.split(".")[0].strip()


def mcq_group(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Return the official group: (modality, task) if the row has `task`, else (modality, level)."""
    sub = row["task"] if "task" in row else row.get("level")
    return _opt_str(row.get("modality")), _opt_str(sub)


def joint_hits(row: Mapping[str, Any]) -> list[bool]:
    """Return one official hit per JOINT_LEVELS position; tokens are split on "," and not stripped."""
    response = row.get("model_response")
    tokens = response.split(",") if isinstance(response, str) else []
    hits = []
    for i, level in enumerate(JOINT_LEVELS):
        answer = row.get(f"{level}_answer")
        # The official `answer[0]` crashes on a missing or empty answer; we score that level wrong.
        ok = i < len(tokens) and isinstance(answer, str) and answer != "" and tokens[i] == answer[0]
        hits.append(ok)
    return hits


def joint_modality(row: Mapping[str, Any]) -> str | None:
    """Return the joint group key: `modality`, "Unknown" only when the key is absent."""
    return _opt_str(row.get("modality", "Unknown"))


def report_pair(row: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """Return (modality, reference, prediction), or None when either text is empty (dropped)."""
    answer = row.get("answer")
    response = row.get("model_response")
    if not (isinstance(answer, str) and answer and isinstance(response, str) and response):
        return None
    return str(row.get("modality") or "Unknown"), answer, response


def sentence_bleu(reference: str, prediction: str) -> float:
    """Return the official report BLEU: nltk's sentence-BLEU, method4 smoothing, whitespace tokens.

    A transcription of nltk 3.x `sentence_bleu([ref.split()], pred.split(),
    smoothing_function=SmoothingFunction().method4)` (uniform 4-gram weights, k=5), float for
    float: tests compare it with nltk on random texts. Written out because importing nltk costs
    ~140 MB and a second of CPU.
    """
    ref, hyp = reference.split(), prediction.split()
    hyp_len = len(hyp)
    precisions: list[tuple[int, int]] = []  # (clipped matches, hypothesis n-grams) for n = 1..4
    for n in range(1, 5):
        counts = Counter(zip(*(hyp[i:] for i in range(n)), strict=False))
        in_ref = Counter(zip(*(ref[i:] for i in range(n)), strict=False))
        matches = sum(min(count, in_ref[gram]) for gram, count in counts.items())
        precisions.append((matches, max(1, sum(counts.values()))))
    if precisions[0][0] == 0:
        return 0.0  # no unigram in common
    brevity = 1.0 if hyp_len > len(ref) else math.exp(1 - len(ref) / hyp_len)
    logs = []
    smoothed = 1
    for matches, total in precisions:
        if matches:
            logs.append(0.25 * math.log(matches / total))
        elif hyp_len > 1:  # method4: a shrinking pseudo-count for each missing order
            logs.append(0.25 * math.log(1 / (2**smoothed * 5 / math.log(hyp_len)) / total))
            smoothed += 1
    return brevity * math.exp(math.fsum(logs))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _label(value: str | None) -> str:
    return "None" if value is None else value


def _accuracy(correct: int, n: int) -> float | None:
    return correct / n if n else None


@dataclass(frozen=True, slots=True)
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int | None = None  # None: unknown (no `_meta.attempts`)
    metered: bool = False  # the row has `_meta`, so it went through our runner


@dataclass(frozen=True, slots=True)
class _Row:
    """What one row contributes: a group, its hits, and bookkeeping."""

    group: tuple[str | None, ...]  # mcq: (modality, task|level); joint/report: (modality,)
    hits: tuple[bool, ...]  # mcq: 1; joint: 4; report: ()
    error: bool
    usage: _Usage
    bleu: float | None = None  # report only; None: dropped
    keywords: bool = False  # report: bleu is on extracted keywords (official), not raw texts
    bert_f1: float | None = None  # report, on keywords
    source: str | None = None  # how the answer was obtained: extracted, judge, none
    image: str | None = None  # image_paths, to link independent and joint rows


def _usage(row: Mapping[str, Any]) -> _Usage:
    meta = row.get("_meta")
    if not isinstance(meta, Mapping):
        return _Usage()
    attempts = meta.get("attempts")
    return _Usage(
        prompt_tokens=_int(meta.get("prompt_tokens")),
        completion_tokens=_int(meta.get("completion_tokens")),
        cached=bool(meta.get("cached")),
        attempts=attempts if isinstance(attempts, int) else None,
        metered=True,
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _score(family: Family, row: Mapping[str, Any]) -> _Row:
    error = row.get("error") is not None
    usage = _usage(row)
    meta = row.get("_meta")
    source = meta.get("answer_source") if isinstance(meta, Mapping) else None
    image = _opt_str(row.get("image_paths"))
    if family == "mcq":
        return _Row(mcq_group(row), (mcq_correct(row),), error, usage, source=source, image=image)
    if family == "joint":
        hits = tuple(joint_hits(row))
        return _Row((joint_modality(row),), hits, error, usage, source=source, image=image)
    pair = report_pair(row)
    if pair is None:
        return _Row(("Unknown",), (), error, usage)
    modality, reference, prediction = pair
    kw = row.get("keywords")
    if isinstance(kw, Mapping) and isinstance(kw.get("reference"), str):
        ref_kw, pred_kw = kw["reference"], kw.get("prediction")
        if isinstance(pred_kw, str):
            f1 = kw.get("bert_f1")
            bert = float(f1) if isinstance(f1, int | float) and not isinstance(f1, bool) else None
            bleu = sentence_bleu(ref_kw, pred_kw)
            return _Row((modality,), (), error, usage, bleu, keywords=True, bert_f1=bert)
    return _Row((modality,), (), error, usage, sentence_bleu(reference, prediction))


def as_official(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the row as the official pipeline would store it: the stripped raw reply."""
    meta = row.get("_meta")
    if not isinstance(meta, Mapping):
        return row  # not ours: score what it holds
    raw = row.get("raw_response")
    return {**row, "model_response": raw.strip() if isinstance(raw, str) else None}


class Scorer:
    """Accumulate official scores row by row; a re-added key replaces its earlier row.

    By default `model_response` (our extracted answer) is scored; with `official_quirks` the
    stripped raw reply is, reproducing the official scripts bit for bit on raw outputs.
    """

    def __init__(self, *, official_quirks: bool = False) -> None:
        self.official_quirks = official_quirks
        self._files: dict[str, dict[str, _Row]] = {}
        self._family: dict[str, Family] = {}
        self._anonymous = 0
        self._rows = self._errors = self._n = self._correct = 0

    def add(self, file: str, row: Mapping[str, Any]) -> None:
        """Score one results row of `file` (a stem from FILES), replacing any row with its key."""
        family = self._family.get(file)
        if family is None:
            # Known files are scored as the official script for that file would; others by kind.
            family = _FILE_FAMILY.get(file) or _KIND_FAMILY[row_kind(row)]
            self._family[file] = family
        meta = row.get("_meta")
        key = meta.get("key") if isinstance(meta, Mapping) else None
        if not isinstance(key, str):
            self._anonymous += 1
            key = f"\0{self._anonymous}"  # rows from other tools: never replaced
        rows = self._files.setdefault(file, {})
        new = _score(family, as_official(row) if self.official_quirks else row)
        old = rows.get(key)
        if old is not None:
            self._tally(old, -1)
        # Assigning to an existing key keeps its position, so first-seen order is stable.
        rows[key] = new
        self._tally(new, 1)

    def _tally(self, row: _Row, sign: int) -> None:
        self._rows += sign
        self._errors += sign * row.error
        self._n += sign * len(row.hits)
        self._correct += sign * sum(row.hits)

    def running(self) -> dict[str, Any]:
        """Return cheap running totals over MCQ rows and joint levels, for a progress bar."""
        return {
            "rows": self._rows,
            "errors": self._errors,
            "n": self._n,
            "correct": self._correct,
            "accuracy": _accuracy(self._correct, self._n),
        }

    def summary(
        self,
        *,
        model: str,
        usage: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the full summary; `usage` defaults to what the rows themselves record."""
        order = [f for f in FILES if f in self._files] + [f for f in self._files if f not in FILES]
        files: dict[str, Any] = {}
        for file in order:
            rows = self._files[file].values()
            family = self._family[file]
            if family == "mcq":
                files[file] = _mcq_section(rows)
            elif family == "joint":
                files[file] = _joint_section(rows)
            else:
                files[file] = _report_section(rows)
        out: dict[str, Any] = {
            "model": model,
            "files": files,
            "independent_vs_joint": self._level_drop(),
            "shortcut": self._shortcut(),
            "usage": self._usage(usage),
            "scoring": "official-quirks" if self.official_quirks else "extracted",
            "additions": list(ADDITIONS),
        }
        for name, value in (extra or {}).items():
            if name in out:
                msg = f"extra key {name!r} would replace a summary field; rename it"
                raise ValueError(msg)
            out[name] = value
        return out

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

    def _usage(self, given: Mapping[str, int] | None) -> dict[str, Any]:
        if given is not None:
            return {**dict.fromkeys(USAGE_KEYS, 0), **given}
        rows = [r for by_key in self._files.values() for r in by_key.values()]
        metered = [r.usage for r in rows if r.usage.metered and not r.usage.cached]
        # Calls and retries are known only when every row came from our runner and every row
        # that called the API recorded its attempts.
        known = all(r.usage.metered for r in rows) and all(u.attempts is not None for u in metered)
        return {
            "api_calls": sum(u.attempts or 0 for u in metered) if known else None,
            "cache_hits": sum(r.usage.cached for r in rows),
            "retries": sum(max((u.attempts or 0) - 1, 0) for u in metered) if known else None,
            "failed_rows": sum(r.error for r in rows),
            "prompt_tokens": sum(r.usage.prompt_tokens for r in rows),
            "completion_tokens": sum(r.usage.completion_tokens for r in rows),
            "source": "rows",
        }


def _shortcut_cell(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Among (lesion hit, diagnosis hit) pairs with the lesion wrong, how many got the diagnosis."""
    wrong = [diagnosis for lesion, diagnosis in pairs if not lesion]
    return {
        "n": len(pairs),
        "lesion_wrong": len(wrong),
        "diagnosis_right": sum(wrong),
        "rate": _accuracy(sum(wrong), len(wrong)),
    }


def _sources(rows: Iterable[_Row]) -> dict[str, int]:
    counts = dict.fromkeys(("extracted", "judge", "none"), 0)
    for row in rows:
        if row.source in counts:
            counts[row.source] += 1
    return counts


def _cell(n: int, correct: int) -> dict[str, Any]:
    return {"n": n, "correct": correct, "accuracy": _accuracy(correct, n)}


def _mcq_section(rows: Iterable[_Row]) -> dict[str, Any]:
    cells: dict[str, dict[str, list[int]]] = {}
    n = correct = errors = 0
    for row in rows:
        modality, sub = row.group
        cell = cells.setdefault(_label(modality), {}).setdefault(_label(sub), [0, 0])
        cell[0] += 1
        cell[1] += row.hits[0]
        n += 1
        correct += row.hits[0]
        errors += row.error
    groups = {m: {s: _cell(*c) for s, c in subs.items()} for m, subs in cells.items()}
    return {
        "kind": "mcq",
        **_cell(n, correct),
        "errors": errors,
        "answers": _sources(rows),
        "groups": groups,
    }


def _joint_section(rows: Iterable[_Row]) -> dict[str, Any]:
    # modality -> [n, correct per level..., whole chain correct]
    levels: dict[str, list[int]] = {}
    errors = 0
    for row in rows:
        counts = levels.setdefault(_label(row.group[0]), [0] * (2 + len(JOINT_LEVELS)))
        counts[0] += 1
        for i, hit in enumerate(row.hits, start=1):
            counts[i] += hit
        counts[-1] += all(row.hits)
        errors += row.error
    n = sum(c[0] for c in levels.values())
    chain = sum(c[-1] for c in levels.values())
    totals = {
        level: _cell(n, sum(c[i] for c in levels.values()))
        for i, level in enumerate(JOINT_LEVELS, start=1)
    }
    return {
        "kind": "joint",
        "n": n,
        "chain_correct": chain,
        "chain_accuracy": _accuracy(chain, n),
        "errors": errors,
        "levels": {
            m: {level: _cell(c[0], c[i]) for i, level in enumerate(JOINT_LEVELS, start=1)}
            for m, c in levels.items()
        },
        "level_totals": totals,
        "chains": {m: _cell(c[0], c[-1]) for m, c in levels.items()},
        "answers": _sources(rows),
    }


def _report_section(rows: Iterable[_Row]) -> dict[str, Any]:
    rows = list(rows)
    keywords = any(row.keywords for row in rows)
    bleu: dict[str, list[float]] = {}
    bert: dict[str, list[float]] = {}
    n = errors = 0
    for row in rows:
        n += 1
        errors += row.error
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
        "n": n,
        "scored": len(every),
        "dropped": n - len(every),
        "errors": errors,
        "bleu": _mean(every),
        "bert_f1": _mean(every_bert) if len(every_bert) == len(every) else None,
        "keywords": "extracted" if keywords else None,
        "note": note,
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


def score_rows(items: Iterable[tuple[str, Mapping[str, Any]]]) -> Scorer:
    """Return a Scorer fed with (file, row) pairs, in order."""
    scorer = Scorer()
    for file, row in items:
        scorer.add(file, row)
    return scorer
