"""Per-image counts of an evaluation and the report's bootstrap intervals: `per_image_counts`, `PerImageCounts`,
`interval_fields`, the `per_image` field (inline or in a file beside the report) and the `--ci_*` options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_synthetic_args
from tailseg.analysis.per_image import PerImage, load_per_image, per_image_file
from tailseg.callbacks import report as report_module
from tailseg.callbacks.report import ReportWriter, interval_fields
from tailseg.cli import main
from tailseg.metrics import PerImageCounts, per_image_counts

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"
CI_FIELDS = ("miou_ci95", "per_class_iou_ci95", "per_image_miou", "per_image_miou_ci95", "ci")


def _confusion_counts(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intersection, union) per class of a (C, C) confusion matrix (rows: truth)."""
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion)
    return tp, confusion.sum(0) + confusion.sum(1) - tp


# --- the counts ---------------------------------------------------------------------------------------------


def test_per_image_counts_by_hand():
    target = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [1, 1]]])
    preds = torch.tensor([[[0, 2], [2, 0]], [[1, 0], [1, 1]]])
    intersection, union = per_image_counts(preds, target, num_classes=3, ignore_index=255)
    # image 0: class 0 hit once (the ignored pixel's prediction counts for nothing); class 1 missed (pred 2);
    # class 2: truth 1 pixel, predicted at it and at class 1's pixel. Image 1: class 1 hit 3 times of 4.
    assert intersection.tolist() == [[1, 0, 1], [0, 3, 0]]
    assert union.tolist() == [[1, 1, 2], [1, 4, 0]]
    assert intersection.dtype == union.dtype == torch.int64


def test_per_image_counts_metric_orders_by_index_and_sums_to_the_confusion():
    rng = np.random.default_rng(0)
    target = torch.as_tensor(rng.integers(0, 4, (5, 6, 7)))
    target[target == 3] = 255
    preds = torch.as_tensor(rng.integers(0, 3, (5, 6, 7)))
    metric = PerImageCounts(num_classes=3)
    metric.update(preds[3:], target[3:], torch.tensor([4, 0]))
    metric.update(preds[:3], target[:3], torch.tensor([1, 2, 3]))
    index, intersection, union = metric.compute()
    assert index.tolist() == [0, 1, 2, 3, 4]
    expected_i, expected_u = per_image_counts(preds, target, 3)
    order = [4, 0, 1, 2, 3]  # data-set index i was batch row order[i]
    assert torch.equal(intersection, expected_i[order]) and torch.equal(union, expected_u[order])
    keep = target != 255
    confusion = np.zeros((3, 3), np.int64)
    np.add.at(confusion, (target[keep].numpy(), preds[keep].numpy()), 1)
    tp, whole_union = _confusion_counts(confusion)
    assert intersection.sum(0).tolist() == tp.tolist() and union.sum(0).tolist() == whole_union.tolist()


# --- the interval fields ------------------------------------------------------------------------------------


def _counts() -> PerImage:
    rng = np.random.default_rng(1)
    union = rng.integers(50, 100, (12, 3))
    intersection = (union * rng.uniform(0.2, 0.9, (12, 3))).astype(np.int64)
    union[0, 2] = intersection[0, 2] = 0  # class 2 absent from image 0
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    return PerImage([f"i{k}" for k in range(12)], groups, intersection, union)


def test_interval_fields_bracket_the_point_and_follow_the_seed():
    counts = _counts()
    fields = interval_fields(counts, ["x", "y", "z"], resamples=500, seed=3)
    iou = 100 * counts.intersection.sum(0) / counts.union.sum(0)
    low, high = fields["miou_ci95"]
    assert low < iou.mean() < high and high - low < 20
    for name, value in zip("xyz", iou, strict=True):
        assert fields["per_class_iou_ci95"][name][0] <= value <= fields["per_class_iou_ci95"][name][1]
    ious = np.where(counts.union > 0, counts.intersection / np.maximum(counts.union, 1), np.nan)
    per_image = np.nanmean(np.nanmean(ious, axis=1))
    assert fields["per_image_miou"] == pytest.approx(100 * per_image, abs=1e-4)
    assert fields["per_image_miou_ci95"][0] < fields["per_image_miou"] < fields["per_image_miou_ci95"][1]
    assert fields["ci"] == {"resamples": 500, "seed": 3, "unit": "image", "groups": 3, "level": 0.95}
    assert interval_fields(counts, ["x", "y", "z"], resamples=500, seed=3) == fields
    assert interval_fields(counts, ["x", "y", "z"], resamples=500, seed=4)["miou_ci95"] != fields["miou_ci95"]
    grouped = interval_fields(counts, ["x", "y", "z"], resamples=500, seed=3, unit="group")
    assert grouped["ci"]["unit"] == "group" and grouped["miou_ci95"] != fields["miou_ci95"]
    off = interval_fields(counts, ["x", "y", "z"], resamples=0)
    assert off["per_image_miou"] == fields["per_image_miou"]
    assert [off[k] for k in CI_FIELDS if k != "per_image_miou"] == [None] * 4
    assert all(v is None for v in interval_fields(None, ["x"]).values())
    one = PerImage(counts.names[:1], None, counts.intersection[:1], counts.union[:1])  # no zero-width interval
    lone = interval_fields(one, ["x", "y", "z"], resamples=500)
    assert lone["per_image_miou"] is not None and [lone[k] for k in CI_FIELDS if k != "per_image_miou"] == [None] * 4
    no_groups = PerImage(counts.names, None, counts.intersection, counts.union)
    with pytest.raises(ValueError, match="ci_unit group: the evaluated images have no groups"):
        interval_fields(no_groups, ["x", "y", "z"], unit="group")


# --- through the CLI ----------------------------------------------------------------------------------------


def _args(tmp: Path, name: str) -> list[str]:
    return ["--config", str(BASE), *tiny_synthetic_args(train=8, val=5), "--trainer.enable_progress_bar", "false",
            "--data.stats_cache_dir", str(tmp / "cache"), "--trainer.default_root_dir", str(tmp / name),
            "--trainer.callbacks+=eval_recorders.RecordEvalIndices", "--trainer.callbacks.out_dir",
            str(tmp / f"{name}_rec")]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, str]:
    """A 2-step fit (its report from the validation at its end) and the checkpoint validated with `--ci_seed 5`:
    (folder, checkpoint); reports `fit.json` and `one.json`, recorded confusions in `<name>_rec/rank0.json`."""
    tmp = tmp_path_factory.mktemp("per_image")
    main(["fit", *_args(tmp, "fit"), "--trainer.max_steps", "2", "--report_path", str(tmp / "fit.json")])
    ckpt = json.loads((tmp / "fit.json").read_text())["checkpoint"]
    main(
        ["validate", *_args(tmp, "one"), "--ckpt_path", ckpt, "--ci_seed", "5", "--report_path", str(tmp / "one.json")]
    )
    return tmp, ckpt


def _check_sums(report: dict, folder: Path, confusion: list) -> PerImage:
    """The report's per-image counts sum to the run's confusion and give its per-class IoU."""
    counts = load_per_image(report, folder)
    tp, union = _confusion_counts(np.asarray(confusion))
    assert counts.intersection.sum(0).tolist() == tp.tolist() and counts.union.sum(0).tolist() == union.tolist()
    iou = 100 * counts.intersection.sum(0) / np.where(counts.union.sum(0) > 0, counts.union.sum(0), 1)
    for c, name in enumerate(report["per_class_iou"]):
        expected = report["per_class_iou"][name]
        assert (counts.union.sum(0)[c] == 0) if expected is None else iou[c] == pytest.approx(expected, abs=1e-4)
    assert len(counts.names) == len(set(counts.names)) == report["num_images"]
    return counts


@pytest.mark.slow
def test_validate_and_fit_reports_carry_per_image_counts_that_sum_to_the_confusion(evaluated):
    tmp, _ = evaluated
    for name in ("fit", "one"):
        report = json.loads((tmp / f"{name}.json").read_text())
        (confusion,) = json.loads((tmp / f"{name}_rec" / "rank0.json").read_text())["val_confusion"][-1:]
        counts = _check_sums(report, tmp, confusion)
        assert counts.names == [f"synthetic_val_{i:06d}" for i in range(5)] and counts.groups is None
        assert report["per_image"]["groups"] is None and len(report["per_image"]["intersection"][0]) == 19
        assert all(report[key] is not None for key in CI_FIELDS)
        low, high = report["miou_ci95"]
        assert low <= report["miou"] <= high and report["per_image_miou_ci95"][0] <= report["per_image_miou"]
        for cls, value in report["per_class_iou"].items():
            interval = report["per_class_iou_ci95"][cls]
            assert (interval is None) if value is None else interval[0] <= value <= interval[1]
        run_report = json.loads((Path(report["run_dir"]) / "report.json").read_text())
        assert run_report["per_image"] == report["per_image"]
    one = json.loads((tmp / "one.json").read_text())
    assert one["ci"] == {"resamples": 2000, "seed": 5, "unit": "image", "groups": None, "level": 0.95}
    counts = load_per_image(one, tmp)
    assert one["miou_ci95"] == interval_fields(counts, list(one["per_class_iou"]), 2000, 5)["miou_ci95"]
    assert one["miou_ci95"] != interval_fields(counts, list(one["per_class_iou"]), 2000, 6)["miou_ci95"]


@pytest.mark.slow
def test_counts_above_the_inline_limit_go_to_a_file_beside_each_report(evaluated, monkeypatch):
    tmp, ckpt = evaluated
    monkeypatch.setattr(report_module, "PER_IMAGE_INLINE_CELLS", 94)  # 5 images x 19 classes = 95 cells
    main(
        ["validate", *_args(tmp, "big"), "--ckpt_path", ckpt, "--ci_seed", "5", "--report_path", str(tmp / "big.json")]
    )
    big, one = (json.loads((tmp / f"{name}.json").read_text()) for name in ("big", "one"))
    assert big["per_image"] == {"file": "big.per_image.npz"} and (tmp / "big.per_image.npz").is_file()
    run_dir = Path(big["run_dir"])
    assert json.loads((run_dir / "report.json").read_text())["per_image"] == {"file": "report.per_image.npz"}
    assert per_image_file(run_dir / "report.json").is_file()
    from_file, inline = load_per_image(big, tmp), load_per_image(one, tmp)
    assert from_file.names == inline.names and from_file.groups is None
    assert np.array_equal(from_file.intersection, inline.intersection)
    assert np.array_equal(from_file.union, inline.union)
    assert all(big[key] == one[key] for key in CI_FIELDS)  # the same counts and seed: the same intervals
    monkeypatch.setattr(report_module, "PER_IMAGE_INLINE_CELLS", 20000)
    main(["validate", *_args(tmp, "big"), "--ckpt_path", ckpt, "--ci_resamples", "0",
          "--report_path", str(tmp / "big.json")])  # fmt: skip
    small = json.loads((tmp / "big.json").read_text())
    assert "names" in small["per_image"] and not (tmp / "big.per_image.npz").exists()  # no stale file left
    assert small["ci"] is small["miou_ci95"] is small["per_class_iou_ci95"] is None


@pytest.mark.slow
def test_group_unit_without_groups_fails_before_evaluating(evaluated, tmp_path):
    _, ckpt = evaluated
    with pytest.raises(ValueError, match=r"^ci_unit group: the evaluated set \(SyntheticStreets, 5 images\) has no "):
        main(["validate", *_args(tmp_path, "grp"), "--ckpt_path", ckpt, "--ci_unit", "group",
              "--report_path", str(tmp_path / "g.json")])  # fmt: skip
    assert not (tmp_path / "g.json").exists() and not list(tmp_path.glob("grp/**/report.json"))


def test_bad_ci_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^ci_resamples must be >= 0 \(0: no intervals\), got -1$"):
        ReportWriter(None, None, ci_resamples=-1)
    with pytest.raises(ValueError, match=r"^ci_unit must be one of \['image', 'group'\], got 'video'$"):
        ReportWriter(None, None, ci_unit="video")


def test_cityscapes_groups_are_the_cities(tmp_path):
    from fixtures import CITIES, write_cityscapes
    from tailseg.data import Cityscapes

    data = Cityscapes(str(write_cityscapes(tmp_path / "cs", splits=("val",), images_per_split=3)), "val")
    groups = sorted((data.prediction_name(i), data.image_group(i)) for i in range(3))
    assert groups == sorted((f"{CITIES[i % len(CITIES)]}_{i:06d}_000019", CITIES[i % len(CITIES)]) for i in range(3))


def test_report_text_puts_number_lists_on_one_line_and_reads_back_equal():
    from tailseg.callbacks.report import report_text

    report = {"per_image": {"intersection": [[1, 2], [3, -4]]}, "miou_ci95": [1.5, 2e-05], "s": "[1,\n2]", "n": []}
    text = report_text(report)
    assert json.loads(text) == report
    assert "[1, 2],\n      [3, -4]" in text and '"miou_ci95": [1.5, 2e-05]' in text
