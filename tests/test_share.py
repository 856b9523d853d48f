"""Bundle, verify and Parquet through real CLI processes: a bundle made here verifies elsewhere,
one changed byte (an answer, an image, a summary number) is named, no secret is ever packed, and
results.parquet read back with DuckDB gives the summary's accuracies."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from procs import drvd, lines_of, server_process

from pipeline.records import FILES

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample"
ENV = {"DRVD_PAGE": "off"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random run with --samples 2 on a copy of the demo set; return (run folder, data)."""
    root = tmp_path_factory.mktemp("share")
    data = root / "data"
    shutil.copytree(SAMPLE, data)
    args: list[str | Path] = ["eval", "--model", "random", "--data", data, "--out", root / "out"]
    args += ["--run-name", "r", "--judge", "none", "--quiet", "--samples", "2", "--seed", "7"]
    proc = drvd(*args, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return root / "out" / "r", data


@pytest.fixture(scope="module")
def bundle(run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("made") / "r.tar.gz"
    proc = drvd("bundle", run[0], "--out", out, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return out


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def repack(files: dict[str, bytes], path: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def test_a_bundle_verifies_from_another_folder_with_its_data(run, bundle, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "copy.tar.gz"
    elsewhere.parent.mkdir()
    shutil.copy(bundle, elsewhere)
    data = tmp_path / "data"
    shutil.copytree(run[1], data)  # another clone of the dataset
    proc = drvd("verify", elsewhere, "--data", data, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified" in proc.stdout
    files = members(bundle)
    manifest = orjson.loads(files["r/manifest.json"])
    for stem in FILES:  # results hashed as an outsider would: sha256 of the bytes
        got = hashlib.sha256((run[0] / f"{stem}.jsonl").read_bytes()).hexdigest()
        assert manifest["results"][f"{stem}.jsonl"] == got
    assert "r/samples/1/independent_qa.jsonl" in files
    assert manifest["model_ids"] == ["random"]
    images = {p.relative_to(SAMPLE).as_posix() for p in (SAMPLE / "images").rglob("*.*")}
    assert set(manifest["data"]["images"]) == images
    proc = drvd("verify", run[0], env=ENV)  # a run folder: its numbers re-scored
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = tmp_path / "again.tar.gz"
    assert drvd("bundle", run[0], "--out", again, env=ENV).returncode == 0
    assert again.read_bytes() == bundle.read_bytes()  # byte-stable


def _answer(files: dict[str, bytes], data: Path) -> str:
    name = "r/independent_qa.jsonl"
    rows = files[name].splitlines()
    row = orjson.loads(rows[0])
    gold = row["answer"][0]
    # right becomes wrong, wrong becomes right: the re-scored count must move
    row["model_response"] = ("C" if gold != "C" else "D") if row["model_response"] == gold else gold
    rows[0] = orjson.dumps(row)
    files[name] = b"\n".join(rows) + b"\n"
    return "results independent_qa.jsonl: sha256 differs"


def _summary(files: dict[str, bytes], data: Path) -> str:
    name = "r/summary.json"
    summary = orjson.loads(files[name])
    old = summary["files"]["independent_qa"]["correct"]
    summary["files"]["independent_qa"]["correct"] = old + 1
    files[name] = orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    return f"summary.json files.independent_qa.correct: {old + 1} in the bundle, {old} re-scored"


def _image(files: dict[str, bytes], data: Path) -> str:
    image = sorted((data / "images").rglob("*.png"))[0]
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    image.write_bytes(bytes(raw))
    return f"image {image.relative_to(data).as_posix()}: sha256 differs"


@pytest.mark.parametrize("change", [_answer, _summary, _image], ids=["answer", "summary", "image"])
def test_one_changed_byte_is_named_and_exits_1(run, bundle, tmp_path, change):
    data = tmp_path / "data"
    shutil.copytree(run[1], data)
    files = members(bundle)
    expected = change(files, data)
    damaged = repack(files, tmp_path / "damaged.tar.gz")
    proc = drvd("verify", damaged, "--data", data, env=ENV)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stdout.splitlines(), proc.stdout
    if change is _answer:  # the re-scored count moves too
        assert "summary.json files.independent_qa.correct:" in proc.stdout


def test_a_damaged_archive_is_one_line_and_exit_1(bundle, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: len(bundle.read_bytes()) // 2])
    proc = drvd("verify", cut, env=ENV)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {cut}:")


KEY = "sk-live/9f8e7d6c5b4a-bundle"
PASSWORD = "Pa55-w0rd-bundle-7c1e"


def test_no_key_or_url_password_enters_the_bundle(tmp_path):
    with server_process("--expected-key", KEY, "--expected-basic", f"user:{PASSWORD}") as server:
        base = server.root.replace("http://", f"http://user:{PASSWORD}@") + "/v1"
        data = tmp_path / "data"
        shutil.copytree(SAMPLE, data)
        args: list[str | Path] = ["eval", "--model", "openai:m", "--base-url", base]
        args += ["--data", data, "--out", tmp_path / "out", "--run-name", "s", "--quiet"]
        args += ["--judge", "none", "--cache-dir", tmp_path / "cache"]
        secret_env = {**ENV, "DRVD_API_KEY": KEY}
        proc = drvd(*args, env=secret_env)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "s.tar.gz"
    proc = drvd("bundle", tmp_path / "out" / "s", "--out", out, env=secret_env)
    assert proc.returncode == 0, proc.stderr
    files = members(out)
    manifest = orjson.loads(files["s/manifest.json"])
    assert manifest["endpoint"] == server.root + "/v1"
    assert manifest["model_ids"] == ["m"]  # as the API reported it
    blobs = [out.read_bytes(), gzip.decompress(out.read_bytes()), *files.values()]
    for secret in (KEY, KEY.replace("/", "\\/"), PASSWORD, "user:"):
        assert not any(secret.encode() in blob for blob in blobs), secret
    assert drvd("verify", out, env=ENV).returncode == 0


def query_all(sql: str) -> list[Any]:
    relation = duckdb.sql(sql)
    assert relation is not None
    return relation.fetchall()


def _results_rows(run_dir: Path) -> int:
    folders = [run_dir, *sorted((run_dir / "samples").iterdir())]
    return sum(len(lines_of(f / f"{stem}.jsonl")) for f in folders for stem in FILES)


def test_parquet_has_every_row_and_duckdb_accuracies_equal_the_summary(run, tmp_path):
    run_dir = run[0]
    parquet = (run_dir / "results.parquet").as_posix()
    count = query_all(f"select count(*) from '{parquet}'")
    assert count[0][0] == _results_rows(run_dir) > 0
    assert query_all(f"select count(distinct sample) from '{parquet}'") == [(2,)]
    summary: dict[str, Any] = orjson.loads((run_dir / "summary.json").read_bytes())
    query = (
        f"select file, sum(correct::int), count(*) from '{parquet}' where sample = 0 "
        "and max_hits = 1 group by file"
    )
    got = {f: (c, n) for f, c, n in query_all(query)}
    assert set(got) == {"independent_qa", "visual_evidence_qa"}
    for stem, (correct, n) in got.items():
        section = summary["files"][stem]
        assert (correct, n) == (section["correct"], section["n"])
        assert correct / n == section["accuracy"]
    out = tmp_path / "cmp"
    proc = drvd("compare", run_dir, run_dir, "--out", out, env=ENV)
    assert proc.returncode == 0, proc.stderr
    both = query_all(f"select count(*) from '{(out / 'all.parquet').as_posix()}'")
    assert both == [(2 * count[0][0],)]
