"""Execute a notebook in a fresh kernel of this interpreter, from the notebooks/ folder."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, *, timeout_s: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def has_no_outputs(name: str) -> bool:
    """Committed notebooks carry no outputs or execution counts (they are re-run by tests)."""
    nb = json.loads((NOTEBOOKS / name).read_text())
    return all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
    )
