"""Predictions in the official formats: `tailseg predict --predict_dir`, scored by the official Cityscapes evaluator."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image

from conftest import TINY_ENCODER
from fixtures import write_ade20k, write_cityscapes, write_voc
from tailseg.callbacks.predictions import PredictionWriter
from tailseg.cli import main
from tailseg.data import ADE20K, Cityscapes, PascalVOC, SegmentationDataModule, SyntheticStreets
from tailseg.data.base import pseudo_random_palette
from tailseg.inference import Tiling
from tailseg.model import SegmentationModel

#: The same tiling for validate and predict; tiles narrower than the image, so that tiling matters.
TILING = {"class_path": "tailseg.inference.Tiling", "init_args": {"mode": "optimized", "tiles": 3, "overlap": 16}}


def _config(root: Path) -> dict:
    data = {"class_path": "tailseg.data.Cityscapes", "init_args": {"root": str(root), "split": "val"}}
    return {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 10,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "use_distributed_sampler": False,
            "accelerator": "cpu",
            "devices": 1,
        },
        "model": {
            "encoder_name": TINY_ENCODER,
            "encoder_weights": None,
            "tiling": TILING,
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        },
        "data": {
            "train": {"class_path": "tailseg.data.Cityscapes", "init_args": {"root": str(root), "split": "train"}},
            "val": data,
            "crop_size": [64, 64],
            "batch_size": 2,
            "eval_batch_size": 2,
            "num_workers": 0,
        },
    }


@pytest.fixture(scope="module")
def cityscapes_run(tmp_path_factory) -> dict:
    """A tiny model fitted for 10 steps on a Cityscapes-layout fixture (labelIds only), and its checkpoint."""
    base = tmp_path_factory.mktemp("cs_predict")
    root = write_cityscapes(base / "cityscapes", splits=("train", "val"), images_per_split=3, train_ids=False)
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump(_config(root)))
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(base / "fit"),
          "--trainer.limit_val_batches", "0"])  # fmt: skip
    checkpoints = list((base / "fit" / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1
    return {"base": base, "root": root, "config": config, "checkpoint": str(checkpoints[0])}


def _official_scores(root: Path, predict_dir: Path, export: Path, monkeypatch) -> dict:
    """Run cityscapesscripts' `csEvalPixelLevelSemanticLabeling` (its `main`: ground truth from a glob, each
    prediction found by the official `getPrediction` folder scan) and return its JSON result."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as ev

    settings = {
        "cityscapesPath": str(root),
        "groundTruthSearch": str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png"),
        "predictionPath": str(predict_dir),
        "predictionWalk": None,
        "evalInstLevelScore": False,  # needs *_instanceIds.png, which the fixture does not have
        "evalPixelAccuracy": False,
        "JSONOutput": True,
        "exportFile": str(export),
        "quiet": True,
        "colorized": False,
        "bold": "",
        "nocol": "",
    }
    for name, value in settings.items():
        monkeypatch.setattr(ev.args, name, value, raising=False)
    monkeypatch.setattr(sys, "argv", ["csEvalPixelLevelSemanticLabeling"])
    ev.main()
    return json.loads(export.read_text())


def test_cityscapes_predictions_score_like_validate_under_the_official_evaluator(cityscapes_run, tmp_path, monkeypatch):
    run, root = cityscapes_run, cityscapes_run["root"]
    common = ["--config", str(run["config"]), "--ckpt_path", run["checkpoint"]]
    main(["validate", *common, "--trainer.default_root_dir", str(tmp_path / "validate"),
          "--report_path", str(tmp_path / "val.json")])  # fmt: skip
    report = json.loads((tmp_path / "val.json").read_text())
    predict_dir = tmp_path / "pred"
    main(
        ["predict", *common, "--trainer.default_root_dir", str(tmp_path / "predict"), "--predict_dir", str(predict_dir)]
    )

    # One official-format file per val image, holding label ids of the 19 evaluated classes.
    ds = Cityscapes(str(root), "val")
    files = sorted(p.name for p in predict_dir.iterdir())
    assert files == sorted(f"{ds.prediction_name(i)}_labelIds.png" for i in range(len(ds)))
    for name in files:
        image = Image.open(predict_dir / name)
        assert image.mode == "L" and image.size == (128, 64)
        assert set(np.unique(np.asarray(image)).tolist()) <= set(ds.label_ids)

    scores = _official_scores(root, predict_dir, tmp_path / "official.json", monkeypatch)
    official = scores["classScores"]
    ours = report["per_class_iou"]
    assert set(ours) <= set(official)
    compared = 0
    for name, value in ours.items():
        theirs = official[name]
        if theirs is None or math.isnan(theirs):
            assert value is None, f"{name}: the evaluator has no IoU, the report has {value}"
            continue
        # The report rounds to 1e-4 %: the evaluator's value, rounded the same way, must match to 1e-6 %.
        assert value is not None, f"{name}: the evaluator has {theirs}, the report has none"
        assert abs(value - round(100.0 * theirs, 4)) <= 1e-6, (name, value, 100.0 * theirs)
        assert abs(value - 100.0 * theirs) <= 5e-5 + 1e-6
        compared += 1
    assert compared >= 7  # the 7 evaluated classes of the fixture's val images, and any other class predicted
    assert sum(value > 0 for value in ours.values() if value is not None) >= 2
    assert math.isclose(report["miou"], round(100.0 * scores["averageScoreClasses"], 4), abs_tol=1e-6)


def test_predict_color_writes_color_pictures(cityscapes_run, tmp_path):
    run = cityscapes_run
    ds = Cityscapes(str(run["root"]), "val")
    common = ["--config", str(run["config"]), "--ckpt_path", run["checkpoint"]]
    main(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "run1"),
          "--predict_dir", str(tmp_path / "pred"), "--predict_color", "true"])  # fmt: skip
    colors = np.asarray(ds.class_colors, np.uint8)
    lut = {label_id: colors[train_id] for train_id, label_id in enumerate(ds.label_ids)}
    for i in range(len(ds)):
        label = np.asarray(Image.open(tmp_path / "pred" / ds.prediction_file(i)))
        color = Image.open(tmp_path / "pred" / f"{ds.prediction_name(i)}_color.png")
        assert color.mode == "RGB" and color.size == (label.shape[1], label.shape[0])
        expected = np.zeros((*label.shape, 3), np.uint8)
        for label_id in np.unique(label):
            expected[label == label_id] = lut[int(label_id)]
        np.testing.assert_array_equal(np.asarray(color), expected)

    # --predict_color_dir keeps the pictures out of the scored folder.
    main(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "run2"),
          "--predict_dir", str(tmp_path / "only"), "--predict_color_dir", str(tmp_path / "c")])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == sorted(
        ds.prediction_file(i) for i in range(len(ds))
    )
    assert len(list((tmp_path / "c").glob("*_color.png"))) == len(ds)


def _predict_with_writer(dataset, tmp_path: Path, **writer_args) -> tuple[SegmentationModel, list, Path]:
    """Predict `dataset` with an untrained tiny model through a plain Trainer and a PredictionWriter."""
    torch.manual_seed(0)
    model = SegmentationModel(dataset.num_classes, list(dataset.class_names), encoder_name=TINY_ENCODER,
                              tiling=Tiling("whole"))  # fmt: skip
    dm = SegmentationDataModule(dataset, dataset, crop_size=(32, 32), eval_batch_size=2, num_workers=0)
    out = tmp_path / "pred"
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[PredictionWriter(str(out), **writer_args)])  # fmt: skip
    batches = trainer.predict(model, dm, return_predictions=True)
    return model, batches, out


def _argmax(model: SegmentationModel, dataset, index: int) -> np.ndarray:
    """The model's argmax on sample `index`, computed here without the DataModule."""
    image = dataset.load_image(index).astype(np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1).astype(np.float32))[None]
    model.eval()
    with torch.no_grad():
        return model.predict_logits(x).argmax(1)[0].numpy()


def test_voc_predictions_are_palette_pngs_of_the_argmax(tmp_path):
    root = write_voc(tmp_path / "voc", splits=("val",), images_per_split=3)
    ds = PascalVOC(str(root), "val")
    model, batches, out = _predict_with_writer(ds, tmp_path)
    preds = torch.cat([b["prediction"] for b in batches]).numpy()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.png" for i in ds.ids)
    for index, image_id in enumerate(ds.ids):
        image = Image.open(out / f"{image_id}.png")
        assert image.mode == "P" and image.getpalette()[: 3 * 256] == ds.palette()
        np.testing.assert_array_equal(np.asarray(image), preds[index])
        np.testing.assert_array_equal(np.asarray(image), _argmax(model, ds, index))


def test_ade20k_predictions_hold_ids_plus_one(tmp_path):
    root = write_ade20k(tmp_path / "ade", splits=("validation",), images_per_split=3)
    ds = ADE20K(str(root), "validation")
    model, batches, out = _predict_with_writer(ds, tmp_path, color=True)
    preds = torch.cat([b["prediction"] for b in batches]).numpy()
    for index, image_path in enumerate(ds.image_paths):
        image = Image.open(out / f"{image_path.stem}.png")
        assert image.mode == "L"
        values = np.asarray(image)
        np.testing.assert_array_equal(values, preds[index] + 1)
        np.testing.assert_array_equal(values, _argmax(model, ds, index) + 1)
        assert values.min() >= 1 and values.max() <= 150
        # No class colours for ADE20K: a fixed palette.
        color = np.asarray(Image.open(out / f"{image_path.stem}_color.png"))
        np.testing.assert_array_equal(color, pseudo_random_palette(150)[preds[index]])


def test_default_encoding_and_names():
    ds = SyntheticStreets("val", 2, 32, 48)
    assert ds.prediction_name(1) == ds.sample_name(1) and ds.prediction_file(1) == f"{ds.sample_name(1)}.png"
    pred = np.array([[0, 3], [18, 7]])
    image = ds.encode_prediction(pred)
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), pred)
    palette = pseudo_random_palette(19)
    assert palette.shape == (19, 3) and len({tuple(c) for c in palette.tolist()}) == 19
    np.testing.assert_array_equal(palette, pseudo_random_palette(19))  # fixed


def test_cityscapes_encoding_round_trips(tmp_path):
    ds = Cityscapes(str(write_cityscapes(tmp_path, splits=("val",), images_per_split=1)), "val")
    assert ds.prediction_file(0) == "aachen_000000_000019_labelIds.png"
    pred = np.arange(19).reshape(1, 19)
    image = ds.encode_prediction(pred)
    assert image.mode == "L"
    np.testing.assert_array_equal(ds.label_to_train_ids(np.asarray(image)), pred)


def test_writer_ranks_write_their_share_only(tmp_path):
    """Sharded predict loaders: every rank writes its images; unsharded ones: rank 0 alone writes."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, DistributedSampler

    ds = SyntheticStreets("val", 4, 32, 48)
    plain = DataLoader(list(range(4)))
    sharded = DataLoader(list(range(4)), sampler=DistributedSampler(list(range(4)), num_replicas=2, rank=1))
    batch = {"index": torch.tensor([1, 3])}
    prediction = {"prediction": torch.zeros(2, 4, 5, dtype=torch.long)}
    for loader, rank, expected in [(plain, 1, 0), (plain, 0, 2), (sharded, 1, 2)]:
        out = tmp_path / f"r{rank}_{len(list(tmp_path.iterdir()))}"
        writer = PredictionWriter(str(out))
        trainer = SimpleNamespace(datamodule=SimpleNamespace(predict_set=ds), predict_dataloaders=loader,
                                  world_size=2, global_rank=rank)  # fmt: skip
        writer.on_predict_start(trainer, None)
        writer.write_on_batch_end(trainer, None, prediction, None, batch, 0, 0)
        assert writer.written == expected
        written = list(out.glob("*.png")) if out.exists() else []
        assert len(written) == expected
