"""The bundled demo sample is in the exact DrVD-Bench layout (PROTOCOL §1)."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "sample"
FILES = ("visual_evidence_qa", "independent_qa", "joint_qa", "report_generation")
MODALITIES = {"CT", "MRI", "Ultrasound", "X-ray", "Pathology"}
LEVELS = {"modality", "bodypart", "organ", "lesion", "diagnosis"}
JOINT_ANSWERS = ("modality_answer", "organ_answer", "lesion_answer", "diagnosis_answer")
MCQ_KEYS = {"image_paths", "question", "options", "answer", "modality", "unique_id"}
REQUIRED = {
    "visual_evidence_qa": MCQ_KEYS | {"task"},
    "independent_qa": MCQ_KEYS | {"level"},
    "joint_qa": {"image_paths", "joint_prompt", "modality", "unique_id", *JOINT_ANSWERS},
    "report_generation": {"image_paths", "question", "task", "answer", "modality", "unique_id"},
}


@cache
def rows(stem: str) -> list[dict[str, Any]]:
    text = (SAMPLE / f"{stem}.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n")
    parsed = [orjson.loads(line) for line in text.split("\n")[:-1]]
    assert all(isinstance(r, dict) for r in parsed)
    return parsed


def all_rows() -> list[dict[str, Any]]:
    return [r for stem in FILES for r in rows(stem)]


@pytest.mark.parametrize("stem", FILES)
def test_rows_have_required_keys_and_known_modalities(stem: str) -> None:
    assert rows(stem), f"{stem} is empty"
    for r in rows(stem):
        assert REQUIRED[stem] <= r.keys(), (
            f"{r.get('unique_id')}: missing {REQUIRED[stem] - r.keys()}"
        )
        assert all(isinstance(r[k], str) and r[k] for k in REQUIRED[stem] - {"options"})
    assert {r["modality"] for r in rows(stem)} == MODALITIES
    ids = [r["unique_id"] for r in rows(stem)]
    assert len(set(ids)) == len(ids)


def test_files_are_told_apart_by_keys_as_the_official_code_does() -> None:
    assert all("task" in r and "level" not in r for r in rows("visual_evidence_qa"))
    assert all("level" in r and "task" not in r for r in rows("independent_qa"))
    assert all("task" not in r for r in rows("joint_qa"))
    assert all(r["task"] == "report_generation" for r in rows("report_generation"))
    assert all(r["task"] != "report_generation" for r in rows("visual_evidence_qa"))


@pytest.mark.parametrize("stem", ["visual_evidence_qa", "independent_qa"])
def test_mcq_options_are_lettered_and_answer_is_one_of_them(stem: str) -> None:
    for r in rows(stem):
        opts = r["options"]
        assert isinstance(opts, list)
        assert 4 <= len(opts) <= 6
        assert [o[:3] for o in opts] == [f"{c}. " for c in "ABCDEF"[: len(opts)]]
        assert r["answer"] in opts
        # The official scorer's correct letter must be the option's letter.
        assert r["answer"].split(".")[0].strip() == r["answer"][0]


def test_independent_covers_every_level_with_spread_answers() -> None:
    found = Counter(r["level"] for r in rows("independent_qa"))
    assert set(found) == LEVELS
    for level in LEVELS:
        mods = {r["modality"] for r in rows("independent_qa") if r["level"] == level}
        assert len(mods) >= 3, f"level {level} covers only {mods}"
    letters = Counter(r["answer"][0] for r in rows("independent_qa"))
    assert len(letters) >= 4
    assert max(letters.values()) <= len(rows("independent_qa")) // 2


def test_evidence_tasks_are_snake_case_and_varied() -> None:
    tasks = {r["task"] for r in rows("visual_evidence_qa")}
    assert "modality_recognition" in tasks
    assert len(tasks) >= 3
    assert all(t == t.lower() and " " not in t for t in tasks)


def test_joint_answers_are_options_in_the_prompt_in_level_order() -> None:
    for r in rows("joint_qa"):
        lines = r["joint_prompt"].split("\n")
        positions = []
        for key in JOINT_ANSWERS:
            answer = r[key]
            assert answer[0] in "ABCDEF"
            assert answer[1:3] == ". "
            assert answer in lines, f"{r['unique_id']}: {key} {answer!r} is not an option line"
            positions.append(lines.index(answer))
        assert positions == sorted(positions), r["unique_id"]
        assert "four capital letters" in r["joint_prompt"]


def test_reports_are_multi_sentence_references() -> None:
    for r in rows("report_generation"):
        assert r["answer"].count(". ") >= 1
        assert 100 < len(r["answer"]) < 1500


def test_images_are_reused_across_files() -> None:
    paths = {stem: {r["image_paths"] for r in rows(stem)} for stem in FILES}
    assert len(paths["independent_qa"] & paths["joint_qa"]) >= 5


def test_image_paths_resolve_to_images_pillow_opens() -> None:
    for r in all_rows():
        rel = r["image_paths"]
        assert isinstance(rel, str)
        assert rel.startswith("images/")
        assert not Path(rel).is_absolute()
        assert ".." not in Path(rel).parts
        with Image.open(SAMPLE / rel) as im:
            im.verify()


def test_images_exercise_the_official_preprocessing() -> None:
    modes, long_sides = set(), []
    for path in (SAMPLE / "images").rglob("*"):
        if path.is_file():
            with Image.open(path) as im:
                modes.add((im.format, im.mode))
                long_sides.append(max(im.size))
    assert ("PNG", "RGBA") in modes
    assert ("PNG", "P") in modes
    assert {f for f, _ in modes} == {"PNG", "JPEG"}
    assert max(long_sides) > 1024  # gets resized by compress_image
    assert min(long_sides) <= 512  # stays as is, never upscaled


def test_every_image_is_used_and_listed_in_notice() -> None:
    on_disk = {
        p.relative_to(SAMPLE).as_posix() for p in (SAMPLE / "images").rglob("*") if p.is_file()
    }
    used = {r["image_paths"] for r in all_rows()}
    assert used == on_disk
    notice = (SAMPLE / "NOTICE.md").read_text(encoding="utf-8")
    assert all(f"`{p}`" in notice for p in on_disk)


def test_notice_says_this_is_not_drvd_bench_data() -> None:
    notice = (SAMPLE / "NOTICE.md").read_text(encoding="utf-8")
    assert "NOT DrVD-Bench data" in notice
    assert "DEMO" in notice
    assert "Licence" in notice


def test_sample_stays_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
