"""A full disk, with a real ENOSPC: tiny tmpfs mounts, never a patched write.

Nothing already written is damaged, the run stops with one line and exit 5, an answer already
paid for is kept (in the cache, or held in memory until space is freed), and the rerun after
space is freed pays for nothing twice. Mounting needs root (CI runs as root); else these skip.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fakeserver import FakeServer
from procs import ServerProcess, drvd, server_process, start_drvd
from test_cli import SAMPLE, assert_one_line_error
from test_models import api_model, load_samples
from test_results import lines, result

from pipeline.data.prompts import build_request
from pipeline.data.synthetic import write_dataset
from pipeline.files import write_atomic
from pipeline.results import ResultsFile
from pipeline.run.lock import LOCK_NAME

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs counts its size in pages
ENOSPC = "No space left on device"
RESUME = "free space, then rerun the same command to resume"
ROWS = 60  # rows of the synthetic dataset
HOLDING = re.compile(
    r"^disk full: holding (\d+) paid answers in memory; free space in (.+) within (\d+) s to keep them$"
)
IMAGE_WARNING = "cannot write image cache entry"


class Disk:
    """A tmpfs mounted for one test: resize it, fill it, see what is free."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resize(self, kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(self.root)], check=True)

    def fill(self, leave_pages: int = 0) -> Path:
        """Write a filler file until the disk is full, then free `leave_pages` pages of it."""
        path = self.root / "filler"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, bytes(PAGE))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_pages * PAGE))
        finally:
            os.close(fd)
        return path


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """A 64 KiB tmpfs, unmounted at the end; the test is skipped where mounting is not allowed."""
    root = tmp_path / "disk"
    root.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: a real full disk needs a tmpfs")
    cmd = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield Disk(root)
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=False)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """Run tests/fakeserver.py as its own process, answering after 0.1 s."""
    with server_process("--latency", "0.1") as running:
        yield running


def eval_args(server: ServerProcess, data: Path, out: Path, cache: Path) -> list[str | Path]:
    return [
        "eval", "--model", "openai:m", "--base-url", server.url, "--data", data,
        "--out", out, "--cache-dir", cache, "--run-name", "run", "--quiet", "--concurrency", "4",
    ]  # fmt: skip


ENV = {"DRVD_API_KEY": "sk-test"}


def dataset(tmp_path: Path, rows: int = ROWS) -> Path:
    data = tmp_path / "data"
    write_dataset(data, total=rows, images=3, sizes=(32,))
    return data


def saved_rows(run: Path) -> int:
    """Count the rows of a run's results files, checking every line of every file parses."""
    count = 0
    for path in run.glob("*.jsonl"):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), path  # ends on a whole line
        for line in data.splitlines():
            assert isinstance(orjson.loads(line), dict), (path, line)  # no damage anywhere
            count += 1
    return count


def stderr_lines(stderr: str) -> list[str]:
    """Return stderr's lines but one image-cache warning (said once at most); no traceback."""
    assert "Traceback" not in stderr
    found = stderr.strip().splitlines()
    assert sum(IMAGE_WARNING in line for line in found) <= 1, stderr
    return [line for line in found if IMAGE_WARNING not in line]


# ---------------------------------------------------------------- the pieces


async def test_a_failed_append_is_cut_back_to_its_last_whole_line(disk: Disk) -> None:
    disk.resize(16)
    path = disk.root / "r.jsonl"
    results = ResultsFile(path)
    await results.append([result("a", 1), result("b", 2)])
    before = path.read_bytes()
    filler = disk.fill()
    # More than the room left in the file's last page: part of it goes in before ENOSPC.
    big = [result(f"k{i}", i, answer="x" * 400) for i in range(3, 20)]
    with pytest.raises(OSError, match=ENOSPC) as failed:
        await results.append(big)
    assert failed.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    filler.unlink()
    await results.append([result("c", 3)])  # the same open file, once space is freed
    await results.close()
    assert [r["_meta"]["key"] for r in lines(path)] == ["a", "b", "c"]


def test_write_atomic_on_a_full_disk_leaves_the_target_and_no_temporary_file(disk: Disk) -> None:
    target = disk.root / "summary.json"
    target.write_bytes(b"old\n")
    disk.fill()
    with pytest.raises(OSError, match=ENOSPC) as failed:
        write_atomic(target, b"x" * 3 * PAGE)
    assert failed.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in disk.root.iterdir()) == ["filler", "summary.json"]


async def test_a_cache_that_cannot_store_a_paid_answer_still_returns_it(
    tmp_path: Path, disk: Disk, fake_server: FakeServer
) -> None:
    disk.fill()
    sample = load_samples(tmp_path)[0]
    async with api_model(fake_server, tmp_path, cache_dir=disk.root / "cache") as model:
        outcome = await model.respond(sample, build_request(sample))
    assert outcome.completion is not None
    assert outcome.error is None
    assert outcome.unsaved == f"{disk.root / 'cache' / 'responses'}: {ENOSPC}"
    assert fake_server.ledger.paid == 1


def test_help_names_exit_5() -> None:
    proc = drvd("eval", "--help")
    status = proc.stdout[proc.stdout.index("exit status") :]
    assert "5 a file could not be written (disk full)" in status


def test_a_read_only_results_folder_is_one_line_and_exit_5(tmp_path: Path, disk: Disk) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk.root)], check=True)
    out = disk.root / "out"
    proc = drvd("eval", "--model", "random", "--data", SAMPLE, "--out", out, "--quiet")
    line = assert_one_line_error(proc, 5)
    assert f"cannot create {out}: Read-only file system" in line  # the folder that failed


# ---------------------------------------------------------------- whole runs


def test_a_full_results_folder_exits_5_and_the_rerun_pays_nothing_twice(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    disk.resize(16)  # room for about half the rows; the cache is on the normal disk
    data, run = dataset(tmp_path), disk.root / "out" / "run"
    args = eval_args(server, data, disk.root / "out", tmp_path / "cache")
    first = drvd(*args, env=ENV)
    line = assert_one_line_error(first, 5)
    saved = saved_rows(run)
    assert 0 < saved < ROWS
    assert re.fullmatch(
        rf"error: stopped: cannot write {run}/\w+\.(jsonl|json): {ENOSPC}; {saved} rows saved"
        rf"(, \d+ not \(the rerun takes their answers from the cache\))?; {RESUME}",
        line,
    ), line
    paid = server.ledger()["paid"]
    assert paid > saved  # answers in flight when the disk filled: paid, cached, not written

    disk.resize(4096)
    second = drvd(*args, env=ENV)
    assert second.returncode == 0, second.stderr
    assert saved_rows(run) == ROWS
    after = server.ledger()
    assert after["paid"] == ROWS  # every row paid once: the first run's answers came from the cache
    assert after["duplicates"] == 0
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert summary["usage"]["cache_hits"] == paid - saved


def test_paid_answers_are_held_until_space_is_freed(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    data, run = dataset(tmp_path), disk.root / "out" / "run"
    args = eval_args(server, data, disk.root / "out", disk.root / "cache")
    filler = disk.fill(leave_pages=4)  # results and cache on one disk: both fill up
    proc = start_drvd(*args, env=ENV)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if held := HOLDING.match(line.strip()):
            break
    else:
        pytest.fail(f"no holding line; stderr: {''.join(seen)}")
    assert held.group(2) == str(run)
    assert held.group(3) == "120"
    filler.unlink()  # the user frees space in time
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(timeout=60) == 5, rest
    done = stderr_lines("".join(seen) + rest)
    assert len(done) == 2, done  # the holding line, then the error
    saved = saved_rows(run)
    assert saved >= int(held.group(1))
    # The first write that failed (a cache entry or a results file); nothing lost.
    pattern = (
        rf"error: stopped: cannot write {disk.root}/\S+: {ENOSPC}; {saved} rows saved; {RESUME}"
    )
    assert re.fullmatch(pattern, done[1]), done[1]

    disk.resize(4096)
    second = drvd(*args, env=ENV)
    assert second.returncode == 0, second.stderr
    assert saved_rows(run) == ROWS
    after = server.ledger()
    assert after["duplicates"] == 0  # no paid request repeated: the held answers were kept
    assert after["paid"] == ROWS


def test_held_paid_answers_are_lost_only_after_the_wait(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    data, run = dataset(tmp_path), disk.root / "out" / "run"
    disk.fill()
    args = eval_args(server, data, disk.root / "out", disk.root / "cache")
    proc = drvd(*args, env={**ENV, "DRVD_HOLD_SECONDS": "1"})
    assert proc.returncode == 5, proc.stderr
    holding, error = stderr_lines(proc.stderr)
    held = HOLDING.match(holding)
    assert held is not None, holding
    assert held.group(3) == "1"
    assert saved_rows(run) == 0
    assert error == (
        f"error: stopped: cannot write {disk.root / 'cache' / 'responses'}: {ENOSPC}; "
        f"0 rows saved, {held.group(1)} not: {held.group(1)} paid answers lost "
        f"(the rerun pays for them again); {RESUME}"
    )


def test_a_summary_that_cannot_be_written_leaves_the_previous_one(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    args, run = _finished_run(tmp_path, disk, server)
    before = _files(run)
    disk.fill()
    again = drvd(*args, env=ENV)  # every row is done: only the summary is written
    line = assert_one_line_error(again, 5)
    assert line == (
        f"error: stopped: cannot write {run / 'summary.json'}: {ENOSPC}; {ROWS} rows saved; {RESUME}"
    )
    assert _files(run) == before  # no temporary file either


def test_results_that_cannot_be_put_in_order_are_left_as_they_are(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    # More rows than elsewhere: the summary (its intervals) outgrows a 60-row results file.
    args, run = _finished_run(tmp_path, disk, server, rows=4 * ROWS)
    before = {p.name: p.read_bytes() for p in run.glob("*.jsonl")}
    summary_pages = -(-(run / "summary.json").stat().st_size // PAGE)
    first = run / "visual_evidence_qa.jsonl"  # put in order first, and larger than the summary
    assert -(-first.stat().st_size // PAGE) > summary_pages
    disk.fill(leave_pages=summary_pages)  # room for a new summary, not for a copy of `first`
    again = drvd(*args, env=ENV)
    line = assert_one_line_error(again, 5)
    assert (
        line == f"error: stopped: cannot write {first}: {ENOSPC}; {4 * ROWS} rows saved; {RESUME}"
    )
    assert {p.name: p.read_bytes() for p in run.glob("*.jsonl")} == before
    assert orjson.loads((run / "summary.json").read_bytes())["usage"]["failed_rows"] == 0


def _files(run: Path) -> dict[str, bytes]:
    """Return the run folder's files and their bytes, but the run lock (it names each process)."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_NAME}


def _finished_run(
    tmp_path: Path, disk: Disk, server: ServerProcess, rows: int = ROWS
) -> tuple[list[str | Path], Path]:
    """Run every row into a 512 KiB disk (cache elsewhere); return the eval arguments and run."""
    disk.resize(512)
    args = eval_args(server, dataset(tmp_path, rows), disk.root / "out", tmp_path / "cache")
    assert drvd(*args, env=ENV).returncode == 0
    return args, disk.root / "out" / "run"


def test_score_on_a_full_disk_is_one_line_and_exit_5(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    _, run = _finished_run(tmp_path, disk, server)
    before = _files(run)
    disk.fill()
    line = assert_one_line_error(drvd("score", run), 5)
    assert line == f"error: cannot write {run / 'summary.json'}: {ENOSPC}; free space, then rerun"
    assert _files(run) == before  # the summary it had is intact, and no temporary file is left
