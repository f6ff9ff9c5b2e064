"""Sharded evaluation under DDP: `EvalShard` gives each image to exactly one rank, `ClassIoU` counts the images
it covers, `PredictionWriter` writes each file once, and 2 gloo processes agree with 1 process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from conftest import tiny_synthetic_args
from tailseg.analysis.per_image import load_per_image
from tailseg.callbacks.predictions import _is_sharded
from tailseg.cli import main
from tailseg.data import SegmentationDataModule, SyntheticStreets
from tailseg.data.shards import EvalShard
from tailseg.metrics import ClassIoU

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"
DDP = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]


def _shards(n: int, replicas: int) -> list[list[int]]:
    return [list(EvalShard(range(n), num_replicas=replicas, rank=r)) for r in range(replicas)]


# --- the sampler --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, replicas",
    [
        pytest.param(n, replicas, id=f"{n}-images-{replicas}-ranks")
        for n, replicas in [(0, 2), (1, 1), (5, 1), (5, 2), (7, 3), (9, 4), (10, 4), (8, 8), (101, 8)]
    ],
)
def test_shards_are_disjoint_cover_every_image_once_and_balance(n, replicas):
    shards = _shards(n, replicas)
    seen = [i for shard in shards for i in shard]
    assert sorted(seen) == list(range(n))  # every image, each exactly once (no padding, no duplicate)
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(EvalShard(range(n), num_replicas=replicas, rank=r)) for r in range(replicas)]
    assert all(shard == list(range(r, n, replicas)) for r, shard in enumerate(shards))  # strided


@pytest.mark.parametrize(
    "n, replicas",
    [pytest.param(n, replicas, id=f"{n}-images-{replicas}-ranks") for n, replicas in [(1, 2), (3, 4), (5, 8)]],
)
def test_fewer_images_than_ranks_fail_on_every_rank(n, replicas):
    """A rank without images would leave the others waiting at the epoch-end sync: every rank refuses alike."""
    for rank in range(replicas):
        with pytest.raises(ValueError, match=rf"validation data set has {n} image\(s\) for {replicas} processes"):
            EvalShard(range(n), num_replicas=replicas, rank=rank, split="validation")


def test_ranks_default_to_one_process_and_come_from_the_trainer():
    alone = EvalShard(range(5))
    assert (alone.num_replicas, alone.rank, list(alone)) == (1, 0, [0, 1, 2, 3, 4])
    ddp = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1})
    assert list(EvalShard.for_trainer(range(5), ddp)) == [1, 3]
    single_device = SimpleNamespace(distributed_sampler_kwargs=None)
    assert list(EvalShard.for_trainer(range(5), single_device)) == list(EvalShard.for_trainer(range(5))) == [*range(5)]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        EvalShard(range(5), num_replicas=2, rank=2)


def test_shard_counts_as_distributed_for_lightning_with_its_true_length():
    """Lightning wraps any sampler that is not a DistributedSampler when use_distributed_sampler is true (and the
    predict test below runs with it true); the shard reports its real size, not a padded one."""
    shard = EvalShard(range(5), num_replicas=2, rank=0)
    assert isinstance(shard, DistributedSampler)
    assert shard.num_samples == len(shard) == 3 and shard.total_size == 5  # no padded count


def test_datamodule_shards_val_test_and_predict_loaders():
    ds = SyntheticStreets("val", 5, 32, 48)
    dm = SegmentationDataModule(train=ds, val=ds, test=ds, eval_batch_size=2, num_workers=0, stats_cache_dir="")
    for rank, expected in ((0, [[0, 2], [4]]), (1, [[1, 3]])):
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
            assert isinstance(loader.sampler, EvalShard)
            assert [batch["index"].tolist() for batch in loader] == expected


# --- ClassIoU counts its images -----------------------------------------------------------------------------


def test_class_iou_counts_images_and_keeps_its_iou():
    metric = ClassIoU(num_classes=3, ignore_index=255)
    target = torch.tensor([[[0, 1], [2, 255]]]).repeat(3, 1, 1)
    metric.update(target[:2], target[:2])
    metric.update(target[2:], target[2:])
    assert int(metric.num_images) == 3 and metric.total_images() == 3  # B per update; no DDP: the local count
    assert metric.compute().tolist() == [1.0, 1.0, 1.0]
    assert metric.total_images() == 3  # compute() leaves the count alone
    metric.reset()
    assert metric.total_images() == 0


# --- PredictionWriter ---------------------------------------------------------------------------------------


def test_prediction_writer_sees_eval_shards_as_sharded():
    shard = EvalShard(range(5), num_replicas=2, rank=1)
    assert _is_sharded(DataLoader(range(5), sampler=shard))
    assert _is_sharded(DataLoader(range(5), batch_sampler=BatchSampler(shard, 2, False)))  # as Lightning's predict
    assert not _is_sharded(DataLoader(range(5), batch_size=2))


# --- 2 gloo processes through the CLI -----------------------------------------------------------------------


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "WANDB_MODE": "disabled",
    }
    return subprocess.run(
        [sys.executable, "-m", "tailseg", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _common(tmp: Path, name: str, val: int = 5) -> list[str]:
    return ["--config", str(BASE), *tiny_synthetic_args(train=8, val=val), "--trainer.enable_progress_bar", "false",
            "--data.stats_cache_dir", str(tmp / "cache"),  # module fixtures run before the autouse cache fixture
            "--trainer.default_root_dir", str(tmp / name), "--trainer.callbacks+=eval_recorders.RecordEvalIndices",
            "--trainer.callbacks.out_dir", str(tmp / f"{name}_rec")]  # fmt: skip


def _records(tmp: Path, name: str, ranks: int) -> list[dict]:
    return [json.loads((tmp / f"{name}_rec" / f"rank{r}.json").read_text()) for r in range(ranks)]


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def _val_metrics(run_dir: Path) -> dict[str, str]:
    """The `val/...` values of a run's (single) validation, as metrics.csv holds them (`fit`: in `version_0/`,
    `validate`: in `evaluations/validate/version_0/`)."""
    (path,) = [*run_dir.glob("version_0/metrics.csv"), *run_dir.glob("evaluations/validate/version_0/metrics.csv")]
    rows = list(csv.DictReader(path.open()))
    row = next(row for row in rows if row.get("val/miou"))
    return {key: value for key, value in row.items() if key.startswith("val/")}


def _check_per_image(report_path: Path, confusion: list) -> np.ndarray:
    """The report's per-image counts: 5 uniquely named images, summing to the run's (all ranks') confusion matrix;
    returns them as one (2, 5, C) array."""
    report = json.loads(report_path.read_text())
    counts = load_per_image(report, report_path.parent)
    assert counts.names == [f"synthetic_val_{i:06d}" for i in range(5)]  # each image once, in data-set order
    confusion = np.asarray(confusion)
    tp = np.diag(confusion)
    assert counts.intersection.sum(0).tolist() == tp.tolist()
    assert counts.union.sum(0).tolist() == (confusion.sum(0) + confusion.sum(1) - tp).tolist()
    assert counts.union.sum() > 0
    return np.stack([counts.intersection, counts.union])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, str]:
    """A 2-step fit under DDP that validates 5 images at its end (rank 0: 2 batches, rank 1: 1): (dir, checkpoint)."""
    tmp = tmp_path_factory.mktemp("ddp_eval")
    fit = _run(
        ["fit", *_common(tmp, "fit"), *DDP, "--trainer.max_steps", "2", "--trainer.check_val_every_n_epoch", "1"]
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    return tmp, str(sorted((tmp / "fit" / "version_0" / "checkpoints").glob("*.ckpt"))[-1])  # all of step 2


@pytest.fixture(scope="module")
def validated(fitted) -> Path:
    """The checkpoint validated in 1 process ("one", in this process) and in 2 ("two"), one image per batch (so
    that val/loss does not depend on how images are grouped into batches)."""
    tmp, ckpt = fitted
    evaluate = ["--ckpt_path", ckpt, "--data.eval_batch_size", "1"]
    main(["validate", *_common(tmp, "one"), *evaluate, "--report_path", str(tmp / "one.json")])
    two = _run(["validate", *_common(tmp, "two"), *evaluate, *DDP, "--report_path", str(tmp / "two.json")])
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_fit_under_ddp_validates_each_image_once(fitted):
    tmp, _ = fitted
    ranks = _records(tmp, "fit", 2)
    assert [r["val_batches"] for r in ranks] == [[[0, 2], [4]], [[1, 3]]]  # uneven step counts, no hang
    assert [r["val_total_images"] for r in ranks] == [[5], [5]]  # ClassIoU.total_images(): synced, no repeats
    assert ranks[0]["val_confusion"] == ranks[1]["val_confusion"]  # summed over the ranks on both
    _check_per_image(tmp / "fit" / "version_0" / "report.json", ranks[0]["val_confusion"][-1])


@pytest.mark.slow
def test_validate_in_two_processes_gives_the_iou_of_one(validated):
    tmp = validated
    one_rank, two_ranks = _records(tmp, "one", 1), _records(tmp, "two", 2)
    assert _flat(one_rank[0]["val_batches"]) == [0, 1, 2, 3, 4]
    assert [_flat(r["val_batches"]) for r in two_ranks] == [[0, 2, 4], [1, 3]]  # disjoint, each image once
    assert [r["val_total_images"] for r in [*one_rank, *two_ranks]] == [[5], [5], [5]]
    one, two = (json.loads((tmp / f"{name}.json").read_text()) for name in ("one", "two"))
    assert two["per_class_iou"] == one["per_class_iou"]
    assert any(v not in (None, 0.0) for v in one["per_class_iou"].values())  # not a trivially equal table
    assert one["num_images"] == two["num_images"] == 5
    # Per-image counts gathered from both ranks: each image once, summing to the confusion of all ranks, the
    # counts of the single process, and so (same counts, same seed) the same intervals.
    counts_two = _check_per_image(tmp / "two.json", two_ranks[0]["val_confusion"][-1])
    assert np.array_equal(counts_two, _check_per_image(tmp / "one.json", one_rank[0]["val_confusion"][-1]))
    for key in ("miou_ci95", "per_class_iou_ci95", "per_image_miou", "per_image_miou_ci95", "ci"):
        assert two[key] == one[key] and two[key] is not None
    # The same weights, validated inside the DDP fit (2 images per batch there): the same logged IoU.
    iou = {k: v for k, v in _val_metrics(tmp / "one").items() if k.startswith("val/iou/") or k == "val/miou"}
    assert {k: _val_metrics(tmp / "fit")[k] for k in iou} == iou


@pytest.mark.slow
def test_validate_in_two_processes_logs_the_loss_of_one(validated):
    tmp = validated
    loss = [float(_val_metrics(tmp / name)["val/loss"]) for name in ("two", "one")]
    assert loss[0] == pytest.approx(loss[1], rel=1e-5)  # the image-weighted mean over the 5 images


@pytest.mark.slow
def test_predict_in_two_processes_writes_each_file_once(fitted):
    """Also with use_distributed_sampler true, where Lightning must not shard the shards again."""
    tmp, ckpt = fitted
    predict_dir = tmp / "preds"
    done = _run(["predict", *_common(tmp, "pred"), *DDP, "--ckpt_path", ckpt, "--predict_dir", str(predict_dir),
                 "--trainer.use_distributed_sampler", "true"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = _records(tmp, "pred", 2)
    assert [_flat(r["predict_batches"]) for r in ranks] == [[0, 2, 4], [1, 3]]
    assert [r["written"] for r in ranks] == [3, 2]  # each rank writes its own images: 5 writes in all
    names = SyntheticStreets("val", 5, 64, 128)
    assert sorted(p.name for p in predict_dir.iterdir()) == sorted(names.prediction_file(i) for i in range(5))


@pytest.mark.slow
def test_two_processes_refuse_a_set_smaller_than_the_ranks(fitted):
    """One validation image for 2 processes: both stop with the reason instead of one waiting forever."""
    tmp, ckpt = fitted
    done = _run(["validate", *_common(tmp, "tiny", val=1), *DDP, "--ckpt_path", ckpt])
    assert done.returncode != 0
    assert "validation data set has 1 image(s) for 2 processes" in done.stderr


@pytest.mark.slow
def test_fit_under_ddp_validates_and_saves_its_final_step(tmp_path):
    """2 steps an epoch, 3 steps in all: the final validation and checkpoint of `finish_fit` run on both ranks."""
    fit = _run(["fit", *_common(tmp_path, "fit"), *DDP, "--trainer.max_steps", "3", "--trainer.max_epochs", "-1",
                "--trainer.check_val_every_n_epoch", "1", "--report_path", str(tmp_path / "fit.json")])  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    report = json.loads((tmp_path / "fit.json").read_text())
    assert report["global_step"] == 3 and report["num_images"] == 5 and report["miou"] is not None
    assert torch.load(report["checkpoint"], map_location="cpu", weights_only=False)["global_step"] == 3
