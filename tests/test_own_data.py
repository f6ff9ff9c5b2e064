"""Own data without surprises: the README's `ImageMaskFolder` config end to end, and the mistakes people make with
their own data (0/255 masks, a batch larger than the data, truncated files, `--predict_dir` on the masks) stopped
before any work, with one line naming the field or the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cli_runner import tailseg
from conftest import TINY_ENCODER
from fixtures import write_image_mask_folder
from tailseg.cli import main
from tailseg.data import DataError, ImageMaskFolder
from tailseg.data.stats import cache_path, check_samples

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["background", "crack"]
TINY = ["--model.encoder_name", TINY_ENCODER, "--data.crop_size", "[32,32]", "--data.batch_size", "2",
        "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]  # fmt: skip


def readme_config(tmp_path: Path, train: Path, val: Path, init_args: dict | None = None) -> Path:
    """The YAML of README's "Your own data" written to `tmp_path`, its roots pointing at `train` and `val`
    (`init_args`: those of both data sets instead)."""
    section = (ROOT / "README.md").read_text().split("## Your own data", 1)[1]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])
    config["data"]["train"]["init_args"]["root"], config["data"]["val"]["init_args"]["root"] = str(train), str(val)
    config["trainer"].update(default_root_dir=str(tmp_path / "runs"), max_steps=2, check_val_every_n_epoch=1)
    for split in ("train", "val") if init_args else ():
        config["data"][split]["init_args"] = init_args
    path = tmp_path / "my_data.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def one_line_error(result, subcommand: str, *expected: str) -> str:
    """Assert that `result` stopped with status 2 and one `tailseg <subcommand>: error:` line holding `expected`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and lines, result.stderr
    assert lines[-1].startswith(f"tailseg {subcommand}: error: "), lines[-1]
    assert all(text in lines[-1] for text in expected), lines[-1]
    return lines[-1]


@pytest.fixture
def folders(tmp_path) -> dict:
    """Binary 0/255 train and val folders; the val images have two sizes, one of them between two others."""
    return {
        "train": write_image_mask_folder(tmp_path / "train", [(48, 64)] * 4, labels=(0, 255, 0)),
        "val": write_image_mask_folder(tmp_path / "val", [(48, 64), (40, 56), (48, 64)], labels=(0, 255), seed=1),
    }


def test_readme_config_fits_validates_tests_and_predicts(folders, tmp_path, monkeypatch, one_thread):
    """The README's config and commands, on 0/255 masks with validation images of two sizes."""
    monkeypatch.chdir(tmp_path)
    config = readme_config(tmp_path, folders["train"], folders["val"])
    common = ["--config", str(config), *TINY, "--data.eval_batch_size", "2"]
    fit = main(["fit", *common])
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    report = json.loads((runs / "version_0" / "report.json").read_text())
    assert (
        report["num_images"] == 3 and report["class_frequency"]["crack"] > 0
    )  # the cracks were learned from, not ignored
    assert fit.datamodule.image_sizes["val"].tolist() == [[48, 64], [40, 56], [48, 64]]

    main(["validate", *common, "--ckpt_path", "last"])
    main(["test", *common, "--ckpt_path", "last", "--data.test.class_path", "tailseg.data.ImageMaskFolder",
          "--data.test.init_args.root", str(folders["val"]), "--data.test.init_args.class_names", "[background, crack]",
          "--data.test.init_args.label_map", "{255: 1}"])  # fmt: skip
    new = write_image_mask_folder(tmp_path / "new", [(40, 48), (48, 64)])
    predict = ["predict", *common, "--ckpt_path", "last", "--data.predict.class_path", "tailseg.data.ImageMaskFolder",
               "--data.predict.init_args.root", str(new), "--data.predict.init_args.class_names", "[background, crack]",
               "--data.predict.init_args.masks", "null", "--predict_dir", str(tmp_path / "preds")]  # fmt: skip
    main(predict)

    # Evaluations stay out of the training root's run folders.
    assert sorted(p.name for p in runs.iterdir()) == ["evaluations", "version_0"]
    for stage in ("validate", "test", "predict"):
        assert (runs / "evaluations" / stage / "version_0").is_dir()
    val = json.loads((runs / "evaluations" / "validate" / "version_0" / "report.json").read_text())
    assert val["num_images"] == 3 and val["stage"] == "validate"
    test = json.loads((runs / "evaluations" / "test" / "version_0" / "report.json").read_text())
    assert test["stage"] == "test" and test["num_images"] == 3
    preds = {p.name: np.asarray(Image.open(p)).shape for p in (tmp_path / "preds").iterdir()}
    assert preds == {"img0.png": (40, 48), "img1.png": (48, 64)}

    # A second predict into the same folder: refused, the files untouched; --overwrite true replaces them.
    before = {p.name: p.read_bytes() for p in (tmp_path / "preds").iterdir()}
    again = tailseg(*predict[:1], *predict[1:], cwd=tmp_path)
    one_line_error(again, "predict", "--predict_dir", "2 prediction files already exist", "--overwrite true")
    assert {p.name: p.read_bytes() for p in (tmp_path / "preds").iterdir()} == before
    main([*predict, "--overwrite", "true"])
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["img0.png", "img1.png"]


@pytest.mark.parametrize("where", ["masks", "root", "image"])
def test_predict_refuses_a_folder_of_the_data_set(where, folders, tmp_path):
    """`--predict_dir` on the masks folder (or a folder holding it, or an image's folder) would overwrite the
    ground truth: refused before predicting, every file unchanged."""
    config = readme_config(tmp_path, folders["train"], folders["val"])
    target = {"masks": folders["val"] / "masks", "root": folders["val"], "image": folders["val"] / "images"}[where]
    before = {p: p.read_bytes() for p in folders["val"].rglob("*") if p.is_file()}
    result = tailseg("predict", "--config", str(config), *TINY, "--predict_dir", str(target), cwd=tmp_path)
    one_line_error(result, "predict", "--predict_dir", str(target.resolve()), "holds files of the data set")
    assert {p: p.read_bytes() for p in folders["val"].rglob("*") if p.is_file()} == before
    assert not (tmp_path / "runs").exists()  # refused before the trainer made its run folder


@pytest.mark.parametrize(
    ("labels", "names", "expected"),
    [
        ((0, 255), NAMES, ["'crack' (id 1)", "255", "ignore index", "label_map: {255: 1}"]),
        ((0, 1), ["road", "car", "bus"], ["'bus' (id 2)", "appears in no training mask"]),
    ],
    ids=["binary-0-255", "class-never-drawn"],
)
def test_a_class_missing_from_the_training_masks_is_refused(labels, names, expected, tmp_path):
    train = write_image_mask_folder(tmp_path / "train", [(48, 64)] * 2, labels=labels)
    args = {"root": str(train), "class_names": names}
    config = readme_config(tmp_path, train, train, args)
    result = tailseg("fit", "--config", str(config), *TINY, cwd=tmp_path)
    line = one_line_error(result, "fit", "data.train", *expected)
    assert "background" not in line or names == NAMES
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_batch_larger_than_the_training_set_is_refused(folders, tmp_path):
    config = readme_config(tmp_path, folders["train"], folders["val"])
    result = tailseg("fit", "--config", str(config), *TINY, "--data.batch_size", "8", cwd=tmp_path)
    one_line_error(result, "fit", "data.batch_size 8", "4 training images", "0 training batches")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("report.json"))


@pytest.mark.parametrize(("split", "suffix"), [("train", ".jpg"), ("val", ".png")])
def test_a_truncated_image_is_named_before_the_first_step(split, suffix, folders, tmp_path):
    """The mask is fine, so the class statistics do not see it: the full decode before the first step does."""
    cut = write_image_mask_folder(tmp_path / "cut", [(48, 64)] * 3, labels=(0, 255), suffix=suffix)
    broken = cut / "images" / f"img1{suffix}"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    config = readme_config(tmp_path, *((cut, folders["val"]) if split == "train" else (folders["train"], cut)))
    result = tailseg("fit", "--config", str(config), *TINY, cwd=tmp_path)
    one_line_error(result, "fit", str(broken), "cannot be read")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.csv"))


def test_the_check_is_cached_until_a_file_changes(folders, tmp_path, monkeypatch):
    dataset = ImageMaskFolder(str(folders["val"]), NAMES, label_map={255: 1})
    sizes = check_samples(dataset, cache_dir=tmp_path / "cache")
    assert sizes.tolist() == [[48, 64], [40, 56], [48, 64]]
    assert cache_path(dataset, "checked", tmp_path / "cache").is_file()

    def no_reading(index):
        raise AssertionError("a checked data set is read again")

    monkeypatch.setattr(dataset, "load", no_reading)
    assert check_samples(dataset, cache_dir=tmp_path / "cache").tolist() == sizes.tolist()

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folders["val"] / "masks" / "img2.png")  # a new mask
    changed = ImageMaskFolder(str(folders["val"]), NAMES, label_map={255: 1})
    with pytest.raises(DataError, match=r"img2\.png: image size \(48, 64\) and mask size \(10, 10\) differ"):
        check_samples(changed, cache_dir=tmp_path / "cache")


def test_label_map_and_images_without_masks(folders):
    mapped = ImageMaskFolder(str(folders["train"]), NAMES, label_map={255: 1})
    assert set(np.unique(mapped.load(0)[1])) == {0, 1}
    with pytest.raises(DataError, match=r"label values \[255\]"):  # 255 kept: not a class, not the ignore index
        ImageMaskFolder(str(folders["train"]), NAMES, ignore_index=7).load(0)
    unlabelled = ImageMaskFolder(str(folders["train"]), NAMES, masks=None)
    image, mask = unlabelled.load(0)
    assert mask.shape == image.shape[:2] and (mask == 255).all()
