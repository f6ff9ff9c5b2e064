"""ClassIoUFeedback end to end: the sampler follows the training IoU, DDP keeps ranks in step, and a
resumed run draws and learns exactly what an uninterrupted run does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_synthetic_args
from tailseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
BASE_PLUS = ROOT / "experiments" / "synthetic" / "base_plus.yaml"


def _fit_args(root: Path, record: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(BASE_PLUS), *tiny_synthetic_args(), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.deterministic", "true", "--trainer.callbacks+=recorders.RecordDraws",
            "--trainer.callbacks.out_dir", str(record), *extra]  # fmt: skip


def _load(record: Path, rank: int = 0) -> dict:
    return json.loads((record / f"rank{rank}.json").read_text())


def test_sampler_follows_training_iou(tmp_path):
    main(_fit_args(tmp_path / "run", tmp_path / "rec", "--trainer.max_epochs", "2", "--trainer.max_steps", "-1"))
    rec = _load(tmp_path / "rec")
    first, second = np.array(rec["probabilities"]["0"]), np.array(rec["probabilities"]["1"])
    present = first > 0
    np.testing.assert_allclose(first[present], 1 / present.sum())  # before any feedback: IoU 0 everywhere
    iou = np.array([np.nan if v is None else v for v in rec["iou"]["1"]])
    score = np.where(present, 1 - np.nan_to_num(iou, nan=0.0), 0.0)
    np.testing.assert_allclose(second, score / score.sum(), rtol=1e-6)  # epoch 1 draws from (1 - IoU of epoch 0)
    metrics = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "sampler/p/road" in metrics and "sampler/p/traffic light" in metrics


def test_resumed_run_draws_and_learns_like_an_uninterrupted_run(tmp_path):
    main(_fit_args(tmp_path / "full", tmp_path / "full_rec", "--trainer.max_epochs", "3", "--trainer.max_steps", "-1"))
    main(_fit_args(tmp_path / "part", tmp_path / "part_rec", "--trainer.max_epochs", "3", "--trainer.max_steps", "-1",
                   "--trainer.callbacks+=recorders.StopAfterEpoch", "--trainer.callbacks.epoch", "1"))  # fmt: skip
    ckpt = next((tmp_path / "part" / "version_0" / "checkpoints").glob("*.ckpt"))
    main(_fit_args(tmp_path / "part", tmp_path / "resumed_rec", "--trainer.max_epochs", "3", "--trainer.max_steps",
                   "-1", "--ckpt_path", str(ckpt)))  # fmt: skip
    full, resumed = _load(tmp_path / "full_rec"), _load(tmp_path / "resumed_rec")
    assert list(resumed["batches"]) == ["2"]
    assert resumed["batches"]["2"] == full["batches"]["2"]  # the same indices in the resumed epoch
    assert resumed["probabilities"]["2"] == full["probabilities"]["2"]  # restored sampler state
    assert resumed["iou"]["end"] == full["iou"]["end"]  # and the same training IoU -> the same weights
    assert resumed["probabilities"]["end"] == full["probabilities"]["end"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_shard_and_agree(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "WANDB_MODE": "disabled",
    }
    args = _fit_args(tmp_path / "run", tmp_path / "rec", "--trainer.max_epochs", "2", "--trainer.max_steps", "-1",
                     "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tailseg", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [_load(tmp_path / "rec", r) for r in (0, 1)]
    for epoch in ("0", "1"):
        drawn = [[i for batch in rank["batches"][epoch] for i in batch] for rank in ranks]
        assert len(drawn[0]) == len(drawn[1]) == 4  # 8 draws per epoch, 4 per rank
    assert ranks[0]["probabilities"] == ranks[1]["probabilities"]  # identical after each update
    assert ranks[0]["probabilities"]["1"] != ranks[0]["probabilities"]["0"]  # an update happened


def test_disjoint_shards_across_ranks():
    """The shards the two ranks draw are disjoint positions of one global sequence (sampler level)."""
    from tailseg.sampling import PerformanceAwareSampler

    counts = np.random.default_rng(0).integers(0, 5, (50, 19))
    full = list(PerformanceAwareSampler(counts, seed=4))
    shards = [list(PerformanceAwareSampler(counts, seed=4, num_replicas=2, rank=r)) for r in (0, 1)]
    interleaved = [x for pair in zip(shards[0], shards[1], strict=True) for x in pair]
    assert interleaved == full
