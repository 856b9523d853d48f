"""The planted bugs of the mutation check (`bench/mutants.py`): one realistic bug each.

`old` must occur exactly once in `path`: after a refactor the check names the mutant that went
stale instead of silently passing. `tests` are the test files that should catch it, fastest and
most specific first (the run stops at the first failure); empty means the whole suite.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mutant:
    """One planted bug: replace `old` (found exactly once) by `new` in `path`."""

    name: str
    path: str
    old: str
    new: str
    why: str  # what a user would suffer if this bug shipped
    tests: tuple[str, ...] = ()


T = "tests/test_"
MODELS = (f"{T}models.py", f"{T}runner.py")
RETRY = (f"{T}retry.py", f"{T}client.py", f"{T}models.py")
SCORING = (f"{T}scoring.py", f"{T}summary.py", f"{T}protocol.py", f"{T}parity.py")
RESULTS = (f"{T}results.py", f"{T}runner.py", f"{T}summary.py")
PACING = (f"{T}ratelimit.py", f"{T}models.py", f"{T}runner.py")
ADAPTIVE = (f"{T}adaptive.py", f"{T}models.py", f"{T}ratelimit.py")
REPLICAS = (f"{T}replicas.py",)

MUTANTS: tuple[Mutant, ...] = (
    # --- runner: resume --------------------------------------------------------------------------
    Mutant(
        "resume-resends-done",
        "pipeline/run/runner.py",
        "                if (stem, sample.key) in self.state.done:\n                    continue\n",
        "",
        "a resumed run re-answers every finished row: with --no-cache (or a new cache) it pays "
        "for all of them again",
        (f"{T}runner.py", f"{T}cli.py"),
    ),
    Mutant(
        "failed-rows-count-as-done",
        "pipeline/run/runner.py",
        "        if row.error is None:  # failed rows are counted by the scorer and sent again\n",
        "        if True:\n",
        "rows that failed after all retries are never tried again on rerun: they stay wrong",
        (f"{T}runner.py", f"{T}cli.py"),
    ),
    # --- models: cache key -----------------------------------------------------------------------
    Mutant(
        "image-digest-not-in-key",
        "pipeline/model/responder.py",
        "self._answer(request, self.cache_key(request, digest))",
        "self._answer(request, self.cache_key(request, None))",
        "two images with the same question share one cached answer: wrong answers, silently",
        (f"{T}models.py", f"{T}runner.py", f"{T}cache.py"),
    ),
    Mutant(
        "api-key-in-cache-key",
        "pipeline/model/responder.py",
        "endpoint=first_url(cfg.spec.base_url),",
        'endpoint=first_url(cfg.spec.base_url) + (cfg.api_key or ""),',
        "rotating the API key empties the cache (everything is paid again) and hashes the secret",
        MODELS,
    ),
    # --- models: the cache -----------------------------------------------------------------------
    Mutant(
        "cache-not-written",
        "pipeline/model/responder.py",
        "            self.cache.put(key, completion)  # durable before the row can count as done\n",
        "            pass\n",
        "no answer is ever cached: a rerun into a new --out pays for every call again",
        MODELS,
    ),
    Mutant(
        "cache-written-after-row",
        "pipeline/model/responder.py",
        "            self.cache.put(key, completion)  # durable before the row can count as done\n",
        "            asyncio.get_running_loop().call_later(1.0, self.cache.put, key, completion)\n",
        "the row is recorded before its answer is cached: a crash in between pays that call again",
        MODELS,
    ),
    Mutant(
        "errors-cached",
        "pipeline/model/responder.py",
        "        except APIError as exc:\n            return Outcome(",
        "        except APIError as exc:\n"
        "            if self.cache is not None:\n"
        "                self.cache.put(key, Completion(text=str(exc)))\n"
        "            return Outcome(",
        "a refused or timed-out row is cached: every rerun replays the error text as its answer",
        MODELS,
    ),
    # --- models: slots, throttle, fatal errors, usage --------------------------------------------
    Mutant(
        "slot-held-across-backoff",
        "pipeline/model/responder.py",
        "        async for attempt in AsyncRetrying(**self._retry_kwargs):\n"
        "            with attempt:\n",
        "        async with self.replicas.slots:\n"
        "          async for attempt in AsyncRetrying(**self._retry_kwargs):\n"
        "            with attempt:\n",
        "rows backing off keep their slots: under faults throughput collapses, or deadlocks at C=1",
        MODELS,
    ),
    Mutant(
        "semaphore-per-attempt",
        "pipeline/model/replicas.py",
        "            async with self.slots:  # a slot first",
        "            async with asyncio.Semaphore(len(self.replicas)):  # a slot first",
        "--concurrency is not enforced: every row is in flight at once and the provider 429s",
        (f"{T}models.py", f"{T}client.py", f"{T}runner.py"),
    ),
    Mutant(
        "fatal-does-not-stop-others",
        "pipeline/model/responder.py",
        "            self.replicas.stopped = self.replicas.stopped or exc\n",
        "",
        "after a bad key or an empty account every queued row still sends its request",
        MODELS,
    ),
    Mutant(
        "usage-retries-off-by-one",
        "pipeline/model/responder.py",
        "retries=sent[0] - 1,",
        "retries=sent[0],",
        "the summary reports one retry per answered row even when nothing was retried",
        (f"{T}models.py", f"{T}runner.py", f"{T}summary.py"),
    ),
    # --- ratelimit -------------------------------------------------------------------------------
    Mutant(
        "rpm-not-paced",
        "pipeline/model/pacing.py",
        "        self.rate: float | None = self.ceiling if rpm else None",
        "        self.rate: float | None = None",
        "--rpm is only a ceiling, never a pace: a minute's allowance goes out at once, into 429s",
        PACING,
    ),
    Mutant(
        "pause-shortened",
        "pipeline/model/pacing.py",
        "        if until > self._paused_until:\n",
        "        if True:\n",
        "a later, shorter 429 hint cuts short a longer pause already in force: more 429s",
        PACING,
    ),
    # --- the learned rate (issue #12) -------------------------------------------------------------
    Mutant(
        "429-pauses-own-row-only",
        "pipeline/model/pacing.py",
        "        if pause is not None:\n            self.pause(pause)\n",
        "",
        "after a 429 every worker keeps sending at once: a storm of 429s and a longer ban",
        ADAPTIVE,
    ),
    Mutant(
        "pause-ignores-retry-after",
        "pipeline/model/pacing.py",
        "        pause = retry_after\n",
        "        pause = None\n",
        "the endpoint's Retry-After is ignored: re-sends land inside the ban, or wait needlessly",
        ADAPTIVE,
    ),
    Mutant(
        "rate-never-cut",
        "pipeline/model/pacing.py",
        "        self.rate = min(self.ceiling, max(_MIN_RATE, _BETA * base))\n",
        "        base = base\n",
        "an unknown limit is never learned: the run keeps sending unpaced into 429s",
        ADAPTIVE,
    ),
    Mutant(
        "every-429-cuts",
        "pipeline/model/pacing.py",
        "        if ticket.sent < self._cut_at or self._pending is not None:\n",
        "        if False:\n",
        "each 429 of one burst cuts the rate again: the pace collapses far below the limit",
        ADAPTIVE,
    ),
    Mutant(
        "pause-keeps-reserved-slots",
        "pipeline/model/pacing.py",
        "            if epoch == self._epoch:  # no pause or cut voided the slot meanwhile\n",
        "            if True:\n",
        "slots handed out before a 429 are sent during its pause and on top of the new pace",
        ADAPTIVE,
    ),
    Mutant(
        "429-spends-retries",
        "pipeline/model/replicas.py",
        '            return "limited"\n',
        '            return "retry"\n',
        "every 429 spends one of the row's retries: a 429 storm fails rows that would have answered",
        ADAPTIVE,
    ),
    Mutant(
        "limit-headers-ignored",
        "pipeline/model/client.py",
        "        if self.on_headers is not None:\n            self.on_headers(headers)\n",
        "",
        "OpenAI's x-ratelimit-* headers are never read: the limit is learned from 429s instead",
        ADAPTIVE,
    ),
    Mutant(
        "replica-never-benched",
        "pipeline/model/replicas.py",
        "            self._bench(replica)\n",
        "            pass\n",
        "a dead replica keeps getting requests: rows fail on it, or time out",
        REPLICAS,
    ),
    Mutant(
        "failover-to-the-same-replica",
        "pipeline/model/replicas.py",
        "key=lambda r: (r is avoid, max(r.benched_until - now, 0.0), r.in_flight)",
        "key=lambda r: (max(r.benched_until - now, 0.0), r.in_flight)",
        "a request a replica failed goes back to it (it answers fastest): rows fail that another "
        "replica would have answered",
        REPLICAS,
    ),
    # --- retry: classification and backoff -------------------------------------------------------
    Mutant(
        "retry-after-not-parsed",
        "pipeline/model/retry.py",
        "    retry_after = _retry_after(hdrs, message)\n",
        "    retry_after = None\n",
        "Retry-After / retry-after-ms / 'try again in' are ignored: retries land inside the ban",
        RETRY,
    ),
    Mutant(
        "backoff-ignores-hint",
        "pipeline/model/retry.py",
        "        return max(hint or 0.0, jitter)\n",
        "        return jitter\n",
        "a row retries after its jittered backoff even when the server asked for a longer wait",
        RETRY,
    ),
    Mutant(
        "moderation-retried",
        "pipeline/model/retry.py",
        'make(RowError, "Content moderation refused this row; it is not retried.")',
        'make(RetryableError, "Content moderation refused this row; it is not retried.")',
        "a moderated row is sent 7 times, paid each time, and delays the run by its backoff",
        RETRY,
    ),
    Mutant(
        "503-not-retried",
        "pipeline/model/retry.py",
        "    if status in (408, 409) or status >= 500:\n"
        '        return make(RetryableError, "Transient (retryable).")\n'
        "    if 400 <= status < 500:\n",
        "    if status in (408, 409, 500):\n"
        '        return make(RetryableError, "Transient (retryable).")\n'
        "    if 400 <= status:\n",
        "a provider's brief overload (503) fails rows for good instead of retrying them",
        RETRY,
    ),
    Mutant(
        "401-retryable",
        "pipeline/model/retry.py",
        "    if status in (401, 403):\n",
        "    if status == 401:\n"
        '        return make(RetryableError, "Unauthorized (retryable).")\n'
        "    if status in (401, 403):\n",
        "a wrong key is retried with backoff on every row instead of stopping the run at once",
        (f"{T}retry.py", f"{T}client.py", f"{T}runner.py"),
    ),
    # --- client ----------------------------------------------------------------------------------
    Mutant(
        "secret-not-scrubbed",
        "pipeline/model/client.py",
        '    return headers, Redactor(api_key, password, basic.removeprefix("Basic ") if basic else None)\n',
        "    return headers, Redactor()\n",
        "a gateway that echoes the key puts it in error messages, results files and logs",
        (f"{T}client.py", f"{T}runner.py", f"{T}cli.py"),
    ),
    # --- results files ---------------------------------------------------------------------------
    Mutant(
        "torn-line-not-cut",
        "pipeline/results.py",
        "        _cut_torn_tail(self.path)\n",
        "",
        "after a crash the next append glues a row onto the torn line: the file is damaged",
        RESULTS,
    ),
    Mutant(
        "finalize-keeps-first",
        "pipeline/results.py",
        'latest[key] = (int(meta.get("line") or 0), offset, len(raw))',
        'latest.setdefault(key, (int(meta.get("line") or 0), offset, len(raw)))',
        "a row retried on resume keeps its old failed line in the final file",
        RESULTS,
    ),
    Mutant(
        "failed-append-not-cut-back",
        "pipeline/results.py",
        "            await self._handle.truncate(start)\n",
        "            pass\n",
        "a disk-full append leaves a partial line that the next append glues onto: damage in the "
        "middle of the results file",
        (f"{T}disk.py",),
    ),
    # --- scoring ---------------------------------------------------------------------------------
    Mutant(
        "mcq-strip",
        "pipeline/scoring/official.py",
        'return response == answer.split(".")[0].strip()',
        'return response.strip() == answer.split(".")[0].strip()',
        "MCQ scores differ from the official scorer, which compares the response unstripped",
        SCORING,
    ),
    Mutant(
        "joint-strip",
        "pipeline/scoring/official.py",
        "tokens[i] == letter)",
        "tokens[i].strip() == letter)",
        "joint 'B, D, A, C' scores right while the official split (no strip) scores it wrong",
        SCORING,
    ),
    Mutant(
        "empty-report-scored",
        "pipeline/scoring/official.py",
        "answer and isinstance(response, str) and response):",
        "answer and isinstance(response, str)):",
        "empty report predictions are scored (BLEU 0) instead of dropped as official",
        SCORING,
    ),
    Mutant(
        "quirks-scores-extracted",
        "pipeline/scoring/official.py",
        "response = official_response(row) if official_quirks else row.model_response",
        "response = row.model_response",
        "--official-quirks scores our extracted answers: it no longer reproduces the official scorer",
        SCORING,
    ),
    # --- summary ---------------------------------------------------------------------------------
    Mutant(
        "errors-not-in-denominator",
        "pipeline/scoring/summary.py",
        "def _mcq_section(rows: Iterable[RowScore]) -> dict[str, Any]:\n    rows = list(rows)\n",
        "def _mcq_section(rows: Iterable[RowScore]) -> dict[str, Any]:\n"
        "    rows = [r for r in rows if not r.error]\n",
        "failed rows drop out of the MCQ accuracy: a flaky provider inflates the score",
        (f"{T}summary.py", f"{T}protocol.py", f"{T}scoring.py"),
    ),
    Mutant(
        "usage-from-counters",
        "pipeline/scoring/summary.py",
        "used = sum((r.usage for r in rows), Usage())",
        "used = sum((r.usage + r.judge_usage for r in rows), Usage())",
        "the model's usage in summary.json includes the judge's calls and tokens",
        (f"{T}summary.py", f"{T}judge.py", f"{T}runner.py"),
    ),
    # --- cost ------------------------------------------------------------------------------------
    Mutant(
        "cap-ignores-in-flight",
        "pipeline/model/budget.py",
        "self.spent + self.reserved + usd <= self.cap",
        "self.spent + usd <= self.cap",
        "--max-cost lets every request in flight through: the run overshoots the cap",
        (f"{T}cost.py",),
    ),
    Mutant(
        "cap-forgets-earlier-runs",
        "pipeline/run/runner.py",
        'self.budget.spent += self.state.scorer.running()["cost_usd"]',
        "self.budget.spent += 0.0",
        "a rerun with the same --max-cost spends the cap again",
        (f"{T}cost.py",),
    ),
    Mutant(
        "cache-hit-costs",
        "pipeline/model/responder.py",
        "return Outcome(hit, usage=Usage(cache_hits=1, saved_usd=saved))",
        "return Outcome(hit, usage=Usage(cache_hits=1, cost_usd=saved))",
        "a cached rerun reports (and caps) money it never paid",
        (f"{T}cost.py",),
    ),
    Mutant(
        "batch-billed-online",
        "pipeline/model/batch/responder.py",
        "cost = price.cost(prompt, out, batch=True) if price is not None else 0.0",
        "cost = price.cost(prompt, out) if price is not None else 0.0",
        "--batch runs report twice what they cost",
        (f"{T}batch.py",),
    ),
    Mutant(
        "batch-rerun-resubmits",
        "pipeline/model/batch/responder.py",
        "for entry in load_records(self.record):",
        "for entry in load_records(self.record)[:0]:",
        "a rerun after a crash submits (and pays for) pending batches again",
        (f"{T}batch.py",),
    ),
    # --- compare and the report -------------------------------------------------------------------
    Mutant(
        "mcnemar-one-sided",
        "pipeline/scoring/stats.py",
        "p: float = 2 * tail / 2**n",
        "p: float = tail / 2**n",
        "paired tests call differences significant at half the evidence",
        (f"{T}stats.py", f"{T}compare.py"),
    ),
    Mutant(
        "wilson-is-wald",
        "pipeline/scoring/stats.py",
        "centre = p + z2 / (2 * n)",
        "centre = p",
        "leaderboard intervals are off-centre, worst on small cells",
        (f"{T}stats.py", f"{T}compare.py"),
    ),
    Mutant(
        "report-sent-images-per-run",
        "pipeline/views/page.py",
        "sent = cache_root / SENT if cache_root is not None else thumbs",
        "sent = thumbs",
        "every run folder copies every image as sent: hundreds of MB per full run",
        (f"{T}report.py",),
    ),
    Mutant(
        "report-partial-chain-right",
        "pipeline/views/page.py",
        'out["v"] = "right" if score.hits and all(score.hits) else "wrong"',
        'out["v"] = "right" if score.hits and any(score.hits) else "wrong"',
        "the results browser files a joint row with one level right under `right`",
        (f"{T}browser.py",),
    ),
    # --- extract and judge -----------------------------------------------------------------------
    Mutant(
        "extract-unoffered-letter",
        "pipeline/scoring/reader.py",
        '        letter = match["letter"].upper()\n'
        "        return letter if letter in offered else None\n",
        '        return match["letter"].upper()\n',
        "a reply 'E' to a four-option row is stored as answer E instead of unreadable",
        (f"{T}extract.py", f"{T}judge.py"),
    ),
    Mutant(
        "judge-grades-extracted-rows",
        "pipeline/scoring/judge.py",
        'if row.kind in ("evidence", "independent") and row.answer_source == "none":',
        'if row.kind in ("evidence", "independent"):',
        "every MCQ row is paid for again by the judge, whose mapping may override a read answer",
        (f"{T}judge.py",),
    ),
    # --- dataset, images, prompts ----------------------------------------------------------------
    Mutant(
        "key-by-line-number",
        "pipeline/data/dataset.py",
        'key = f"{digest}#{seen[digest]}"',
        'key = f"{digest}#{line_no}"',
        "a reordered or merged dataset file re-runs (and re-pays) every moved row on resume",
        (f"{T}dataset.py", f"{T}runner.py"),
    ),
    Mutant(
        "resize-rounds",
        "pipeline/data/images.py",
        "(int(w * ratio), int(h * ratio))",
        "(round(w * ratio), round(h * ratio))",
        "images sent differ by a pixel from the official encoder's: not the official protocol",
        (f"{T}images.py",),
    ),
    Mutant(
        "template-from-first-row",
        "pipeline/run/runner.py",
        "            request = self.cfg.request(sample)",
        "            first = self.__dict__.setdefault(f'first {stem}', sample)  # the file's first row\n"
        '            as_first = __import__("dataclasses").replace(sample, kind=first.kind)\n'
        "            request = self.cfg.request(as_first)",
        "a merged or reordered file gets its first row's template for every row (official quirk)",
        (f"{T}runner.py", f"{T}protocol.py", f"{T}parity.py", f"{T}cli.py"),
    ),
    Mutant(
        "independent-no-max-tokens",
        "pipeline/data/prompts.py",
        "            max_tokens=DISCRETE_MAX_TOKENS,\n",
        "",
        "independent_qa is sent without max_tokens 50: long, costly replies, not the protocol",
        (f"{T}prompts.py", f"{T}protocol.py"),
    ),
    # --- processes: lock, signals, shared cache (issue #11) --------------------------------------
    Mutant(
        "no-run-lock",
        "pipeline/cli.py",
        '        with run_lock(cfg.run_dir, "eval"):\n',
        "        with __import__('contextlib').nullcontext():\n",
        "two processes in one run folder: the first to finish rewrites the results file while the "
        "other appends to the replaced one, and rows are lost",
        (f"{T}processes.py",),
    ),
    Mutant(
        "sigterm-kills",
        "pipeline/cli.py",
        "        loop.add_signal_handler(signum, stop, signum)\n",
        "        pass\n",
        "docker stop or Slurm ends a run with no summary and a torn line instead of stopping it",
        (f"{T}processes.py",),
    ),
    Mutant(
        "no-request-claims",
        "pipeline/model/responder.py",
        "        self.claims = RequestClaims(cache.dir) if cache is not None else None\n",
        "        self.claims = None\n",
        "two runs started together on one cache pay for every request twice",
        (f"{T}processes.py",),
    ),
    # --- --samples -------------------------------------------------------------------------------
    Mutant(
        "samples-share-one-key",
        "pipeline/model/responder.py",
        "        epoch=request.epoch,\n",
        "",
        "every extra sample is the cached first answer: K copies of one answer, and no spread",
        (f"{T}samples.py",),
    ),
    Mutant(
        "samples-spend-cap-apart",
        "pipeline/run/runner.py",
        'self.budget.spent += self.state.scorer.running()["cost_usd"]',
        'self.budget.spent = self.state.scorer.running()["cost_usd"]',
        "with --samples, a rerun's cost cap forgets what the other samples already spent",
        (f"{T}samples.py", f"{T}cost.py"),
    ),
    Mutant(
        "samples-tie-goes-last",
        "pipeline/scoring/samples.py",
        "    return next(d for d in item if counts[d.answer] == top)\n",
        "    return [d for d in item if counts[d.answer] == top][-1]\n",
        "a tied majority takes the last sample's answer, not the official one as documented",
        (f"{T}samples.py",),
    ),
    # --- test holes found by planting bugs (issue 23) ---------------------------------------------
    Mutant(
        "rpm-paced-at-80-percent",
        "pipeline/model/pacing.py",
        "MARGIN = 0.99\n",
        "MARGIN = 0.8\n",
        "a known --rpm is paced at 80% of itself: every run is a fifth slower than the limit allows",
        (f"{T}adaptive.py", f"{T}ratelimit.py"),
    ),
    Mutant(
        "text-tokens-doubled",
        "pipeline/providers/tokens.py",
        "    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0\n",
        "    return math.ceil(2 * len(text) / CHARS_PER_TOKEN) if text else 0\n",
        "plan and the cost cap count text at twice its tokens: estimates and reservations too high",
        (f"{T}plan.py",),
    ),
    Mutant(
        "flip-links-both-to-first-run",
        "pipeline/compare/tables.py",
        "            card_link(page_b, f.file, f.key),\n",
        "            card_link(page_a, f.file, f.key),\n",
        "compare's flipped items link both answers to the first run's page: one side is never seen",
        (f"{T}compare.py",),
    ),
    Mutant(
        "large-image-waits-forever",
        "pipeline/data/images.py",
        "lambda: self._used == 0 or self._used + need <= self.pixels",
        "lambda: self._used + need <= self.pixels",
        "an image over the pixel budget waits for room that never comes: the run hangs on it",
        (f"{T}images.py",),
    ),
    Mutant(
        "batch-refusal-never-happens",  # a test hole: the fake stops refusing, the test must see it
        "tests/fakebatch.py",
        "        fault = _content_fault(server, entry.user_text)\n",
        "        fault = None\n",
        "the batch refusal test would pass with no line refused at all, checking nothing",
        (f"{T}batch.py",),
    ),
    Mutant(
        "cost-cap-stops-at-first-misfit",
        "pipeline/model/budget.py",
        "            if self.open == 0 or self.reached:\n",
        "            if True:\n",
        "--max-cost stops at the first reservation that does not fit: a quarter of the cap spent",
        (f"{T}cost.py",),
    ),
    Mutant(
        "unreached-server-never-stops-early",
        "pipeline/run/failures.py",
        "        self.stopped = self.stopped or self.unreached >= UNREACHED_ROWS\n",
        "",
        "a base URL nobody listens on is tried row after row to the end of a big run",
        (f"{T}failures.py",),
    ),
    Mutant(
        "failure-causes-not-shown",
        "pipeline/views/terminal.py",
        '        lines += [f"  {cause.line()}" for cause in causes]\n',
        "",
        "every row failed and the user is told only a count: the reason is buried in the results",
        (f"{T}failures.py",),
    ),
)
