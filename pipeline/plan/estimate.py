"""`drvd plan`: what a run would cost and take, before paying. No API call; nothing written.

Per file, over the rows a run would take (`--files`, `--limit`; lines that are no rows apart):

    answered     rows the run folder finished (the latest line of a key has no error), read
                 as they are: none of the repairs `eval` makes (a torn tail stays)
    cached       rows whose request is in the response cache (`models.response_key`), or that
                 repeat an earlier row's request (paid once)
    to send      the rest: prompt tokens by pipeline/providers/tokens.py (text, and the image measured
                 from its header as it will be sent); completion tokens at the run folder's
                 measured mean per call of that file, else min(max_tokens, a typical reply)
    judge        report rows: keywords of the prediction, and of the reference unless cached;
                 MCQ rows: the mapper for the share of unreadable replies (the run's, else 5%)

Cost is tokens times the model's and the judge's price (the batch price with `--batch`); time is
the calls to send over min(rpm, tpm over tokens per call, concurrency / latency), the latency
assumed (`BASE_LATENCY` + reply tokens at `TOKENS_PER_SECOND`), or "within 24 h" with `--batch`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig
from pipeline.data.dataset import ImageFolder, dataset_files, samples_within
from pipeline.data.images import file_digest
from pipeline.errors import DataError
from pipeline.model.cache import ResponseCache
from pipeline.model.epochs import epoch_configs, temperature_warning
from pipeline.model.responder import response_key
from pipeline.plan.power import Detectable, detectable
from pipeline.providers.prices import Price
from pipeline.providers.registry import thinking_body
from pipeline.providers.tokens import image_rule, prompt_tokens, text_tokens
from pipeline.records import ChatRequest, Kind, ResultRow, Sample
from pipeline.results import read_rows
from pipeline.scoring.judge import KEYWORD_TEMPERATURE, keyword_prompt, mapper_prompt
from pipeline.scoring.official import FILE_FAMILY

# Reply tokens per call when the run has measured none: a letter, a chain, a paragraph.
TYPICAL_REPLY: dict[Kind, int] = {"evidence": 5, "independent": 3, "joint": 12, "report": 300}
THINKING_REPLY = 1000  # added for a model that thinks (thinking on, or a raised max_tokens)
DEFAULT_UNREADABLE = 0.05  # share of MCQ replies the extractor cannot read (judge mapper call)
KEYWORD_REPLY = 40  # tokens of a keyword list
MAPPER_REPLY = 2  # a letter
BASE_LATENCY = 2.0  # seconds per call before its reply tokens...
TOKENS_PER_SECOND = 50.0  # ...which arrive at this speed
BATCH_SECONDS = 24 * 3600  # the Batch API's completion window
QUICK_ROWS = 200  # rows per file whose tokens the quick estimate measures


@dataclass(frozen=True, slots=True)
class FileEstimate:
    """One dataset file: its rows, what is done, and what the rest would take."""

    stem: str
    rows: int = 0  # rows within --limit (lines that are no rows not included)
    invalid: int = 0  # lines that are no row (reported, never sent)
    unsendable: int = 0  # rows whose image is missing or unreadable: they fail unasked
    answered: int = 0
    in_cache: int = 0
    send: int = 0  # calls to pay
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reply: float = 0.0  # completion tokens per call
    measured: bool = False  # `reply` is the run folder's mean, not the typical length
    judge_calls: float = 0.0
    judge_prompt_tokens: float = 0.0
    judge_completion_tokens: float = 0.0
    seconds: float = 0.0
    images: int = 0  # distinct images among the rows
    per_image: float = 0.0  # rows per image weighted by size, Σm²/Σm

    def to_json(self) -> dict[str, Any]:
        """Return the file's numbers for `--json`."""
        return {
            "rows": self.rows,
            "answered": self.answered,
            "in_cache": self.in_cache,
            "to_send": self.send,
            "invalid": self.invalid,
            "unsendable": self.unsendable,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reply_tokens": round(self.reply, 1),
            "reply_from": "run" if self.measured else "typical",
            "judge_calls": round(self.judge_calls),
            "seconds": round(self.seconds),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The estimate for one model over the dataset."""

    cfg: EvalConfig = field(repr=False)
    files: tuple[FileEstimate, ...]
    probed: bool  # the response cache was looked into
    unreadable: float  # share of MCQ replies assumed to need the judge's mapper
    unreadable_measured: bool
    quick: bool = False  # tokens from a sample of rows, cache not probed
    notes: tuple[str, ...] = ()
    detectable: tuple[Detectable, ...] = ()  # per accuracy file: the smallest difference seen

    def total(self, name: str) -> int:
        """Return the sum of one FileEstimate field over the files, rounded."""
        return round(sum(float(getattr(f, name)) for f in self.files))

    @property
    def cached(self) -> int:
        """Rows that cost nothing: answered in the run folder, or in the response cache."""
        return self.total("answered") + self.total("in_cache")

    @property
    def judge_price(self) -> Price | None:
        """The judge's price (None: no judge, or none on record)."""
        judge = self.cfg.judge_config()
        return judge.price if judge is not None else None

    @property
    def model_cost(self) -> float | None:
        """USD the model's calls would cost (None: no price)."""
        if not self.cfg.spec.remote:
            return 0.0
        price = self.cfg.price
        if price is None:
            return None
        prompt, completion = self.total("prompt_tokens"), self.total("completion_tokens")
        return price.cost(prompt, completion, batch=self.cfg.batch)

    @property
    def judge_cost(self) -> float | None:
        """USD the judge's calls would cost (0 without a judge; None: no price)."""
        if self.cfg.judge is None or self.total("judge_calls") == 0:
            return 0.0
        price = self.judge_price
        if price is None:
            return None
        return price.cost(self.total("judge_prompt_tokens"), self.total("judge_completion_tokens"))

    @property
    def cost(self) -> float | None:
        """USD in all (None when a price is missing)."""
        model, judge = self.model_cost, self.judge_cost
        return None if model is None or judge is None else model + judge

    @property
    def seconds(self) -> float:
        """The run's time at the model's limits (the batch window with `--batch`)."""
        if self.cfg.batch and self.total("send"):
            return float(BATCH_SECONDS)
        return sum(f.seconds for f in self.files)


def thinks(cfg: EvalConfig) -> bool:
    """Say whether the model is assumed to think before answering."""
    spec = cfg.spec
    return bool(spec.thinking) or (spec.thinking is None and spec.max_tokens is not None)


def typical_reply(cfg: EvalConfig, request: ChatRequest, kind: Kind) -> int:
    """Return a call's expected reply tokens: a typical reply (and thoughts), within max_tokens."""
    tokens = TYPICAL_REPLY[kind] + (THINKING_REPLY if thinks(cfg) else 0)
    return tokens if request.max_tokens is None else min(tokens, request.max_tokens)


@dataclass(frozen=True, slots=True)
class _Done:
    """What the run folder says of one file: finished keys, mean reply, readable share."""

    keys: frozenset[str] = frozenset()
    reply: float | None = None  # mean completion tokens of the calls it paid for
    mcq: int = 0  # answered MCQ rows
    unreadable: int = 0  # ...whose reply the extractor could not read


def _run_folder(path: Path) -> _Done:
    """Read one results file as it is (no repair, no write); damaged lines are skipped."""
    if not path.is_file():
        return _Done()
    latest: dict[str, ResultRow] = {}
    for row in read_rows(path, []):
        if row.key is not None:
            latest[row.key] = row
    done = [row for row in latest.values() if row.error is None]
    paid = [
        r.usage.completion_tokens for r in done if r.usage.api_calls and r.usage.completion_tokens
    ]
    mcq = [r for r in done if r.kind in ("evidence", "independent")]
    unread = sum(r.answer_source in ("judge", "none") and bool(r.raw_response) for r in mcq)
    return _Done(
        keys=frozenset(str(r.key) for r in done),
        reply=sum(paid) / len(paid) if paid else None,
        mcq=len(mcq),
        unreadable=unread,
    )


def _samples(
    cfg: EvalConfig, images: ImageFolder, stem: str, invalid: list[int], *, check: bool
) -> list[Sample]:
    """Return the rows among the first `--limit` lines, as `eval` takes them."""

    def on_error(_error: DataError) -> None:
        invalid[0] += 1

    samples = samples_within(
        images.root, stem, cfg.limit, on_error, check_images=check, images=images
    )
    return list(samples)


class _Probe:
    """Looks up requests in the response cache (read only) and spots repeated requests."""

    def __init__(self, cfg: EvalConfig, enabled: bool) -> None:
        self.cfg = cfg
        self.cache = ResponseCache(cfg.cache_dir) if enabled and cfg.use_cache else None
        self.extra = thinking_body(cfg.spec)
        self.judge = cfg.judge_config()
        self.judge_extra = thinking_body(self.judge.spec) if self.judge else {}
        self.seen: set[str] = set()

    def free(self, request: ChatRequest, image: Path) -> bool | None:
        """Say whether a row's answer costs nothing; None when its image cannot be read."""
        if self.cache is None:
            return False
        try:
            key = response_key(self.cfg, self.extra, request, file_digest(image))
        except OSError:
            return None
        repeat = key in self.seen
        self.seen.add(key)
        return repeat or self.cache.get(key) is not None

    def keywords_cached(self, request: ChatRequest) -> bool:
        """Say whether the judge's keywords of a reference are in the cache (or asked already)."""
        if self.cache is None or self.judge is None:
            return False
        key = response_key(self.judge, self.judge_extra, request, None)
        repeat = key in self.seen
        self.seen.add(key)
        return repeat or self.cache.get(key) is not None


def estimate(cfg: EvalConfig, *, quick: bool = False) -> Plan:
    """Return what running `cfg` would take.

    `quick` (the line `eval` prints) looks neither into the response cache nor at every image:
    tokens come from a random sample of about `QUICK_ROWS` rows per file, scaled up.
    """
    root, stems, notes = dataset_files(cfg.data, cfg.files)
    done = {stem: _run_folder(cfg.run_dir / f"{stem}.jsonl") for stem in stems}
    mcq = sum(d.mcq for d in done.values())
    share = sum(d.unreadable for d in done.values()) / mcq if mcq else DEFAULT_UNREADABLE
    probe = _Probe(cfg, not quick)
    files = [_file(cfg, root, stem, done[stem], probe, share, quick) for stem in stems]
    accuracies = {
        f.stem: (f.rows, f.images, f.per_image)
        for f in files
        if FILE_FAMILY.get(f.stem) in ("mcq", "joint") and f.rows
    }
    found = detectable(cfg.run_dir, accuracies, samples=cfg.samples)
    for extra in epoch_configs(cfg)[1:]:  # --samples: each extra sample, from its own folder
        probe.cfg = extra
        for i, stem in enumerate(stems):
            more = _run_folder(extra.run_dir / f"{stem}.jsonl")
            files[i] = _add(files[i], _file(extra, root, stem, more, probe, share, quick))
    if note := temperature_warning(cfg, stems):
        notes.append(note.removeprefix("warning: "))
    probed = probe.cache is not None
    return Plan(cfg, tuple(files), probed, share, bool(mcq), quick, tuple(notes), found)


def _add(first: FileEstimate, more: FileEstimate) -> FileEstimate:
    """Return one file's estimate over two samples: rows count twice, lines that are no rows once."""
    summed = (
        "rows", "unsendable", "answered", "in_cache", "send", "prompt_tokens", "completion_tokens",
        "judge_calls", "judge_prompt_tokens", "judge_completion_tokens", "seconds",
    )  # fmt: skip
    return replace(first, **{name: getattr(first, name) + getattr(more, name) for name in summed})


def _file(
    cfg: EvalConfig, root: Path, stem: str, done: _Done, probe: _Probe, share: float, quick: bool
) -> FileEstimate:
    invalid = [0]
    images = ImageFolder(root)  # one image layout for the file
    samples = _samples(cfg, images, stem, invalid, check=not quick)
    stride = math.ceil(len(samples) / QUICK_ROWS) if quick else 1
    rule = image_rule(cfg.spec.model, cfg.spec.provider)
    remote = cfg.spec.remote
    answered = in_cache = unsendable = send = sized = 0
    sums = [0.0] * 5  # of the rows sized: prompt, reply, judge calls, prompt, completion
    for sample in samples:
        if sample.key in done.keys:
            answered += 1
            continue
        if sample.problem is not None:
            unsendable += 1
            continue
        if int(sample.key[:8], 16) % stride:  # the key is a hash: a random sample
            send += 1  # not sized: counted, and its tokens scaled from the rows sized
            continue
        if quick:  # the image unchecked so far
            if (image := _resolve(images, sample.row["image_paths"])) is None:
                unsendable += 1
                continue
            sample = replace(sample, image=image)
        request = cfg.request(sample)
        free = probe.free(request, sample.image) if remote else False
        if free is None:
            unsendable += 1
            continue
        if free:
            in_cache += 1
            continue
        send, sized = send + 1, sized + 1
        expected = typical_reply(cfg, request, sample.kind)
        row = (
            float(prompt_tokens(request, rule) if remote else 0),
            float(expected),
            *_judge(cfg, probe, sample, done.reply or expected, share),
        )
        sums = [total + value for total, value in zip(sums, row, strict=True)]
    scale = send / sized if sized else 0.0
    prompt, typical, calls, judge_prompt, judge_completion = (x * scale for x in sums)
    reply = done.reply if done.reply is not None else (typical / send if send else 0.0)
    sizes = Counter(str(s.row.get("image_paths")) for s in samples).values()
    return FileEstimate(
        stem=stem,
        rows=len(samples),
        invalid=invalid[0],
        unsendable=unsendable,
        answered=answered,
        in_cache=in_cache,
        send=send,
        prompt_tokens=round(prompt),
        completion_tokens=round(reply * send) if remote else 0,
        reply=reply,
        measured=done.reply is not None,
        judge_calls=calls,
        judge_prompt_tokens=judge_prompt,
        judge_completion_tokens=judge_completion,
        seconds=send_seconds(cfg, send, round(prompt), reply) if remote else 0.0,
        images=len(sizes),
        per_image=sum(m * m for m in sizes) / len(samples) if samples else 0.0,
    )


def _resolve(images: ImageFolder, rel: str) -> Path | None:
    try:
        return images.resolve(rel)
    except OSError:
        return None


def _judge(
    cfg: EvalConfig, probe: _Probe, sample: Sample, reply: float, share: float
) -> tuple[float, float, float]:
    """Return the judge's expected (calls, prompt tokens, completion tokens) for one row."""
    if cfg.judge is None:
        return 0.0, 0.0, 0.0
    row = sample.row
    if sample.kind == "report":
        calls, prompt = 1.0, text_tokens(keyword_prompt("", cfg.keyword_prompt)) + reply
        reference = row.get("answer")
        if isinstance(reference, str) and reference:
            text = keyword_prompt(reference, cfg.keyword_prompt)
            if not probe.keywords_cached(ChatRequest(None, text, None, KEYWORD_TEMPERATURE)):
                calls, prompt = calls + 1, prompt + text_tokens(text)
        return calls, prompt, calls * KEYWORD_REPLY
    if sample.kind in ("evidence", "independent"):
        options = [o for o in row.get("options") or [] if isinstance(o, str)]
        text = mapper_prompt(str(row.get("question", "")), options, "")
        return share, share * (text_tokens(text) + reply), share * MAPPER_REPLY
    return 0.0, 0.0, 0.0


def send_seconds(cfg: EvalConfig, calls: int, prompt: int, reply: float) -> float:
    """Return the seconds `calls` take at the model's limits and the assumed latency."""
    if not calls:
        return 0.0
    rate = cfg.concurrency / (BASE_LATENCY + reply / TOKENS_PER_SECOND)  # calls per second
    if cfg.rpm:
        rate = min(rate, cfg.rpm / 60)
    if cfg.tpm:
        rate = min(rate, cfg.tpm / 60 / (prompt / calls + reply))
    return calls / rate
