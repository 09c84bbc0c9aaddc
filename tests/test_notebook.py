"""notebooks/demo.ipynb runs end to end on CPU at its tiny size (SSM_JAX_DEMO_SIZE=tiny)."""

import math
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "demo.ipynb"


@pytest.mark.slow
def test_demo_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_JAX_DEMO_SIZE", "tiny")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "size 'tiny'" in outputs
    assert "MAML + standard" in outputs and "hybrid − standard (paired)" in outputs
    assert "pooled over 4 seeds" in outputs
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 4  # inline plots: learning curve, adaptation curves, buffer windows, the sweep
    capacity, filled = map(int, re.search(r"capacity (\d+), filled (\d+)", outputs).groups())
    assert 0 < filled <= capacity  # meta-training wrote query windows into the buffer
    maml = re.search(r"MAML \+ standard: (.*)", outputs)[1].split(" / ")
    assert len(maml) >= 2 and all(math.isfinite(float(value.split(" ± ")[0])) for value in maml)
