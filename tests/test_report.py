"""report.html and the plots as `eval`, `score` and `view` write them (the page itself: test_browser)."""

from __future__ import annotations

from pathlib import Path

import orjson
from PIL import Image
from procs import drvd
from reportruns import SAMPLE, shared_sample_run

from pipeline.records import JOINT_LEVELS


def test_plots_are_drawn_from_the_summary_numbers(tmp_path_factory) -> None:
    run = shared_sample_run(tmp_path_factory)
    summary = orjson.loads((run / "summary.json").read_bytes())
    plots = run / "plots"
    for name in ("levels", "modality", "answers"):
        with Image.open(plots / f"{name}.png") as png:
            png.load()
            assert png.width > 100
        assert (plots / f"{name}.svg").read_bytes().lstrip().startswith(b"<?xml")
    data = orjson.loads((plots / "data.json").read_bytes())
    drop = summary["independent_vs_joint"]
    assert data["levels"]["independent"] == {lv: drop[lv]["independent"] for lv in JOINT_LEVELS}
    assert data["levels"]["joint"] == {lv: drop[lv]["joint"] for lv in JOINT_LEVELS}
    evidence = summary["files"]["visual_evidence_qa"]["groups"]
    for modality, cells in evidence.items():
        right = sum(c["correct"] for c in cells.values())
        n = sum(c["n"] for c in cells.values())
        assert data["modality"]["visual_evidence_qa"][modality] == right / n
    chains = summary["files"]["joint_qa"]["chains"]
    assert data["modality"]["joint_qa (chain)"] == {m: c["accuracy"] for m, c in chains.items()}
    for stem, section in summary["files"].items():
        assert data["answers"][stem] == {k: v for k, v in section["answers"].items() if v}
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'src="plots/levels.png"' in page


def test_score_rewrites_the_page_without_encoding_images_again(
    tmp_path: Path, tmp_path_factory
) -> None:
    run = shared_sample_run(tmp_path_factory, copy_to=tmp_path)
    images = sorted((run / "report" / "img").iterdir())
    assert images
    assert all(p.stat().st_size > 0 for p in images)
    before = {p: p.stat().st_mtime_ns for p in [*images, *(run / "plots").iterdir()]}
    (run / "report.html").unlink()
    proc = drvd("score", run, env={"DRVD_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (run / "report.html").is_file()
    assert f"report: {run / 'report.html'}" in proc.stdout.replace("\n", "")
    assert sorted((run / "report" / "img").iterdir()) == images
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing encoded or drawn again


def test_a_report_that_cannot_be_written_is_one_warning_line(
    tmp_path: Path, tmp_path_factory
) -> None:
    run = shared_sample_run(tmp_path_factory, copy_to=tmp_path)
    (run / "report.html").unlink()
    (run / "report.html").mkdir()  # the page's name is taken: the write fails
    proc = drvd("score", run, env={"DRVD_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("warning: report not written: ")
    assert "report.html" in lines[0]
    again = drvd(
        "eval", "--model", "random", "--data", SAMPLE, "--out", tmp_path, "--run-name",
        "demo-random", "--judge", "none", "--quiet", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert again.returncode == 0  # as without the report
    assert [ln for ln in again.stderr.splitlines() if "report" in ln] == [lines[0]]
    assert "Traceback" not in again.stderr


def test_view_prints_the_page_writing_it_when_missing_and_opens_it(
    tmp_path: Path, tmp_path_factory
) -> None:
    run = shared_sample_run(tmp_path_factory, copy_to=tmp_path)
    (run / "report.html").unlink()
    proc = drvd("view", run, env={"DRVD_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str((run / "report.html").resolve())
    assert (run / "report.html").is_file()
    # --open hands the file's URL to the browser webbrowser picks ($BROWSER: here, echo).
    opened = drvd("view", run, "--open", env={"BROWSER": "echo"})
    assert opened.returncode == 0, opened.stderr
    assert (run / "report.html").resolve().as_uri() in opened.stdout
    missing = drvd("view", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ")
    assert "no such run folder" in missing.stderr


def test_page_off_skips_the_page_and_plots_and_view_draws_them_later(tmp_path: Path) -> None:
    args: list[str | Path] = ["eval", "--model", "random", "--data", SAMPLE, "--out", tmp_path,
                              "--judge", "none", "--cache-dir", tmp_path / "cache"]  # fmt: skip
    flag = drvd(*args, "--run-name", "flag", "--page", "off")
    variable = drvd(*args, "--run-name", "variable", "--quiet", env={"DRVD_PAGE": "off"})
    for proc in (flag, variable):
        assert proc.returncode == 0, proc.stderr
    assert "page: off (`view` draws it)" in " ".join(flag.stdout.split())  # wrapped by rich
    assert "report.html" not in flag.stdout
    for name in ("flag", "variable"):
        run = tmp_path / name
        assert (run / "summary.json").is_file()
        assert not (run / "report.html").exists()
        assert not (run / "plots").exists()
    rescored = drvd("score", tmp_path / "variable", env={"DRVD_PAGE": "off"})
    assert rescored.returncode == 0, rescored.stderr
    assert rescored.stdout.rstrip().endswith("page: off")
    assert not (tmp_path / "variable" / "report.html").exists()
    later = drvd("view", tmp_path / "flag")  # the page and plots, drawn when asked for
    assert later.returncode == 0, later.stderr
    assert (tmp_path / "flag" / "report.html").is_file()
    assert (tmp_path / "flag" / "plots" / "levels.png").is_file()


def test_the_page_escapes_what_the_rows_hold(tmp_path: Path, tmp_path_factory) -> None:
    run = shared_sample_run(tmp_path_factory, copy_to=tmp_path)
    path = run / "visual_evidence_qa.jsonl"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    rows[0]["raw_response"] = "</script><script>alert(1)</script>"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    proc = drvd("score", run, env={"DRVD_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "</script><script>alert(1)" not in page
    blob = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    cards = orjson.loads(blob)["rows"]
    assert cards[0]["raw"] == "</script><script>alert(1)</script>"


def test_a_run_folder_holds_thumbnails_and_runs_on_one_cache_share_the_images_as_sent(
    tmp_path: Path, tmp_path_factory
) -> None:
    first = shared_sample_run(tmp_path_factory, copy_to=tmp_path)
    second = drvd(
        "eval", "--model", "random", "--data", SAMPLE, "--out", tmp_path, "--run-name", "again",
        "--judge", "none", "--quiet", "--seed", "3", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    shared = sorted((tmp_path / "cache" / "sent").iterdir())
    sent = [p for p in shared if not p.name.endswith("-t.jpg")]
    assert sent  # the images as sent: once, in the cache's folder, with their thumbnails
    for run in (first, tmp_path / "again"):
        thumbs = list((run / "report" / "img").iterdir())
        assert thumbs
        assert all(p.name.endswith("-t.jpg") for p in thumbs)  # only thumbnails in the run
        for p in thumbs:  # linked from the shared one, not encoded again per run
            assert p.stat().st_ino == (tmp_path / "cache" / "sent" / p.name).stat().st_ino
        for p in thumbs:
            with Image.open(p) as img:
                assert max(img.size) <= 256
        page = (run / "report.html").read_text(encoding="utf-8")
        for image in sent:  # the page reaches each one from its own folder
            assert f'"../cache/sent/{image.name}"' in page
