"""notebooks/: stored without outputs, and each executes top to bottom in scenes mode (nothing
downloaded; the training cells run the ``:smoke`` variants), its own last cell asserting its
scores and figures. Needs the test extra's nbclient/nbformat/ipykernel."""

import os
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
NAMES = sorted(f[: -len(".ipynb")] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
# Whole-notebook times on this 2-core machine under load (load average 15-28, 2026-12-03):
# dino 159 s, croc 145 s, neco 200 s, evaluation 211 s; cribo 118 s, comus 118 s (load average
# 15, 2026-12-03 21:40). Over 3 minutes: slow.
SLOW = {"evaluation", "neco"}


def _read(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)


def test_every_paper_has_a_notebook():
    assert {"dino", "croc", "cribo", "neco", "comus", "evaluation"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_stripped(name):
    for cell in _read(name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}: run `python -m nbstripout`-like cleanup"
            )
        assert "attachments" not in cell


def _execute(name, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("DENSE_JAX_NOTEBOOK_MODE", "scenes")
    monkeypatch.setenv("DENSE_JAX_NOTEBOOK_TRAIN", "smoke")
    monkeypatch.setenv("DENSE_JAX_NOTEBOOK_WORKDIR", str(tmp_path / name))
    notebook = _read(name)
    start = time.perf_counter()
    nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    ).execute()
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "checks passed" in text, text
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "name", [n if n not in SLOW else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
)
def test_notebook_runs_in_scenes_mode(name, tmp_path, monkeypatch):
    seconds = _execute(name, tmp_path, monkeypatch)
    assert any(p.suffix == ".png" for p in (tmp_path / name).rglob("*.png"))
    print(f"{name}: {seconds:.0f} s")


def test_helpers_mode_root_and_missing_files(tmp_path, monkeypatch):
    from dense_jax import notebooks as nb

    monkeypatch.delenv("DENSE_JAX_NOTEBOOK_MODE", raising=False)
    assert nb.mode() == "scenes"
    monkeypatch.setenv("DENSE_JAX_NOTEBOOK_MODE", "colab")
    with pytest.raises(ValueError, match="scenes"):
        nb.mode()
    monkeypatch.chdir(tmp_path)
    assert nb.repo_root(NOTEBOOKS) == REPO and os.getcwd() == REPO
    with pytest.raises(FileNotFoundError, match="clone the repository"):
        nb.repo_root(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="DINO weights not found at /nowhere/w.pth"):
        nb.require("/nowhere/w.pth", "DINO weights")
    config = nb.config("configs/eval/kmeans_voc.py:demo", **{"data.limit_val": 16, "kmeans.ks": (5,)})
    assert (config.data.limit_val, config.kmeans.ks, config.data.name) == (16, (5,), "scenes")
