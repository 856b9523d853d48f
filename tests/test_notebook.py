"""docs/example.ipynb runs top to bottom in a real Jupyter kernel (offline) and compares two runs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_the_example_notebook_runs_and_compares_two_runs() -> None:
    nb = nbformat.read(REPO / "docs" / "example.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "seed1" in text
    assert "seed2" in text
    # The leaderboard table and the accuracies read back from all.parquet agree with the runs'.
    runs = dict(re.findall(r"^(seed\d) \{.*'independent_qa': ([0-9.]+)", text, re.M))
    parquet = dict(
        re.findall(r"^(seed\d) independent_qa accuracy from all.parquet: ([0-9.]+)", text, re.M)
    )
    assert runs.keys() == {"seed1", "seed2"}
    assert {k: float(v) for k, v in runs.items()} == {k: float(v) for k, v in parquet.items()}
    assert "|" in text  # the leaderboard's Markdown table
