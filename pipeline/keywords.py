"""Report-generation metric pieces (FACTS §3.3): keyword extraction, keyword BLEU, BERTScore F1.

Both the reference and the prediction are reduced to a comma-separated keyword list by a judge
model, with one of the two official prompts ("repo", the default, or the shorter "pypi" one), in
a single user message at temperature 0 (KEYWORD_TEMPERATURE). Keywords are cached on disk by
(judge, variant, prompt), so each reference is paid for once across every evaluated model.

BLEU and BERTScore are per item (with idf off and no baseline rescaling, a pair's BERTScore does
not depend on the rest of the batch), so callers can store per-row values and average per
modality to get the official means. BERTScore needs the optional `bert-score` package.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import orjson

from pipeline.cache import write_atomic
from pipeline.errors import APIError, ConfigError, FatalAPIError
from pipeline.scoring import sentence_bleu

Variant = Literal["repo", "pypi"]
Complete = Callable[[str], Awaitable[str]]

KEYWORDS_VERSION = "drvd-keywords-1"
DEFAULT_VARIANT: Variant = "repo"
KEYWORD_TEMPERATURE = 0.0  # both official scripts send temperature=0, and no system message
DEFAULT_CONCURRENCY = 16
BERT_MODEL = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"
BERT_LAYERS = 12

# report_generation_metric.py (repo), exact.
REPO_PROMPT = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both **normal "
    "findings** (e.g., 'no lung opacity', 'normal heart size') and **abnormal findings** (e.g., "
    "'fracture', 'tumor mass'). Exclude any details that cannot be inferred from the image "
    "itself (e.g., patient history, lab values).\n\n"
    "{text}\n\n"
    "Return a concise, comma-separated list of visually identifiable clinical features. Do not "
    "include any irrelevant words or phrases, do not include explanations."
)
# drvd_bench/report_metric.py (PyPI 0.2.2), exact.
PYPI_PROMPT = (
    "Given the following description of a medical image, extract only clinically relevant "
    "information that can be visually determined from the image. This includes both normal "
    "findings and abnormal findings.\n\n"
    "{text}\n\n"
    "Return a concise, comma-separated list of visually identifiable features."
)
PROMPTS: dict[str, str] = {"repo": REPO_PROMPT, "pypi": PYPI_PROMPT}


def _template(variant: str) -> str:
    try:
        return PROMPTS[variant]
    except KeyError:
        msg = f"keyword prompt {variant!r}: choose from {', '.join(PROMPTS)}"
        raise ConfigError(msg) from None


def keyword_prompt(text: str, variant: Variant = DEFAULT_VARIANT) -> str:
    """Return the official keyword-extraction prompt for `text`."""
    # str.format does not re-read the inserted text, so braces in a report are safe.
    return _template(variant).format(text=text)


class KeywordCache:
    """Extracted keywords, one JSON file per (judge, variant, prompt) under `root/keywords/`."""

    def __init__(self, root: Path, *, judge: str = "") -> None:
        self.dir = Path(root) / "keywords"
        # The judge's model id: another judge's keywords are never reused.
        self.judge = judge

    def key(self, variant: Variant, text: str) -> str:
        """Return the entry key: a versioned blake2b of the judge, the variant and the prompt."""
        canonical = {
            "judge": self.judge,
            "variant": variant,
            "prompt": keyword_prompt(text, variant),
        }
        digest = hashlib.blake2b(
            orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=20
        )
        return f"{KEYWORDS_VERSION}-{digest.hexdigest()}"

    def _path(self, key: str) -> Path:
        return self.dir / key[-2:] / f"{key}.json"

    def get(self, variant: Variant, text: str) -> str | None:
        """Return the cached keywords, or None on a miss or an unreadable entry."""
        try:
            data = orjson.loads(self._path(self.key(variant, text)).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        keywords = data.get("keywords") if isinstance(data, dict) else None
        return keywords if isinstance(keywords, str) else None

    def put(self, variant: Variant, text: str, keywords: str) -> None:
        """Store keywords durably (a temporary file, then a rename)."""
        key = self.key(variant, text)
        entry = {"key": key, "judge": self.judge, "variant": variant, "keywords": keywords}
        write_atomic(self._path(key), orjson.dumps(entry))


async def keywords_for(
    text: str, *, complete: Complete, cache: KeywordCache | None, variant: Variant
) -> str:
    """Return the keywords of one text, from the cache or one judge call (errors propagate)."""
    if cache is not None and (hit := cache.get(variant, text)) is not None:
        return hit
    keywords = (await complete(keyword_prompt(text, variant))).strip()  # as official
    if cache is not None:
        cache.put(variant, text, keywords)
    return keywords


async def extract_keywords(
    texts: Iterable[str],
    *,
    complete: Complete,
    cache: KeywordCache | None,
    variant: Variant = DEFAULT_VARIANT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, str]:
    """Return keywords for each unique text, calling the judge once per uncached text.

    A text whose call fails (an `APIError` after the caller's retries) is left out of the
    result and not cached, so the official rule applies (its row is dropped) and a later run
    tries it again. A `FatalAPIError` stops the extraction and is raised.

    Args:
        texts: reference and prediction texts; duplicates cost one call.
        complete: sends one prompt to the judge and returns its reply text.
        cache: where keywords are kept across runs (None: no disk cache).
        variant: "repo" (default) or "pypi" prompt.
        concurrency: judge calls in flight at most.
    """
    unique = list(dict.fromkeys(texts))
    _template(variant)  # reject an unknown variant before any call
    found: dict[str, str] = {}
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(text: str) -> None:
        async with slots:
            try:
                found[text] = await keywords_for(
                    text, complete=complete, cache=cache, variant=variant
                )
            except FatalAPIError:
                raise
            except APIError:
                return

    try:
        async with asyncio.TaskGroup() as group:
            for text in unique:
                group.create_task(one(text))
    except BaseExceptionGroup as errors:
        # Surface the first real error (e.g. FatalAPIError) rather than a group.
        raise errors.exceptions[0] from None
    return {text: found[text] for text in unique if text in found}


def bleu_keywords(ref_kw: str, pred_kw: str) -> float:
    """Return the official keyword BLEU: sentence-BLEU as nltk, method4, whitespace tokens."""
    return sentence_bleu(ref_kw, pred_kw)


def bert_f1(
    refs: list[str],
    preds: list[str],
    *,
    model_type: str = BERT_MODEL,
    num_layers: int | None = BERT_LAYERS,
    device: str = "cpu",
    batch_size: int = 64,
) -> list[float]:
    """Return BERTScore F1 per (reference, prediction) pair, as the official call computes it.

    Args:
        refs: reference keyword lists.
        preds: predicted keyword lists, same length.
        model_type: a Hugging Face model name or a local model directory.
        num_layers: which layer's embeddings to use (12 for PubMedBERT, as official); None:
            bert-score's own table for known model names.
        device: torch device; the official script uses the CPU.
        batch_size: pairs per forward pass (bert-score's default is 64).
    """
    if len(refs) != len(preds):
        msg = f"bert_f1: {len(refs)} references but {len(preds)} predictions"
        raise ValueError(msg)
    if not refs:
        return []
    scorer = _scorer(model_type, num_layers, device)
    _, _, f1 = scorer.score(preds, refs, batch_size=batch_size)
    return [float(x) for x in f1.tolist()]


@cache
def _scorer(model_type: str, num_layers: int | None, device: str) -> Any:
    # Imported lazily: bert-score pulls torch and transformers, an optional extra.
    try:
        from bert_score import BERTScorer  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as exc:
        msg = "BERTScore needs the report extra: pip install '.[report]' (bert-score, torch)"
        raise ConfigError(msg) from exc
    # Loaded once per process; idf off and no rescaling, as in the official call.
    try:
        return BERTScorer(
            model_type=model_type,
            num_layers=num_layers,
            lang="en",
            idf=False,
            rescale_with_baseline=False,
            device=device,
        )
    except Exception as exc:  # hub unreachable, unknown layer count, not a model folder...
        msg = (
            f"BERTScore model {model_type!r} could not be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}); pass --bert-model NAME_OR_DIR (and --bert-layers N), "
            "or --no-bertscore"
        )
        raise ConfigError(msg) from exc


class BertScore:
    """BERTScore F1 of one keyword pair at a time, on one worker thread (torch uses the cores)."""

    def __init__(self, model: str, layers: int | None) -> None:
        self.model = model
        self.layers = layers
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bertscore")

    def load(self) -> None:
        """Load the model now (slow; raises `ConfigError` when it cannot be loaded)."""
        _scorer(self.model, self.layers, "cpu")

    async def f1(self, reference: str, prediction: str) -> float:
        """Return the pair's F1, computed off the event loop."""
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(
            self._pool,
            partial(
                bert_f1, [reference], [prediction], model_type=self.model, num_layers=self.layers
            ),
        )
        return scores[0]

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
