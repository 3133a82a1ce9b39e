from __future__ import annotations

from tests.notebooks.runner import execute, has_no_outputs


def test_quickstart_runs_and_draws_the_overlay():
    nb = execute("quickstart.ipynb")
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "masks:" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the overlay figure was not drawn"


def test_committed_notebooks_have_no_outputs():
    from tests.notebooks.runner import NOTEBOOKS

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert has_no_outputs(path.name), f"{path.name} has outputs; strip them before committing"
