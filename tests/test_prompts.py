from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.data.dataset import iter_samples
from pipeline.data.prompts import PROTOCOL_VERSION, PROTOCOLS, build_request, user_text
from pipeline.records import ImageSpec, Kind, Sample

# Literal text from PROTOCOL §2.1 / §2.2, written out independently of the module's constants.
ANALYSIS_SYSTEM = "You are a helpful medical image analysis assistant."
DISCRETE_SYSTEM = "Only respond with one capital letter."
JOINT_SYSTEM = "Respond with four or five capital letters (A-H), separated by commas."

IMAGE = Path("/data/images/ct/0001.png")

ROWS: dict[Kind, dict[str, Any]] = {
    "evidence": {
        "image_paths": "images/ct/0001.png",
        "question": "What is the imaging modality of this image?",
        "options": ["A. MRI", "B. X-ray", "C. CT", "D. Ultrasound"],
        "answer": "C. CT",
        "modality": "CT",
        "task": "modality_recognition",
    },
    "independent": {
        "image_paths": "images/ct/0001.png",
        "question": "Which organ is shown?",
        "options": ["A. Liver", "B. Lung", "C. Brain", "D. Kidney", "E. Heart"],
        "answer": "B. Lung",
        "modality": "CT",
        "level": "organ",
    },
    "joint": {
        "image_paths": "images/ct/0001.png",
        "joint_prompt": "Q1: modality?\nA. CT\nB. MRI\nQ2: organ?\nA. Lung\nB. Liver\n"
        "Q3: lesion?\nA. Nodule\nB. None\nQ4: diagnosis?\nA. Cancer\nB. Normal\n",
        "modality": "CT",
        "modality_answer": "A. CT",
        "organ_answer": "A. Lung",
        "lesion_answer": "A. Nodule",
        "diagnosis_answer": "A. Cancer",
    },
    "report": {
        "image_paths": "images/ct/0001.png",
        "question": "Please describe the findings in this chest CT image.",
        "answer": "There is a nodule in the right upper lobe.",
        "modality": "CT",
        "task": "report_generation",
    },
}

TEXTS: dict[Kind, str] = {
    "evidence": "Question: What is the imaging modality of this image?\nOptions:\n"
    "A. MRI\nB. X-ray\nC. CT\nD. Ultrasound\n\nProvide only the letter as your answer.",
    "independent": "You are participating in an educational exercise based on visual "
    "information.\n\nQuestion:\nWhich organ is shown?\nOptions:\n"
    "A. Liver\nB. Lung\nC. Brain\nD. Kidney\nE. Heart\n\n"
    "Please answer with a single letter (A-H) only.",
    "joint": "Q1: modality?\nA. CT\nB. MRI\nQ2: organ?\nA. Lung\nB. Liver\n"
    "Q3: lesion?\nA. Nodule\nB. None\nQ4: diagnosis?\nA. Cancer\nB. Normal\n",
    "report": "Please describe the findings in this chest CT image.\n\n"
    "Write the image report as a single coherent paragraph, no more than 500 words.",
}

# (system, max_dim, quality, temperature, max_tokens) per (kind, protocol).
EXPECTED: dict[tuple[Kind, str], tuple[str, int, int, float | None, int | None]] = {
    ("evidence", "official"): (ANALYSIS_SYSTEM, 1024, 85, None, None),
    ("report", "official"): (ANALYSIS_SYSTEM, 1024, 85, None, None),
    ("independent", "official"): (DISCRETE_SYSTEM, 512, 75, 0, 50),
    ("joint", "official"): (JOINT_SYSTEM, 1024, 85, 0, 100),
    ("evidence", "notebook"): (ANALYSIS_SYSTEM, 1024, 85, 0.0, 300),
    ("report", "notebook"): (ANALYSIS_SYSTEM, 1024, 85, 0.0, 300),
    ("independent", "notebook"): (ANALYSIS_SYSTEM, 1024, 85, 0.0, 300),
    ("joint", "notebook"): (ANALYSIS_SYSTEM, 1024, 85, 0.0, 300),
}


def _sample(kind: Kind, row: dict[str, Any] | None = None) -> Sample:
    return Sample(file="any", line=1, key="k#0", kind=kind, image=IMAGE, row=row or ROWS[kind])


@pytest.mark.parametrize(("kind", "protocol"), sorted(EXPECTED))
def test_request_matches_official_protocol(kind: Kind, protocol: str) -> None:
    system, max_dim, quality, temperature, max_tokens = EXPECTED[kind, protocol]
    req = build_request(_sample(kind), protocol)
    assert req.system == system
    assert req.text == TEXTS[kind]
    assert req.image == ImageSpec(IMAGE, max_dim, quality)
    assert req.temperature == temperature
    assert req.max_tokens == max_tokens
    if temperature is None:
        assert req.temperature is None  # not sent: provider default, as upstream


def test_default_protocol_is_official() -> None:
    assert PROTOCOLS == ("official", "notebook")
    for kind in ROWS:
        assert build_request(_sample(kind)) == build_request(_sample(kind), "official")


def test_unknown_protocol_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'paper'"):
        build_request(_sample("evidence"), "paper")


def test_protocol_version_is_a_nonempty_string() -> None:
    assert isinstance(PROTOCOL_VERSION, str)
    assert PROTOCOL_VERSION


def test_braces_and_newlines_in_questions_are_kept_verbatim() -> None:
    row = dict(ROWS["evidence"], question="Is {x} > {0}?\nSee figure.", options=["A. {y}"])
    assert user_text(_sample("evidence", row)) == (
        "Question: Is {x} > {0}?\nSee figure.\nOptions:\nA. {y}\n\n"
        "Provide only the letter as your answer."
    )


def test_joint_prompt_is_sent_verbatim_even_with_braces() -> None:
    row = dict(ROWS["joint"], joint_prompt="  {modality}\n\n")
    assert build_request(_sample("joint", row)).text == "  {modality}\n\n"


def test_row_in_the_wrong_file_gets_its_own_template(tmp_path: Path) -> None:
    # Upstream picks the template from the first line of the file (quirk 7); we pick per row.
    Image.new("RGB", (8, 8)).save(tmp_path / "0001.png")
    rows = [dict(row, image_paths="0001.png") for row in ROWS.values()]
    (tmp_path / "independent_qa.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    errors: list[object] = []
    samples = list(iter_samples(tmp_path, "independent_qa", on_error=errors.append))
    assert errors == []
    assert [s.kind for s in samples] == ["evidence", "independent", "joint", "report"]
    for sample in samples:
        req = build_request(sample)
        system, max_dim, quality, temperature, max_tokens = EXPECTED[sample.kind, "official"]
        assert req.system == system
        assert req.text == TEXTS[sample.kind]
        assert req.image is not None
        assert (req.image.max_dim, req.image.quality) == (max_dim, quality)
        assert (req.temperature, req.max_tokens) == (temperature, max_tokens)
        assert req.image.path == tmp_path / "0001.png"
