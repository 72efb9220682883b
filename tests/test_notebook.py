"""The walkthrough notebook runs headless in a real ipykernel, cell by cell, without errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "experiments" / "walkthrough.ipynb"


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def test_walkthrough_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "notebook.db"
    monkeypatch.setenv("RUNNER_DB", str(db))  # the kernel inherits it: results stay out of the repo
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # run where Jupyter would: beside it
    )
    client.execute()  # raises CellExecutionError when any cell errors

    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outs if o.output_type == "execute_result" and "text/html" in o["data"]]
    results = [h for h in html if "runner-result" in h]
    assert len(results) == 2  # both runs rendered as Result tables
    assert all("balanced_accuracy" in h and "exact_match" in h and "95% CI" in h for h in results)
    assert "First rows" in results[0] and "<table" in results[0]
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "balanced accuracy changed by +" in text
    if importlib.util.find_spec("ipywidgets") is not None:  # tqdm's notebook bar is a widget
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)
    assert db.exists()
    assert not (NOTEBOOK.parent / ".runner").exists()
