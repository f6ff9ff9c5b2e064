"""The real CLI on every experiment config, reports, checkpoints, and failures that name their cause."""

from __future__ import annotations

import functools
import importlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_ENCODER, tiny_synthetic_args
from tailseg.cli import main
from tailseg.model import NonFiniteLossError, SegmentationModel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments").rglob("*.yaml"))
SYNTHETIC = ROOT / "experiments" / "synthetic" / "base.yaml"


#: The fixture folder (a key of the `dataset_roots` fixture) of each file-based data set class.
FIXTURE_OF = {"Cityscapes": "cityscapes", "PascalVOC": "voc", "ADE20K": "ade20k", "CamVid": "camvid"}


@functools.cache
def tiny_weights() -> str:
    """A file of the tiny network's weights (a plain state dict, 11 classes) for the configs that start from trained
    weights (`model.init_from`)."""
    path = Path(tempfile.mkdtemp(prefix="tailseg-weights-")) / "pretrained.pt"
    torch.save(SegmentationModel(num_classes=11, encoder_name=TINY_ENCODER).net.state_dict(), path)
    return str(path)


def overrides_for(config: Path, roots: dict | None = None) -> list[str]:
    """Shrink a config to a tiny model and data set, whatever data set it uses.

    Configs that start from trained weights get `tiny_weights`. Synthetic configs get `tiny_synthetic_args`. Configs on Cityscapes / PASCAL VOC / ADE20K / CamVid get the
    matching fixture folder of `roots` (the `dataset_roots` fixture) as the root of every data split,
    the tiny encoder without pre-trained weights, small crops and batches, and one CPU process (the
    paper configs ask for GPUs, DDP or several nodes).
    """
    yaml_config = yaml.safe_load(config.read_text())
    data = yaml_config["data"]
    start = ["--model.init_from", tiny_weights()] if (yaml_config.get("model") or {}).get("init_from") else []
    kind = data["train"]["class_path"].rsplit(".", 1)[-1]
    if kind == "SyntheticStreets":
        return [*start, *tiny_synthetic_args()]
    if kind not in FIXTURE_OF:
        raise AssertionError(f"{config}: no test fixture for data set {data['train']['class_path']}")
    if roots is None:
        raise AssertionError(f"{config}: a {kind} config needs the dataset_roots fixture")
    root = str(roots[FIXTURE_OF[kind]])
    args = []
    for split in ("train", "val", "test", "predict"):
        if isinstance(data.get(split), dict):
            args += [f"--data.{split}.init_args.root", root]
    return [*start, *args, "--model.encoder_name", TINY_ENCODER, "--model.encoder_weights", "null",
            "--data.crop_size", "[32,32]", "--data.batch_size", "2", "--data.eval_batch_size", "1",
            "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.strategy", "auto", "--trainer.num_nodes", "1"]  # fmt: skip


def test_configs_exist():
    assert SYNTHETIC in CONFIGS


#: init_args that the tests' overrides shrink (tiny data) or the model adapts (padding to the output stride), so the
#: built objects do not hold them as the YAML writes them.
ADAPTED = {"root", "num_images", "height", "width", "pad_to"}


def is_class_entry(value) -> bool:
    """Whether a YAML value is a class entry (a mapping with a class_path)."""
    return isinstance(value, dict) and "class_path" in value


def assert_built_as_configured(entry: dict | None, obj, default: str, what: str) -> None:
    """`obj` is an instance of the YAML entry's class_path (`default` without an entry), and each of the entry's
    init_args that the object keeps as an attribute of the same name has the YAML's value. An init_arg that is
    itself a class entry, or a list of class entries (e.g. the `terms` of `tailseg.losses.Sum`), is checked the same
    way against the object (or the objects, in order) that the attribute holds."""
    path = (entry or {"class_path": default})["class_path"]
    if "." in path:  # a full class path: the class itself
        module, name = path.rsplit(".", 1)
        expected = isinstance(obj, getattr(importlib.import_module(module), name))
    else:  # a short name that LightningCLI resolves among the known subclasses
        expected = type(obj).__name__ == path
    assert expected, f"{what}: built {type(obj).__module__}.{type(obj).__qualname__}, the YAML asks for {path}"
    for key, value in ((entry or {}).get("init_args") or {}).items():
        if key in ADAPTED or not hasattr(obj, key):
            continue
        got = getattr(obj, key)
        if is_class_entry(value):
            assert_built_as_configured(value, got, "", f"{what}.{key}")
            continue
        if isinstance(value, list) and value and all(is_class_entry(v) for v in value):
            built = list(got)
            assert len(built) == len(value), f"{what}.{key}: built {len(built)} entries, the YAML has {len(value)}"
            for k, (item, one) in enumerate(zip(value, built, strict=True)):
                assert_built_as_configured(item, one, "", f"{what}.{key}[{k}]")
            continue
        if isinstance(got, tuple):
            got = list(got)
        if isinstance(value, float):
            assert got == pytest.approx(value), f"{what}.{key}: built {got!r}, the YAML says {value!r}"
        else:
            assert got == value, f"{what}.{key}: built {got!r}, the YAML says {value!r}"


def test_built_as_configured_catches_a_different_class_or_argument():
    from tailseg.losses import LossMaxPooling

    lmp = LossMaxPooling(p=1.3, ratio=0.25)
    assert_built_as_configured(
        {"class_path": "tailseg.losses.LossMaxPooling", "init_args": {"p": 1.3}}, lmp, "", "loss"
    )
    with pytest.raises(AssertionError, match=r"loss.p: built 1.3, the YAML says 2.0"):
        assert_built_as_configured(
            {"class_path": "tailseg.losses.LossMaxPooling", "init_args": {"p": 2.0}}, lmp, "", "loss"
        )
    with pytest.raises(AssertionError, match="the YAML asks for tailseg.losses.TiltedCrossEntropy"):
        assert_built_as_configured(None, lmp, "tailseg.losses.TiltedCrossEntropy", "loss")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_every_config_runs_fast_dev_run(config, tmp_path, dataset_roots):
    """Each experiment config trains a step and builds what its YAML names: the loss, the sampler, the tiling,
    the data sets and the callbacks, with the YAML's arguments."""
    cli = main(["fit", "--config", str(config), *overrides_for(config, dataset_roots), "--trainer.fast_dev_run",
                "true", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    yaml_config = yaml.safe_load(config.read_text())
    model, data = yaml_config.get("model", {}), yaml_config["data"]
    assert_built_as_configured(model.get("loss"), cli.model.loss, "tailseg.losses.CrossEntropy", "model.loss")
    assert_built_as_configured(model.get("tiling"), cli.model.tiling, "tailseg.inference.Tiling", "model.tiling")
    assert_built_as_configured(
        data.get("train_sampler"), cli.datamodule.train_sampler, "tailseg.sampling.UniformSampler", "data.train_sampler"
    )
    for split in ("train", "val", "test"):
        built = getattr(cli.datamodule, f"{split}_set")
        if data.get(split) is None:
            assert built is None, f"data.{split}: built {type(built).__name__}, the YAML has none"
        else:
            assert_built_as_configured(data[split], built, "", f"data.{split}")
    built_callbacks = {type(c).__name__ for c in cli.trainer.callbacks}
    for entry in yaml_config.get("trainer", {}).get("callbacks") or []:
        assert entry["class_path"].rsplit(".", 1)[-1] in built_callbacks, f"callback {entry['class_path']} not built"


def test_print_config_is_a_loadable_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(SYNTHETIC), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["loss"]["class_path"] == "tailseg.losses.CrossEntropy"
    assert printed["data"]["train"]["class_path"] == "tailseg.data.SyntheticStreets"
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(printed))
    main(["fit", "--config", str(path), *tiny_synthetic_args(), "--trainer.fast_dev_run", "true",
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip


def _fit(root: Path, *extra: str) -> dict:
    main(["fit", "--config", str(SYNTHETIC), *tiny_synthetic_args(), "--trainer.max_steps", "4",
          "--trainer.check_val_every_n_epoch", "1", "--trainer.default_root_dir", str(root),
          "--trainer.enable_progress_bar", "false", "--report_path", str(root / "report.json"), *extra])  # fmt: skip
    return json.loads((root / "report.json").read_text())


def test_fit_checkpoint_reload_validate_gives_the_same_metrics(tmp_path):
    report = _fit(tmp_path / "fit")
    run_dir = Path(report["run_dir"])
    assert run_dir == tmp_path / "fit" / "version_0"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "report.json").is_file()
    assert (run_dir / "metrics.csv").is_file()
    assert set(report) >= {"per_class_iou", "miou", "worst", "std", "class_frequency", "config", "checkpoint"}
    assert len(report["per_class_iou"]) == 19 and math.isclose(sum(report["class_frequency"].values()), 1.0)
    assert report["config"]["model"]["loss"]["class_path"] == "tailseg.losses.CrossEntropy"
    ckpt = report["checkpoint"]
    assert ckpt and Path(ckpt).is_file()

    # The CLI's validate on the checkpoint reproduces the last validation of fit.
    main(["validate", "--config", str(SYNTHETIC), *tiny_synthetic_args(), "--ckpt_path", ckpt,
          "--trainer.default_root_dir", str(tmp_path / "val"), "--trainer.enable_progress_bar", "false",
          "--report_path", str(tmp_path / "val.json")])  # fmt: skip
    again = json.loads((tmp_path / "val.json").read_text())
    assert again["stage"] == "validate" and again["checkpoint"] == ckpt
    for name, value in report["per_class_iou"].items():
        assert (value is None and again["per_class_iou"][name] is None) or math.isclose(
            value, again["per_class_iou"][name], rel_tol=1e-6, abs_tol=1e-6
        )

    # load_from_checkpoint rebuilds the model with its loss and encoder.
    model = SegmentationModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    assert type(model.loss).__name__ == "CrossEntropy"
    assert model.hparams.encoder_name == TINY_ENCODER and model.class_names[0] == "road"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    # A second run never overwrites the first: it gets its own directory.
    second = _fit(tmp_path / "fit")
    assert Path(second["run_dir"]) == tmp_path / "fit" / "version_1"


def test_wandb_offline_run_lives_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    report = _fit(tmp_path)
    offline = list((Path(report["run_dir"]) / "wandb").glob("offline-run-*"))
    assert offline, "no offline W&B run was written"


class NaNLoss(torch.nn.Module):
    def forward(self, logits, target):
        return logits.mean() * float("nan")


def test_non_finite_loss_stops_with_step_and_file_names(tmp_path):
    import pytorch_lightning as pl

    from tailseg.data import SegmentationDataModule, SyntheticStreets

    dm = SegmentationDataModule(
        SyntheticStreets("train", 4, 64, 64), SyntheticStreets("val", 2, 64, 64), crop_size=(32, 32),
        batch_size=2, num_workers=0,
    )  # fmt: skip
    model = SegmentationModel(19, encoder_name=TINY_ENCODER, loss=NaNLoss())
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"global step 0 .*synthetic_train_00000\d"):
        trainer.fit(model, dm)


def test_config_value_out_of_range_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        main(["fit", "--config", str(SYNTHETIC), *tiny_synthetic_args(), "--data.batch_size", "0",
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "version_0" / "checkpoints").exists()


def test_console_script_describe(tmp_path):
    exe = Path(sys.executable).with_name("tailseg")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "tailseg"]
    out = subprocess.run([*command, "describe", "--config", str(SYNTHETIC), *tiny_synthetic_args()],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    assert "train (SyntheticStreets): 8 images" in out and "val (SyntheticStreets): 4 images" in out
    assert "6 most frequent classes" in out and "traffic light" in out


def test_loss_ignore_index_must_match_the_data(tmp_path):
    with pytest.raises(ValueError, match=r"loss's ignore_index \(0\) differs from the data's \(255\)"):
        main(["fit", "--config", str(SYNTHETIC), *tiny_synthetic_args(), "--model.loss.init_args.ignore_index", "0",
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
