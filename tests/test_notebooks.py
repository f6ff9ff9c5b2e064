"""The notebooks run headless, cell by cell, against the runs of a tiny real training (base and lmp)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from conftest import tiny_synthetic_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_per_class_gains.ipynb", "02_fairness.ipynb"]
CELL_TIMEOUT = 120


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """runs/base and runs/lmp from `tailseg fit` with 2 steps (one epoch of 4 images, one validation)."""
    from tailseg.cli import main

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for method in ("base", "lmp"):
            main(["fit", "--config", str(REPO / "experiments" / "synthetic" / f"{method}.yaml"), *tiny_synthetic_args(train=4, val=2),
                  "--trainer.max_steps", "2", "--trainer.check_val_every_n_epoch", "1",
                  "--trainer.default_root_dir", str(root / method), "--report_path", str(root / method / "report.json"),
                  "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])  # fmt: skip
    return root


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert 'os.environ.get("TAILSEG_RUNS", "runs/demo")' in code[0].source  # the one parameter, at the top


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_against_tiny_training_runs(name, tiny_runs, monkeypatch):
    assert (tiny_runs / "base" / "report.json").is_file() and list(tiny_runs.glob("lmp/version_*/metrics.csv"))
    monkeypatch.setenv("TAILSEG_RUNS", str(tiny_runs))
    paths = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))  # absolute: the kernel runs in notebooks/
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})  # fmt: skip
    client.execute()  # raises CellExecutionError if a cell fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"runs folder: {tiny_runs}" in text and "methods: base, lmp; reference: base" in text
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    if name.startswith("01"):
        assert len(pictures) == 1  # the gain figure
    else:
        assert len(pictures) == 2  # sorted IoU and the sampler's probabilities (lmp); no TCE weights
        assert "no Stochastic TCE class weights (tce/w/<class>) logged by: base/version_0, lmp/version_0" in text
        assert "no sampler class probabilities (sampler/p/<class>) logged by: base/version_0" in text


def test_confusion_and_overlays_from_the_tiny_checkpoint(tiny_runs):
    """A real checkpoint and DataModule: the confusion matrix of the whole val set gives the report's IoU."""
    import json

    import numpy as np

    from tailseg import analysis as ta
    from tailseg.data import SegmentationDataModule, SyntheticStreets
    from tailseg.metrics import iou_from_confusion

    report = json.loads((tiny_runs / "lmp" / "report.json").read_text())
    sizes = {"height": 64, "width": 128}
    data = SegmentationDataModule(SyntheticStreets("train", 4, **sizes), SyntheticStreets("val", 2, **sizes))
    model = ta.load_model(report["checkpoint"])
    predictions = ta.predict_images(model, data, [0, 1])
    assert predictions[0].image.shape == (64, 128, 3) and predictions[0].prediction.shape == (64, 128)
    counts = ta.confusion_table(predictions, model.class_names, normalize=False)
    iou = 100 * iou_from_confusion(torch.tensor(counts.to_numpy())).numpy()
    expected = np.array([np.nan if v is None else v for v in report["per_class_iou"].values()])
    np.testing.assert_allclose(iou, expected, atol=1e-3)
    table = ta.confusion_matrix(report["checkpoint"], data, [0, 1])
    rows = table.to_numpy()[counts.to_numpy().sum(axis=1) > 0]
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    figure = ta.overlay_figure(predictions=predictions, class_names=model.class_names,
                               palette=data.val_set.color_palette())  # fmt: skip
    assert len([ax for ax in figure.axes if ax.get_images()]) == 6
