from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.data.dataset import (
    ImageFolder,
    count_rows,
    find_root,
    iter_samples,
    present_files,
)
from pipeline.errors import ConfigError, DataError
from pipeline.records import FILES, Kind, Sample, row_kind

IMG = "images/ct/0001.png"


def _image(root: Path, rel: str = IMG) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (1, 2, 3)).save(path)
    return path


def _evidence(**extra: Any) -> dict[str, Any]:
    row = {
        "image_paths": IMG,
        "question": "What modality?",
        "options": ["A. MRI", "B. CT"],
        "answer": "B. CT",
        "modality": "CT",
        "task": "modality_recognition",
    }
    return {**row, **extra}


def _independent(**extra: Any) -> dict[str, Any]:
    row = {k: v for k, v in _evidence().items() if k != "task"}
    return {**row, "level": "organ", **extra}


def _joint(**extra: Any) -> dict[str, Any]:
    row = {
        "image_paths": IMG,
        "joint_prompt": "Q1...Q4",
        "modality": "CT",
        "modality_answer": "A. CT",
        "organ_answer": "B. Lung",
        "lesion_answer": "C. Nodule",
        "diagnosis_answer": "D. Cancer",
    }
    return {**row, **extra}


def _report(**extra: Any) -> dict[str, Any]:
    row = {
        "image_paths": IMG,
        "question": "Describe.",
        "answer": "A nodule.",
        "modality": "CT",
        "task": "report_generation",
    }
    return {**row, **extra}


def _write(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    text = "\n".join(
        line if isinstance(line, str) else orjson.dumps(line).decode() for line in lines
    )
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _read(root: Path, stem: str) -> tuple[list[Sample], list[DataError]]:
    errors: list[DataError] = []
    samples = list(iter_samples(root, stem, on_error=errors.append))
    return samples, errors


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ({"joint_prompt": "x", "task": "t", "level": "l"}, "joint"),
        ({"task": "report_generation", "level": "l"}, "report"),
        ({"task": "modality_recognition"}, "evidence"),
        ({"task": None}, "evidence"),
        ({"level": "organ"}, "independent"),
        ({"question": "q", "options": []}, None),
        ({}, None),
    ],
)
def test_row_kind(row: dict[str, Any], kind: Kind | None) -> None:
    assert row_kind(row) == kind


def test_shuffled_mixed_file_gets_kind_per_row(tmp_path: Path) -> None:
    _image(tmp_path)
    rows = []
    for i in range(5):
        rows += [
            _evidence(n=i, expect="evidence"),
            _independent(n=i, expect="independent"),
            _joint(n=i, expect="joint"),
            _report(n=i, expect="report"),
        ]
    random.Random(7).shuffle(rows)
    _write(tmp_path / "visual_evidence_qa.jsonl", rows)
    samples, errors = _read(tmp_path, "visual_evidence_qa")
    assert errors == []
    assert len(samples) == 20
    assert [s.row for s in samples] == rows  # untouched, unknown keys included
    for line, sample in enumerate(samples, start=1):
        assert sample.kind == sample.row["expect"]
        assert sample.line == line
        assert sample.file == "visual_evidence_qa"
        assert sample.image == tmp_path / IMG


def test_bad_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    _image(tmp_path)
    bad = tmp_path / "images/bad.png"
    bad.write_bytes(b"this is not a png")
    lines: list[dict[str, Any] | str] = [
        _evidence(),  # 1
        '{"task": "modality_recognition", ',  # 2
        "[1, 2]",  # 3
        "",  # 4 blank
        {"image_paths": IMG, "question": "q"},  # 5
        {k: v for k, v in _evidence().items() if k != "options"},  # 6
        _evidence(image_paths=[IMG]),  # 7
        _independent(options=[]),  # 8
        _independent(options=["A. x", 3]),  # 9
        _independent(options="A. x\nB. y"),  # 10
        _evidence(answer=None),  # 11
        "   \t ",  # 12 blank
        {k: v for k, v in _joint().items() if k != "lesion_answer"},  # 13
        _joint(joint_prompt=5),  # 14
        {k: v for k, v in _report().items() if k != "answer"},  # 15
        _evidence(image_paths="images/missing.png"),  # 16
        _evidence(image_paths="images/bad.png"),  # 17
        _evidence(image_paths=""),  # 18
        _evidence(image_paths=str(tmp_path / IMG)),  # 19: absolute paths are not data
        _evidence(image_paths="../outside.png"),  # 20
        _report(),  # 21
        '"just a string"',  # 22
        _joint(),  # 23
    ]
    path = _write(tmp_path / "joint_qa.jsonl", lines)
    samples, errors = _read(tmp_path, "joint_qa")
    assert [(s.line, s.kind) for s in samples if s.problem is None] == [
        (1, "evidence"),
        (21, "report"),
        (23, "joint"),
    ]
    # A row whose image is unusable is still a row: it fails unasked and is scored wrong.
    problems = {s.line: s.problem for s in samples if s.problem is not None}
    assert problems == {
        16: "image not found: images/missing.png",
        17: "image does not decode: images/bad.png (cannot identify image file)",
        18: "field 'image_paths' is empty",
        19: f"image not found: {tmp_path / IMG}",
        20: "image not found: ../outside.png",
    }
    assert all(isinstance(e, DataError) and e.path == str(path) for e in errors)
    got = [str(e) for e in errors]
    strings = "field 'options' must be a non-empty list of strings"
    expected = {
        3: "row must be a JSON object, got list",
        5: "unknown row kind: no 'joint_prompt', 'task' or 'level' field",
        6: "missing field 'options'",
        7: "field 'image_paths' must be a string, got list",
        8: f"{strings}, got an empty list",
        9: f"{strings}, got int at index 1",
        10: f"{strings}, got str",
        11: "field 'answer' must be a string, got null",
        13: "missing field 'lesion_answer'",
        14: "field 'joint_prompt' must be a string, got int",
        15: "missing field 'answer'",
        22: "row must be a JSON object, got str",
    }
    assert re.fullmatch(rf"{re.escape(str(path))}:2: invalid JSON: .+", got[0])
    assert got[1:] == [f"{path}:{line}: {msg}" for line, msg in expected.items()]
    assert [e.line for e in errors] == [2, *expected]


def test_blank_lines_and_bom_are_skipped(tmp_path: Path) -> None:
    _image(tmp_path)
    body = b"\xef\xbb\xbf" + orjson.dumps(_report()) + b"\r\n\r\n  \n" + orjson.dumps(_report(x=1))
    (tmp_path / "report_generation.jsonl").write_bytes(body)
    samples, errors = _read(tmp_path, "report_generation")
    assert errors == []
    assert [s.line for s in samples] == [1, 4]


def test_duplicate_rows_get_distinct_keys(tmp_path: Path) -> None:
    _image(tmp_path)
    _write(tmp_path / "independent_qa.jsonl", [_independent(), _independent(), _independent(n=1)])
    samples, _ = _read(tmp_path, "independent_qa")
    keys = [s.key for s in samples]
    assert re.fullmatch(r"[0-9a-f]{16}#0", keys[0])
    assert keys[1] == keys[0][:-1] + "1"
    assert keys[2].endswith("#0")
    assert keys[2] != keys[0]


def test_keys_are_stable_across_reordering_and_key_order(tmp_path: Path) -> None:
    _image(tmp_path)
    a, b, c = _evidence(n=1), _evidence(n=2), _independent()
    first = tmp_path / "one"
    second = tmp_path / "two"
    for root, rows in ((first, [a, b, c, a]), (second, [c, a, dict(reversed(b.items())), a])):
        root.mkdir()
        _image(root)
        _write(root / "visual_evidence_qa.jsonl", rows)
    one = {s.key: s.row for s in _read(first, "visual_evidence_qa")[0]}
    two = {s.key: s.row for s in _read(second, "visual_evidence_qa")[0]}
    assert len(one) == 4
    assert one == two


def test_iterator_is_lazy(tmp_path: Path) -> None:
    _image(tmp_path)
    path = _write(tmp_path / "joint_qa.jsonl", [_joint(), "{broken"])
    errors: list[DataError] = []
    it = iter_samples(tmp_path, "joint_qa", on_error=errors.append)
    first = next(it)
    assert first.line == 1
    assert errors == []  # line 2 not parsed yet
    # Rows appended after reading started are still seen: the file is streamed, not loaded.
    with path.open("a", encoding="utf-8") as f:
        f.write(orjson.dumps(_joint(n=2)).decode() + "\n")
    rest = list(it)
    assert [s.line for s in rest] == [3]
    assert [e.line for e in errors] == [2]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"joint_qa\.jsonl not found"):
        next(iter_samples(tmp_path, "joint_qa", on_error=lambda e: None))


def test_count_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a":1}\n\n  \r\n{"a":2}\r\n{"a":3}')
    assert count_rows(path) == 3
    path.write_bytes(b"")
    assert count_rows(path) == 0


def test_count_rows_across_chunk_boundaries(tmp_path: Path) -> None:
    rnd = random.Random(3)
    lines = [b"x" * rnd.randrange(0, 200) for _ in range(30_000)]  # about 3 MB, 1 MiB chunks
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join(lines))
    assert count_rows(path) == sum(1 for line in lines if line)


def test_find_root_hf_layout(tmp_path: Path) -> None:
    (tmp_path / "joint_qa.jsonl").write_text("")
    assert find_root(tmp_path) == tmp_path
    assert present_files(tmp_path) == ("joint_qa",)


def test_find_root_kaggle_layout(tmp_path: Path) -> None:
    nested = tmp_path / "4" / "drvd-bench"
    nested.mkdir(parents=True)
    (tmp_path / "4" / "images").mkdir()
    for stem in FILES:
        (nested / f"{stem}.jsonl").write_text("")
    assert find_root(tmp_path) == nested
    assert find_root(tmp_path / "4") == nested
    assert present_files(nested) == FILES


def test_find_root_prefers_the_most_complete_folder(tmp_path: Path) -> None:
    for name, stems in (("a", FILES[:1]), ("b", FILES)):
        (tmp_path / name).mkdir()
        for stem in stems:
            (tmp_path / name / f"{stem}.jsonl").write_text("")
    assert find_root(tmp_path) == tmp_path / "b"


def test_find_root_gives_up_below_two_levels(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "joint_qa.jsonl").write_text("")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        find_root(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        find_root(tmp_path / "nope")


def test_resolve_image_hf_layout(tmp_path: Path) -> None:
    path = _image(tmp_path)
    assert ImageFolder(tmp_path).resolve(IMG) == path
    assert ImageFolder(tmp_path).resolve("images/ct/none.png") is None
    assert ImageFolder(tmp_path).resolve("") is None
    assert ImageFolder(tmp_path).resolve(str(path)) is None


@pytest.mark.parametrize(
    ("on_disk", "rel", "layout"),
    [
        ("images/images/ct/0001.png", IMG, ("images", 0)),  # first folder doubled
        ("drvd-bench/images/ct/0001.png", IMG, ("drvd-bench", 0)),  # extra layer under the root
        ("images/ct/0001.png", "drvd-bench/images/ct/0001.png", ("", 1)),  # extra layer in the path
    ],
)
def test_resolve_image_kaggle_quirks(
    tmp_path: Path, on_disk: str, rel: str, layout: tuple[str, int]
) -> None:
    path = _image(tmp_path, on_disk)
    other = _image(tmp_path, on_disk.replace("0001", "0002"))
    images = ImageFolder(tmp_path)
    assert images.resolve(rel) == path
    # The discovered layout is remembered (no search for the next row) and applies to it too.
    assert images.layout == (tmp_path / layout[0], layout[1])
    assert images.resolve(rel.replace("0001", "0002")) == other
    assert images.resolve(rel.replace("0001", "0003")) is None
    assert ImageFolder(tmp_path).layout is None  # each dataset learns its own: no process memory


def test_samples_resolve_images_in_kaggle_layout(tmp_path: Path) -> None:
    root = tmp_path / "drvd-bench"
    root.mkdir()
    path = _image(root, "drvd-bench/" + IMG)
    _write(root / "visual_evidence_qa.jsonl", [_evidence()])
    assert find_root(tmp_path) == root
    samples, errors = _read(root, "visual_evidence_qa")
    assert errors == []
    assert samples[0].image == path


def test_the_image_layout_is_decided_once_per_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _image(root)  # row 1 resolves inside the dataset folder...
    _image(tmp_path, "images/ct/0002.png")  # ...row 2's image exists only beside it
    _write(
        root / "visual_evidence_qa.jsonl", [_evidence(), _evidence(image_paths=IMG[:-5] + "2.png")]
    )
    samples, _ = _read(root, "visual_evidence_qa")
    assert [s.problem for s in samples] == [None, "image not found: images/ct/0002.png"]


def test_a_kaggle_layout_found_after_a_missing_image_resolves_every_row(tmp_path: Path) -> None:
    for n in (2, 3):
        _image(tmp_path, f"images/images/ct/000{n}.png")  # the first folder doubled
    lines = [_evidence(image_paths=f"images/ct/000{n}.png") for n in (1, 2, 3)]  # 1 is missing
    _write(tmp_path / "visual_evidence_qa.jsonl", lines)
    samples, _ = _read(tmp_path, "visual_evidence_qa")
    assert [s.problem for s in samples] == ["image not found: images/ct/0001.png", None, None]
    assert samples[2].image == tmp_path / "images/images/ct/0003.png"


@pytest.mark.parametrize("rel", ["a" * 300 + ".png", "images/" + "x/" * 2500 + "y.png"])
def test_an_image_path_the_filesystem_refuses_is_a_row_problem(tmp_path: Path, rel: str) -> None:
    _image(tmp_path)
    _write(tmp_path / "joint_qa.jsonl", [_joint(image_paths=rel), _joint()])
    samples, errors = _read(tmp_path, "joint_qa")
    assert errors == []
    assert samples[0].problem == (
        f"image path cannot be used: {rel[:200]}... ({len(rel)} characters) (File name too long)"
    )
    assert samples[1].problem is None
