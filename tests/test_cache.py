"""Response cache: what the key covers, round trips, corrupt entries, atomic concurrent writes."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.files import write_atomic
from pipeline.model.cache import CACHE_VERSION, ResponseCache, request_key
from pipeline.records import ChatRequest, Completion, ImageSpec

REPO = Path(__file__).resolve().parent.parent
IMAGE = ImageSpec(Path("/data/images/a.png"), 512, 75)
REQUEST = ChatRequest(
    system="Only respond with one capital letter.",
    text="Question: which?\nA. x\nB. y",
    image=IMAGE,
    temperature=0.0,
    max_tokens=50,
)
BASE: dict[str, Any] = {
    "model": "qwen2.5-vl-72b-instruct",
    "endpoint": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "protocol_version": "drvd-prompts-1",
    "request": REQUEST,
    "image_digest": "ab" * 16,
    "legacy_mime": False,
    "epoch": 0,
}


def key(**changes: Any) -> str:
    return request_key(**{**BASE, **changes})


def test_key_is_stable_and_versioned() -> None:
    first = key()
    assert first == key()
    assert first == request_key(**{**BASE, "request": replace(REQUEST)})
    assert first.startswith(f"{CACHE_VERSION}-")
    assert len(first.removeprefix(f"{CACHE_VERSION}-")) == 40  # blake2b, 20 bytes


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "qwen-vl-max"},
        {"endpoint": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"},
        {"protocol_version": "drvd-prompts-2"},
        {"request": replace(REQUEST, system="You are a helpful medical image analysis assistant.")},
        {"request": replace(REQUEST, text=REQUEST.text + " ")},
        {"image_digest": "cd" * 16},
        {"request": replace(REQUEST, image=ImageSpec(IMAGE.path, 1024, 75))},
        {"request": replace(REQUEST, image=ImageSpec(IMAGE.path, 512, 85))},
        {"legacy_mime": True},
        {"request": replace(REQUEST, temperature=0.7)},
        {"request": replace(REQUEST, temperature=None)},  # not sent ≠ 0
        {"request": replace(REQUEST, max_tokens=300)},
        {"request": replace(REQUEST, max_tokens=None)},
        {"epoch": 1},
        {"extra": {"top_p": 0.9}},
    ],
    ids=lambda c: next(iter(c)) if next(iter(c)) != "request" else "request-field",
)
def test_each_answer_relevant_field_changes_the_key(changes: dict[str, Any]) -> None:
    assert key(**changes) != key()


def test_key_ignores_where_the_image_lives() -> None:
    # Same bytes (digest) under another path: the same answer, so the same key.
    moved = replace(REQUEST, image=ImageSpec(Path("/elsewhere/copy.png"), 512, 75))
    assert key(request=moved) == key()
    assert key(extra={}) == key() == key(extra=None)


def test_key_has_no_other_inputs() -> None:
    # Anything outside the signature (API key, timeout, retries, concurrency) cannot reach it.
    with pytest.raises(TypeError):
        key(api_key="sk-x")
    with pytest.raises(TypeError):
        key(timeout=5.0)


def test_put_get_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    done = Completion("B", model="m-1", request_id="req-9", prompt_tokens=12, completion_tokens=1)
    assert cache.get(key()) is None
    cache.put(key(), done)
    assert cache.get(key()) == done
    assert ResponseCache(tmp_path).get(key()) == done  # another instance (process) sees it
    assert cache.get(key(epoch=3)) is None
    # One JSON file per key, sharded by the key's last two characters.
    path = tmp_path / "responses" / key()[-2:] / f"{key()}.json"
    assert orjson.loads(path.read_bytes())["key"] == key()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"key": "k", "completion": {"text": "B", "mod',
        b"not json at all",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"text"',
        b'{"key": "k"}',
        b'{"key": "k", "completion": {"txt": "B"}}',
        b'{"key": "k", "completion": null}',
    ],
)
def test_corrupt_entry_is_a_miss(tmp_path: Path, content: bytes) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(key(), Completion("B"))
    path = next((tmp_path / "responses").glob("*/*.json"))
    path.write_bytes(content)
    assert cache.get(key()) is None
    assert cache.damaged == {key()}  # counted, for the run to report
    cache.put(key(), Completion("C"))  # and a fresh answer replaces it
    assert cache.get(key()) == Completion("C")


def test_entry_that_is_a_folder_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    (tmp_path / "responses" / key()[-2:] / f"{key()}.json").mkdir(parents=True)
    assert cache.get(key()) is None


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    for epoch in range(20):
        cache.put(key(epoch=epoch), Completion(f"answer {epoch}"))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 20
    assert all(p.suffix == ".json" and not p.name.startswith(".") for p in files)


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(IsADirectoryError):
        write_atomic(target, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def _payload(writer: int, i: int) -> bytes:
    # Large enough that a non-atomic write would be seen half-done.
    return orjson.dumps({"writer": writer, "i": i, "pad": "x" * (64 * 1024 + writer)})


def _assert_whole(data: bytes) -> None:
    row = orjson.loads(data)
    assert len(row["pad"]) == 64 * 1024 + row["writer"]


def test_concurrent_thread_writers_always_leave_a_whole_entry(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "entry.json"
    write_atomic(target, _payload(0, 0))
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            for i in range(60):
                write_atomic(target, _payload(n, i))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        reads = 0
        while not stop.is_set() or reads == 0:
            try:
                _assert_whole(target.read_bytes())
            except BaseException as exc:
                errors.append(exc)
                return
            reads += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 5)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    _assert_whole(target.read_bytes())
    assert [p.name for p in target.parent.iterdir()] == ["entry.json"]


_WRITER = """
import sys
from pathlib import Path
import orjson
from pipeline.files import write_atomic
target, n = Path(sys.argv[1]), int(sys.argv[2])
for i in range(150):
    write_atomic(target, orjson.dumps({"writer": n, "i": i, "pad": "x" * (64 * 1024 + n)}))
"""


def test_concurrent_process_writers_always_leave_a_whole_entry(tmp_path: Path) -> None:
    target = tmp_path / "entry.json"
    write_atomic(target, _payload(0, 0))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(n)], cwd=REPO)
        for n in range(1, 4)
    ]
    reads = 0
    while any(p.poll() is None for p in procs) or reads == 0:
        _assert_whole(target.read_bytes())  # never a torn entry, whenever it is read
        reads += 1
    assert [p.wait() for p in procs] == [0, 0, 0]
    row = orjson.loads(target.read_bytes())
    assert row["i"] == 149  # the last write of whichever writer finished last
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_stats_and_clear(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    assert cache.stats() == {"entries": 0, "bytes": 0}  # no folder yet
    assert cache.clear() == 0
    for epoch in range(3):
        cache.put(key(epoch=epoch), Completion("B" * (epoch + 1)))
    images = tmp_path / "c" / "images" / "ab"
    images.mkdir(parents=True)
    (images / "x.txt").write_text("data:image/jpeg;base64,AAAA")
    stats = cache.stats()
    files = list((tmp_path / "c" / "responses").glob("*/*.json"))
    assert stats == {"entries": 3, "bytes": sum(p.stat().st_size for p in files)}
    assert cache.clear() == 3
    assert not images.exists()  # encoded images go too
    assert cache.stats() == {"entries": 0, "bytes": 0}
    assert cache.get(key()) is None
    cache.put(key(), Completion("again"))  # usable after a clear
    assert cache.stats()["entries"] == 1


@pytest.mark.parametrize(
    "completion",
    [
        {"text": 5},
        {"text": "A", "prompt_tokens": "x"},
        {"text": "A", "completion_tokens": True},
        {"text": "A", "reasoning_tokens": -1},
        {"text": "A", "model": 3},
        {"text": None},
        {"text": "A", "unknown": 1},
    ],
)
def test_an_entry_with_wrong_types_is_a_damaged_miss(
    tmp_path: Path, completion: dict[str, Any]
) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(key(), Completion("B"))
    path = next((tmp_path / "responses").glob("*/*.json"))
    path.write_bytes(orjson.dumps({"key": key(), "completion": completion}))
    assert cache.get(key()) is None
    assert cache.get(key(epoch=1)) is None  # absent: a plain miss, not damage
    assert cache.damaged == {key()}


def test_an_entry_filed_under_another_key_is_a_damaged_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(key(epoch=1), Completion("B"))
    path = next((tmp_path / "responses").glob("*/*.json"))
    moved = cache.dir / key()[-2:] / f"{key()}.json"
    moved.parent.mkdir(parents=True, exist_ok=True)
    path.rename(moved)
    assert cache.get(key()) is None
    assert cache.damaged == {key()}
