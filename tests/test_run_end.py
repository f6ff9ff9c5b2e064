"""The end of every fit is the final model, `--ckpt_path last`, and evaluation without the training set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY_ENCODER, tiny_synthetic_args
from tailseg.cli import main
from tailseg.data import DataError, SegmentationDataModule, SyntheticStreets
from test_cli import overrides_for

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"


def _fit(root: Path, *extra: str) -> dict:
    main(["fit", "--config", str(BASE), *tiny_synthetic_args(), "--trainer.default_root_dir", str(root),
          "--trainer.enable_progress_bar", "false", "--report_path", str(root / "report.json"), *extra])  # fmt: skip
    return json.loads((root / "report.json").read_text())


def _step_of(checkpoint: str) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def test_fit_validates_and_saves_the_final_step_when_the_schedule_does_not(tmp_path):
    # 4 steps an epoch, validation every 2 epochs: the last scheduled validation is at step 8, the run ends at 10
    report = _fit(tmp_path, "--trainer.max_steps", "10", "--trainer.max_epochs", "-1",
                  "--trainer.check_val_every_n_epoch", "2")  # fmt: skip
    assert report["stage"] == "fit" and report["global_step"] == 10
    assert Path(report["checkpoint"]).name == "last.ckpt" and _step_of(report["checkpoint"]) == 10
    assert report["num_images"] == 4 and report["miou"] is not None
    # the report's numbers are those of the final weights: validating last.ckpt gives them again
    main(["validate", "--config", str(BASE), *tiny_synthetic_args(), "--ckpt_path", report["checkpoint"],
          "--trainer.default_root_dir", str(tmp_path / "val"), "--trainer.enable_progress_bar", "false",
          "--report_path", str(tmp_path / "val.json")])  # fmt: skip
    again = json.loads((tmp_path / "val.json").read_text())
    assert again["per_class_iou"] == report["per_class_iou"] and again["global_step"] == 10
    steps = [line.split(",") for line in (Path(report["run_dir"]) / "metrics.csv").read_text().splitlines()]
    header = steps[0]
    val_steps = sorted({int(row[header.index("step")]) for row in steps[1:] if row[header.index("val/miou")]})
    assert val_steps[-1] >= 9  # the final validation is logged (at the final step's logging position)


def test_fit_without_validation_data_still_leaves_the_final_weights_and_a_report(tmp_path):
    report = _fit(tmp_path, "--trainer.max_steps", "3", "--data.val", "null")
    assert report["global_step"] == 3 and _step_of(report["checkpoint"]) == 3
    assert report["per_class_iou"] is None and report["miou"] is None and report["num_images"] is None
    assert report["class_frequency_source"] == "training set" and math.isclose(
        sum(report["class_frequency"].values()), 1
    )


def test_ckpt_path_last_continues_the_newest_run_or_starts_afresh(tmp_path, capsys):
    first = _fit(tmp_path, "--trainer.max_steps", "3", "--ckpt_path", "last")  # nothing to resume yet
    assert "starting afresh" in capsys.readouterr().out and first["global_step"] == 3
    second = _fit(tmp_path, "--trainer.max_steps", "3", "--ckpt_path", "last")  # finished: nothing left to train
    assert second["global_step"] == 3 and Path(second["run_dir"]).name == "version_1"
    assert second["config"]["ckpt_path"] == first["checkpoint"]
    with pytest.raises(ValueError, match=r"another config: trainer\.max_steps \(was 3, now 5\)"):
        _fit(tmp_path, "--trainer.max_steps", "5", "--ckpt_path", "last")  # a longer run is another experiment


@pytest.mark.slow
def test_evaluation_needs_only_the_evaluation_images(tmp_path, dataset_roots):
    """Median-frequency CE on the Cityscapes fixture: its class weights and the class frequencies come from the
    checkpoint when the training folder is not there."""
    config = ROOT / "experiments" / "cityscapes" / "lmp_median_freq.yaml"
    args = [
        *overrides_for(config, dataset_roots),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
    ]
    main(["fit", "--config", str(config), *args, "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
          "--trainer.default_root_dir", str(tmp_path / "fit"), "--report_path", str(tmp_path / "fit.json")])  # fmt: skip
    fit = json.loads((tmp_path / "fit.json").read_text())
    weights = torch.load(fit["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]["loss.class_weights"]
    assert weights.shape == (19,) and torch.isfinite(weights).all()
    main(["validate", "--config", str(config), *args, "--data.train.init_args.root", str(tmp_path / "not-here"),
          "--ckpt_path", fit["checkpoint"], "--trainer.default_root_dir", str(tmp_path / "val"),
          "--report_path", str(tmp_path / "val.json")])  # fmt: skip
    val = json.loads((tmp_path / "val.json").read_text())
    assert val["class_frequency_source"] == "checkpoint" and val["class_frequency"] == fit["class_frequency"]
    assert val["per_class_iou"] == fit["per_class_iou"] and val["num_images"] == fit["num_images"] == 3
    assert val["config"]["data"]["train"] is None


def test_fit_without_a_training_set_says_so():
    dm = SegmentationDataModule(val=SyntheticStreets("val", 2, 64, 64), num_workers=0)
    assert dm.num_classes == 19  # the classes come from the data set that is there
    with pytest.raises(DataError, match=r"fit needs a training data set \(data.train\)"):
        dm.setup("fit")
    with pytest.raises(DataError, match="no data set is configured"):
        SegmentationDataModule()


def test_model_checkpoint_loads_without_the_training_statistics(tmp_path):
    """A loss whose weights come from the class statistics (None before) loads its weights from the checkpoint."""
    from tailseg.losses import MedianFrequencyCrossEntropy
    from tailseg.model import SegmentationModel

    model = SegmentationModel(19, encoder_name=TINY_ENCODER, loss=MedianFrequencyCrossEntropy())
    model.loss.set_class_statistics(torch.randint(0, 50, (6, 19)))
    checkpoint = {"state_dict": model.state_dict(), "class_frequency": [1 / 19] * 19}
    fresh = SegmentationModel(19, encoder_name=TINY_ENCODER, loss=MedianFrequencyCrossEntropy())
    assert fresh.loss.class_weights is None
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(fresh.loss.class_weights, model.loss.class_weights)
    assert fresh.class_frequency_source == "checkpoint"


def test_a_missing_checkpoint_is_named_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"ckpt_path: .*nope.ckpt is not a file"):
        main(["validate", "--config", str(BASE), *tiny_synthetic_args(), "--ckpt_path", str(tmp_path / "nope.ckpt"),
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert not list(tmp_path.iterdir())  # nothing was written


def _validations(run_dir: str) -> dict[int, dict[str, float]]:
    """{step: {column: value}} of the rows of metrics.csv that hold a validation's mIoU (the CSV log: a source
    independent of the model's own history)."""
    import csv

    with open(Path(run_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/miou")]
    return {int(row["step"]): {k: float(v) for k, v in row.items() if k.startswith("val/") and v} for row in rows}


def test_the_mean_of_the_last_k_validations_is_that_of_the_logged_validations_and_survives_a_resume(tmp_path):
    # 4 steps an epoch, validation every epoch: validations at steps 4, 8 and the final 10
    args = ("--trainer.max_steps", "10", "--trainer.max_epochs", "-1", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.log_every_n_steps", "1", "--trainer.deterministic", "true",
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "1",
            "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}")  # fmt: skip
    report = _fit(tmp_path / "whole", *args, "--last_k", "2")
    assert report["last_k"]["k"] == 2 and len(report["last_k"]["steps"]) == 2 and report["last_k"]["steps"][-1] == 10
    logged = _validations(report["run_dir"])
    # the CSV logs a validation at the logging position of its step (the final one possibly one lower)
    last_two = [logged[step] for step in sorted(logged)[-2:]]
    expected = 100 * sum(row["val/miou"] for row in last_two) / 2
    assert report["miou_last_k"] == pytest.approx(expected, abs=1e-3)
    assert report["miou_last_k"] != pytest.approx(report["miou"], abs=1e-6) or last_two[0] == last_two[1]
    for name, value in report["per_class_iou_last_k"].items():
        values = [row[f"val/iou/{name}"] for row in last_two if not math.isnan(row.get(f"val/iou/{name}", math.nan))]
        assert (value is None) if not values else value == pytest.approx(100 * sum(values) / len(values), abs=1e-3)
    # resumed from step 6 (after the validation at step 4), the run still averages the validations it had made
    step6 = next(Path(report["run_dir"], "checkpoints").glob("step=6*.ckpt"))
    resumed = _fit(tmp_path / "resumed", *args, "--last_k", "2", "--ckpt_path", str(step6))
    assert resumed["last_k"] == report["last_k"] and resumed["miou_last_k"] == report["miou_last_k"]
    three = _fit(tmp_path / "three", *args, "--last_k", "3", "--ckpt_path", str(step6))
    assert three["last_k"]["steps"][0] == 4 and len(three["last_k"]["steps"]) == 3
    assert _fit(tmp_path / "none", "--trainer.max_steps", "2")["miou_last_k"] is None


def test_last_k_must_not_be_negative(tmp_path):
    with pytest.raises((ValueError, SystemExit)):
        _fit(tmp_path, "--trainer.max_steps", "1", "--last_k", "-1")
