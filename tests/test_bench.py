"""The benchmark harness: subsets, bounds, child measurement and cleanup, the report."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from bench.data import subset
from bench.proc import Sim, reap, spawn, stop_all
from bench.sections import Measured
from bench.table import Line, render_markdown, render_text
from pipeline.data.synthetic import write_dataset


def measured(concurrency: int, latency: float, rpm: float | None = None) -> Measured:
    return Measured(
        rows=10, concurrency=concurrency, sim=Sim(latency), wall=1.0, startup=0.1, steady=1.0, sustained=1.0,
        cpu=0.1, rss_mb=50.0, server_cpu=0.1, requests=10, code=0, usage={}, outcomes={}, rpm=rpm,
    )  # fmt: skip


def test_subset_keeps_the_split_and_links_the_images(tmp_path: Path) -> None:
    counts = write_dataset(tmp_path / "full", total=100, images=2, sizes=(16,))
    assert subset(tmp_path / "full", tmp_path / "sub", 37) == 37
    got = {p.stem: len(p.read_bytes().splitlines()) for p in (tmp_path / "sub").glob("*.jsonl")}
    assert sum(got.values()) == 37
    for stem, n in got.items():
        assert abs(n - 37 * counts[stem] / 100) < 1.01
    assert (tmp_path / "sub" / "images").resolve() == (tmp_path / "full" / "images").resolve()


def test_bound_is_the_smaller_of_slots_and_rpm() -> None:
    assert measured(64, 0.5).bound == 128
    assert measured(64, 0.5, rpm=3000).bound == 50
    assert Sim(0.5, jitter=0.5).mean_latency == 0.75


def test_reap_reports_the_childs_own_cpu_and_rss() -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    done = reap(spawn([sys.executable, "-c", code]))
    assert done.code == 0
    assert 0.15 < done.cpu < 2.0
    assert done.rss_mb > 1


def test_stop_all_ends_children_still_running() -> None:
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_all(grace=2.0)
    assert proc.returncode == -signal.SIGTERM  # ended by the polite signal, not left running


def test_report_names_the_command_and_marks_missed_targets() -> None:
    lines = [
        Line("throughput", "rows/s", "120", "128", "93.8%", "≥ 95%", False, "how"),
        Line("memory", "RSS", "90 MB", target="< 250 MB", met=True),
    ]
    text = render_markdown(
        lines, command="python -m bench", host={"cores": "2", "cpu": "X", "python": "3.11",
        "os": "Linux", "load": "0"}, load_after="0", setup=["data"], notes=[],
    )  # fmt: skip
    assert "`python -m bench`" in text
    assert "| throughput | rows/s | 120 | 128 | 93.8% | ≥ 95% | **no** |" in text
    assert "- **rows/s**: how" in text
    plain = render_text(lines).splitlines()
    assert len({len(row.rstrip()) <= len(plain[0]) for row in plain}) == 1


def test_every_planted_bug_still_applies_to_the_code() -> None:
    # A refactor that moves a mutant's line would silently shrink the mutation check.
    from bench.mutant_list import MUTANTS
    from bench.mutants import problem
    from bench.proc import REPO

    stale = {m.name: why for m in MUTANTS if (why := problem(m, REPO)) is not None}
    assert stale == {}
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
