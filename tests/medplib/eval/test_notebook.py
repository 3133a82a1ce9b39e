"""notebooks/evaluate.ipynb runs top to bottom in a kernel of this interpreter, and ships clean."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "evaluate.ipynb"


@pytest.fixture()
def this_python_kernel(tmp_path: Path, monkeypatch) -> str:
    """A "python3" kernelspec that starts `sys.executable`, first on the Jupyter path."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter-prefix"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable
    return "python3"


def test_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None


def test_notebook_runs_and_draws_chart_and_overlays(this_python_kernel: str, tmp_path: Path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name=this_python_kernel,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "grounding: mDice" in text and "answers without <SEG>" in text
    assert "blind baseline  Dice on the asked-for target" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 3  # the bar chart and two rows of worst cases
    assert "report.html" in text and "report.predictions.jsonl" in text
