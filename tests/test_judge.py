"""The judge: official mapper and keyword prompts, its reply read by our reader, real HTTP."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakeserver import (
    KEYWORD_MARKER,
    MAPPER_MARKER,
    FakeConfig,
    FakeServer,
    default_answer,
    running,
)
from test_metrics import packaged_minilm
from test_models import api_model
from test_runner import config, dataset, no_sleep, results

from pipeline.errors import ConfigError, ExitCode, FatalAPIError
from pipeline.records import Kind, ResultRow, Usage
from pipeline.run.runner import run_eval
from pipeline.scoring.judge import (
    JUDGE_SYSTEM,
    KEYWORD_TEMPERATURE,
    PYPI_PROMPT,
    Judge,
    keyword_prompt,
    mapper_prompt,
)
from pipeline.scoring.metrics import bert_f1, sentence_bleu
from pipeline.scoring.reader import extract_choice, option_letters

ROW: dict[str, Any] = {
    "image_paths": "images/x.png",
    "question": "What imaging modality is shown?",
    "options": ["A. MRI", "B. X-ray", "C. CT", "D. Ultrasound"],
    "answer": "C. CT",
    "modality": "CT",
    "task": "modality_recognition",
}


def unread(raw: str | None, row: dict | None = None, kind: Kind = "evidence") -> ResultRow:
    """An answered row whose reply the extractor could not read."""
    return ResultRow(
        row or ROW, "k", kind, 1, model_response=raw, raw_response=raw, answer_source="none"
    )


def scripted(replies: dict[str, str]):
    """Answer each judge request according to the raw reply it is asked to map."""

    def answer(payload: dict) -> str:
        prompt = payload["messages"][-1]["content"]
        said = prompt.split("Other model's answer: ", 1)[1].split("\n\n", 1)[0]
        return replies[said]

    return answer


def test_mapper_prompt_is_the_official_repo_string() -> None:
    expected = (
        "You are a medical assistant. Given the question, the list of options, and a response "
        "from another model, please map the response to the best matching option letter (e.g., "
        "A, B, C, D). Only output the letter.\n\nQuestion: What imaging modality is shown?\n\n"
        "Options:\nA. MRI\nB. X-ray\nC. CT\nD. Ultrasound\n\nOther model's answer: It is a CT.\n\n"
        "Instruction: Only output the letter (A, B, C, or D) that best matches the model's "
        "response. Do not add any other text."
    )
    assert mapper_prompt(ROW["question"], ROW["options"], "It is a CT.") == expected


REPO_EXPECTED = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both **normal "
    "findings** (e.g., 'no lung opacity', 'normal heart size') and **abnormal findings** (e.g., "
    "'fracture', 'tumor mass'). Exclude any details that cannot be inferred from the image itself "
    "(e.g., patient history, lab values).\n\nREPORT {x}\n\nReturn a concise, comma-separated list "
    "of visually identifiable clinical features. Do not include any irrelevant words or phrases, "
    "do not include explanations."
)
PYPI_EXPECTED = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both normal "
    "findings and abnormal findings.\n\nREPORT {x}\n\nReturn a concise, comma-separated list of "
    "visually identifiable features."
)


def test_prompts_are_the_official_strings() -> None:
    assert keyword_prompt("REPORT {x}") == REPO_EXPECTED
    assert keyword_prompt("REPORT {x}", "repo") == REPO_EXPECTED
    assert keyword_prompt("REPORT {x}", "pypi") == PYPI_EXPECTED


def test_pypi_prompt_matches_the_installed_package() -> None:
    spec = importlib.util.find_spec("drvd_bench")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("drvd-bench missing: `make test` installs it (pip install --no-deps ...)")
    source = Path(next(iter(spec.submodule_search_locations))) / "report_metric.py"
    # Rebuild the package's f-string `prompt = (...)` with {text} left as a placeholder.
    prompts = [
        "".join(
            str(part.value) if isinstance(part, ast.Constant) else "{text}"
            for part in node.value.values
        )
        for node in ast.walk(ast.parse(source.read_text("utf-8")))
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.JoinedStr)
        and any(isinstance(t, ast.Name) and t.id == "prompt" for t in node.targets)
    ]
    assert prompts == [PYPI_PROMPT]


# The judge's reply goes through the same reader as the model's (`extract_choice`).
@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("C", "C"),
        ("c", "C"),
        ("C.", "C"),
        ("C. CT", "C"),  # what the official mapper stores; we keep the letter
        ("  C\n", "C"),
        ("(C) CT", "C"),
        ("**C**", "C"),
        ("Answer: C", "C"),
        ("C\nBecause the image is a CT.", "C"),
        ("CT", "C"),  # the option's text
        ("d.", "D"),
        ("garbage", None),
        ("", None),
        ("A chest CT", None),
        ("I cannot tell.", None),
        ("C, D", None),
        ("C or D", None),
        ("E", None),  # not offered
        ("C. MRI", None),  # the text names option A
        ("None of the above", None),
    ],
)
def test_judge_replies_are_read_by_the_extractor(reply: str, want: str | None) -> None:
    assert extract_choice(reply, ROW["options"]) == want


async def test_judge_maps_unread_replies_over_http(fake_server: FakeServer, tmp_path: Path) -> None:
    replies = {
        "It looks like computed tomography": "C. CT",
        "probably the third one": "c",
        "no idea": "garbage",
        "some other modality": "E",
        "maybe B or C": "B, C",
    }
    fake_server.config.answer_fn = scripted(replies)
    async with api_model(fake_server, tmp_path) as model:
        judge = Judge(model, variant="repo", bert=None)
        got = {raw: await judge.grade(unread(f"  {raw}\n")) for raw in replies}
    assert {raw: (r.model_response, r.answer_source) for raw, r in got.items()} == {
        "It looks like computed tomography": ("C", "judge"),
        "probably the third one": ("C", "judge"),
        "no idea": ("  no idea\n", "none"),
        "some other modality": ("  some other modality\n", "none"),
        "maybe B or C": ("  maybe B or C\n", "none"),
    }
    for row in got.values():
        assert row.judge_model == "test-model"
        assert row.judge_usage.api_calls == 1
        assert row.error is None
    entries = fake_server.ledger.entries
    assert len(entries) == len(replies)  # one call per row
    for entry, raw in zip(entries, replies, strict=True):
        assert entry.system == JUDGE_SYSTEM
        # The reply is stripped, as the official mapper does, and the prompt is exact.
        assert entry.user_text == mapper_prompt(ROW["question"], ROW["options"], raw)
        assert entry.content_types == ("text",)
        assert "temperature" not in entry.params  # official mapper: provider default


async def test_rows_the_judge_cannot_map_cost_no_call(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    joint = {"joint_prompt": "1. ...", "modality_answer": "C. CT", "modality": "CT"}
    async with api_model(fake_server, tmp_path) as model:
        judge = Judge(model, variant="repo", bert=None)
        for row in (
            unread("C, B, A, D", joint, "joint"),
            unread(None),
            unread("  \n"),
            unread("C", {**ROW, "options": []}),
            ResultRow(
                ROW,
                "k",
                "evidence",
                model_response="C",
                raw_response="C",
                answer_source="extracted",
            ),
        ):
            assert await judge.grade(row) == row
    assert fake_server.ledger.count() == 0


async def test_judge_errors(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.config.script = ["400_too_large", "402"]
    async with api_model(fake_server, tmp_path) as model:
        judge = Judge(model, variant="repo", bert=None)
        failed = await judge.grade(unread("computed tomography"))
        with pytest.raises(FatalAPIError):
            await judge.grade(unread("computed tomography"))
    assert failed.error is not None
    assert failed.error.startswith("judge: 400")
    assert failed.error_status == 400
    assert failed.judge_usage == Usage(api_calls=1)  # the failed call is still counted


async def test_non_text_options_are_left_out_of_the_prompt(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.config.answer_fn = lambda payload: "C"
    row = unread("CT scan", {**ROW, "options": [*ROW["options"], None]})
    async with api_model(fake_server, tmp_path) as model:
        graded = await Judge(model, variant="repo", bert=None).grade(row)
    assert graded.model_response == "C"
    [entry] = fake_server.ledger.entries
    assert entry.user_text == mapper_prompt(ROW["question"], ROW["options"], "CT scan")


async def test_report_keywords_use_the_official_call(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    report = {"question": "Write a report.", "task": "report_generation", "answer": "Ref text."}
    row = ResultRow(report, "k", "report", model_response="Pred text.", answer_source="text")
    async with api_model(fake_server, tmp_path) as model:
        judge = Judge(model, variant="pypi", bert=None)
        assert judge.needs(row)
        graded = await judge.grade(row)
    assert not judge.needs(graded)
    assert graded.keywords is not None
    assert graded.keywords.variant == "pypi"
    assert graded.keywords.bert_f1 is None
    sent = sorted(e.user_text for e in fake_server.ledger.entries)
    assert sent == sorted(keyword_prompt(t, "pypi") for t in ("Ref text.", "Pred text."))
    for entry in fake_server.ledger.entries:
        assert entry.system == ""  # no system message, as official
        assert entry.params["temperature"] == KEYWORD_TEMPERATURE


# --- The judge wired into runs ---------------------------------------------------------------------


FREE_TEXT = "Looking at the scan, my impression is that this is {text}, most likely."


def judged(url: str, **flags):
    """Flags for a run whose model and judge are both the fake server."""
    return {"judge": "openai:judge-model", "judge_base_url": url, "no_bertscore": True, **flags}


def option_text(payload: dict, letter: str) -> str:
    text: str = payload["messages"][-1]["content"][0]["text"]
    line = next(x for x in text.splitlines() if x.strip().startswith(f"{letter}."))
    return line.split(".", 1)[1].strip()


async def test_varied_replies_need_no_judge_and_score_as_bare_letters(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=120)
    async with running(FakeConfig()) as server:
        plain = await run_eval(config(data, tmp_path / "plain", server.url), show_progress=False)
        server.config.replies = "varied"
        fresh = {"DRVD_CACHE_DIR": str(tmp_path / "fresh-cache")}  # not the plain answers
        cfg = config(data, tmp_path / "varied", server.url, env=fresh, **judged(server.url))
        varied = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        mapper_calls = sum(MAPPER_MARKER in e.user_text for e in server.ledger.entries)
    assert plain.exit_code == varied.exit_code == ExitCode.OK
    for stem in ("visual_evidence_qa", "independent_qa", "joint_qa"):
        assert varied.summary["files"][stem]["answers"]["judge"] == 0
        assert varied.summary["files"][stem]["answers"]["none"] == 0
        # Every phrasing yields the letters the plain run got, so the scores are identical.
        assert varied.summary["files"][stem] == plain.summary["files"][stem] | {
            "answers": varied.summary["files"][stem]["answers"]
        }
    assert mapper_calls == 0
    raws = {r["raw_response"] for rows in results(tmp_path / "varied").values() for r in rows}
    assert any(raw.startswith("The answer is") for raw in raws)  # the phrasings were served
    assert any("\\boxed" in raw for raw in raws)


@pytest.mark.parametrize(
    ("style", "source"),
    [("letter", "judge"), ("option", "judge"), ("lower", "judge"), ("garbage", "none")],
)
async def test_unreadable_replies_go_to_the_judge_once(
    tmp_path: Path, style: str, source: str
) -> None:
    data = dataset(tmp_path, total=40, split={"independent_qa": 1.0})

    def answer(payload: dict) -> str:
        text = payload["messages"][-1]["content"]
        if isinstance(text, str):  # a judge call: text only
            return default_answer(payload, server.config)
        letter = "ABCD"[len(text[0]["text"]) % 4]
        return FREE_TEXT.format(text=option_text(payload, letter))

    async with running(FakeConfig(answer_fn=answer, judge_reply=style)) as server:
        cfg = config(data, tmp_path / "out", server.url, **judged(server.url))
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        judge_calls = [e for e in server.ledger.entries if MAPPER_MARKER in e.user_text]
        rerun = await run_eval(
            config(data, tmp_path / "again", server.url, **judged(server.url)),
            show_progress=False,
        )
        judge_again = sum(MAPPER_MARKER in e.user_text for e in server.ledger.entries)
    assert result.exit_code == ExitCode.OK
    rows = results(tmp_path / "out")["independent_qa"]
    assert len(judge_calls) == len(rows)  # every reply was unreadable: one call per row
    for call in judge_calls:
        assert call.system == JUDGE_SYSTEM
        assert call.content_types == ("text",)  # no image part: text-only judges reject it
        assert "temperature" not in call.params  # the official mapper leaves it unset
        assert call.model == "judge-model"
    for row in rows:
        assert row["_meta"]["answer_source"] == source
        if source == "judge":
            # The letter whose option text the reply named (the fake judge maps faithfully).
            named = option_letters(row["options"])[row["model_response"]]
            assert named in row["raw_response"]
        else:
            assert row["model_response"] == row["raw_response"].strip()
    section = result.summary["files"]["independent_qa"]
    assert section["answers"][source] == len(rows)
    assert result.summary["run"]["judge"]["model_id"] == "judge-model"
    used = result.summary["usage"]["judge"]
    assert used["models_returned"] == ["judge-model"]
    assert used["api_calls"] == len(judge_calls)
    if source == "judge":
        assert section["correct"] == sum(
            r["model_response"] == r["answer"].split(".")[0] for r in rows
        )
    # A rerun into a new folder pays neither the model nor the judge again.
    assert judge_again == len(judge_calls)
    assert rerun.summary["usage"]["api_calls"] == 0
    assert rerun.summary["usage"]["judge"]["api_calls"] == 0
    assert rerun.summary["usage"]["judge"]["cache_hits"] == len(judge_calls)


async def test_judge_error_fails_the_row_and_a_rerun_only_asks_the_judge(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=12, split={"visual_evidence_qa": 1.0})
    faults = {MAPPER_MARKER: "500"}
    fake = FakeConfig(answer_fn=lambda _p: "It is hard to say.", content_faults=faults)
    async with running(fake) as server:
        cfg = config(data, tmp_path / "out", server.url, max_retries=0, **judged(server.url))
        first = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        model_calls = server.ledger.count() - server.ledger.count("500")
        server.config.content_faults = {}
        second = await run_eval(cfg, show_progress=False, sleep=no_sleep)
        new = server.ledger.entries[model_calls + server.ledger.count("500") :]
    assert first.exit_code == ExitCode.FAILED_ROWS
    rows = results(tmp_path / "out")["visual_evidence_qa"]
    assert second.exit_code == ExitCode.OK
    assert all(r["error"] is None for r in rows)
    # The judge was asked on the rerun (it could not map "It is hard to say." either).
    assert all(r["_meta"]["judge_model"] == "judge-model" for r in rows)
    assert all(r["_meta"]["answer_source"] == "none" for r in rows)
    assert new
    assert all(MAPPER_MARKER in e.user_text for e in new)
    assert first.summary["usage"]["failed_rows"] == len(rows)


async def test_wrong_judge_key_stops_the_run(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=20, split={"visual_evidence_qa": 1.0})
    fake = FakeConfig(answer_fn=lambda _p: "Hard to say.", expected_key="model-key")
    async with running(fake) as server:
        flags = judged(server.url, env={"DRVD_API_KEY": "model-key", "DRVD_JUDGE_API_KEY": "bad"})
        cfg = config(data, tmp_path / "out", server.url, **flags)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == ExitCode.FATAL
    assert result.fatal is not None
    assert result.fatal.startswith("judge: ")
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"bad" not in written.replace(b"bad_", b"")  # the judge key is in no file


async def test_deepseek_judge_turns_thinking_off(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=6, split={"visual_evidence_qa": 1.0})
    async with running(FakeConfig(answer_fn=lambda _p: "Unclear.")) as server:
        flags = {"judge_base_url": server.url, "no_bertscore": True}
        env = {"env": {"DEEPSEEK_API_KEY": "ds-key"}}  # no --judge: deepseek by default
        cfg = config(data, tmp_path / "out", server.url, **flags, **env)
        assert cfg.judge is not None
        assert cfg.judge.alias == "deepseek"
        await run_eval(cfg, show_progress=False, sleep=no_sleep)
        calls = [e for e in server.ledger.entries if MAPPER_MARKER in e.user_text]
    assert calls
    assert all(e.params["thinking"] == {"type": "disabled"} for e in calls)
    assert all(e.model == "deepseek-flash" for e in calls)


async def test_report_keywords_are_fetched_once_per_unique_text_across_runs(
    tmp_path: Path,
) -> None:
    data = dataset(tmp_path, total=16, split={"report_generation": 1.0})
    lines = (data / "report_generation.jsonl").read_bytes().splitlines()
    refs = {orjson.loads(x)["answer"] for x in lines}

    def second_model(payload: dict) -> str:
        if payload["model"] == "judge-model":
            return default_answer(payload, server.config)
        return f"Second model report: {payload['messages'][-1]['content'][0]['text'][-40:]}"

    async with running(FakeConfig()) as server:
        first = config(data, tmp_path / "one", server.url, **judged(server.url))
        await run_eval(first, show_progress=False)
        # A second model with other reports: only its new predictions are sent for keywords.
        server.config.answer_fn = second_model
        second = config(data, tmp_path / "two", server.url, **judged(server.url))
        result = await run_eval(second, show_progress=False)
        prompts = [e.user_text for e in server.ledger.entries if KEYWORD_MARKER in e.user_text]
    rows = (
        results(tmp_path / "one")["report_generation"]
        + results(tmp_path / "two")["report_generation"]
    )
    texts = refs | {r["model_response"] for r in rows}
    assert sorted(prompts) == sorted(keyword_prompt(t) for t in texts)  # each text once
    assert len(prompts) == len(set(prompts))
    for row in rows:
        kw = row["keywords"]
        assert kw["variant"] == "repo"
        assert kw["judge_model"] == "judge-model"
        assert kw["bert_f1"] is None
    section = result.summary["files"]["report_generation"]
    two = results(tmp_path / "two")["report_generation"]
    expected = sum(
        sentence_bleu(r["keywords"]["reference"], r["keywords"]["prediction"]) for r in two
    ) / len(two)
    assert section["keywords"] == "extracted"
    assert section["bleu"] == pytest.approx(expected, rel=1e-12)
    assert section["bert_f1"] is None
    assert "BERTScore" in section["note"]


async def test_bertscore_per_row_on_the_packaged_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    data = dataset(tmp_path, total=6, split={"report_generation": 1.0})
    async with running(FakeConfig()) as server:
        flags = judged(server.url, no_bertscore=False, bert_model=str(packaged_minilm()))
        cfg = config(data, tmp_path / "out", server.url, bert_layers=6, **flags)
        result = await run_eval(cfg, show_progress=False)
    assert result.exit_code == ExitCode.OK
    rows = results(tmp_path / "out")["report_generation"]
    f1 = [r["keywords"]["bert_f1"] for r in rows]
    kws = [r["keywords"] for r in rows]
    assert any(k["reference"] != k["prediction"] for k in kws)
    # Each row's F1 is its own pair's, as bert-score computes it for the two keyword lists.
    expected = bert_f1(
        [k["reference"] for k in kws],
        [k["prediction"] for k in kws],
        model_type=str(packaged_minilm()),
        num_layers=6,
    )
    assert f1 == pytest.approx(expected, abs=1e-5)
    section = result.summary["files"]["report_generation"]
    assert section["bert_f1"] == pytest.approx(sum(f1) / len(f1), rel=1e-9)
    assert section["note"] is None
    assert result.summary["run"]["judge"]["bertscore_model"] == str(packaged_minilm())


async def test_unloadable_bert_model_is_a_config_error_before_any_call(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=4, split={"report_generation": 1.0})
    async with running(FakeConfig()) as server:
        flags = judged(server.url, no_bertscore=False, bert_model=str(tmp_path / "nothing"))
        cfg = config(data, tmp_path / "out", server.url, bert_layers=6, **flags)
        with pytest.raises(ConfigError, match=r"could not be loaded.*--no-bertscore"):
            await run_eval(cfg, show_progress=False)
        assert server.ledger.count() == 0


async def test_a_judge_added_on_rerun_grades_finished_rows_without_re_asking_the_model(
    tmp_path: Path,
) -> None:
    data = dataset(tmp_path, total=24, split={"visual_evidence_qa": 0.5, "report_generation": 0.5})

    def answer(payload: dict) -> str:
        if isinstance(payload["messages"][-1]["content"], str):  # the judge
            return default_answer(payload, server.config)
        if "report" in payload["messages"][-1]["content"][0]["text"]:
            return default_answer(payload, server.config)
        return FREE_TEXT.format(text=option_text(payload, "B"))

    async with running(FakeConfig(answer_fn=answer)) as server:
        await run_eval(config(data, tmp_path / "out", server.url), show_progress=False)
        model_calls = server.ledger.count()
        cfg = config(data, tmp_path / "out", server.url, **judged(server.url))
        result = await run_eval(cfg, show_progress=False)
        new = server.ledger.entries[model_calls:]
    assert result.exit_code == ExitCode.OK
    assert new
    assert all(e.content_types == ("text",) for e in new)
    rows = results(tmp_path / "out")
    assert all(r["_meta"]["answer_source"] == "judge" for r in rows["visual_evidence_qa"])
    assert all(r["model_response"] == "B" for r in rows["visual_evidence_qa"])
    assert all(r["keywords"]["reference"] for r in rows["report_generation"])
    assert result.summary["files"]["report_generation"]["keywords"] == "extracted"
