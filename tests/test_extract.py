from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.synthetic import make_row
from pipeline.scoring.reader import extract_chain, extract_choice, is_refusal, option_letters

MODALITY = ["A. CT", "B. MRI", "C. Ultrasound", "D. X-ray"]
ORGAN = ["A. Liver", "B. Kidney", "C. Spleen", "D. Pancreas", "E. Gallbladder", "F. Adrenal gland"]
DIAGNOSIS = ["A. Hepatitis B", "B. Cirrhosis", "C. Hepatocellular carcinoma", "D. Steatosis"]
ANGIO = ["A. CT", "B. CT angiography", "C. MRI"]
LESION = ["A) Cyst", "B) Hemangioma", "C) Metastasis", "D) B-cell lymphoma"]
ECHO = "A. Liver\nB. Kidney\nC. Spleen\nD. Pancreas\nE. Gallbladder\nF. Adrenal gland"

CHOICE_CASES = [
    # bare letters, any case only when the letter is the whole reply
    ("B", ORGAN, "B"),
    ("b", ORGAN, "B"),
    ("E.", ORGAN, "E"),
    (" f \n", ORGAN, "F"),
    ("(C)", ORGAN, "C"),
    ("[D]", ORGAN, "D"),
    ("**A**", ORGAN, "A"),
    ("`E`", ORGAN, "E"),
    ("Option F", ORGAN, "F"),
    ("'D'", MODALITY, "D"),
    ("a", MODALITY, "A"),
    # explicit answer markers
    ("Answer: B", ORGAN, "B"),
    ("answer: (b)", ORGAN, "B"),
    ("ANSWER - e", ORGAN, "E"),
    ("**Answer:** **D**", ORGAN, "D"),
    ("The answer is C", ORGAN, "C"),
    ("The answer is A because the lesion is in the right upper quadrant.", ORGAN, "A"),
    ("The correct option is B: Kidney", ORGAN, "B"),
    ("The correct answer is option (F), the adrenal gland.", ORGAN, "F"),
    ("The best choice is D.", ORGAN, "D"),
    ("I think it's B.", ORGAN, "B"),
    ("I think it\u2019s D.", ORGAN, "D"),
    ("I would choose E", ORGAN, "E"),
    ('{"answer": "B"}', ORGAN, "B"),
    ("{'final_answer': 'c'}", ORGAN, "C"),
    ("<answer>D</answer>", ORGAN, "D"),
    ("Answer: B\nThe kidney shows a hypodense mass.", ORGAN, "B"),
    ("A CT scan of the abdomen is shown. Answer: A\nI am an AI, not a doctor.", MODALITY, "A"),
    ("The answer is A Hope this helps.", ORGAN, "A"),
    ("Answer: Kidney (CT)", ORGAN, "B"),
    ('{"answer": "Spleen"}', ORGAN, "C"),
    ("A CT is shown. Answer: CT angiography", ANGIO, "B"),
    ("A CT is shown. Answer: CT.", ANGIO, "A"),
    ("Answer: C. Ultrasound", MODALITY, "C"),
    ("The answer is D - B-cell lymphoma", LESION, "D"),
    # a final answer after reasoning that mentions other letters
    ("A shows the liver, C the spleen. Option A is unlikely.\nFinal answer: B", ORGAN, "B"),
    ("Options A and C can be excluded. The answer is F.", ORGAN, "F"),
    ("The answer is A... on reflection, final answer: D", ORGAN, "D"),
    ("A CT image of the abdomen is shown.\n\nAnswer: D", MODALITY, "D"),
    (f"{ECHO}\nAnswer: E", ORGAN, "E"),
    ("B is the correct answer.", ORGAN, "B"),
    ("The image is a CT. A is correct.", MODALITY, "A"),
    ("Reasoning... Therefore, option D is the most likely.", ORGAN, "D"),
    ("The answer to this question is B", ORGAN, "B"),
    # labelled answers with their text
    ("B) Kidney", ORGAN, "B"),
    ("(A) Liver", ORGAN, "A"),
    ("B. Kidney because the mass arises from the renal cortex.", ORGAN, "B"),
    ("F: Adrenal gland", ORGAN, "F"),
    ("**C.** Spleen", ORGAN, "C"),
    ("**E**: Gallbladder, given the wall thickening.", ORGAN, "E"),
    ("D. X-ray", MODALITY, "D"),
    ("B - Kidney", ORGAN, "B"),
    ("B, because the organ is retroperitoneal.", ORGAN, "B"),
    ("C\n\nExplanation: a hypoechoic splenic lesion is seen.", ORGAN, "C"),
    # the option text alone
    ("Kidney", ORGAN, "B"),
    ("adrenal gland.", ORGAN, "F"),
    ("Ultrasound", MODALITY, "C"),
    ("  B-cell lymphoma ", LESION, "D"),
    # boxed and fenced
    (r"The image shows a splenic lesion. \boxed{C}", ORGAN, "C"),
    (r"$\boxed{\text{E}}$", ORGAN, "E"),
    ("```B```", ORGAN, "B"),
    ("```\nA\n```", ORGAN, "A"),
    ("Reasoning: the organ is retroperitoneal.\n```text\nB. Kidney\n```", ORGAN, "B"),
    ('```json\n{"answer": "F"}\n```', ORGAN, "F"),
    # never a letter from English words or abbreviations
    # a letter the row does not offer, however it is written
    ("E", MODALITY, None),
    ("(E)", MODALITY, None),
    ("Looking at it:\n```\nE\n```", MODALITY, None),
    ("Answer: E", MODALITY, None),
    ("A patient with abdominal pain.", ORGAN, None),
    ("I cannot determine this from the image.", ORGAN, None),
    ("This is a CT scan.", MODALITY, None),
    ("CT", ORGAN, None),
    ("MRI", ORGAN, None),
    ("Answer: CT", ORGAN, None),
    ("The answer is a mass in the kidney", ORGAN, None),
    ("The answer, I believe, is unclear.", ORGAN, None),
    ("US and DWI were not performed.", ORGAN, None),
    ("The answer is MRI", ORGAN, None),
    ("Hepatitis B is the most likely diagnosis.", DIAGNOSIS, None),
    ("The answer is Hepatitis B", DIAGNOSIS, "A"),
    ("T2 hyperintense lesion; B12 deficiency is unrelated.", ORGAN, None),
    ("Answer: B-cell lymphoma", LESION, "D"),  # option text after the marker, not letter B
    # the option list echoed back, ambiguity, refusals, letters not offered
    (ECHO, ORGAN, None),
    ("A. CT B. MRI C. Ultrasound D. X-ray", MODALITY, None),
    ("B or C", ORGAN, None),
    ("Either A or D.", ORGAN, None),
    ("The answer is B or C.", ORGAN, None),
    ("Answer: A, D", ORGAN, None),
    ("(B) or (E)", ORGAN, None),
    ("G", ORGAN, None),
    ("Answer: E", MODALITY, None),
    ("Answer: A\nFinal answer: C\nFinal answer: D", ORGAN, "D"),  # the last answer line stands
    ("B. Liver", ORGAN, None),  # the label contradicts its text
    ("", ORGAN, None),
    ("[ERROR] 429 limit_requests", ORGAN, None),
    ("I'm sorry, I can't help with medical images.", ORGAN, None),
    ("The answer is either B or D", ORGAN, None),
    ("B\nC", ORGAN, None),
    ("B, C", ORGAN, None),
    ("Neither A nor B is correct.", ORGAN, None),
    ("The answer is D, B is wrong.", ORGAN, None),
    # hedged sentences and soft cues
    ("My pick is C) Spleen, given the texture.", ORGAN, "C"),
    ("Option D (Pancreas) fits the image best.", ORGAN, "D"),
    ("It is most likely B, though C cannot be excluded.", ORGAN, "B"),
    ("Could be D, but I'd favour B.", ORGAN, "B"),
    ("The right answer here is F.", ORGAN, "F"),
    ("Probably an MRI, so B.", MODALITY, "B"),
    ("The pattern is classic for a hemangioma (B).", LESION, "B"),
    # rejected options discussed before the chosen one
    (
        "The liver (A) is on the right. It is not a kidney (B). It's the spleen, option C.",
        ORGAN,
        "C",
    ),
    ("The fracture spares the kidney, so B is out. This leaves C.", ORGAN, "C"),
    ("Option A: Cyst - no, it enhances.\nOption C: Metastasis - most likely.", LESION, "C"),
    ("A is incorrect, C is incorrect; therefore the answer is B.", ORGAN, "B"),
    # Chinese, full-width, reasoning blocks, markdown
    ("答案\uff1aC", ORGAN, "C"),
    ("故选E。", ORGAN, "E"),
    ("选项D正确。", ORGAN, "D"),
    ("综上所述\uff0c最可能的诊断是肝细胞癌\uff08C\uff09。", DIAGNOSIS, "C"),
    ("\uff08\uff23\uff09", ORGAN, "C"),
    ("\uff21\uff4e\uff53\uff57\uff45\uff52\uff1a\uff24", ORGAN, "D"),
    ("<think>Maybe A? No, the sinus is there.</think>\nB", ORGAN, "B"),
    ("## Diagnosis\n**B - Hemangioma**", LESION, "B"),
    # soft cues that are hedged, taken back or conditional; refusals with a guess
    ("This is an MRI scan of the liver.", MODALITY, None),  # describes, does not choose
    ("Typical of a hemangioma (B) is peripheral enhancement, which is absent here.", LESION, None),
    ("It could be consistent with a cyst (A).", LESION, None),
    ("If this were the spleen, the answer would be C.", ORGAN, None),
    ("The answer is B. Wait, no - the answer is C.", ORGAN, "C"),  # a self-correction
    ("Answer: Kidney or spleen", ORGAN, None),
    ("不选A\uff0c也不选B。", ORGAN, None),
    ("<think>It is A or B", ORGAN, None),
    ("I can't view the image, but if it were the liver the answer would be A.", ORGAN, None),
    ("抱歉\uff0c我无法查看图片。", ORGAN, None),
]

# Issue #21: replies written apart from the reader that it left unread (or read as no answer).
NEGATED = ["A. Mass", "B. No lesion", "C. Cyst", "D. Fracture", "E. No lesion seen"]
NONE_OF = [
    "A. Stroke",
    "B. Tumor",
    "C. Not visible",
    "D. Cannot be determined",
    "E. None of the above",
]
TEDDY = ["A. a cute teddy bear", "B. a toy train", "C. a red ball"]
FORCE = ["A. 2.45N", "B. 5.55N", "C. 7.10N", "D. 9.80N"]
GASES = ["A. H\u2082O", "B. CO\u2082", "C. O\u2082"]
ISSUE_CASES = [
    # an option written back is read whatever words its text holds
    ("E. No lesion seen", NEGATED, "E"),
    ("**B. No lesion**", NEGATED, "B"),
    ("B) No lesion", NEGATED, "B"),
    ("B: No lesion", NEGATED, "B"),
    ("No lesion", NEGATED, "B"),
    ("C. Not visible", NONE_OF, "C"),
    ("D. Cannot be determined", NONE_OF, "D"),
    ("None of the above.", NONE_OF, "E"),
    ("Answer: E. None of the above", NONE_OF, "E"),
    ("a cute teddy bear", TEDDY, "A"),
    ("A Cute Teddy Bear!", TEDDY, "A"),
    ("co2", GASES, "B"),
    ("B. No lesion\nC. Cyst", NEGATED, None),  # two options written back
    ("B. Cyst", NEGATED, None),  # the label contradicts its text
    # the last final answer stands
    ("ANSWER: A\nWait, that is wrong.\nANSWER: B", ORGAN, "B"),
    ("Answer: A\nAnswer: B", ORGAN, "B"),
    ("The answer is A. Actually, the lesion is renal, so the answer is B.", ORGAN, "B"),
    ("Answer: A\nWait.\nAnswer: B or C", ORGAN, None),
    # tags in any case, other markers
    ("<ANSWER> b </ANSWER>", ORGAN, "B"),
    ("<choice>B</choice>", ORGAN, "B"),
    ("<answer>B or C</answer>", ORGAN, None),
    ("Selected: B", ORGAN, "B"),
    ("Option Selected: B", ORGAN, "B"),
    ("Response: C", ORGAN, "C"),
    ("My response is B.", ORGAN, "B"),
    ("Option B - MRI", MODALITY, "B"),
    ("The lesion is subcapsular and wedge-shaped, option A.", ORGAN, "A"),
    ("Answer: $D$", ORGAN, "D"),
    ("Summing the segments, the value is **D**.", ORGAN, "D"),
    ("The value is not **D**.", ORGAN, None),
    ("With m = 0.566 kg and g = 9.8 m/s^2, F = 5.55 N. B: 5.55N", FORCE, "B"),
    # markers in other languages
    ("정답: B", ORGAN, "B"),
    ("정답은 D입니다", ORGAN, "D"),
    ("Antwort: B", ORGAN, "B"),
    ("Je pense que la réponse est C.", ORGAN, "C"),
    ("La respuesta correcta es A.", ORGAN, "A"),
    ("答えはCです。", ORGAN, "C"),
    # a letter, then the others rejected
    ("D. it can't be A or B", ORGAN, "D"),
    ("B\u3002不是 A", ORGAN, "B"),
    ("C, not A.", ORGAN, "C"),
    ("B. It can't be B.", ORGAN, None),
]

CHAIN_CASES = [
    ("B,D,A,C", "B,D,A,C"),
    ("B, D, A, C", "B,D,A,C"),
    ("B D A C", "B,D,A,C"),
    ("B,D,A,C.", "B,D,A,C"),
    ("['B','D','A','C']", "B,D,A,C"),
    ('["B", "D", "A", "C"]', "B,D,A,C"),
    ("1. B 2. D 3. A 4. C", "B,D,A,C"),
    ("1) B\n2) D\n3) A\n4) C", "B,D,A,C"),
    ("Modality: B, Organ: D, Lesion: A, Diagnosis: C", "B,D,A,C"),
    ("modality: h\norgan: e\nlesion: f\ndiagnosis: g", "H,E,F,G"),
    (r"\boxed{A,B,C,D}", "A,B,C,D"),
    ("```\nC,C,B,A\n```", "C,C,B,A"),
    ("Answer: B, D, A, C", "B,D,A,C"),
    ("The CT shows a renal mass.\nFinal answer: E, F, G, H", "E,F,G,H"),
    ("Looking at the image, it is a CT of the kidney.\nB,D,A,C", "B,D,A,C"),
    ("<answer>A,A,A,A</answer>", "A,A,A,A"),
    ("The image is a CT of the abdomen.\n\nB,D,A,C\n\nA follow-up MRI is advised.", "B,D,A,C"),
    ("Options A and C fit the modality.\nG, E, B, A", "G,E,B,A"),
    ("B, D, A and C", "B,D,A,C"),
    ("B,D,A,C,", "B,D,A,C"),
    ("1. B\n2. D\n3. A\n4. C\n\nThe modality is CT, the organ the kidney.", "B,D,A,C"),
    ("Q1: F Q2: D Q3: A Q4: C", "F,D,A,C"),
    # refusals: wrong count, words, letters outside the range
    ("B,E,D,A,C", None),  # five letters (a body-region answer included): PROTOCOL §4 Q4
    ("B,D,A", None),
    ("Modality: B\nBody region: A\nOrgan: D\nLesion: A\nDiagnosis: C", None),
    ("BDAC", None),
    ("A CT of the abdomen shows a cyst", None),
    ("B,D,A,I", None),
    ("Maybe:\nA,D,A,C\nor:\nB,D,A,C", None),  # two different answer lines
    ("", None),
    ("I think the modality is CT and the organ is the liver.", None),
    ("Modality: CT, Organ: Liver, Lesion: Cyst, Diagnosis: HCC", None),
    # prose, items, Chinese, reasoning blocks
    (
        "The modality is CT (B), the organ is the liver (D), the lesion is a cyst (A), and the "
        "diagnosis is a simple hepatic cyst (C).",
        "B,D,A,C",
    ),
    ("I'd answer B for modality, D for organ, A for lesion and C for diagnosis.", "B,D,A,C"),
    (
        "Modality: not CT (A) but MRI (B)\nOrgan: brain (C)\nLesion: mass (D)\n"
        "Diagnosis: glioma (A)",
        "B,C,D,A",
    ),
    (
        "| Level | Answer |\n|---|---|\n| Modality | B |\n| Organ | D |\n| Lesion | A |\n"
        "| Diagnosis | C |",
        "B,D,A,C",
    ),
    ("The answers, in order, are C, B, A and D.", "C,B,A,D"),
    ("模态\uff1aB\n器官\uff1aD\n病变\uff1aA\n诊断\uff1aC", "B,D,A,C"),
    ("答案\uff1aB、D、A、C", "B,D,A,C"),
    ("<think>B,D,A,C?</think>\nB,D,C,A", "B,D,C,A"),
    ("Answer: B, D, A, C\nActually: B, D, C, A", "B,D,C,A"),  # a self-correction
    ("The options are A, B, C and D.", None),
    ("(A) CT (B) MRI (C) Ultrasound (D) X-ray", None),
    ("I'm unable to view the image, so I cannot answer these questions.", None),
]


@pytest.mark.parametrize(("reply", "options", "expected"), CHOICE_CASES + ISSUE_CASES)
def test_extract_choice(reply: str, options: list[str], expected: str | None) -> None:
    assert extract_choice(reply, options) == expected


@pytest.mark.parametrize(("reply", "expected"), CHAIN_CASES)
def test_extract_chain(reply: str, expected: str | None) -> None:
    assert extract_chain(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, but I can't help with that.",
        "I'm unable to view the image you've shared.",
        "As an AI language model, I am not able to interpret medical images.",
        "No image was provided, so I cannot answer.",
        "I must decline to provide a diagnosis based on this image.",
        "It seems the image didn't come through.",
        "作为AI模型\uff0c我不能提供医学诊断。",
        "我看不到您上传的图像。",
    ],
)
def test_is_refusal(reply: str) -> None:
    assert is_refusal(reply)
    assert extract_choice(reply + " Answer: B", ORGAN) is None
    assert extract_chain(reply + "\nB,D,A,C") is None


@pytest.mark.parametrize(
    "reply",
    [
        "I'm not a radiologist, but this appears to be an MRI. Answer: B",
        "While I can't be completely certain, the most likely answer is B.",
        "I can't say for sure, but I'd go with B.",
        "I can't see any fracture line, so the answer is D.",
        "Please consult a doctor. Answer: A",
        "B or C",
        "",
    ],
)
def test_hedges_and_disclaimers_are_not_refusals(reply: str) -> None:
    assert not is_refusal(reply)


def _sample_options() -> list[list[str]]:
    rows = [
        json.loads(line)
        for path in sorted(SAMPLE.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return [row["options"] for row in rows if "options" in row]


def _synthetic_options() -> list[list[str]]:
    rng = random.Random(21)
    rows = [make_row(stem, "x.png", rng, i) for stem in MCQ for i in range(40)]
    return [row["options"] for row in rows] + [NEGATED, NONE_OF, TEDDY, FORCE, GASES]


SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample"
MCQ = ("visual_evidence_qa", "independent_qa")
# Every list style, with and without markdown; {x} is the letter, {t} the option's text.
ECHO_STYLES = [
    "{x}. {t}", "{x}) {t}", "{x}: {t}", "({x}) {t}", "[{x}] {t}", "{x} - {t}", "{x} \u2013 {t}",
    "Option {x}: {t}", "Option {x} - {t}", "**{x}. {t}**", "**{x}.** {t}", "**{x}**: {t}",
    "__{x}) {t}__", "- {x}. {t}", "* **{x}) {t}**", "### {x}. {t}", "`{x}. {t}`", "{x}. {t}.",
    "{t}", "{t}.", "**{t}**", "{T}", "{l}",
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "option_lists"),
    [("sample", _sample_options()), ("synthetic", _synthetic_options())],
)
def test_every_option_written_back_reads_as_its_letter(
    source: str, option_lists: list[list[str]]
) -> None:
    assert option_lists, source
    for options in option_lists:
        offered = option_letters(options)
        texts = [" ".join(t.casefold().split()) for t in offered.values()]
        for letter, text in offered.items():
            alone_is_unique = texts.count(" ".join(text.casefold().split())) == 1
            for style in ECHO_STYLES:
                if "{x}" not in style and not alone_is_unique:
                    continue  # the same text twice: its text alone names no one option
                reply = style.format(x=letter, t=text, T=text.upper(), l=text.lower())
                assert extract_choice(reply, options) == letter, (source, reply, options)


def test_case_counts_cover_the_brief() -> None:
    assert len(CHOICE_CASES) >= 60
    assert len(CHAIN_CASES) >= 15
    answers = {expected for _, _, expected in CHOICE_CASES}
    assert set("ABCDEF") <= answers


@pytest.mark.parametrize(
    "options",
    [["A. CT", "B. MRI"], ["A) CT", "B) MRI"], ["A: CT", "B: MRI"], ["(A) CT", "(B) MRI"]],
)
def test_option_letters_accepts_label_styles(options: list[str]) -> None:
    assert option_letters(options) == {"A": "CT", "B": "MRI"}


def test_option_letters_skips_unlabelled_and_keeps_first_duplicate() -> None:
    assert option_letters(["CT", "A. MRI", "A. PET", 3]) == {"A": "MRI"}  # type: ignore[list-item]


def test_unlabelled_options_offer_no_letters() -> None:
    assert extract_choice("A", ["CT", "MRI"]) is None


def test_none_reply_is_no_answer() -> None:
    assert extract_choice(None, ORGAN) is None
    assert extract_chain(None) is None


def test_chain_respects_n_and_letters() -> None:
    assert extract_chain("B,E,D,A,C", n=5) == "B,E,D,A,C"
    assert extract_chain("A,B,C", n=3, letters="ABC") == "A,B,C"
    assert extract_chain("A,B,D", n=3, letters="ABC") is None


option_lists = st.lists(
    st.one_of(
        st.builds(
            "{}{}{}".format,
            st.sampled_from(string.ascii_letters),
            st.sampled_from([". ", ") ", ": ", ""]),
            st.text(max_size=20),
        ),
        st.text(max_size=20),
    ),
    max_size=8,
)
FRAGMENTS = "A|b|Answer:|(|)|**|\\boxed{|}|```|,| or |CT|I |a |final answer|\n|. |é|\u0131|K|1. "
replies = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS.split("|")), max_size=30).map("".join),
)
PHRASINGS = [
    "{x}",
    "({x})",
    "Answer: {x}",
    "The answer is {x}.",
    "{x}. {t} because of its location.",
    "{t}",
    "\\boxed{{{x}}}",
    "I think it's {x}.",
    "{x} is the correct answer.",
    "Answer: {t}",
]
DISTRACTORS = [
    "",
    "A CT scan of the abdomen is shown. ",
    "Option A is unlikely; C is possible. ",
    "I see a mass on MRI and US. ",
    "In T2 the signal is high. ",
    "Hepatitis B history. ",
    "\nA follow-up MRI is recommended.",
    "\nWhy not E? The (E) finding is absent.",
    " If it were the liver, the answer would be A. ",
    "\nThe differential includes the spleen (C).",
    "Typical of a pancreas (D) is a lobulated contour, which is absent. ",
    "Not E. ",
    "\n不选B。",
]
REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I'm unable to view the image.",
    "As an AI, I cannot provide a diagnosis.",
    "抱歉\uff0c我无法查看图片。",  # "I'm sorry, I can't view the image."
]


@given(
    st.sampled_from("ABCDEF"),
    st.sampled_from(PHRASINGS),
    st.sampled_from(DISTRACTORS),
    st.sampled_from(DISTRACTORS),
)
def test_distractors_never_produce_a_wrong_letter(
    letter: str, phrasing: str, before: str, after: str
) -> None:
    reply = phrasing.format(x=letter, t=option_letters(ORGAN)[letter])
    assert extract_choice(before + reply + after, ORGAN) in (letter, None)
    assert extract_choice(reply, ORGAN) == letter


@given(
    st.sampled_from("ABCDEF"), st.sampled_from(PHRASINGS), st.sampled_from(REFUSALS), st.booleans()
)
def test_a_refusal_never_gets_a_letter(
    letter: str, phrasing: str, refusal: str, refusal_first: bool
) -> None:
    reply = phrasing.format(x=letter, t=option_letters(ORGAN)[letter])
    text = f"{refusal} {reply}" if refusal_first else f"{reply}\n{refusal}"
    assert is_refusal(text)
    assert extract_choice(text, ORGAN) is None


@settings(max_examples=300, deadline=None)
@given(replies, option_lists)
def test_choice_never_raises_and_only_returns_offered_letters(
    reply: str | None, options: list[str]
) -> None:
    result = extract_choice(reply, options)
    assert result is None or result in option_letters(options)


@st.composite
def chain_cases(draw: st.DrawFn) -> tuple[str | None, int, str]:
    """A reply (often a run of letters, some allowed, some not), n and the allowed letters."""
    letters = draw(st.one_of(st.sampled_from(["ABCD", "ABCDEFGH", "abc"]), st.text(max_size=8)))
    n = draw(st.integers(min_value=-1, max_value=6))
    alphabet = "".join(c for c in letters if c.isalpha()) or "ABCD"
    pool = st.sampled_from(alphabet + alphabet.lower() + "XZ")  # mostly allowed letters
    runs = st.lists(pool, min_size=max(n, 0), max_size=max(n, 0) + 1)
    separator = st.sampled_from([",", ", ", " ", "\n", ",,"])
    reply = draw(st.one_of(replies, st.builds(lambda xs, sep: sep.join(xs), runs, separator)))
    return reply, n, letters


@settings(max_examples=300, deadline=None)
@given(chain_cases())
def test_chain_never_raises_and_returns_n_allowed_letters(
    case: tuple[str | None, int, str],
) -> None:
    reply, n, letters = case
    result = extract_chain(reply, n=n, letters=letters)
    if result is not None:
        parts = result.split(",")
        assert len(parts) == n
        assert all(len(p) == 1 and p in letters.upper() for p in parts)


@given(st.data())
def test_reply_that_is_exactly_an_offered_letter_extracts_to_it(data: st.DataObject) -> None:
    letters = data.draw(st.sets(st.sampled_from("ABCDEFGH"), min_size=1))
    options = [f"{letter}. {data.draw(st.text(max_size=15))}" for letter in sorted(letters)]
    chosen = data.draw(st.sampled_from(sorted(letters)))
    assert extract_choice(chosen, options) == chosen
