from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import threading
from pathlib import Path

import pytest
from PIL import Image

from pipeline.data.images import (
    MAX_ENCODED_BYTES,
    ImageCache,
    PixelBudget,
    encode_bytes,
    encode_image,
    file_digest,
)
from pipeline.records import ImageSpec


def _save(img: Image.Image, path: Path, fmt: str | None = None) -> Path:
    img.save(path, format=fmt)
    return path


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rnd = random.Random(seed)
    return Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))


def _decode(url: str) -> tuple[str, bytes]:
    head, payload = url.split(";base64,", 1)
    assert head.startswith("data:")
    return head[len("data:") :], base64.b64decode(payload, validate=True)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "max_dim", "expected"),
    [
        ((2000, 1001), 1024, (1024, 512)),
        ((3000, 1499), 1024, (1024, 511)),  # 511.66: truncated, not rounded
        ((1001, 2000), 1024, (512, 1024)),
        ((1000, 800), 512, (512, 409)),
        ((1024, 700), 1024, (1024, 700)),  # exactly max_dim: untouched
        ((300, 200), 1024, (300, 200)),  # never upscaled
    ],
)
def test_resize_math(
    tmp_path: Path, size: tuple[int, int], max_dim: int, expected: tuple[int, int]
) -> None:
    path = _save(Image.new("RGB", size, (10, 200, 30)), tmp_path / "x.png")
    mime, data = _decode(encode_image(ImageSpec(path, max_dim, 85)))
    assert mime == "image/jpeg"
    with Image.open(io.BytesIO(data)) as out:
        assert out.format == "JPEG"
        assert out.size == expected


def test_output_is_the_official_lanczos_jpeg(tmp_path: Path) -> None:
    img = _noise((600, 300))
    path = _save(img, tmp_path / "x.png")
    data, mime = encode_bytes(ImageSpec(path, 512, 75))
    assert mime == "image/jpeg"
    assert data == _jpeg(img.resize((512, 256), Image.Resampling.LANCZOS), 75)


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_rgba_and_palette_become_rgb(tmp_path: Path, mode: str) -> None:
    path = _save(Image.new("RGB", (40, 30), (255, 0, 0)).convert(mode), tmp_path / "x.png")
    data, mime = encode_bytes(ImageSpec(path, 1024, 85))
    assert mime == "image/jpeg"
    with Image.open(io.BytesIO(data)) as out:
        assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (40, 30))


def test_grayscale_stays_grayscale(tmp_path: Path) -> None:
    path = _save(Image.new("L", (40, 30), 128), tmp_path / "x.png")
    data, _ = encode_bytes(ImageSpec(path, 1024, 85))
    with Image.open(io.BytesIO(data)) as out:
        assert (out.format, out.mode) == ("JPEG", "L")


@pytest.mark.parametrize("mode", ["I;16", "LA"])
def test_modes_jpeg_cannot_store_fall_back_to_raw_bytes(tmp_path: Path, mode: str) -> None:
    path = _save(Image.new(mode, (2000, 10)), tmp_path / "x.png")
    data, mime = encode_bytes(ImageSpec(path, 1024, 85))
    assert data == path.read_bytes()
    assert mime == "image/png"


def test_raw_fallback_mime_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    path = _save(Image.new("I;16", (20, 10)), tmp_path / "scan.unknownext", "TIFF")
    assert encode_bytes(ImageSpec(path, 1024, 85)) == (path.read_bytes(), "image/tiff")
    # Upstream labels by extension, falling back to image/jpeg.
    assert encode_bytes(ImageSpec(path, 1024, 85), legacy_mime=True)[1] == "image/jpeg"


def test_unreadable_image_is_sent_raw(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"not an image at all")
    assert encode_bytes(ImageSpec(path, 1024, 85)) == (
        b"not an image at all",
        "image/png",  # nothing better known than the extension
    )


def test_png_mime_correct_by_default_legacy_on_request(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (20, 20), (1, 2, 3)), tmp_path / "x.png")
    correct = _decode(encode_image(ImageSpec(path, 1024, 85)))
    legacy = _decode(encode_image(ImageSpec(path, 1024, 85), legacy_mime=True))
    assert correct[0] == "image/jpeg"
    assert legacy[0] == "image/png"  # quirk 12: JPEG bytes labelled as PNG
    assert correct[1] == legacy[1]
    assert correct[1][:2] == b"\xff\xd8"


def test_default_limit_is_ten_mebibytes() -> None:
    assert MAX_ENCODED_BYTES == 10 * 1024 * 1024


def test_too_large_restarts_smaller_with_lower_quality(tmp_path: Path) -> None:
    img = _noise((1200, 1000))
    path = _save(img, tmp_path / "x.png")
    first = _jpeg(img.resize((1024, 853), Image.Resampling.LANCZOS), 85)
    limit = int(len(first) * 1.37) - 1  # the first attempt is just over the limit
    data, mime = encode_bytes(ImageSpec(path, 1024, 85), limit=limit)
    # Second attempt: max_dim int(1024*0.9)=921 (not 921.6, which would give 768 rows),
    # quality int(85*0.9)=76; 1000*921/1200=767.5.
    assert mime == "image/jpeg"
    assert data == _jpeg(img.resize((921, 767), Image.Resampling.LANCZOS), 76)


def test_shrink_loop_runs_until_under_limit(tmp_path: Path) -> None:
    path = _save(_noise((1200, 600)), tmp_path / "x.png")
    limit = 40_000
    data, _ = encode_bytes(ImageSpec(path, 1024, 85), limit=limit)
    assert len(data) * 1.37 <= limit
    with Image.open(io.BytesIO(data)) as out:
        assert out.format == "JPEG"
        assert max(out.size) < 921 * 0.9  # took several rounds


def test_impossible_limit_ends_in_raw_bytes(tmp_path: Path) -> None:
    path = _save(_noise((64, 32)), tmp_path / "x.png")
    assert encode_bytes(ImageSpec(path, 1024, 85), limit=1) == (path.read_bytes(), "image/png")


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    assert file_digest(path) == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    stat = path.stat()
    # Same size and mtime: the memo answers without reading the file again.
    path.write_bytes(b"xyz")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_digest(path) == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_digest(path) == hashlib.blake2b(b"xyz", digest_size=16).hexdigest()


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_cache_round_trip(tmp_path: Path) -> None:
    path = _save(_noise((300, 200)), tmp_path / "x.png")
    spec = ImageSpec(path, 1024, 85)
    root = tmp_path / "cache"
    cache = ImageCache(root)
    url = cache.data_url(spec)
    assert url == encode_image(spec)
    assert (cache.hits, cache.misses) == (0, 1)
    [entry] = _entries(root)
    assert entry.parent.parent == root / "images"
    assert entry.parent.name == entry.name[:2]
    assert entry.suffix == ".txt"
    assert cache.data_url(spec) == url
    assert (cache.hits, cache.misses) == (1, 1)
    # A new instance (a new run) finds it on disk.
    again = ImageCache(root)
    assert again.data_url(spec) == url
    assert (again.hits, again.misses) == (1, 0)


def test_cache_key_covers_size_quality_mime_and_content(tmp_path: Path) -> None:
    path = _save(_noise((300, 200)), tmp_path / "x.png")
    cache = ImageCache(tmp_path / "cache")
    urls = {
        cache.data_url(ImageSpec(path, 1024, 85)),
        cache.data_url(ImageSpec(path, 256, 85)),
        cache.data_url(ImageSpec(path, 1024, 75)),
        cache.data_url(ImageSpec(path, 1024, 85), legacy_mime=True),
    }
    assert len(urls) == 4
    assert len(_entries(tmp_path / "cache")) == 4
    _save(_noise((300, 200), seed=1), path)
    os.utime(path, ns=(0, 1))  # make sure the content change is visible to the memo
    assert cache.data_url(ImageSpec(path, 1024, 85)) == encode_image(ImageSpec(path, 1024, 85))
    assert cache.misses == 5


@pytest.mark.parametrize("garbage", [b"", b"hello", b"data:image/jpeg;base64,abc", b"\xff\xfe"])
def test_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path: Path, garbage: bytes) -> None:
    path = _save(_noise((50, 40)), tmp_path / "x.png")
    spec = ImageSpec(path, 1024, 85)
    said: list[str] = []
    cache = ImageCache(tmp_path / "cache", warn=said.append)
    url = cache.data_url(spec)
    [entry] = _entries(tmp_path / "cache")
    entry.write_bytes(garbage)
    assert cache.data_url(spec) == url
    assert (cache.hits, cache.misses) == (0, 2)
    assert entry.read_text() == url
    # said through the run's message channel, one line naming the entry
    [line] = said
    assert line.startswith(f"warning: image cache entry {entry} is ")
    assert line.endswith("re-encoding")


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(_noise((50, 40)), tmp_path / "x.png")
    spec = ImageSpec(path, 1024, 85)
    root = tmp_path / "cache"

    def boom(src: object, dst: object) -> None:
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(os, "replace", boom)
    said: list[str] = []
    full = ImageCache(root, warn=said.append)
    assert full.data_url(spec) == encode_image(spec)  # the row still gets its image
    assert full.data_url(ImageSpec(path, 512, 75)) == encode_image(ImageSpec(path, 512, 75))
    assert _entries(root) == []
    [line] = said  # a full disk fails every entry: said once, through the channel
    assert line.startswith("warning: cannot write image cache entry ")
    assert "disk full" in line
    monkeypatch.undo()
    ImageCache(root).data_url(spec)
    assert [p.suffix for p in _entries(root)] == [".txt"]


def test_no_root_means_no_disk_cache(tmp_path: Path) -> None:
    path = _save(_noise((50, 40)), tmp_path / "x.png")
    spec = ImageSpec(path, 1024, 85)
    assert ImageCache(None).data_url(spec) == encode_image(spec)
    assert _entries(tmp_path) == [path]


def test_cache_is_thread_safe(tmp_path: Path) -> None:
    path = _save(_noise((200, 100)), tmp_path / "x.png")
    spec = ImageSpec(path, 1024, 85)
    cache = ImageCache(tmp_path / "cache")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        results.append(cache.data_url(spec))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [encode_image(spec)] * 8
    assert cache.hits + cache.misses == 8
    assert [p.suffix for p in _entries(tmp_path / "cache")] == [".txt"]


def test_pixel_budget_runs_a_large_image_alone_and_small_ones_together(tmp_path: Path) -> None:
    budget = PixelBudget(pixels=100 * 100 * 3)  # three 100x100 images fit at once
    small = [_save(_noise((100, 100), seed=i), tmp_path / f"s{i}.png") for i in range(4)]
    large = _save(_noise((200, 200)), tmp_path / "large.png")  # over the budget on its own

    def waiter(path: Path, entered: threading.Event, leave: threading.Event) -> threading.Thread:
        def hold() -> None:
            with budget.hold(path):
                entered.set()
                leave.wait(10)

        thread = threading.Thread(target=hold, daemon=True)  # a bug that hangs it fails the test
        thread.start()
        return thread

    release = threading.Event()
    three = [threading.Event() for _ in range(3)]
    holders = [waiter(p, e, release) for p, e in zip(small[:3], three, strict=True)]
    assert all(e.wait(5) for e in three)  # three small ones share the budget
    fourth, big = threading.Event(), threading.Event()
    waiting = [waiter(small[3], fourth, release), waiter(large, big, release)]
    assert not fourth.wait(0.2)  # a fourth would pass the budget: it waits
    assert not big.is_set()  # and the large one waits for the others to finish
    release.set()
    for thread in holders + waiting:
        thread.join(10)
    assert fourth.is_set()
    assert big.is_set()


def test_an_image_over_the_budget_runs_alone_but_runs(tmp_path: Path) -> None:
    budget = PixelBudget(pixels=100 * 100)
    large = _save(_noise((200, 200)), tmp_path / "large.png")  # four times the budget
    small = _save(_noise((100, 100)), tmp_path / "small.png")

    def enters(path: Path) -> bool:
        """Say whether an encode of `path` gets past the budget within 5 s (in a thread)."""
        entered = threading.Event()

        def hold() -> None:
            with budget.hold(path):
                entered.set()

        thread = threading.Thread(target=hold, daemon=True)  # a hang must not hang the suite
        thread.start()
        ok = entered.wait(5)
        thread.join(5)
        return ok

    assert enters(large)  # alone: never blocked by its own size
    assert enters(small)  # and it gave its pixels back when it was done
    assert enters(large)
