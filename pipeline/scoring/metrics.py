"""Report-generation metrics (PROTOCOL §3.3): keyword BLEU and BERTScore F1, one pair at a time.

Both are per item: sentence-BLEU obviously, and BERTScore because with idf off and no baseline
rescaling a pair's F1 does not depend on the rest of the batch. So each row stores its own
values and a modality's official mean is the mean of its rows. BERTScore needs the optional
`bert-score` package (the `report` extra).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any

from pipeline.errors import ConfigError
from pipeline.knobs import BERT_LAYERS, BERT_MODEL


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
        if not reference or not prediction:
            return 0.0  # what bert-score gives an empty side (with a warning)
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
