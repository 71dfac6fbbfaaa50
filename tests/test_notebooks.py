"""Execute the notebooks top to bottom in a fresh kernel running this interpreter."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "avalanche-cts-test"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec for ``sys.executable`` (not whatever ``python`` is on PATH) and a clean HOME."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CTS_THREADS", "1")
    monkeypatch.setenv("CTS_NOTEBOOK_OUT", str(tmp_path / "figures"))
    monkeypatch.setenv("CTS_NB_TRAIN_SIZE", "2000")  # quick: the maps only need a model, not a good one
    monkeypatch.setenv("CTS_NB_EPOCHS", "1")
    return tmp_path


def _fashion_mnist_on_disk() -> bool:
    from avalanche_cts.benchmarks.fmnist import fashion_mnist_folder

    return fashion_mnist_folder(None) is not None


@pytest.mark.skipif(not _fashion_mnist_on_disk(),
                    reason="the notebook needs Fashion-MNIST on disk: `make setup` installs "
                           "Debian's dataset-fashion-mnist (tests never download)")
def test_relevance_maps_notebook(kernel_env):
    nb = nbformat.read(NOTEBOOKS / "relevance_maps.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(kernel_env)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"kernel: {sys.executable}" in text
    assert "test accuracy" in text and "atman" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    png = kernel_env / "figures" / "relevance_maps.png"
    assert png.stat().st_size > 10_000


@pytest.mark.skipif(not _fashion_mnist_on_disk(),
                    reason="the notebook needs Fashion-MNIST on disk: `make setup` installs "
                           "Debian's dataset-fashion-mnist (tests never download)")
def test_core_tokenset_memory_notebook(kernel_env, monkeypatch):
    monkeypatch.setenv("CTS_REPO", str(NOTEBOOKS.parent))
    nb = nbformat.read(NOTEBOOKS / "core_tokenset_memory.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(kernel_env)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "bytes" in text and "of the stored tokens are on the object" in text
    assert "provenance_mismatches': 0" in text
    assert (kernel_env / "figures" / "memory.png").stat().st_size > 10_000
