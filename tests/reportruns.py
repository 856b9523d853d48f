"""Runs for the report tests, made as a user makes them, and an independent recount of their rows.

`sample_run`: `make demo`'s command on the bundled sample (`shared_sample_run`: made once per
session, for tests that only read it or change a copy of it). `mixed_run`: a random run on a small
synthetic set with one image deleted (failed rows), then some rows rewritten as a real model's
would be (unreadable, refused, a reasoning trace, report keywords) and the run re-scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from once import built_once, copy_of
from procs import REPO, drvd, lines_of

from pipeline.data.synthetic import write_dataset
from pipeline.records import FILES, JOINT_LEVELS

SAMPLE = REPO / "pipeline" / "data" / "sample"


def sample_run(out: Path) -> Path:
    """Run `make demo`'s eval into `out`; return the run folder (runs/demo-random in the README)."""
    proc = drvd(
        "eval", "--model", "random", "--data", SAMPLE, "--out", out, "--run-name", "demo-random",
        "--judge", "none", "--quiet", "--cache-dir", out / "cache",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / "demo-random"


def _page_on_sample_run(out: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DRVD_PAGE", raising=False)  # whichever test asks first: the page is drawn
        sample_run(out)


def shared_sample_run(factory: pytest.TempPathFactory, copy_to: Path | None = None) -> Path:
    """Return `sample_run`'s run folder, made once per session: read it, do not change it.

    With `copy_to`, the folder it was made in (the run and its cache, hard links and times as
    they are) is copied there first and the copy's run folder is returned, for a test that
    changes the run or runs again on its cache: as if `sample_run(copy_to)` had made it.
    """
    out = built_once(factory, "sample", _page_on_sample_run)
    return (copy_of(out, copy_to) if copy_to is not None else out) / "demo-random"


def _rewrite(run: Path, stem: str, change: Any) -> None:
    path = run / f"{stem}.jsonl"
    rows = lines_of(path)
    for i, row in enumerate(rows):
        change(i, row)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def mixed_run(tmp: Path) -> Path:
    """A run with every verdict and answer source: eval (some rows fail), rewrite, then score."""
    data = tmp / "data"
    write_dataset(data, total=60, images=6)
    (data / "images" / "synthetic_00001.jpg").unlink()  # its rows fail: image not found
    env = {"DRVD_CACHE_DIR": str(tmp / "cache")}
    proc = drvd(
        "eval", "--model", "random", "--data", data, "--out", tmp / "out", "--run-name", "mixed",
        "--judge", "none", "--quiet", env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the failed rows
    run = tmp / "out" / "mixed"

    def mcq(i: int, row: dict[str, Any]) -> None:
        if row["error"] is not None:
            return
        if i % 5 == 1:  # unreadable, scored as given
            row.update(
                model_response="I think it is the liver", raw_response="I think it is the liver"
            )
            row["_meta"]["answer_source"] = "none"
        elif i % 5 == 2:
            row.update(model_response="I cannot help", raw_response="I cannot help")
            row["_meta"]["answer_source"] = "refused"
        elif i % 5 == 3:  # mapped by a judge, with the model's thoughts
            row["reasoning_response"] = "The shape suggests an organ </script><b>x</b>"
            row["_meta"].update(answer_source="judge", judge_model="judge-model")

    def report(i: int, row: dict[str, Any]) -> None:
        if row["error"] is None and i % 2 == 0:
            row["keywords"] = {"variant": "repo", "judge_model": "j", "reference": "liver cyst",
                               "prediction": "liver mass", "bert_f1": 0.8125}  # fmt: skip

    for stem in ("visual_evidence_qa", "independent_qa"):
        _rewrite(run, stem, mcq)
    _rewrite(run, "report_generation", report)
    proc = drvd("score", run, env=env)
    assert proc.returncode == 0, proc.stderr
    return run


def verdict(stem: str, row: dict[str, Any]) -> str:
    """Recount one results line's verdict from the line alone (the page's filter value)."""
    meta = row.get("_meta") or {}
    if row.get("error") is not None:
        return "failed"
    if meta.get("answer_source") in ("none", "refused"):
        return "unread"
    if stem == "report_generation":
        return "report"
    response = row.get("model_response")
    if stem == "joint_qa":
        letters = [(row.get(f"{lv}_answer") or "")[:1] for lv in JOINT_LEVELS]
        return "right" if isinstance(response, str) and response.split(",") == letters else "wrong"
    return "right" if response == row["answer"].split(".")[0].strip() else "wrong"


def recount(run: Path) -> list[dict[str, str]]:
    """Return, per results line, the values each filter of the page matches it by."""
    out = []
    for stem in FILES:
        for row in lines_of(run / f"{stem}.jsonl"):
            meta = row["_meta"]
            task = row.get("task", row.get("level"))
            task = {"joint_qa": "joint (4 levels)", "report_generation": "report"}.get(stem, task)
            out.append(
                {
                    "filter-file": stem,
                    "filter-modality": row.get("modality", "Unknown"),
                    "filter-task": task,
                    "filter-verdict": verdict(stem, row),
                    "filter-source": meta.get("answer_source") or "-",
                    "key": meta["key"],
                    "text": " ".join(str(v) for v in row.values()),
                }
            )
    return out
