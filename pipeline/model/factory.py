"""The responders a run uses: the offline baseline, or an API model behind its own connection
pool, replicas, cache and cost budget; and the judge.

    make_responder(cfg) ──▶ RandomModel | APIModel | BatchModel(APIModel)
    make_judge(cfg) ──▶ Judge(APIModel)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from pipeline.config import EvalConfig
from pipeline.data.images import ImageCache
from pipeline.errors import ConfigError
from pipeline.model.batch.api import BatchClient
from pipeline.model.batch.responder import BatchModel
from pipeline.model.budget import Budget
from pipeline.model.cache import ResponseCache
from pipeline.model.client import make_session
from pipeline.model.pacing import Clock
from pipeline.model.replicas import make_replicas
from pipeline.model.responder import APIModel, RandomModel, Responder
from pipeline.providers.registry import first_url, thinking_body
from pipeline.scoring.judge import Judge
from pipeline.scoring.metrics import BertScore


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


async def batch_model(
    cfg: EvalConfig,
    stack: AsyncExitStack,
    online: APIModel,
    *,
    budget: Budget | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> BatchModel:
    """Return the batch responder of `cfg` (closed with `stack`); it collects pending batches.

    `online` gives it the cache key, the cache, the image encoder and, with `--batch-retry
    online`, the way to send failed lines online.
    """
    session = await stack.enter_async_context(make_session(4))
    client = BatchClient(
        session,
        base_url=first_url(cfg.spec.base_url),
        api_key=cfg.api_key or "",
        url_auth=cfg.url_auth[0] if cfg.url_auth else None,
        provider=cfg.spec.provider,
        timeout=cfg.timeout,
        max_attempts=cfg.max_retries + 1,
        sleep=sleep,
    )
    model = BatchModel(cfg, client, online, budget=budget)
    model.start()
    stack.push_async_callback(model.close)
    return model
