"""Results files: torn tails cut, latest row per key wins, finalize restores input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.records import ResultRow
from pipeline.results import ResultsFile, read_rows


def row(key: str, line: int, answer: str = "A", error: str | None = None) -> dict[str, Any]:
    return {"question": f"q{line}", "model_response": answer, "error": error,
            "_meta": {"key": key, "line": line}}  # fmt: skip


def result(key: str, line: int, answer: str = "A", error: str | None = None) -> ResultRow:
    return ResultRow.from_json(row(key, line, answer, error))


def lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [orjson.loads(x) for x in data.splitlines()]


def write(path: Path, rows: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + tail)


def test_missing_file_has_nothing_finished(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "none.jsonl")
    assert results.finished() == {}
    results.finalize()  # nothing to do, and no file appears
    assert not results.path.exists()


def test_finished_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    whole = [row("a", 1), row("b", 2)]
    torn = orjson.dumps(row("c", 3))[:17]
    write(path, whole, torn)
    assert set(ResultsFile(path).finished()) == {"a", "b"}
    assert path.read_bytes() == b"".join(orjson.dumps(r) + b"\n" for r in whole)


def test_a_complete_json_line_without_newline_is_still_torn(tmp_path: Path) -> None:
    # The newline is written last, so a line without it may be missing fields that were never
    # flushed: it is not trusted.
    path = tmp_path / "r.jsonl"
    write(path, [row("a", 1)], orjson.dumps(row("b", 2)))
    assert set(ResultsFile(path).finished()) == {"a"}


def test_torn_only_line_leaves_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"question": "q1", "_me')
    assert ResultsFile(path).finished() == {}
    assert path.read_bytes() == b""


def test_torn_tail_longer_than_the_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    big = row("b", 2, answer="x" * 200_000)
    write(path, [row("a", 1)], orjson.dumps(big)[:-3])
    assert set(ResultsFile(path).finished()) == {"a"}
    assert lines(path) == [row("a", 1)]


def test_finished_keeps_the_latest_row_per_key(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, [row("a", 1, answer="", error="500: boom"), row("b", 2), row("a", 1, "C")])
    done = ResultsFile(path).finished()
    assert set(done) == {"a", "b"}
    assert done["a"].model_response == "C"
    assert done["a"].error is None


def test_lines_of_other_tools_are_read_but_never_resumed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        orjson.dumps(row("a", 2))
        + b'\n{"question": "no meta", "model_response": "B"}\n'
        + b'{"_meta": "not a dict"}\n\n'
        + orjson.dumps(row("b", 1))
        + b"\n"
    )
    results = ResultsFile(path)
    assert set(results.finished()) == {"a", "b"}
    assert [r.key for r in read_rows(path, [])] == ["a", None, None, "b"]
    results.finalize()
    assert lines(path) == [row("b", 1), row("a", 2)]


@pytest.mark.parametrize("damage", [b"# a comment", b"[1, 2]", b'{"torn', b'"a string"'])
def test_damage_is_dropped_from_the_file_and_reported(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "r.jsonl"
    good = [orjson.dumps(row(k, i)) + b"\n" for i, k in enumerate("abcd", start=1)]
    # Damage on lines 2 and 4; the torn tail (no newline: a crash cut it) is cut quietly.
    path.write_bytes(good[0] + damage + b"\n" + good[1] + damage + b"\n" + good[2] + b'{"to')
    notes: list[str] = []
    assert set(ResultsFile(path).finished(notes.append)) == {"a", "b", "c"}
    assert notes == [f"2 damaged lines in {path} (lines 2, 4) were dropped and will be re-run"]
    assert path.read_bytes() == b"".join(good[:3])  # every good line kept, in order
    assert ResultsFile(path).finished(notes.append).keys() == {"a", "b", "c"}
    assert len(notes) == 1  # repaired once
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary file left


def test_a_long_damage_list_stays_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"x\n" * 25 + orjson.dumps(row("a", 1)) + b"\n")
    notes: list[str] = []
    assert set(ResultsFile(path).finished(notes.append)) == {"a"}
    assert notes == [
        f"25 damaged lines in {path} (lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 15 more) were "
        "dropped and will be re-run"
    ]


def test_a_row_survives_the_round_trip(tmp_path: Path) -> None:
    line = {**row("a", 3, "C"), "raw_response": " C.", "keywords": None}
    line["_meta"].update(kind="evidence", answer_source="extracted", usage={"api_calls": 2})
    back = ResultRow.from_json(orjson.loads(ResultRow.from_json(line).to_json()))
    assert back == ResultRow.from_json(line)
    assert back.usage.api_calls == 2
    assert back.raw_response == " C."
    assert back.line == 3


async def test_append_then_finalize_restores_input_order(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "run" / "r.jsonl")
    await results.append([result("c", 3), result("a", 1, error="timeout", answer="")])
    await results.append([result("b", 2)])
    # Appends reach the file before append returns (a crash now loses nothing).
    assert len(lines(results.path)) == 3
    await results.append([result("a", 1, "D")])  # the retried row supersedes its failure
    await results.close()
    results.finalize()
    order = [(r.key, r.model_response) for r in read_rows(results.path, [])]
    assert order == [("a", "D"), ("b", "A"), ("c", "A")]
    assert [p.name for p in results.path.parent.iterdir()] == ["r.jsonl"]  # no temp left


async def test_append_after_reopen_continues_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first = ResultsFile(path)
    await first.append([result("a", 1)])
    await first.close()
    second = ResultsFile(path)
    assert set(second.finished()) == {"a"}
    await second.append([result("b", 2)])
    await second.close()
    await second.close()  # closing twice is harmless
    assert [r["_meta"]["key"] for r in lines(path)] == ["a", "b"]


def test_finalize_with_duplicate_keys_keeps_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write(
        path,
        [row("b", 2, "A"), row("a", 1, "A"), row("b", 2, "B"), row("c", 3), row("a", 1, "C")],
    )
    ResultsFile(path).finalize()
    assert lines(path) == [row("a", 1, "C"), row("b", 2, "B"), row("c", 3)]


def test_finalize_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, [row("b", 2), row("a", 1)])
    ResultsFile(path).finalize()
    once = path.read_bytes()
    ResultsFile(path).finalize()
    assert path.read_bytes() == once


def test_finalize_never_merges_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, [row("b", 2)], orjson.dumps(row("a", 1)))  # no newline after the last row
    ResultsFile(path).finalize()
    assert lines(path) == [row("a", 1), row("b", 2)]
