"""The judge fallback: official mapper prompt, strict reading of the judge's reply, real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakeserver import FakeServer
from hypothesis import given
from hypothesis import strategies as st

from pipeline.client import OpenAIClient, make_session
from pipeline.errors import APIError, FatalAPIError
from pipeline.judge import JUDGE_SYSTEM, judge_row, mapper_prompt, parse_judge_letter
from pipeline.records import ChatRequest, ImageSpec

ROW: dict[str, Any] = {
    "image_paths": "images/x.png",
    "question": "What imaging modality is shown?",
    "options": ["A. MRI", "B. X-ray", "C. CT", "D. Ultrasound"],
    "answer": "C. CT",
    "modality": "CT",
    "task": "modality_recognition",
}
OFFERED = {"A": "MRI", "B": "X-ray", "C": "CT", "D": "Ultrasound"}


def text_complete(session: aiohttp.ClientSession, url: str):
    """Return `complete(prompt)` sending a text-only judge request through our real client.

    OpenAIClient.complete always attaches an image, so the text-only messages ride in
    `extra_body`; the lead's engine wiring replaces this (see the integration notes).
    """

    async def complete(prompt: str) -> str:
        messages = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": prompt},
        ]
        client = OpenAIClient(
            session,
            base_url=url,
            model="deepseek-chat",
            api_key="sk-judge",
            provider="deepseek",
            extra_body={"messages": messages},
        )
        request = ChatRequest(system=JUDGE_SYSTEM, text=prompt, image=ImageSpec(Path(), 0, 0))
        return (await client.complete(request, "")).text

    return complete


def test_mapper_prompt_is_the_official_repo_string() -> None:
    expected = (
        "You are a medical assistant. Given the question, the list of options, and a response "
        "from another model, please map the response to the best matching option letter (e.g., "
        "A, B, C, D). Only output the letter.\n\nQuestion: What imaging modality is shown?\n\n"
        "Options:\nA. MRI\nB. X-ray\nC. CT\nD. Ultrasound\n\nOther model's answer: It is a CT.\n\n"
        "Instruction: Only output the letter (A, B, C, or D) that best matches the model's "
        "response. Do not add any other text."
    )
    assert mapper_prompt(ROW["question"], ROW["options"], "It is a CT.") == expected


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("C", "C"),
        ("c", "C"),
        ("C.", "C"),
        ("C. CT", "C"),
        ("  C\n", "C"),
        ("(C)", "C"),
        ("C)", "C"),
        ("(C) CT", "C"),
        ("**C**", "C"),
        ("`C`", "C"),
        ('"C"', "C"),
        ("Answer: C", "C"),
        ("The answer is C.", "C"),
        ("Option C", "C"),
        ("C\nBecause the image is a CT.", "C"),
        ("A", "A"),
        ("d.", "D"),
        ("garbage", None),
        ("", None),
        ("   ", None),
        ("CT", None),
        ("A chest CT", None),
        ("I cannot tell.", None),
        ("C, D", None),
        ("C or D", None),
        ("C/D", None),
        ("C. D.", None),
        ("E", None),  # not offered
        ("C. MRI", None),  # the text names option A
        ("C. Computed tomography", "C"),  # free text that names no other option
        ("None of the above", None),
    ],
)
def test_parse_judge_letter(reply: str, want: str | None) -> None:
    assert parse_judge_letter(reply, OFFERED) == want


def test_parse_judge_letter_accepts_any_offered_letter() -> None:
    assert parse_judge_letter("G", "ABCDEFGH") == "G"
    assert parse_judge_letter("g.", ["A", "B", "G"]) == "G"
    assert parse_judge_letter("C", "AB") is None


@given(st.text(max_size=40), st.sets(st.sampled_from("ABCDEFGH"), min_size=1))
def test_parse_judge_letter_never_raises_and_only_returns_offered(reply, letters) -> None:
    got = parse_judge_letter(reply, letters)
    assert got is None or got in letters


def scripted(replies: dict[str, str]):
    """Answer each judge request according to the raw reply it is asked to map."""

    def answer(payload: dict[str, Any]) -> str:
        prompt = payload["messages"][-1]["content"]
        said = prompt.split("Other model's answer: ", 1)[1].split("\n\n", 1)[0]
        return replies[said]

    return answer


async def test_judge_row_against_the_fake_server(fake_server: FakeServer) -> None:
    replies = {
        "It looks like computed tomography": "C. CT",
        "probably the third one": "c",
        "no idea": "garbage",
        "some other modality": "E",
        "maybe B or C": "B, C",
    }
    fake_server.config.answer_fn = scripted(replies)
    got = {}
    async with make_session(4) as session:
        complete = text_complete(session, fake_server.url)
        for raw in replies:
            got[raw] = await judge_row(ROW, f"  {raw}\n", complete=complete)
    assert got == {
        "It looks like computed tomography": ("C", "judge"),
        "probably the third one": ("C", "judge"),
        "no idea": (None, "none"),
        "some other modality": (None, "none"),
        "maybe B or C": (None, "none"),
    }
    entries = fake_server.ledger.entries
    assert len(entries) == len(replies)  # one call per row
    for entry, raw in zip(entries, replies, strict=True):
        assert entry.system == JUDGE_SYSTEM
        # The reply is stripped, as the official mapper does, and the prompt is exact.
        assert entry.user_text == mapper_prompt(ROW["question"], ROW["options"], raw)
        assert entry.content_types == ("text",)
        assert "temperature" not in entry.params  # official mapper: provider default


async def test_rows_the_judge_cannot_map_cost_no_call(fake_server: FakeServer) -> None:
    joint = {"joint_prompt": "1. ...", "modality_answer": "C. CT", "modality": "CT"}
    report = {"question": "Write a report.", "task": "report_generation", "answer": "..."}
    async with make_session(2) as session:
        complete = text_complete(session, fake_server.url)
        assert await judge_row(joint, "C, B, A, D", complete=complete) == (None, "none")
        assert await judge_row(report, "A report.", complete=complete) == (None, "none")
        assert await judge_row(ROW, None, complete=complete) == (None, "none")
        assert await judge_row(ROW, "  \n", complete=complete) == (None, "none")
        assert await judge_row({**ROW, "options": []}, "C", complete=complete) == (None, "none")
    assert fake_server.ledger.count() == 0


@pytest.mark.parametrize(("fault", "error"), [("402", FatalAPIError), ("400_too_large", APIError)])
async def test_judge_errors_reach_the_caller(fake_server: FakeServer, fault, error) -> None:
    fake_server.config.script = [fault]
    async with make_session(1) as session:
        with pytest.raises(error):
            await judge_row(
                ROW, "computed tomography", complete=text_complete(session, fake_server.url)
            )


async def test_non_text_options_are_left_out_of_the_prompt() -> None:
    prompts: list[str] = []

    async def complete(prompt: str) -> str:
        prompts.append(prompt)
        return "C"

    row = {**ROW, "options": [*ROW["options"], None]}
    assert await judge_row(row, "CT", complete=complete) == ("C", "judge")
    assert prompts == [mapper_prompt(ROW["question"], ROW["options"], "CT")]
