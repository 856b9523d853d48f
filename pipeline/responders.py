"""The responders a run uses: the offline baseline, or an API model behind its own connection
pool, replicas, cache and cost budget; and the judge.

    make_responder(cfg) ──▶ RandomModel | APIModel | BatchModel(APIModel)
    make_judge(cfg) ──▶ Judge(APIModel)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from pipeline.batcher import batch_model
from pipeline.cache import ResponseCache
from pipeline.client import make_session
from pipeline.config import EvalConfig
from pipeline.errors import ConfigError
from pipeline.images import ImageCache
from pipeline.judge import Judge
from pipeline.metrics import BertScore
from pipeline.models import APIModel, RandomModel, Responder
from pipeline.prices import Budget
from pipeline.ratelimit import Clock
from pipeline.registry import thinking_body
from pipeline.replicas import make_replicas


async def make_responder(
    cfg: EvalConfig,
    stack: AsyncExitStack,
    cache: ResponseCache | None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Clock | None = None,
    budget: Budget | None = None,
) -> Responder:
    """Return the model `cfg` evaluates: offline, or behind its own connection pool and pace."""
    if not cfg.spec.remote:
        if cfg.batch:
            msg = f"--batch needs an API model; {cfg.spec.alias!r} answers offline"
            raise ConfigError(msg)
        return RandomModel(seed=cfg.seed)
    model = await _api_model(cfg, stack, sleep, clock, cache, budget)
    return await batch_model(cfg, stack, model, budget=budget, sleep=sleep) if cfg.batch else model


async def make_judge(
    cfg: EvalConfig,
    stack: AsyncExitStack,
    cache: ResponseCache | None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Clock | None = None,
    budget: Budget | None = None,
) -> Judge | None:
    """Return the judge `cfg` names (one may serve several runs), or None."""
    if (judge_cfg := cfg.judge_config()) is None:
        return None
    model = await _api_model(judge_cfg, stack, sleep, clock, cache, budget)
    bert = BertScore(cfg.bert_model, cfg.bert_layers) if cfg.bert_model else None
    if bert is not None:
        stack.callback(bert.close)
    return Judge(model, variant=cfg.keyword_prompt, bert=bert)


async def _api_model(
    cfg: EvalConfig,
    stack: AsyncExitStack,
    sleep: Callable[[float], Awaitable[None]] | None,
    clock: Clock | None,
    cache: ResponseCache | None,
    budget: Budget | None = None,
) -> APIModel:
    """Return `cfg.spec` behind its own connection pool (closed with `stack`), cache and replicas."""
    extra_body = thinking_body(cfg.spec)  # in the cache key: another setting, another answer
    session = await stack.enter_async_context(make_session(cfg.concurrency))
    return APIModel(
        cfg,
        make_replicas(cfg, session, extra_body, clock),
        cache=cache,
        images=ImageCache(cfg.cache_dir),
        sleep=sleep,
        clock=clock,
        extra_body=extra_body,
        budget=budget,
    )
