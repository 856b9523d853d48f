"""The run's results browser: RUN/report.html, one page that opens from disk (no server, no network).

    results files ──score_row──▶ one card per row ──▶ a JSON blob inside page.html
    summary.json  ──────────────▶ settings, the terminal's tables, heat maps, plots (plots.py)
    each row's image ──encoder──▶ CACHE/sent/<id>.<ext> (as sent) and <id>-t.jpg (≤ 256 px),
                                   once for every run on the cache; the thumbnail is linked
                                   into RUN/report/img/ (a hard link: no copy, no encode)

The page draws cards lazily from the blob (a few dozen at a time), so a 7,789-row run opens fast.
Images are the encoder's output at the request's ImageSpec, written once per (image digest,
size, quality): a rerun finds them on disk and encodes nothing. The images as sent live in the
response cache's folder (RUN/report/img/ with `--no-cache`) so that a run folder holds only
thumbnails: the page links to them by a path relative to the run folder. A card's element id is
`row-<file>-<key>` (what `compare` links to); the filter ids are the page's test interface.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from PIL import Image
from rich.console import Console

from pipeline.data.dataset import ImageFolder
from pipeline.data.images import IMAGE_VERSION, ImageCache, file_digest
from pipeline.data.prompts import DEFAULT_PROTOCOL, build_request
from pipeline.errors import os_reason
from pipeline.files import write_atomic
from pipeline.records import JOINT_LEVELS, ImageSpec, ResultRow, Sample
from pipeline.redact import show_url
from pipeline.results import read_run
from pipeline.scoring.official import FILE_FAMILY, KIND_FAMILY, Family, score_row
from pipeline.views.page_controls import CONTROLS_NAME, controls_section
from pipeline.views.page_tables import headline, heat_maps, samples_table, settings_table
from pipeline.views.plots import write_plots
from pipeline.views.terminal import render

REPORT_NAME = "report.html"
ASSETS = "report"  # RUN/report/: the thumbnails the page shows
SENT = "sent"  # CACHE/sent/: the images as sent, shared by every run on the cache
THUMB_PX = 256
_TEMPLATE = Path(__file__).with_name("page.html")
_UNREAD = ("none", "refused")  # no answer read from the reply (scored as given)
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


def try_write_report(
    run_dir: Path, summary: Mapping[str, Any], cache_root: Path | None = None
) -> str | None:
    """Write the report; on failure return the one warning line to show (never raise)."""
    try:
        write_report(run_dir, summary, cache_root)
    except OSError as exc:
        where = exc.filename2 or exc.filename or run_dir
        return f"warning: report not written: {where}: {os_reason(exc)}"
    except Exception as exc:  # the report must never change how a run ends
        return f"warning: report not written ({type(exc).__name__}: {show_url(str(exc))})"
    return None


def write_report(run_dir: Path, summary: Mapping[str, Any], cache_root: Path | None = None) -> Path:
    """Write RUN/report.html (atomically), its images and plots; return the page's path.

    `cache_root` is the run's cache folder: images encoded for the model's requests are read
    from its images/ (and those encoded here are put there); None: encode without it.
    """
    run = summary.get("run") or {}
    root = Path(run["data"]) if isinstance(run.get("data"), str) else None
    protocol = str(run.get("protocol") or DEFAULT_PROTOCOL)
    thumbs = run_dir / ASSETS / "img"
    sent = cache_root / SENT if cache_root is not None else thumbs
    images = Images(thumbs, root, protocol, ImageCache(cache_root), sent=sent, run_dir=run_dir)
    quirks = summary.get("scoring") == "official-quirks"
    latest: dict[tuple[str, str], tuple[str, ResultRow]] = {}
    for stem, row in read_run(run_dir):  # damaged lines: `score` and `eval` already said so
        key = row.key if row.key is not None else f"line{len(latest)}"
        latest[(stem, key)] = (stem, replace(row, key=key) if row.key is None else row)
    images.prepare(latest.values())
    cards = [card(stem, row, images, official_quirks=quirks) for stem, row in latest.values()]
    plots = write_plots(run_dir, summary)
    console = Console(record=True, width=110, file=io.StringIO(), color_system="truecolor")
    render(summary, console)
    tables = console.export_html(inline_styles=True, code_format="<pre class=term>{code}</pre>")
    figures = "".join(
        f'<figure><a href="plots/{name}.svg"><img src="plots/{name}.png" alt="{html.escape(title)}">'
        f"</a><figcaption>{html.escape(title)}</figcaption></figure>"
        for name, title in plots
    )
    blob = orjson.dumps({"rows": cards}).replace(b"</", b"<\\/")
    title = f"{summary.get('model', run_dir.name)} — DrVD run {run_dir.name}"
    parts = {
        "TITLE": html.escape(title),
        "SETTINGS": settings_table(summary, run_dir),
        "HEADLINE": headline(summary),
        "TABLES": tables,
        "HEAT": heat_maps(summary),
        "SAMPLES": samples_table(summary),
        "PLOTS": figures,
        "CONTROLS": controls_section(_controls(run_dir)),
    }
    head, tail = _TEMPLATE.read_text(encoding="utf-8").split("{{DATA}}")
    head = re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], head)  # one pass: no re-scan
    path = run_dir / REPORT_NAME
    write_atomic(path, [head.encode(), blob, tail.encode()])
    return path


def _controls(run_dir: Path) -> dict[str, Any] | None:
    """Return RUN/controls.json, or None when the run has none (or it is unreadable)."""
    try:
        data = orjson.loads((run_dir / CONTROLS_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def card(
    stem: str, row: ResultRow, images: Images, *, official_quirks: bool = False
) -> dict[str, Any]:
    """Return what the page shows of one row (keys short: 7,789 of these go into the page)."""
    family: Family = FILE_FAMILY.get(stem) or KIND_FAMILY[row.kind]
    score = score_row(family, row, official_quirks=official_quirks)
    data = row.row
    out: dict[str, Any] = {
        "f": stem,
        "k": row.key,
        "n": row.line,
        "m": str(data.get("modality", "Unknown")),
        "s": row.answer_source or "",
        "raw": row.raw_response,
        "th": row.reasoning_response,
        "ans": row.model_response if isinstance(row.model_response, str) else None,
        "e": row.error,
    }
    if row.error is not None:
        out["v"] = "failed"
    elif row.answer_source in _UNREAD:
        out["v"] = "unread"
    elif family == "report":
        out["v"] = "report"
    else:
        out["v"] = "right" if score.hits and all(score.hits) else "wrong"
    if family == "mcq":
        out.update(t=str(score.group[1]), q=data.get("question"), o=data.get("options"))
        out["gold"] = data.get("answer")
    elif family == "joint":
        tokens = row.model_response.split(",") if isinstance(row.model_response, str) else []
        out.update(t="joint (4 levels)", q=data.get("joint_prompt"))
        out["lv"] = [
            [level, data.get(f"{level}_answer"), tokens[i] if i < len(tokens) else None, hit]
            for i, (level, hit) in enumerate(zip(JOINT_LEVELS, score.hits, strict=True))
        ]
    else:
        out.update(t="report", q=data.get("question"), ref=data.get("answer"))
        out.update(bleu=score.bleu, bert=score.bert_f1, kwd=score.keywords)
        if (kw := row.keywords) is not None:
            out["kw"] = [kw.reference, kw.prediction]
    if isinstance(rel := data.get("image_paths"), str):
        out.update(images.for_row(stem, row, rel) or {})
    return {name: value for name, value in out.items() if value is not None}


class Images:
    """The thumbnails (in `folder`) and the images as sent to the model (in `sent`)."""

    def __init__(
        self,
        folder: Path,
        root: Path | None,
        protocol: str,
        cache: ImageCache,
        *,
        sent: Path,
        run_dir: Path,
    ) -> None:
        self.folder = folder
        self.sent = sent
        self.dataset = ImageFolder(root) if root is not None else None
        self.protocol = protocol
        self.cache = cache
        self._done: dict[tuple[str, int, int], dict[str, str] | None] = {}
        self._paths: dict[str, Path | None] = {}
        self._have = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        self._have_sent = {p.name for p in sent.iterdir()} if sent.is_dir() else set()
        # how the page (in the run folder) reaches each folder
        self._thumb_href = Path(os.path.relpath(folder.resolve(), run_dir.resolve())).as_posix()
        self._sent_href = Path(os.path.relpath(sent.resolve(), run_dir.resolve())).as_posix()

    def prepare(self, rows: Iterable[tuple[str, ResultRow]]) -> None:
        """Make the images of these rows not made yet, on every core."""
        todo: dict[tuple[str, int, int], ImageSpec] = {}
        for stem, row in rows:
            if isinstance(rel := row.row.get("image_paths"), str):
                spec = self._spec(stem, row, rel)
                if spec is not None:
                    todo[(str(spec.path), spec.max_dim, spec.quality)] = spec
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            self._done.update(zip(todo, pool.map(self._make, todo.values()), strict=True))

    def for_row(self, stem: str, row: ResultRow, rel: str) -> dict[str, str] | None:
        """Return {"img": thumbnail, "big": image as sent, "sent": its size} (paths from RUN)."""
        spec = self._spec(stem, row, rel)
        if spec is None:
            return None
        memo = (str(spec.path), spec.max_dim, spec.quality)
        if memo not in self._done:
            self._done[memo] = self._make(spec)
        return self._done[memo]

    def _spec(self, stem: str, row: ResultRow, rel: str) -> ImageSpec | None:
        """Return how the row's image was sent (its request's ImageSpec), or None."""
        if self.dataset is None:
            return None
        try:
            if rel not in self._paths:
                self._paths[rel] = self.dataset.resolve(rel)
            if (path := self._paths[rel]) is None:
                return None
            sample = Sample(stem, row.line, str(row.key), row.kind, path, dict(row.row))
            spec: ImageSpec | None = build_request(sample, self.protocol).image
        except (OSError, KeyError, TypeError, ValueError):  # another tool's row, a bad path
            return None
        return spec

    def _make(self, spec: ImageSpec) -> dict[str, str] | None:
        parts = [IMAGE_VERSION, file_digest(spec.path), spec.max_dim, spec.quality, THUMB_PX]
        name = hashlib.blake2b(orjson.dumps(parts), digest_size=12).hexdigest()
        thumb = self.folder / f"{name}-t.jpg"
        shared = self.sent / thumb.name  # every run's thumbnail of this image comes from here
        names = (f"{name}.{ext}" for ext in (*_EXT.values(), "img"))
        have = [n for n in names if n in self._have_sent]
        sent = self.sent / have[0] if have and shared.name in self._have_sent else None
        if sent is None:
            head, _, payload = self.cache.data_url(spec).partition(";base64,")
            data, mime = base64.b64decode(payload), head.removeprefix("data:")
            sent = self.sent / f"{name}.{_EXT.get(mime, 'img')}"
            write_atomic(sent, data)
            try:
                small = _thumbnail(data)
            except (OSError, ValueError):  # e.g. a 16-bit image sent raw: no thumbnail
                small = b""
            write_atomic(shared, small)
        if thumb != shared and thumb.name not in self._have:
            _link(shared, thumb)
        big = f"{self._sent_href}/{sent.name}"
        out = {"big": big, "sent": f"{spec.max_dim} px, JPEG quality {spec.quality}"}
        if thumb.stat().st_size:
            out["img"] = f"{self._thumb_href}/{thumb.name}"
        return out


def _link(source: Path, target: Path) -> None:
    """Put `source` at `target`: a hard link (no copy), else a copy (another file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        write_atomic(target, source.read_bytes())


def _thumbnail(data: bytes) -> bytes:
    """Return a JPEG of at most THUMB_PX on the long side of the encoded image `data`."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale, fast
        small = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    small.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return buf.getvalue()
