"""Build the bundled DEMO sample in pipeline/data/sample/ (DrVD-Bench format, not DrVD-Bench data).

The images come from files that PyPI packages ship inside their wheels; the questions, options
and reports were written for this demo. The heavy inputs are NOT project dependencies, so run the
script from its own venv (pinned versions give byte-identical output on re-run):

    python3 -m venv /tmp/samplevenv
    /tmp/samplevenv/bin/pip install pydicom==3.0.2 pydicom-data==1.0.0 scikit-image==0.26.0 \
        pillow==13.0.0 numpy==2.4.6
    /tmp/samplevenv/bin/pip install --no-deps wsidicom-data==0.3.0  # only its PNG tile is read
    /tmp/samplevenv/bin/python scripts/make_sample.py            # rewrite pipeline/data/sample/
    /tmp/samplevenv/bin/python scripts/make_sample.py --check    # verify the committed copy

`--jsonl-only` rewrites the four JSONL files and NOTICE.md without touching the images; it needs
only the standard library, so the questions can be edited from the project venv.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import importlib.metadata
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "sample"
JSONL_FILES = ("visual_evidence_qa", "independent_qa", "joint_qa", "report_generation")

# Versions the committed bytes were made with; others still work but may change the bytes.
PINNED = {
    "pydicom": "3.0.2",
    "pydicom-data": "1.0.0",
    "scikit-image": "0.26.0",
    "wsidicom-data": "0.3.0",
    "pillow": "13.0.0",
    "numpy": "2.4.6",
}


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One shipped image, how to render it, and where the demo copy goes."""

    key: str
    modality: str
    out: str  # relative to the sample dir; the suffix picks PNG or JPEG
    dist: str  # PyPI distribution that ships the file
    member: str  # path of the file inside the installed distribution
    content: str
    licence: str
    render: str  # name of a _render_* function below
    mode: str  # Pillow mode of the saved file
    max_side: int  # downsize (never upscale) to this longest side
    processing: str


_NEMA = "no explicit licence"
_PYDICOM_CT = (
    "Cut down from NEMA WG04 `CT1_UNC` (pydicom `test_files/README.txt`); no explicit licence, "
    'the pydicom author writes "I believe there is no restriction"'
)
SOURCES = (
    Source(
        "ct_abd", "CT", "images/CT/abdomen_ct_contrast.png", "pydicom-data",
        "data_store/data/explicit_VR-UN.dcm",
        "Axial contrast-enhanced CT of the upper abdomen: liver, spleen, kidneys, pancreas, bowel",
        "Package MIT. Tags say PatientID `PANCREAS_0001`, Institution NIH, so it comes from the "
        "TCIA Pancreas-CT collection (de-identified; CC BY 3.0 as recalled, not confirmed)",
        "ct_abdomen", "L", 512, "modality LUT, window 40/400 HU, flipped so anterior is up",
    ),
    Source(
        "ct_chest", "CT", "images/CT/chest_ct_spine_crop.png", "pydicom",
        "pydicom/data/test_files/CT_small.dcm",
        "Axial contrast-enhanced chest CT cropped around a thoracic vertebra: spinal canal, "
        "paraspinal muscles, descending aorta",
        _PYDICOM_CT, "ct_chest", "L", 128, "modality LUT, window 40/400 HU, kept at 128 px",
    ),
    Source(
        "mr_liver", "MRI", "images/MRI/abdomen_mri_t1_liver_lesion.png", "pydicom",
        "pydicom/data/test_files/examples_overlay.dcm",
        "Axial contrast-enhanced T1 fat-suppressed MR of the upper abdomen: rim-enhancing liver "
        "lesion, both kidneys, spine (study 'abdomen^liver', series 'marked lesion')",
        "Cropped from GDCM's `MR-SIEMENS-DICOM-WithOverlays.dcm`; GDCM is BSD-3 (full text in "
        "pydicom's README)",
        "mr_percentile", "L", 484, "0.5-99.5 percentile window, overlay not burned in",
    ),
    Source(
        "mr_shoulder", "MRI", "images/MRI/shoulder_mri_t1_coronal.jpg", "pydicom-data",
        "data_store/data/MR2_J2KI.dcm",
        "Oblique coronal T1 spin-echo MR of the shoulder: humeral head, glenoid, deltoid, acromion",
        f"NEMA WG04 `MR2`; {_NEMA}",
        "mr_percentile", "L", 768, "0.5-99.5 percentile window, 1024 -> 768 px, JPEG q90",
    ),
    Source(
        "us_node", "Ultrasound", "images/Ultrasound/lymph_node_power_doppler.png", "pydicom",
        "pydicom/data/test_files/examples_rgb_color.dcm",
        "Power-Doppler ultrasound of a lymph node (burned-in 'LYMPH NODE', MSK preset)",
        f"Cropped from NEMA WG04 `US1_UNCR`; {_NEMA}",
        "us_frame", "P", 320, "RGB quantised to a 256-colour palette PNG",
    ),
    Source(
        "us_echo", "Ultrasound", "images/Ultrasound/echocardiogram_apical.jpg", "pydicom",
        "pydicom/data/test_files/examples_ybr_color.dcm",
        "Transthoracic echocardiogram (SonoSite), apical view of the cardiac chambers",
        "Cut down from `color3d_jpeg_baseline.dcm` in pydicom-data; origin not documented",
        "us_frame", "RGB", 320, "frame 16 of 30 (YBR already converted to RGB), JPEG q90",
    ),
    Source(
        "xr_chest", "X-ray", "images/X-ray/chest_pa_radiograph.jpg", "pydicom-data",
        "data_store/data/RG1_J2KI.dcm",
        "PA chest radiograph (CR, Philips; BodyPart CHEST, View PA) with multiple round "
        "opacities in both lungs",
        f"NEMA WG04 `RG1`; {_NEMA}",
        "xray", "L", 1400,
        "MONOCHROME1 inverted, percentile window from the centre, 1955 -> 1400 px, JPEG q85",
    ),
    Source(
        "xr_tibia", "X-ray", "images/X-ray/distal_tibia_ap_radiograph.png", "pydicom-data",
        "data_store/data/RG3_J2KI.dcm",
        "AP radiograph of the right distal tibia and fibula (Fuji CR); StudyDescription "
        "'Non-ossifying fibroma of distal tibia'",
        f"NEMA WG04 `RG3`; {_NEMA}",
        "xray_tibia", "L", 900,
        "MONOCHROME1 inverted, percentile window, cropped to the exposed field, mirrored to the "
        "standard AP display (PatientOrientation R\\F), 900 px",
    ),
    Source(
        "path_ihc", "Pathology", "images/Pathology/colon_ihc_dab.jpg", "scikit-image",
        "skimage/data/ihc.png",
        "Colonic glands, FHL2 immunostain (DAB) with haematoxylin counterstain",
        'Package BSD-3. Docstring: acquired at CMMI, "No known copyright restrictions"',
        "plain", "RGB", 512, "re-encoded as JPEG q90",
    ),
    Source(
        "path_skin", "Pathology", "images/Pathology/skin_he_tile.png", "wsidicom-data",
        "wsidicom_data/data/test_tile.png",
        "H&E tile of skin: epidermis and overlying keratin",
        "Package Apache-2.0. README: cut from OpenSlide `CMU-1-Small-Region.svs` (CC0 1.0)",
        "plain", "RGBA", 240, "saved as RGBA PNG (opaque alpha) to exercise RGBA handling",
    ),
)  # fmt: skip
BY_KEY = {s.key: s for s in SOURCES}


def _require(name: str) -> Any:
    """Import a heavy optional module or exit with the venv recipe."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"{name} is missing: run this script from the sample venv (see its docstring)"
        raise SystemExit(msg) from exc


def _locate(src: Source) -> Path:
    """Return the on-disk path of a file shipped inside an installed distribution."""
    try:
        dist = importlib.metadata.distribution(src.dist)
    except importlib.metadata.PackageNotFoundError as exc:
        msg = f"{src.dist} is not installed: run this script from the sample venv"
        raise SystemExit(msg) from exc
    path = Path(str(dist.locate_file(src.member)))
    if not path.is_file():
        msg = f"{src.member} not found in {src.dist} {dist.version}"
        raise SystemExit(msg)
    return path


def _window(a: Any, lo: float, hi: float) -> Any:
    """Map [lo, hi] linearly to uint8 0..255, clipping outside."""
    np = _require("numpy")
    scaled = np.clip((a.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _dicom(path: Path) -> Any:
    return _require("pydicom").dcmread(path)


def _hu(ds: Any) -> Any:
    return _require("pydicom.pixels").apply_modality_lut(ds.pixel_array, ds)


def _render_ct_abdomen(path: Path) -> Any:
    ds = _dicom(path)
    img = _window(_hu(ds), 40 - 200, 40 + 200)
    # Column cosine -Y means rows run towards anterior; flip so anterior is up, as read clinically.
    if float(ds.ImageOrientationPatient[4]) < 0:
        img = img[::-1]
    return img


def _render_ct_chest(path: Path) -> Any:
    return _window(_hu(_dicom(path)), 40 - 200, 40 + 200)


def _render_mr_percentile(path: Path) -> Any:
    a = _dicom(path).pixel_array
    lo, hi = _require("numpy").percentile(a, [0.5, 99.5])
    return _window(a, lo, hi)


def _render_us_frame(path: Path) -> Any:
    a = _dicom(path).pixel_array  # pydicom 3 already returns RGB for YBR data
    return a[a.shape[0] // 2] if a.ndim == 4 else a


def _xray(path: Path, crop_cols: tuple[float, float] = (0.0, 1.0)) -> Any:
    np = _require("numpy")
    ds = _dicom(path)
    a = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a
    h, w = a.shape
    a = a[:, int(w * crop_cols[0]) : int(w * crop_cols[1])]
    # The stored window spans the whole range; a percentile window from the centre looks right.
    h, w = a.shape
    lo, hi = np.percentile(a[h // 5 : 4 * h // 5, w // 5 : 4 * w // 5], [0.5, 99.5])
    img = _window(a, lo, hi)
    # Standard AP/PA display puts the patient's right on the viewer's left (rows run to "L").
    if str(ds.get("PatientOrientation", ["L"])[0]) == "R":
        img = img[:, ::-1]
    return img


def _render_xray(path: Path) -> Any:
    return _xray(path)


def _render_xray_tibia(path: Path) -> Any:
    return _xray(path, crop_cols=(0.24, 0.76))  # the exposed field; the rest is collimator


def _render_plain(path: Path) -> Any:
    Image = _require("PIL.Image")
    with Image.open(path) as im:
        return im.convert("RGB")


_RENDERERS: dict[str, Callable[[Path], Any]] = {
    "ct_abdomen": _render_ct_abdomen,
    "ct_chest": _render_ct_chest,
    "mr_percentile": _render_mr_percentile,
    "us_frame": _render_us_frame,
    "xray": _render_xray,
    "xray_tibia": _render_xray_tibia,
    "plain": _render_plain,
}


def _save(src: Source, pixels: Any, dest: Path) -> None:
    """Downsize, convert to the target mode and write without any timestamped metadata."""
    Image = _require("PIL.Image")
    if isinstance(pixels, Image.Image):
        im = pixels
    else:  # flips leave negative strides; Pillow wants a contiguous buffer
        im = Image.fromarray(_require("numpy").ascontiguousarray(pixels))
    im = im.convert("RGB") if src.mode in ("P", "RGBA") else im
    if max(im.size) > src.max_side:
        im.thumbnail((src.max_side, src.max_side), Image.Resampling.LANCZOS)
    if src.mode == "P":
        im = im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    elif src.mode != im.mode:
        im = im.convert(src.mode)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix == ".jpg":
        quality = 85 if src.max_side > 1024 else 90
        im.save(dest, "JPEG", quality=quality, optimize=True)
    else:
        im.save(dest, "PNG", optimize=True)


def write_images(out: Path) -> None:
    """Render every source image into out/images/."""
    for src in SOURCES:
        _save(src, _RENDERERS[src.render](_locate(src)), out / src.out)


# --------------------------------------------------------------------------------------------
# Questions (written for this demo; see NOTICE.md)
# --------------------------------------------------------------------------------------------

LETTERS = "ABCDEF"
# (image key, task or level, question, options without letters, index of the correct option)
Mcq = tuple[str, str, str, tuple[str, ...], int]

_MOD = "What is the imaging modality of this image?"
VISUAL: tuple[Mcq, ...] = (
    ("ct_chest", "modality_recognition", "What imaging modality was used to acquire this image?",
     ("X-ray", "MRI", "CT", "Ultrasound", "PET"), 2),
    ("ct_abd", "organ_recognition",
     "Which paired bean-shaped organs lie on either side of the spine in this image?",
     ("Lungs", "Kidneys", "Ovaries", "Thyroid lobes"), 1),
    ("ct_abd", "lesion_recognition", "Which statement best describes the liver in this image?",
     ("Multiple hypodense masses", "Homogeneous enhancement without a focal lesion",
      "Small liver with a nodular contour", "Gas within the portal veins"), 1),
    ("mr_liver", "modality_recognition", "What imaging modality was used to acquire this image?",
     ("CT", "Ultrasound", "X-ray", "MRI", "Scintigraphy"), 3),
    ("mr_shoulder", "organ_recognition", "Which joint is shown in this image?",
     ("Hip", "Knee", "Shoulder", "Elbow", "Ankle"), 2),
    ("mr_liver", "lesion_recognition", "What abnormality is seen in the liver?",
     ("No abnormality", "Dilated intrahepatic bile ducts", "Round focal lesion with an enhancing rim",
      "Calcified gallstones"), 2),
    ("us_node", "modality_recognition", "What imaging modality was used to acquire this image?",
     ("Ultrasound", "CT", "MRI", "X-ray", "Endoscopy"), 0),
    ("us_echo", "organ_recognition", "Which organ is being imaged?",
     ("Liver", "Heart", "Kidney", "Thyroid", "Urinary bladder"), 1),
    ("us_node", "lesion_recognition",
     "What does the orange signal inside the oval structure represent?",
     ("Calcifications", "Gas bubbles", "Internal blood flow on power Doppler",
      "A fluid-fluid level"), 2),
    ("xr_tibia", "modality_recognition", "What imaging modality was used to acquire this image?",
     ("MRI", "CT", "Ultrasound", "X-ray"), 3),
    ("xr_tibia", "organ_recognition", "Which bones are shown in this image?",
     ("Radius and ulna", "Tibia and fibula", "Femur", "Humerus", "Metacarpals"), 1),
    ("xr_chest", "lesion_recognition", "What is the main abnormality in both lungs?",
     ("Multiple round opacities", "Large pleural effusion", "Pneumothorax",
      "Lobar consolidation with air bronchograms", "No abnormality"), 0),
    ("xr_tibia", "lesion_recognition", "Where is the lucent bone lesion located?",
     ("Talus", "Calcaneus", "Proximal tibial epiphysis", "Distal fibular shaft",
      "Distal tibial metaphysis"), 4),
    ("path_ihc", "modality_recognition", "What imaging modality produced this image?",
     ("X-ray", "Pathology", "MRI", "Ultrasound", "CT"), 1),
    ("path_skin", "organ_recognition", "Which tissue is shown in this image?",
     ("Liver", "Kidney", "Lung", "Skin"), 3),
    ("path_ihc", "staining_recognition", "Which staining method was used for this slide?",
     ("Haematoxylin and eosin (H&E)", "Immunohistochemistry (DAB) with haematoxylin counterstain",
      "Gram stain", "Periodic acid-Schiff (PAS)", "Masson trichrome"), 1),
    ("path_skin", "staining_recognition", "Which staining method was used for this slide?",
     ("Immunohistochemistry (DAB)", "Silver stain", "Haematoxylin and eosin (H&E)",
      "Ziehl-Neelsen stain"), 2),
)  # fmt: skip

_DX = "What is the most likely diagnosis?"
INDEPENDENT: tuple[Mcq, ...] = (
    ("ct_abd", "modality", _MOD, ("MRI", "CT", "Ultrasound", "X-ray"), 1),
    ("ct_chest", "bodypart", "Which body region does this image show?",
     ("Head", "Pelvis", "Chest", "Lower limb"), 2),
    ("ct_abd", "organ",
     "Which large solid organ occupies the left side of the image (the patient's right)?",
     ("Liver", "Spleen", "Pancreas", "Urinary bladder"), 0),
    ("ct_abd", "lesion", "Which finding is present in this image?",
     ("Large hepatic mass", "Hydronephrosis", "Free intraperitoneal air", "No focal lesion"), 3),
    ("ct_abd", "diagnosis", _DX,
     ("Acute pancreatitis", "No significant abnormality", "Liver cirrhosis with ascites",
      "Polycystic kidney disease", "Small bowel obstruction"), 1),
    ("mr_shoulder", "modality", _MOD, ("CT", "X-ray", "Ultrasound", "PET", "MRI"), 4),
    ("mr_liver", "bodypart", "Which body region does this image show?",
     ("Head", "Neck", "Abdomen", "Pelvis", "Lower limb"), 2),
    ("mr_shoulder", "organ", "Which bone articulates with the glenoid in this image?",
     ("Femur", "Humerus", "Radius", "Tibia"), 1),
    ("mr_liver", "lesion", "Which lesion is visible in this image?",
     ("Round liver lesion with an enhancing rim", "Renal cyst", "Splenic laceration",
      "Vertebral fracture"), 0),
    ("mr_liver", "diagnosis", _DX,
     ("Simple renal cyst", "Acute cholecystitis", "Liver metastasis", "Splenic infarction"), 2),
    ("us_echo", "modality", _MOD, ("X-ray", "CT", "MRI", "Ultrasound"), 3),
    ("us_echo", "bodypart", "Which body region does this image show?",
     ("Abdomen", "Chest", "Head", "Pelvis"), 1),
    ("us_node", "organ", "Which structure is inside the colour box?",
     ("Lymph node", "Thyroid gland", "Kidney", "Testis"), 0),
    ("us_node", "lesion", "Which finding is shown?",
     ("Anechoic simple cyst", "Calcified nodule with acoustic shadowing",
      "Oval node with increased internal vascularity", "Avascular tissue"), 2),
    ("us_node", "diagnosis", _DX,
     ("Deep vein thrombosis", "Thyroid goitre", "Gallstones", "Hydronephrosis",
      "Reactive (hyperaemic) lymph node"), 4),
    ("xr_chest", "modality", _MOD, ("X-ray", "CT", "MRI", "Ultrasound"), 0),
    ("xr_tibia", "bodypart", "Which body region does this image show?",
     ("Upper limb", "Lower limb", "Chest", "Skull"), 1),
    ("xr_chest", "organ", "Which organs contain the abnormal opacities?",
     ("Heart", "Liver", "Lungs", "Stomach"), 2),
    ("xr_tibia", "lesion", "Which lesion is visible in the distal tibia?",
     ("Transverse fracture", "Sunburst periosteal reaction", "Ankle dislocation",
      "Eccentric lucent lesion with a sclerotic border"), 3),
    ("xr_chest", "diagnosis", _DX,
     ("Pulmonary metastases", "Pneumothorax", "Congestive heart failure",
      "Normal chest radiograph", "Rib fracture"), 0),
    ("xr_tibia", "diagnosis", _DX,
     ("Osteosarcoma", "Stress fracture", "Non-ossifying fibroma", "Osteomyelitis",
      "Ewing sarcoma"), 2),
    ("path_ihc", "modality", _MOD, ("CT", "Pathology", "Ultrasound", "MRI"), 1),
    ("path_ihc", "organ", "From which organ is this tissue most likely taken?",
     ("Brain", "Bone", "Skeletal muscle", "Colon"), 3),
    ("path_skin", "lesion", "Which finding is present in this image?",
     ("Tumour necrosis", "Granulomatous inflammation", "No lesion: epidermis with keratin",
      "Invasive carcinoma"), 2),
    ("path_skin", "diagnosis", _DX,
     ("Normal skin", "Melanoma", "Basal cell carcinoma", "Psoriasis"), 0),
)  # fmt: skip

# Joint: (image key, then (options, correct index) for modality, organ, lesion, diagnosis)
Choice = tuple[tuple[str, ...], int]
JOINT_LEVELS = ("modality", "organ", "lesion", "diagnosis")  # the official scorer's order
JOINT_QUESTIONS = (
    "Which imaging modality was used to acquire this image?",
    "Which organ or structure is shown in this image?",
    "Which lesion or finding is present?",
    "What is the most likely diagnosis?",
)
JOINT: tuple[tuple[str, Choice, Choice, Choice, Choice], ...] = (
    ("ct_abd", (("MRI", "CT", "Ultrasound", "X-ray", "Pathology"), 1),
     (("Brain", "Lungs and heart", "Liver, kidneys and pancreas", "Knee joint"), 2),
     (("Large hepatic mass", "No focal lesion", "Renal stone", "Free intraperitoneal air"), 1),
     (("Acute pancreatitis", "Liver cirrhosis", "No significant abnormality",
       "Small bowel obstruction"), 2)),
    ("ct_chest", (("CT", "MRI", "X-ray", "Ultrasound"), 0),
     (("Thoracic vertebra and paraspinal muscles", "Kidney", "Liver", "Brain"), 0),
     (("Vertebral fracture", "Paraspinal abscess", "No focal lesion", "Aortic dissection flap"), 2),
     (("No significant abnormality", "Metastatic bone disease", "Aortic dissection",
       "Spondylodiscitis"), 0)),
    ("mr_liver", (("CT", "MRI", "Ultrasound", "X-ray"), 1),
     (("Liver", "Brain", "Heart", "Knee joint"), 0),
     (("No focal lesion", "Renal cyst", "Round lesion with an enhancing rim",
       "Vertebral collapse"), 2),
     (("Simple renal cyst", "Normal liver", "Acute cholecystitis", "Liver metastasis"), 3)),
    ("mr_shoulder", (("Ultrasound", "X-ray", "CT", "MRI"), 3),
     (("Knee joint", "Shoulder joint", "Hip joint", "Ankle joint"), 1),
     (("Displaced humeral head fracture", "No focal lesion", "Large joint effusion",
       "Bone tumour"), 1),
     (("Anterior shoulder dislocation", "Normal shoulder", "Osteosarcoma", "Septic arthritis"), 1)),
    ("us_node", (("X-ray", "Ultrasound", "MRI", "CT"), 1),
     (("Lymph node", "Thyroid gland", "Kidney", "Heart"), 0),
     (("Anechoic cyst", "Increased internal vascularity", "Shadowing calculus",
       "Absent blood flow"), 1),
     (("Reactive (hyperaemic) lymph node", "Thyroid goitre", "Gallstones", "Hydronephrosis"), 0)),
    ("us_echo", (("CT", "MRI", "Ultrasound", "X-ray"), 2),
     (("Liver", "Kidney", "Urinary bladder", "Heart"), 3),
     (("No focal lesion", "Large pericardial effusion", "Intracardiac mass", "Gallstone"), 0),
     (("Cardiac tamponade", "Left atrial myxoma", "No significant abnormality",
       "Acute cholecystitis"), 2)),
    ("xr_chest", (("MRI", "Ultrasound", "X-ray", "CT"), 2),
     (("Lungs", "Liver", "Brain", "Knee joint"), 0),
     (("Pneumothorax", "Multiple round opacities in both lungs", "Pleural effusion",
       "No focal lesion"), 1),
     (("Lobar pneumonia", "Congestive heart failure", "Normal chest radiograph",
       "Pulmonary metastases"), 3)),
    ("xr_tibia", (("X-ray", "CT", "MRI", "Pathology"), 0),
     (("Radius and ulna", "Femur", "Tibia and fibula", "Humerus"), 2),
     (("Transverse fracture", "Eccentric lucent lesion with a sclerotic border",
       "Sunburst periosteal reaction", "No focal lesion"), 1),
     (("Osteosarcoma", "Ewing sarcoma", "Osteomyelitis", "Non-ossifying fibroma"), 3)),
    ("path_skin", (("Ultrasound", "CT", "Pathology", "MRI"), 2),
     (("Skin", "Liver", "Lung", "Kidney"), 0),
     (("Invasive carcinoma", "No lesion: epidermis with keratin", "Granulomas", "Necrosis"), 1),
     (("Melanoma", "Basal cell carcinoma", "Normal skin", "Squamous cell carcinoma"), 2)),
)  # fmt: skip

_RADIOLOGY = "Please write a radiology report describing the findings of this image."
REPORTS: tuple[tuple[str, str, str], ...] = (
    ("ct_abd", _RADIOLOGY,
     "Axial contrast-enhanced CT of the upper abdomen at the level of the kidneys. The liver, "
     "spleen, pancreas and both kidneys enhance normally without a focal lesion. The abdominal "
     "aorta is of normal calibre and there is no free fluid or free air. Impression: no "
     "significant abnormality."),
    ("mr_liver", _RADIOLOGY,
     "Axial contrast-enhanced T1-weighted fat-suppressed MR image of the upper abdomen. A round "
     "lesion in the right lobe of the liver shows a thick enhancing rim and a hypointense centre. "
     "Both kidneys, the aorta and the spine are unremarkable. Impression: focal liver lesion with "
     "rim enhancement, most consistent with a metastasis."),
    ("us_node", _RADIOLOGY,
     "Power Doppler ultrasound of a lymph node. The node is oval and well defined, with markedly "
     "increased internal vascularity. No cystic or necrotic area is seen. Impression: hyperaemic "
     "lymph node, most likely reactive."),
    ("xr_chest", _RADIOLOGY,
     "PA chest radiograph. Multiple well-defined round opacities of varying size are scattered "
     "through both lungs. There is no pneumothorax or large pleural effusion, and the heart size "
     "is within normal limits. Impression: multiple pulmonary masses, most consistent with "
     "metastases."),
    ("xr_tibia", _RADIOLOGY,
     "AP radiograph of the right distal tibia and fibula including the ankle. An eccentric, "
     "well-defined, lobulated lucent lesion with a thin sclerotic border lies in the distal tibial "
     "metaphysis. There is no periosteal reaction, cortical breach or fracture. Impression: "
     "appearances typical of a non-ossifying fibroma."),
    ("path_ihc", "Please describe the findings in this pathology image.",
     "Immunohistochemical stain of colonic tissue with haematoxylin counterstain. Glands lined by "
     "columnar epithelium show strong brown (DAB) membranous and cytoplasmic staining, while the "
     "intervening stroma is negative and blue. Impression: positive immunostaining for the target "
     "protein (FHL2) in the glandular epithelium."),
)  # fmt: skip


def _lettered(options: Sequence[str], correct: int) -> tuple[list[str], str]:
    """Prefix options with A., B., ... and return them with the correct full option string."""
    opts = [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    return opts, opts[correct]


def _mcq_rows(items: Sequence[Mcq], group_key: str, prefix: str) -> list[dict[str, Any]]:
    rows = []
    for n, (key, group, question, options, correct) in enumerate(items, 1):
        opts, answer = _lettered(options, correct)
        rows.append(
            {
                "image_paths": BY_KEY[key].out,
                "question": question,
                "options": opts,
                "answer": answer,
                "modality": BY_KEY[key].modality,
                group_key: group,
                "unique_id": f"{prefix}-{n:04d}",
            }
        )
    return rows


def _joint_rows() -> list[dict[str, Any]]:
    rows = []
    for n, (key, *choices) in enumerate(JOINT, 1):
        parts = ["Look at the medical image and answer the following four questions in order."]
        row: dict[str, Any] = {"image_paths": BY_KEY[key].out}
        answers = {}
        levels = zip(JOINT_LEVELS, JOINT_QUESTIONS, choices, strict=True)
        for i, (level, question, (options, correct)) in enumerate(levels, 1):
            opts, answers[f"{level}_answer"] = _lettered(options, correct)
            parts.append(f"Question {i}: {question}\n" + "\n".join(opts))
        parts.append(
            "Answer with four capital letters separated by commas, one for each question in "
            "order (for example: B,A,D,C)."
        )
        row["joint_prompt"] = "\n\n".join(parts)
        row["modality"] = BY_KEY[key].modality
        row.update(answers)
        row["unique_id"] = f"demo-joint-{n:04d}"
        rows.append(row)
    return rows


def _report_rows() -> list[dict[str, Any]]:
    return [
        {
            "image_paths": BY_KEY[key].out,
            "question": question,
            "task": "report_generation",
            "answer": answer,
            "modality": BY_KEY[key].modality,
            "unique_id": f"demo-report-{n:04d}",
        }
        for n, (key, question, answer) in enumerate(REPORTS, 1)
    ]


def build_rows() -> dict[str, list[dict[str, Any]]]:
    """Return the rows of the four DrVD files, keyed by file stem."""
    return {
        "visual_evidence_qa": _mcq_rows(VISUAL, "task", "demo-veq"),
        "independent_qa": _mcq_rows(INDEPENDENT, "level", "demo-ind"),
        "joint_qa": _joint_rows(),
        "report_generation": _report_rows(),
    }


def write_jsonl(out: Path) -> dict[str, int]:
    """Write the four JSONL files; return the row count per file."""
    counts = {}
    for stem, rows in build_rows().items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{stem}.jsonl").write_text(lines, encoding="utf-8", newline="\n")
        counts[stem] = len(rows)
    return counts


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return PINNED[dist]


def write_notice(out: Path) -> None:
    """Write NOTICE.md with the provenance of every image."""
    lines = [
        "# NOTICE: demo sample, NOT DrVD-Bench data",
        "",
        "This folder is a small DEMO set in the DrVD-Bench file format. It is **not DrVD-Bench "
        "data** and contains nothing from the DrVD-Bench dataset. The images are real medical "
        "images that PyPI packages ship inside their wheels, converted by `scripts/make_sample.py`. "
        "All questions, options, answers and reference reports were written for this demo; they "
        "are plausible readings of the images, not clinically verified labels.",
        "",
        "## Images",
        "",
    ]
    for src in SOURCES:
        lines += [
            f"### `{src.out}` ({src.modality})",
            "",
            f"- Package: `{src.dist}` {_version(src.dist)} (PyPI)",
            f"- Path inside the package: `{src.member}`",
            f"- Content: {src.content}",
            f"- Licence / provenance: {src.licence}",
            f"- Processing: {src.processing}",
            "",
        ]
    (out / "NOTICE.md").write_text("\n".join(lines), encoding="utf-8", newline="\n")


def _warn_versions() -> None:
    for dist, pinned in PINNED.items():
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue  # _locate/_require report what is missing, with the fix
        if found != pinned:
            print(f"warning: {dist} {found} != {pinned}; bytes may differ", file=sys.stderr)


def build(out: Path, *, jsonl_only: bool = False) -> dict[str, int]:
    """Write the sample into out; return the row count per JSONL file."""
    out.mkdir(parents=True, exist_ok=True)
    if not jsonl_only:
        _warn_versions()
        write_images(out)
    write_notice(out)
    return write_jsonl(out)


def _check(committed: Path) -> int:
    """Rebuild in a temporary dir and compare byte for byte; return an exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        fresh = sorted(p.relative_to(tmp) for p in Path(tmp).rglob("*") if p.is_file())
        bad = [str(p) for p in fresh if not (committed / p).is_file()]
        bad += [
            str(p)
            for p in fresh
            if (committed / p).is_file()
            and not filecmp.cmp(Path(tmp) / p, committed / p, shallow=False)
        ]
    for name in bad:
        print(f"differs or missing: {name}", file=sys.stderr)
    print("sample is up to date" if not bad else f"{len(bad)} file(s) differ")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and build or check the sample."""
    parser = argparse.ArgumentParser(
        description="Build the DrVD-format DEMO sample from images shipped in PyPI packages.",
        epilog="Needs the sample venv (pydicom, pydicom-data, scikit-image, wsidicom-data, numpy, "
        "Pillow); see the docstring at the top of this file.",
    )
    parser.add_argument(
        "--out", type=Path, default=SAMPLE_DIR, help=f"output folder (default: {SAMPLE_DIR})"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--jsonl-only",
        action="store_true",
        help="rewrite the JSONL files and NOTICE.md only (standard library only)",
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="rebuild in a temp dir and exit 1 if any file differs from --out",
    )
    args = parser.parse_args(argv)
    if args.check:
        return _check(args.out)
    counts = build(args.out, jsonl_only=args.jsonl_only)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    for stem, n in counts.items():
        print(f"{stem}.jsonl: {n} rows")
    print(f"{args.out}: {total:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
