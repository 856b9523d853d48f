"""`drvd plan` as a user runs it: estimates checked against a real run on the fake server."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fakebilling import qwen_tokens
from fakeserver import FakeConfig, running
from once import built_once
from PIL import Image
from procs import drvd, lines_of, server_process

from pipeline.data.synthetic import write_dataset

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)

KEY = {"DASHSCOPE_API_KEY": "sk-test"}
# Long sides from tiny (below Qwen's 4-block minimum) to far over the protocol's 1,024 px.
SIZES = (40, 200, 500, 900, 1300, 2500, 4000)


@pytest.fixture(scope="session")  # built once per session (tests/once.py), read by every worker
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def build(root: Path) -> None:
        write_dataset(root / "data", total=60, images=14, sizes=SIZES, large=1)  # one of 6,000 px

    return built_once(tmp_path_factory, "plan", build) / "data"


def qwen(data: Path, url: str, tmp: Path, *extra: str) -> list[str]:
    """Return the flags of a `qwen` run on the fake server, folders under `tmp`."""
    return [
        "--model", "qwen", "--base-url", url, "--data", str(data), "--out", str(tmp / "runs"),
        "--cache-dir", str(tmp / "cache"), "--judge", "none", *extra,
    ]  # fmt: skip


def plan(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = drvd("plan", *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = orjson.loads(proc.stdout)
    return data


def test_prompt_tokens_within_15_percent_of_a_server_billing_qwen_image_tokens(
    data: Path, tmp_path: Path
) -> None:
    with server_process("--bill", "qwen28") as server:
        flags = qwen(data, server.url, tmp_path)
        before = plan(*flags)  # no key needed: plan calls nothing
        assert before["rows"] == before["to_send"] == 60
        assert before["cached"] == 0
        run = drvd("eval", *flags, "--quiet", env=KEY)
        assert run.returncode == 0, run.stderr
        assert "estimate (quick" in run.stdout  # eval says it before it starts
        billed = server.ledger()
        assert billed["paid"] == 60
        assert (
            abs(before["prompt_tokens"] - billed["prompt_tokens"]) <= 0.15 * billed["prompt_tokens"]
        )
        after = plan(*flags)
    assert (after["cached"], after["answered"], after["to_send"]) == (60, 60, 0)
    assert after["prompt_tokens"] == after["completion_tokens"] == 0


def test_cached_counts_rows_answered_in_the_run_folder_and_in_the_response_cache(
    data: Path, tmp_path: Path
) -> None:
    with server_process() as server:
        flags = qwen(data, server.url, tmp_path)
        run = drvd("eval", *flags, "--limit", "3", "--quiet", env=KEY)
        assert run.returncode == 0, run.stderr
        paid = server.ledger()["paid"]
    assert paid == 12  # 3 rows of each file
    answered = plan(*flags)
    assert (answered["rows"], answered["answered"], answered["in_cache"]) == (60, 12, 0)
    assert answered["to_send"] == 48
    elsewhere = plan(*flags, "--run-name", "fresh")  # no run folder: the cache has them
    assert (elsewhere["answered"], elsewhere["in_cache"], elsewhere["cached"]) == (0, 12, 12)
    assert plan(*flags, "--run-name", "fresh", "--no-cache")["cached"] == 0
    # Another request (thinking off is sent) is another cache entry.
    assert plan(*flags, "--run-name", "fresh", "--thinking", "off")["cached"] == 0
    # The run's measured reply length per call replaces the typical one.
    rows = lines_of(tmp_path / "runs" / "qwen" / "report_generation.jsonl")
    mean = sum(r["_meta"]["usage"]["completion_tokens"] for r in rows) / len(rows)
    report = answered["files"]["report_generation"]
    assert report["reply_from"] == "run"
    assert report["completion_tokens"] == round(mean * report["to_send"])


def tree(root: Path) -> dict[str, str]:
    """Return every path under `root` with its content hash (folders: "dir")."""
    return {
        str(p.relative_to(root)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def test_plan_writes_nothing(data: Path, tmp_path: Path) -> None:
    with server_process() as server:
        flags = qwen(data, server.url, tmp_path)
        assert drvd("eval", *flags, "--limit", "2", "--quiet", env=KEY).returncode == 0
        results = tmp_path / "runs" / "qwen" / "joint_qa.jsonl"
        with results.open("ab") as f:
            f.write(b'{"image_paths": "torn by a crash')  # eval would cut this tail
        before = {**tree(tmp_path), **{f"data/{k}": v for k, v in tree(data).items()}}
        assert plan(*flags)["answered"] == 8
        assert plan(*flags, "--run-name", "fresh")["in_cache"] == 8
        missing = plan(*qwen(data, server.url, tmp_path / "absent"))
        assert missing["cached"] == 0
        assert server.ledger()["requests"] == 8  # the eval's; plan called nothing
    after = {**tree(tmp_path), **{f"data/{k}": v for k, v in tree(data).items()}}
    assert after == before
    assert not (tmp_path / "absent").exists()


def test_unpriced_model_says_cost_unknown_and_given_prices_price_the_tokens(
    data: Path, tmp_path: Path
) -> None:
    flags = qwen(data, "http://127.0.0.1:9/v1", tmp_path)
    text = drvd("plan", *flags)
    assert text.returncode == 0, text.stderr
    assert "cost: unknown" in text.stdout
    assert "--price-in and --price-out" in text.stdout
    # No confirmed price for the alias's model: plan says where the provider publishes it.
    said = " ".join(text.stdout.split())
    assert (
        "qwen2.5-vl-72b-instruct has no price on record (none confirmed as of 2026-11-24; " in said
    )
    assert (
        "read it at https://alibabacloud.com/help/en/model-studio/billing-for-model-studio" in said
    )
    unknown = plan(*flags)
    assert unknown["cost_usd"] is None
    assert unknown["seconds"] > 0
    priced = plan(*flags, "--price-in", "2", "--price-out", "6")
    tokens = priced["prompt_tokens"] * 2 + priced["completion_tokens"] * 6
    assert priced["cost_usd"] == pytest.approx(tokens / 1e6, abs=1e-4)
    assert priced["price"]["source"] == "--price-in/--price-out"
    batch = plan(*flags, "--price-in", "2", "--price-out", "6", "--batch")
    assert batch["cost_usd"] == pytest.approx(tokens / 2e6, abs=1e-4)
    assert batch["seconds"] == 24 * 3600
    gpt = drvd("plan", "--model", "gpt-4o", "--data", str(data), "--out", str(tmp_path / "o"))
    assert "price: gpt-4o $2.5 in, $10 out per 1M tokens; dated 2026-11" in gpt.stdout


def test_judge_calls_are_counted_and_cached_reference_keywords_are_not(
    data: Path, tmp_path: Path
) -> None:
    with server_process() as server:
        judge = ["--judge", "openai:judge", "--judge-base-url", server.url]
        flags = [*qwen(data, server.url, tmp_path), *judge]
        estimate = plan(*flags)
        counts, first = estimate["files"], estimate["judge"]
        reports = counts["report_generation"]["rows"]
        mcq = counts["visual_evidence_qa"]["rows"] + counts["independent_qa"]["rows"]
        assert first["unreadable_from"] == "default"
        # Keywords of the reference and the prediction per report; the mapper for 5% of MCQs.
        assert first["calls"] == round(2 * reports + 0.05 * mcq)
        # Another model's run (the offline one) had the judge extract every reference's keywords.
        other = ["--model", "random", "--data", str(data), "--out", str(tmp_path / "runs")]
        other += ["--cache-dir", str(tmp_path / "cache"), "--files", "report_generation"]
        run = drvd("eval", *other, *judge, "--quiet", "--no-bertscore")
        assert run.returncode == 0, run.stderr
        again = plan(*flags)["judge"]
    assert again["calls"] == round(reports + 0.05 * mcq)
    assert again["prompt_tokens"] < first["prompt_tokens"]


async def test_the_billing_server_counts_the_image_it_receives() -> None:
    assert qwen_tokens(280, 280) == 102  # 10 x 10 blocks + the vision markers
    assert qwen_tokens(1024, 768) == 27 * 37 + 2
    assert qwen_tokens(6000, 4000) <= 1280 + 2  # the default cap
    buf = io.BytesIO()
    Image.new("RGB", (280, 280)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    text = {"type": "text", "text": "Which organ?"}
    image = {"type": "image_url", "image_url": {"url": url}}
    async with running(FakeConfig(bill="qwen28")) as server, aiohttp.ClientSession() as session:
        billed = []
        for content in ([text], [text, image]):
            body = {"model": "m", "messages": [{"role": "user", "content": content}]}
            async with session.post(f"{server.url}/chat/completions", json=body) as resp:
                billed.append((await resp.json())["usage"]["prompt_tokens"])
    assert billed[1] - billed[0] == 102
    assert billed[0] == 5 + 3 + 3  # one message, the reply's opening, "Which" "organ" "?"


# Qwen2.5-VL image tokens worked out by hand from the documented rule (PROVIDERS: sides rounded
# to 28 px, one token per 28 x 28 block, + 2 markers, at least 4 blocks), not by any code of ours
# or of the test server. Every side is at most 512 px: no protocol shrinks them.
HAND_COUNTED = {
    (280, 280): 10 * 10 + 2,
    (504, 252): 18 * 9 + 2,
    (448, 336): 16 * 12 + 2,
    (140, 420): 5 * 15 + 2,
}
TINY = (56, 56)  # 2 x 2 blocks: the 4-block minimum exactly
TINY_TOKENS = 4 + 2


def sized_dataset(root: Path, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Write a small dataset whose i-th image is exactly `sizes[i]`; return each row's size."""
    write_dataset(root, total=20, images=len(sizes))
    paths = sorted((root / "images").iterdir())
    for path, size in zip(paths, sizes, strict=True):
        Image.new("RGB", size, (90, 120, 150)).save(path)
    by_name = {f"images/{p.name}": size for p, size in zip(paths, sizes, strict=True)}
    return [
        by_name[row["image_paths"]] for f in sorted(root.glob("*.jsonl")) for row in lines_of(f)
    ]


def test_text_and_image_tokens_are_each_estimated_against_independent_counts(
    tmp_path: Path,
) -> None:
    sizes = list(HAND_COUNTED)
    known = sized_dataset(tmp_path / "known", sizes)
    sized_dataset(tmp_path / "tiny", [TINY] * len(sizes))  # the same rows, 6-token images
    rows = len(known)
    with server_process("--bill", "qwen28") as server:
        tiny = qwen(tmp_path / "tiny", server.url, tmp_path / "t")
        estimated_tiny = plan(*tiny)["prompt_tokens"]
        assert drvd("eval", *tiny, "--quiet", env=KEY).returncode == 0
        billed = server.ledger()
        assert billed["paid"] == rows
        estimated_known = plan(*qwen(tmp_path / "known", server.url, tmp_path / "k"))
    # Text: the tiny images leave the text ~90% of the prompt; the server counts it its own way
    # (word pieces and the chat template); the estimate is within 15% of it (20%: headroom).
    # Counting text at twice its tokens, or half, is far outside.
    text_billed = billed["prompt_tokens"] - TINY_TOKENS * rows
    text_estimated = estimated_tiny - TINY_TOKENS * rows
    assert text_billed > 5 * TINY_TOKENS * rows
    assert abs(text_estimated - text_billed) <= 0.20 * text_billed
    # Images: the same rows and texts, so the difference is the images alone, exactly.
    image_extra = sum(HAND_COUNTED[size] - TINY_TOKENS for size in known)
    assert estimated_known["prompt_tokens"] - estimated_tiny == image_extra
