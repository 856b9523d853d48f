"""Bad input, damaged state and impossible settings (issue #11): one line each, nothing lost.

Through real files, the real CLI in a subprocess, and real runs against the fake server.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from fakeserver import running
from procs import REPO, drvd
from test_cli import assert_one_line_error

from pipeline.config import load_config
from pipeline.data.synthetic import write_dataset
from pipeline.errors import ExitCode
from pipeline.model.cache import ResponseCache
from pipeline.records import FILES
from pipeline.run.runner import run_eval

PAGE = False  # checks nothing of the page: CLI runs skip it (conftest)

LONG_NAME = "a" * 300 + ".png"  # one component longer than NAME_MAX (255)
LONG_PATH = "images/" + "x/" * 2500 + "y.png"  # short components, longer than PATH_MAX (4096)


def dataset(tmp_path: Path, total: int = 40) -> Path:
    data = tmp_path / "data"
    write_dataset(data, total=total, images=3, sizes=(32,))
    return data


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def set_image(path: Path, line: int, image: str) -> None:
    lines = path.read_bytes().splitlines()
    lines[line - 1] = orjson.dumps({**orjson.loads(lines[line - 1]), "image_paths": image})
    path.write_bytes(b"\n".join(lines) + b"\n")


def evaluate(data: Path, out: Path, *args: str | Path, env: dict[str, str] | None = None):
    return drvd(
        "eval", "--model", "random", "--data", data, "--out", out, "--quiet", *args, env=env
    )


# --- 6. bad input ----------------------------------------------------------------------------------


def test_an_image_path_too_long_for_the_filesystem_fails_its_row_only(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    path = data / "independent_qa.jsonl"
    set_image(path, 2, LONG_NAME)
    set_image(path, 3, LONG_PATH)
    proc = evaluate(data, out)
    assert proc.returncode == 1, proc.stderr  # rows whose input cannot be used
    assert "Traceback" not in proc.stderr
    assert "2 input rows cannot be used" in proc.stderr  # not "rerun to retry them"
    assert "retry them" not in proc.stderr
    for line, rel in ((2, LONG_NAME), (3, LONG_PATH)):
        said = next(x for x in proc.stderr.splitlines() if x.startswith(f"{path}:{line}: "))
        assert "image path cannot be used" in said
        assert "File name too long" in said
        assert len(said) < len(str(path)) + 300  # the path is shortened, not pasted whole
        assert str(len(rel)) in said
    got = rows(out / "random" / "independent_qa.jsonl")
    assert len(got) == len(rows(path))  # the run went on: every row has its line
    failed = {r["_meta"]["line"]: r["error"] for r in got if r["error"]}
    assert sorted(failed) == [2, 3]
    assert all(e.startswith("image path cannot be used: ") for e in failed.values())


@pytest.mark.parametrize(
    "content",
    [
        b'[{"level": "organ"}, {"level": "lesion"}]\n',
        b'\xef\xbb\xbf\n\n  [\n  {\n    "level": "organ"\n  }\n]\n',  # BOM, blank lines, pretty
    ],
)
def test_a_json_array_is_refused_before_any_work(tmp_path: Path, content: bytes) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    path = data / "joint_qa.jsonl"
    path.write_bytes(content)
    line = assert_one_line_error(evaluate(data, out), 2)
    assert f"{path} is a JSON array, not JSON Lines" in line
    assert f"jq -c '.[]' {path.with_suffix('.json')} > {path}" in line
    assert nothing_written(out / "random")


def test_an_empty_file_is_one_warning_and_the_others_run(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    (data / "joint_qa.jsonl").write_bytes(b"")
    (data / "report_generation.jsonl").write_bytes(b"\n  \n\t\n")
    proc = evaluate(data, out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: {data / stem}.jsonl is empty: skipped (leave it out with --files)"
        for stem in ("joint_qa", "report_generation")
    ]
    done = sorted(p.stem for p in (out / "random").glob("*.jsonl"))
    assert done == ["independent_qa", "visual_evidence_qa"]


def test_only_empty_files_selected_is_refused(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    (data / "joint_qa.jsonl").write_bytes(b"")
    (data / "report_generation.jsonl").write_bytes(b"\n\n")
    proc = evaluate(data, out, "--files", "joint_qa,report_generation")
    line = assert_one_line_error(proc, 2)
    names = f"joint_qa.jsonl, report_generation.jsonl in {data} are empty"
    assert line == f"error: nothing to evaluate: {names}; download the dataset again"
    assert nothing_written(out / "random")


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_refused(tmp_path: Path, limit: str) -> None:
    proc = evaluate(dataset(tmp_path), tmp_path / "out", "--limit", limit)
    assert f"--limit {limit}: must be at least 1" in assert_one_line_error(proc, 2)
    assert not (tmp_path / "out").exists()


# --- 7. damaged state ------------------------------------------------------------------------------


async def test_damaged_cache_entries_are_fetched_again_and_reported(tmp_path: Path, capsys) -> None:
    data, cache = dataset(tmp_path), tmp_path / "cache"

    def config(out: str):
        flags = {"model": "openai:m", "data": data, "out": tmp_path / out, "run_name": "r"}
        return load_config({**flags, "base_url": server.url}, {"DRVD_CACHE_DIR": str(cache)})

    async with running() as server:
        first = await run_eval(config("a"), show_progress=False)
        paid = server.ledger.count()
        bad = sorted((cache / "responses").glob("*/*.json"))[:2]
        for path, completion in zip(
            bad, ({"text": 5}, {"text": "A", "prompt_tokens": "x"}), strict=True
        ):
            entry = orjson.loads(path.read_bytes())
            path.write_bytes(orjson.dumps({**entry, "completion": completion}))
        capsys.readouterr()
        second = await run_eval(config("b"), show_progress=False)
        assert server.ledger.count() == paid + 2  # the two damaged entries, and nothing else
    assert (first.exit_code, second.exit_code) == (ExitCode.OK, ExitCode.OK)
    assert second.summary["usage"]["cache_hits"] == paid - 2
    assert second.summary["files"] == first.summary["files"]  # every row right
    err = capsys.readouterr().err.splitlines()
    responses = cache / "responses"
    assert err == [
        f"cache: 2 damaged entries in {responses} were ignored and their requests sent again"
    ]
    for path in bad:  # repaired by the answers fetched again
        entry = orjson.loads(path.read_bytes())
        assert ResponseCache(cache).get(entry["key"]) is not None


def damage(path: Path, lines: dict[int, bytes]) -> None:
    got = path.read_bytes().splitlines()
    for line, text in lines.items():
        got[line - 1] = text
    path.write_bytes(b"\n".join(got) + b"\n")


def test_eval_drops_damaged_results_lines_and_runs_their_rows_again(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    assert evaluate(data, out).returncode == 0
    run = out / "random"
    path = run / "visual_evidence_qa.jsonl"
    before = rows(path)
    summary = orjson.loads((run / "summary.json").read_bytes())
    damage(path, {2: b'{"broken', 5: b"[1, 2]", 7: b'"text"'})
    proc = evaluate(data, out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"3 damaged lines in {path} (lines 2, 5, 7) were dropped and will be re-run"
    ]
    assert rows(path) == before  # every row once, in input order, the dropped ones run again
    again = orjson.loads((run / "summary.json").read_bytes())
    assert again["files"] == summary["files"]
    assert evaluate(data, out).stderr == ""  # repaired for good


def test_score_skips_damaged_lines_with_one_warning(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "out"
    assert evaluate(data, out).returncode == 0
    run = out / "random"
    path = run / "independent_qa.jsonl"
    n = len(rows(path))
    damage(path, {2: b"# a comment", 5: b'{"torn'})
    damaged = path.read_bytes()
    proc = drvd("score", run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: 2 damaged lines in {path} (lines 2, 5) were skipped: run eval to re-run them"
    ]
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert summary["files"]["independent_qa"]["n"] == n - 2
    assert set(summary["files"]) == set(FILES)
    assert path.read_bytes() == damaged  # score only reads


# --- 9. sanity bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--tpm", "50"], {}, "--tpm 50 is less than one request (about 74 tokens"),
        ([], {"DRVD_TPM": "50.5"}, "DRVD_TPM=50.5 is less than one request"),
        (["--max-tokens", "4096", "--tpm", "4000"], {}, "set it to at least 4120"),
        (["--concurrency", "5000"], {}, "--concurrency 5000 is more than 4096 requests"),
        ([], {"DRVD_CONCURRENCY": "4097"}, "DRVD_CONCURRENCY=4097 is more than 4096"),
    ],
)
def test_a_pace_the_run_cannot_keep_is_refused(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    proc = evaluate(dataset(tmp_path, total=8), tmp_path / "out", *args, env=env)
    assert says in assert_one_line_error(proc, 2)
    assert not (tmp_path / "out").exists()


def test_a_concurrency_beyond_the_open_file_limit_is_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path, total=8)

    def few_files() -> None:  # in the child only: `ulimit -n 256`
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    def run(concurrency: str) -> subprocess.CompletedProcess[str]:
        args = ["eval", "--model", "random", "--data", data, "--out", tmp_path / "out", "--quiet"]
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *map(str, args), "--concurrency", concurrency],
            cwd=REPO,
            capture_output=True,
            text=True,
            preexec_fn=few_files,
            timeout=120,
        )

    line = assert_one_line_error(run("500"), 2)
    assert "--concurrency 500 needs about 564 open files but this process may open 256" in line
    assert line.endswith("raise the limit (ulimit -n 564) or lower it to 192")
    assert run("192").returncode == 0


def nothing_written(run: Path) -> bool:
    """Say whether a refused run left nothing in its folder but the run lock it took first."""
    return {p.name for p in run.glob("*")} <= {".lock"}
