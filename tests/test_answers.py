"""What becomes of each reply: read from the answer only, never the thoughts; every fate counted.

The end-to-end tests run the real client and runner against the local fake server, which answers
in every shape today's models use (tests/fakereplies.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeserver import MAPPER_MARKER, FakeConfig, running
from test_runner import config, dataset, no_sleep, results

from pipeline.errors import ExitCode
from pipeline.records import Completion, Sample
from pipeline.run.runner import run_eval
from pipeline.scoring.fate import read_reply

OPTIONS = ["A. CT", "B. MRI", "C. Ultrasound"]
MCQ = Sample("independent_qa", 1, "k", "independent", Path("x.png"), {"options": OPTIONS})
JOINT = Sample("joint_qa", 1, "k", "joint", Path("x.png"), {"joint_prompt": "..."})
REPORT = Sample("report_generation", 1, "k", "report", Path("x.png"), {"answer": "ref"})
UNSURE = ["A. Benign", "B. Malignant", "C. Cannot be determined"]
UNSURE_MCQ = Sample("independent_qa", 1, "k", "independent", Path("x.png"), {"options": UNSURE})


@pytest.mark.parametrize(
    ("sample", "text", "finish", "fate", "answer"),
    [
        (MCQ, "B", "stop", "extracted", "B"),
        (MCQ, "The answer is B", "length", "extracted", "B"),  # cut after the answer: fine
        (MCQ, "The image shows an axial slice with a", "length", "truncated", None),
        (MCQ, "", "length", "truncated", None),
        (MCQ, "", "stop", "empty", None),
        (MCQ, "   \n", None, "empty", None),
        (MCQ, "", "content_filter", "refused", None),
        (MCQ, "I'm sorry, but I can't help with this medical image.", "stop", "refused", None),
        (MCQ, "Either B or C, hard to say.", "stop", "none", None),
        # an option written back is read (and kept from the judge), even one that sounds refused
        (UNSURE_MCQ, "C. Cannot be determined", "stop", "extracted", "C"),
        (UNSURE_MCQ, "**Cannot be determined**", "stop", "extracted", "C"),
        (UNSURE_MCQ, "It cannot be determined from this image.", "stop", "refused", None),
        (JOINT, "B, A, C, A", "stop", "extracted", "B,A,C,A"),
        (JOINT, "1. B 2. A", "length", "truncated", None),
        (REPORT, "A normal chest radiograph.", "stop", "text", "A normal chest radiograph."),
        (
            REPORT,
            "A normal chest radiograph with",
            "length",
            "text",
            "A normal chest radiograph with",
        ),
        (REPORT, "", "length", "truncated", None),
        (REPORT, "I cannot provide a medical report for this image.", "stop", "refused", None),
    ],
)
def test_each_reply_gets_one_fate(sample, text, finish, fate, answer) -> None:
    assert read_reply(sample, Completion(text, finish_reason=finish)) == (fate, answer)


def fates(summary: dict, stem: str) -> dict[str, int]:
    return {k: v for k, v in summary["files"][stem]["answers"].items() if v}


@pytest.mark.parametrize("style", ["field", "openrouter", "inline"])
async def test_thoughts_are_kept_apart_and_never_read(tmp_path: Path, style: str) -> None:
    data = dataset(tmp_path, total=60)
    async with running() as server:
        plain = await run_eval(config(data, tmp_path / "plain", server.url), show_progress=False)
        server.config.reasoning = style  # every answer now comes with thoughts naming wrong letters
        cfg = config(
            data, tmp_path / "out", server.url, env={"DRVD_CACHE_DIR": str(tmp_path / "c")}
        )
        thinking = await run_eval(cfg, show_progress=False)
    assert plain.exit_code == thinking.exit_code == ExitCode.OK
    for stem in ("visual_evidence_qa", "independent_qa", "joint_qa"):
        assert thinking.summary["files"][stem] == plain.summary["files"][stem]
    rows = [r for rows in results(tmp_path / "out").values() for r in rows]
    mcq = [r for r in rows if r["_meta"]["kind"] != "report"]
    assert all("option" in r["reasoning_response"].lower() for r in mcq)  # the thoughts were kept
    assert not any("think>" in r["raw_response"] or "ption" in r["raw_response"] for r in mcq)


async def test_truncated_at_the_official_max_tokens_then_answered_with_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dataset(tmp_path, total=80)
    capped = {"independent_qa", "joint_qa"}  # the official protocol caps these at 50 and 100
    async with running(FakeConfig(reasoning="field", think_tokens=120)) as server:
        cfg = config(data, tmp_path / "out", server.url)
        first = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        n_capped = sum(
            len(rows) for stem, rows in results(tmp_path / "out").items() if stem in capped
        )
        for stem in capped:
            section = first.summary["files"][stem]
            assert fates(first.summary, stem) == {"truncated": section["n"]}
            assert section["errors"] == section["n"]  # failed rows, still in the denominators
        assert first.exit_code == ExitCode.FAILED_ROWS
        assert first.summary["usage"]["failed_rows"] == n_capped
        assert "warning: 10 replies in a row came back with no answer" in capsys.readouterr().err
        assert first.summary["usage"]["reasoning_tokens"] >= 120 * (80 - n_capped)
        row = next(r for r in results(tmp_path / "out")["joint_qa"])
        assert "--max-tokens" in row["error"]
        assert row["_meta"]["finish_reason"] == "length"
        assert row["model_response"] is None
        sent = server.ledger.count()
        again = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        assert server.ledger.count() == sent + n_capped  # truncated replies are never cached
        assert again.exit_code == ExitCode.FAILED_ROWS
        raised = config(data, tmp_path / "out", server.url, max_tokens=2048)
        fixed = await run_eval(raised, show_progress=False, sleep=no_sleep)
        limits = {e.params.get("max_tokens") for e in server.ledger.entries[sent + n_capped :]}
    assert fixed.exit_code == ExitCode.OK
    assert fixed.summary["usage"]["failed_rows"] == 0
    assert fixed.summary["run"]["deviations"] == {"max_tokens": 2048}
    assert limits == {2048}
    for stem in capped:
        assert fates(fixed.summary, stem) == {"extracted": fixed.summary["files"][stem]["n"]}


# shape → (fate, failed): replies no model call can be trusted to be a plain success
SHAPES = {
    "content_filter": ("refused", False),
    "content_filter_text": ("refused", False),
    "refusal": ("refused", False),
    "null_content": ("empty", True),
    "length_partial": ("truncated", True),
    "length_empty": ("truncated", True),
    "length_empty_null": ("truncated", True),
    "think_unclosed": ("truncated", True),
    "list_content": ("extracted", False),
    "no_usage": ("extracted", False),
    "reasoning": ("extracted", False),
    "reasoning_field": ("extracted", False),
    "reasoning_hidden": ("extracted", False),
    "think_inline": ("extracted", False),
}


@pytest.mark.parametrize(("shape", "expected"), SHAPES.items())
async def test_every_reply_shape_has_its_fate(tmp_path: Path, shape, expected) -> None:
    data = dataset(tmp_path, total=20, split={"independent_qa": 1.0})
    fate, failed = expected
    async with running(FakeConfig(default_outcome=shape)) as server:
        cfg = config(data, tmp_path / "out", server.url, files="independent_qa")
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert fates(result.summary, "independent_qa") == {fate: 20}
    rows = results(tmp_path / "out")["independent_qa"]
    assert all((r["error"] is not None) is failed for r in rows)
    assert result.exit_code == (ExitCode.FAILED_ROWS if failed else ExitCode.OK)
    assert server.ledger.count() == 20  # none of these is retried within the run


async def test_an_error_in_a_200_is_retried_not_stored(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=20, split={"independent_qa": 1.0})
    async with running(FakeConfig(script=["error_200", "error_200_object"])) as server:
        cfg = config(data, tmp_path / "out", server.url, files="independent_qa")
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.OK
    assert result.summary["usage"]["retries"] == 2
    assert fates(result.summary, "independent_qa") == {"extracted": 20}
    assert server.ledger.count() == 22


async def test_the_judge_sees_the_answer_not_the_thoughts(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=20, split={"independent_qa": 1.0})
    fake = FakeConfig(reasoning="field", answer_fn=lambda payload: "Hmm, the second or so.")
    async with running(fake) as server:
        judge = {"judge": "openai:j", "judge_base_url": server.url, "no_bertscore": True}
        cfg = config(data, tmp_path / "out", server.url, files="independent_qa", **judge)
        await run_eval(cfg, show_progress=False, sleep=no_sleep)
        asked = [e.user_text for e in server.ledger.entries if MAPPER_MARKER in e.user_text]
    assert len(asked) == 20
    for prompt in asked:
        said = prompt.split(MAPPER_MARKER, 1)[1].split("\n\n", 1)[0]
        assert said == "Hmm, the second or so."
