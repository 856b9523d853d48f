"""`RUN/results.parquet`: one row per item and sample, for pandas, polars and DuckDB.

pyarrow loads only when a file is written (~0.15 s to import), once at the end of a run.
The file is a by-product of the results files: rewriting it never changes them or the summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.files import write_atomic
from pipeline.results import read_run
from pipeline.scoring.official import FILE_FAMILY, KIND_FAMILY, score_row

PARQUET_NAME = "results.parquet"
SAMPLES_DIR = "samples"


def _sample_dirs(run_dir: Path) -> Iterator[tuple[int, Path]]:
    yield 0, run_dir
    root = run_dir / SAMPLES_DIR
    if root.is_dir():
        for sub in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
            if sub.is_dir() and sub.name.isdigit():
                yield int(sub.name), sub


def result_records(run_dir: Path) -> list[dict[str, Any]]:
    """Return one flat record per results row of the run and of each of its samples."""
    records: list[dict[str, Any]] = []
    for sample, folder in _sample_dirs(run_dir):
        for stem, row in read_run(folder):
            family = FILE_FAMILY.get(stem) or KIND_FAMILY[row.kind]
            score = score_row(family, row)
            answer = row.model_response
            records.append(
                {
                    "file": stem,
                    "key": row.key,
                    "sample": sample,
                    "line": row.line,
                    "modality": row.row.get("modality"),
                    "level": row.row.get("level") or row.row.get("task"),
                    "gold": _text(row.row.get("answer")),
                    "answer": _text(answer),
                    "answer_source": row.answer_source,
                    "correct": all(score.hits) if score.hits else None,
                    "hits": sum(score.hits),
                    "max_hits": len(score.hits),
                    "error": row.error,
                    "model": row.model,
                    "prompt_tokens": row.usage.prompt_tokens,
                    "completion_tokens": row.usage.completion_tokens,
                    "cost_usd": row.usage.cost_usd,
                }
            )
    return records


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    import orjson

    return orjson.dumps(value).decode()


def write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write `records` to `path` as Parquet (atomic) and return the path."""
    import io

    import orjson
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    schema = _schema(pa, records)
    if records:  # through Arrow's JSON reader: converting Python objects imports pandas (0.25 s)
        lines = b"\n".join(orjson.dumps(r) for r in records)
        options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        table = pj.read_json(io.BytesIO(lines), parse_options=options).select(schema.names)
    else:
        table = schema.empty_table()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_atomic(path, sink.getvalue().to_pybytes())
    return path


def _schema(pa: Any, records: list[dict[str, Any]]) -> Any:
    types = {
        "run": pa.string(),
        "file": pa.string(),
        "key": pa.string(),
        "sample": pa.int32(),
        "line": pa.int32(),
        "modality": pa.string(),
        "level": pa.string(),
        "gold": pa.string(),
        "answer": pa.string(),
        "answer_source": pa.string(),
        "correct": pa.bool_(),
        "hits": pa.int32(),
        "max_hits": pa.int32(),
        "error": pa.string(),
        "model": pa.string(),
        "prompt_tokens": pa.int64(),
        "completion_tokens": pa.int64(),
        "cost_usd": pa.float64(),
    }
    names = list(records[0]) if records else [n for n in types if n != "run"]
    return pa.schema([(name, types[name]) for name in names])


def write_run_parquet(run_dir: Path) -> Path:
    """Write `RUN/results.parquet` from the run's results files and return its path."""
    return write_parquet(run_dir / PARQUET_NAME, result_records(run_dir))


def write_runs_parquet(runs: list[Path], path: Path) -> Path:
    """Write the rows of several runs into one Parquet file, with a `run` column first."""
    records = [{"run": run.name, **r} for run in runs for r in result_records(run)]
    return write_parquet(path, records)
