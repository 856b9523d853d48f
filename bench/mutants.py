"""Mutation check: plant one known bug at a time in a copy of the repo; do the tests catch it?

python -m bench.mutants [--only NAME,...] [--list] [--full] [--timeout S] [--workers N] [--keep]

The repo's files (`git ls-files`, with untracked files git does not ignore) are copied once per
worker. For each mutant (bench/mutant_list.py) its `old` text, which must occur exactly once, is
replaced; `pytest -x` runs its test files with the copy as working folder and first on PYTHONPATH
(so `import pipeline` is the mutated copy, in test subprocesses too: checked first); the file is
restored. A failing test catches the mutant if it fails twice more alone (else it is set aside
and the rest run again: no flaky kills); a run past the timeout counts as caught (a timeout).
The same test files first run unmutated (the baseline): a test that fails there but passes
alone twice is flaky and deselected everywhere; any other failure reports the harness broken.
"""

from __future__ import annotations

import argparse
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.mutant_list import MUTANTS, Mutant
from bench.proc import REPO, reap, spawn, stop_all
from bench.table import Line
from pipeline.config import child_env

if TYPE_CHECKING:
    from bench.sections import Bench

TIMEOUT = 300.0  # seconds per mutant; a mutant that makes the tests hang counts as caught
WORKERS = 2  # one copy of the repo each; 2 cores
PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header")
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.M)
CAUGHT = ("caught", "timeout")
_DESCRIPTION = "Plant one known bug at a time in a copy of the repo and run its tests."


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the tests did with one mutant (or with the unmutated baseline)."""

    name: str
    # caught, timeout, survived, flaky (caught once, not again), stale (no longer applies),
    # error (pytest broke); the baseline: passed, or how it failed
    status: str
    by: str  # the first failing test, or what went wrong
    seconds: float


@dataclass(frozen=True, slots=True)
class Report:
    """The whole check: baseline, one verdict per mutant, wall time."""

    baseline: tuple[Verdict, ...]  # one per chunk of test files
    verdicts: tuple[Verdict, ...]
    seconds: float
    workers: int
    flaky: tuple[str, ...] = ()  # tests deselected: they failed unmutated, then passed

    @property
    def broken(self) -> bool:
        """Say whether the unmutated tests failed, so no verdict means anything."""
        return any(v.status != "passed" for v in self.baseline)

    @property
    def baseline_seconds(self) -> float:
        """Return the wall time of the baseline (its chunks run in parallel)."""
        return max((v.seconds for v in self.baseline), default=0.0)

    @property
    def caught(self) -> int:
        """Count the mutants the tests caught (a timeout counts)."""
        return sum(v.status in CAUGHT for v in self.verdicts)

    def named(self, *statuses: str) -> list[str]:
        """Return the names of the mutants with one of these statuses."""
        return [v.name for v in self.verdicts if v.status in statuses]


def repo_files(repo: Path = REPO) -> list[str]:
    """Return the repo's files: tracked ones plus untracked ones git does not ignore."""
    argv = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    out = subprocess.run(argv, cwd=repo, capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (repo / f).is_file()})


def copy_repo(dest: Path, files: Sequence[str], repo: Path = REPO) -> Path:
    """Copy `files` of `repo` into `dest` and return it."""
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target, follow_symlinks=False)
    return dest


def problem(mutant: Mutant, root: Path) -> str | None:
    """Say why `mutant` cannot be applied to the tree at `root`, or None when it can."""
    if not (path := root / mutant.path).is_file():
        return f"{mutant.path} does not exist"
    text = path.read_text(encoding="utf-8")
    if (count := text.count(mutant.old)) != 1:
        return f"its old text occurs {count} times in {mutant.path}, not once"
    if missing := [t for t in mutant.tests if not (root / t).exists()]:
        return f"test file(s) {', '.join(missing)} missing"
    try:
        compile(text.replace(mutant.old, mutant.new), mutant.path, "exec")
    except SyntaxError as exc:
        return f"the mutated {mutant.path} does not compile: {exc}"
    return None


def _env(copy: Path) -> dict[str, str]:
    # PYTHONPATH: test subprocesses started elsewhere import the copy too, not the editable
    # install. No bytecode: a restored file must never meet the .pyc of its mutant.
    return child_env(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")


def check_imports(copy: Path) -> None:
    """Fail unless `pipeline` and `bench` import from `copy` (from outside it, too)."""
    code = "import bench, pipeline; print(pipeline.__file__); print(bench.__file__)"
    for cwd in (copy, copy.parent):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, env=_env(copy), capture_output=True, text=True
        )
        found = [Path(p).resolve() for p in out.stdout.split()]
        if out.returncode or not found or not all(p.is_relative_to(copy.resolve()) for p in found):
            msg = f"from {cwd}, pipeline does not import from the copy {copy}: {out.stdout}"
            raise RuntimeError(msg + out.stderr[-500:])


def run_tests(
    copy: Path, tests: Sequence[str], timeout: float, log: Path, skip: Sequence[str] = ()
) -> tuple[str, str]:
    """Run pytest -x on `tests` in `copy` (minus the `skip` test ids); return (status, detail).

    status: passed; caught (detail: the first failing test); timeout; error (pytest broke).
    """
    argv = [sys.executable, *PYTEST, *tests, *(f"--deselect={s}" for s in skip)]
    with log.open("ab") as sink:
        offset, start = sink.tell(), time.monotonic()
        proc = spawn(
            argv, cwd=copy, env=_env(copy), stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        done = reap(proc, timeout)
    if done.code < 0 and done.end - start >= timeout:
        return "timeout", f"no result within {timeout:g} s"
    if done.code == 0:
        return "passed", ""
    text = log.read_bytes()[offset:].decode("utf-8", "replace")  # this run's output
    if done.code in (1, 2) and (failed := _FAILED.search(text)):  # 2: an error (collection)
        return "caught", failed[1]
    tail = " / ".join(text.strip().splitlines()[-3:])
    return "error", f"pytest exit {done.code}: {tail[-300:]}"


def _try_mutant(
    copy: Path, tests: Sequence[str], timeout: float, log: Path, skip: Sequence[str]
) -> tuple[str, str]:
    """Return the mutant's status; a catch counts only when the failing test fails twice more.

    A failing test that then passes alone (flaky, or order-dependent) is set aside and the
    other tests run again, so a timing test that fails under load never scores a kill.
    """
    aside: list[str] = []
    for _ in range(3):
        status, by = run_tests(copy, tests, timeout, log, [*skip, *aside])
        if status == "passed":
            return ("flaky", f"{', '.join(aside)}: not reliably") if aside else ("survived", "")
        if status != "caught":
            return status, by
        if all(run_tests(copy, [by], timeout, log, skip)[0] in CAUGHT for _ in range(2)):
            return status, by
        aside.append(by)
    return "flaky", f"{', '.join(aside)}: not reliably"


def _try_baseline(
    copy: Path, tests: Sequence[str], timeout: float, log: Path
) -> tuple[str, str, list[str]]:
    """Return the unmutated tests' status and the flaky tests found (deselected from then on).

    A failing test that then passes alone twice in a row is flaky; any other failure is real.
    """
    flaky: list[str] = []
    for _ in range(3):
        status, by = run_tests(copy, tests, timeout, log, flaky)
        if status != "caught":
            break
        if [run_tests(copy, [by], timeout, log)[0] for _ in range(2)] != ["passed", "passed"]:
            break
        flaky.append(by)
    return status, by, flaky


def _all_tests(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py"))


def _chunks(root: Path, tests: Sequence[str], n: int) -> list[list[str]]:
    """Deal test files into n chunks, largest first (bytes stand in for run time)."""
    ranked = sorted(tests, key=lambda t: -(root / t).stat().st_size)
    return [chunk for i in range(n) if (chunk := ranked[i::n])]


def run_check(
    mutants: Sequence[Mutant],
    *,
    work: Path,
    timeout: float = TIMEOUT,
    workers: int = WORKERS,
    full: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Report:
    """Run the baseline, then each mutant against its tests, `workers` at a time."""
    started = time.monotonic()
    say = echo or (lambda text: print(text, flush=True))
    files = repo_files()
    copies: queue.Queue[Path] = queue.Queue()
    for i in range(workers):
        copy = copy_repo(work / f"copy-{i}", files)
        check_imports(copy)
        copies.put(copy)
    root = work / "copy-0"
    stale = {m.name: why for m in mutants if (why := problem(m, root)) is not None}
    wanted = {m.name: list(m.tests) if m.tests and not full else _all_tests(root) for m in mutants}
    union = sorted({t for m in mutants if m.name not in stale for t in wanted[m.name]})
    lock = threading.Lock()
    done = [0]
    flaky: list[str] = []  # failed in the baseline, then passed alone: never run again

    def run(name: str, tests: Sequence[str], mutant: Mutant | None) -> Verdict:
        copy = copies.get()
        t0 = time.monotonic()
        path = copy / mutant.path if mutant else None
        original = path.read_text(encoding="utf-8") if path else ""
        log = work / f"{name}.log"
        try:
            if path and mutant:
                path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
                status, by = _try_mutant(copy, tests, timeout, log, flaky)
            else:
                status, by, found = _try_baseline(copy, tests, timeout, log)
                flaky.extend(found)
        finally:
            if path:
                path.write_text(original, encoding="utf-8")
            copies.put(copy)
        verdict = Verdict(name, status, by, time.monotonic() - t0)
        with lock:
            done[0] += bool(mutant)
            say(f"[{done[0]:2d}/{len(mutants)}] {_row(verdict)}" if mutant else _row(verdict))
        return verdict

    pool = ThreadPoolExecutor(max_workers=workers)
    verdicts: list[Verdict] = []
    try:
        parts = _chunks(root, union, workers)
        say(f"baseline: {len(union)} test files, unmutated, in {len(parts)} parallel runs")
        baseline = tuple(
            pool.map(lambda ip: run(f"baseline-{ip[0]}", ip[1], None), enumerate(parts))
        )
        if all(v.status == "passed" for v in baseline):
            if flaky:
                say(f"flaky in the baseline, deselected from every run: {', '.join(flaky)}")
            jobs = [m for m in mutants if m.name not in stale]
            ran = {v.name: v for v in pool.map(lambda m: run(m.name, wanted[m.name], m), jobs)}
            for m in mutants:
                verdicts.append(ran.get(m.name) or Verdict(m.name, "stale", stale[m.name], 0.0))
        else:
            say("baseline FAILED: the unmutated tests do not pass; no mutant was run")
    except BaseException:  # Ctrl-C, SIGTERM: start nothing more, end the runs (files restore)
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    finally:
        pool.shutdown(wait=True)
    seconds = time.monotonic() - started
    return Report(baseline, tuple(verdicts), seconds, workers, tuple(flaky))


def _row(v: Verdict) -> str:
    return f"{v.name:<30} {v.status:<9} {v.seconds:6.1f} s  {v.by}"


def render(report: Report, mutants: Sequence[Mutant]) -> str:
    """Return the table of verdicts, the survivors with their harm, and the score."""
    out = []
    for v in report.baseline:
        state = "passed" if v.status == "passed" else f"{v.status.upper()}: {v.by}"
        out.append(f"baseline {v.name}: {state} in {v.seconds:.1f} s")
    if report.flaky:
        out.append(f"flaky unmutated, deselected from every run: {', '.join(report.flaky)}")
    if report.broken:
        out.append("harness broken: the unmutated tests fail (see the logs); no score")
        return "\n".join(out)
    out += ["", f"{'mutant':<30} {'result':<9} {'time':>8}  caught by", "-" * 100]
    out += [_row(v) for v in report.verdicts]
    why = {m.name: m for m in mutants}
    if survivors := report.named("survived", "flaky", "stale", "error"):
        out += ["", "not caught:"]
        out += [f"  {n} ({why[n].path}): {why[n].why}" for n in survivors]
    score = f"caught {report.caught} of {len(report.verdicts)}"
    timeouts, took = len(report.named("timeout")), report.baseline_seconds
    out += ["", f"{score} ({timeouts} by timeout); baseline {took:.0f} s; whole check "]
    return "\n".join(out) + f"{report.seconds:.0f} s on {report.workers} workers"


def report_line(report: Report) -> Line:
    """Return the bench table's line for the check."""
    what = "planted bugs caught by the test suite"
    if report.broken:
        failing = "; ".join(f"{v.name}: {v.by}" for v in report.baseline if v.status != "passed")
        return Line("mutants", what, "harness broken", target="all caught", met=False,
                    detail=f"the unmutated tests fail: {failing}")  # fmt: skip
    n, total = report.caught, len(report.verdicts)
    parts = [f"survivors: {', '.join(report.named('survived')) or 'none'}"]
    if timeouts := report.named("timeout"):
        parts.append(f"caught by timeout: {', '.join(timeouts)}")
    if other := report.named("flaky", "stale", "error"):
        parts.append(f"flaky, stale or errored (not caught): {', '.join(other)}")
    if report.flaky:
        parts.append(f"flaky unmutated, so deselected: {', '.join(report.flaky)}")
    parts.append(
        f"`python -m bench.mutants`: {total} small bugs from bench/mutant_list.py, each "
        f"planted alone in a copy of the repo and run against its test files with pytest -x "
        f"({TIMEOUT:g} s timeout); a catch counts when the failing test fails twice more alone; "
        f"baseline (unmutated) {report.baseline_seconds:.0f} s; "
        f"whole check {report.seconds:.0f} s on {report.workers} workers"
    )
    score, share = f"caught {n} of {total}", f"{n / total:.0%}" if total else "n/a"
    return Line("mutants", what, score, f"{total} planted", share, "all caught", n == total,
                "; ".join(parts))  # fmt: skip


def section_mutants(b: Bench) -> None:
    """The bench section: run the check in the bench's work folder; one line, survivors noted."""
    chosen = MUTANTS[: b.plan.mutants] if b.plan.mutants else MUTANTS
    work = b.fresh("mutants")
    work.mkdir(parents=True)
    report = run_check(chosen, work=work)
    b.lines.append(report_line(report))
    why = {m.name: m for m in chosen}
    for name in report.named("survived", "flaky", "stale", "error"):
        b.notes.append(f"Mutant `{name}` ({why[name].path}) was not caught: {why[name].why}.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; exit 0 when every mutant is caught, 1 when not, 2 when broken."""
    p = argparse.ArgumentParser(prog="python -m bench.mutants", description=_DESCRIPTION)
    p.add_argument("--only", help="comma list of mutant names to run")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--full", action="store_true", help="run the whole suite for every mutant")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per mutant")
    p.add_argument("--workers", type=int, default=WORKERS, help="parallel pytest runs")
    p.add_argument("--keep", action="store_true", help="keep the copies and the pytest logs")
    args = p.parse_args(argv)
    chosen = list(MUTANTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        if unknown := set(names) - {m.name for m in MUTANTS}:
            print(f"error: unknown mutant(s) {sorted(unknown)}; see --list")
            return 2
        chosen = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:<30} {m.path:<22} {m.why}")
        return 0
    # As `python -m bench`: Ctrl-C works even when started in the background; SIGTERM unwinds.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="drvd-mutants-"))
    try:
        report = run_check(
            chosen, work=work, timeout=args.timeout, workers=max(1, args.workers), full=args.full
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
        if args.keep:
            print(f"copies and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(render(report, chosen))
    return 2 if report.broken else int(report.caught < len(report.verdicts))


if __name__ == "__main__":
    sys.exit(main())
