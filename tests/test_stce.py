"""Stochastic TCE (TCE paper, Algorithm 1): the tilted update, the class sampler, the feedback callback, and
the whole thing through the CLI (fit, exact resume, DDP agreement)."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_synthetic_args
from tailseg.callbacks import TiltedClassFeedback
from tailseg.cli import main
from tailseg.data import SegmentationDataModule, SyntheticStreets
from tailseg.resume import SeededKeys
from tailseg.sampling import TiltedClassSampler, UniformSampler, tilted_class_update, tilted_class_weights

ROOT = Path(__file__).resolve().parents[1]
STCE = ROOT / "experiments" / "synthetic" / "stce.yaml"
INF = math.inf


def counts_table(n: int = 60, seed: int = 0) -> np.ndarray:
    """Class 0 everywhere, class 1 in about half the images, class 2 in about 10% (at least 2), class 3 never."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n, 4), np.int64)
    counts[:, 0] = rng.integers(100, 1000, n)
    counts[rng.random(n) < 0.5, 1] = 50
    counts[rng.random(n) < 0.1, 2] = 3
    counts[:2, 2] = 3
    return counts


PRESENT = [True, True, True, False]


def with_log_l(sampler: TiltedClassSampler, log_l) -> TiltedClassSampler:
    sampler.log_l = torch.tensor(log_l, dtype=torch.float64)
    return sampler


# The tilted update (Algorithm 1, lines 6-8) -----------------------------------------------------------------


def test_update_matches_hand_computation():
    """γ = 0.5, t = 1; class 0 sees the batch losses 1 then 2, then class 1 sees 1 (L̃ starts at 0)."""
    log_l = torch.full((4,), -INF, dtype=torch.float64)
    log_l = tilted_class_update(log_l, 0, 1.0, t=1.0, gamma=0.5)
    assert log_l[0].item() == pytest.approx(math.log(0.5 * math.e))  # L̃_0 = 0.5 · 0 + 0.5 · e¹
    log_l = tilted_class_update(log_l, 0, 2.0, t=1.0, gamma=0.5)
    l0 = 0.5 * (0.5 * math.e) + 0.5 * math.e**2  # L̃_0 = 0.5 · L̃_0 + 0.5 · e²
    assert log_l[0].item() == pytest.approx(math.log(l0))
    assert log_l[1:].tolist() == [-INF, -INF, -INF]
    # Class 1 is unseen: it counts as hard as the hardest seen class; class 3 is absent.
    np.testing.assert_allclose(tilted_class_weights(log_l, PRESENT), [1 / 3, 1 / 3, 1 / 3, 0])
    log_l = tilted_class_update(log_l, 1, 1.0, t=1.0, gamma=0.5)
    l1 = 0.5 * math.e
    w = tilted_class_weights(log_l, PRESENT)
    np.testing.assert_allclose(w, [l0 / (2 * l0 + l1), l1 / (2 * l0 + l1), l0 / (2 * l0 + l1), 0], rtol=1e-12)
    assert tilted_class_update(log_l, 2, 3.0, t=2.0, gamma=1.0)[2].item() == pytest.approx(6.0)  # γ = 1: t · L_B


def test_update_returns_a_new_tensor():
    log_l = torch.zeros(3, dtype=torch.float64)
    out = tilted_class_update(log_l, 1, 1.0, 1.0, 0.1)
    assert log_l.tolist() == [0.0, 0.0, 0.0] and out[1].item() == pytest.approx(math.log(0.9 + 0.1 * math.e))


@pytest.mark.parametrize("tilted_loss", [500.0, 5000.0])
def test_no_overflow_at_large_tilted_loss(tilted_loss):
    log_l = torch.full((4,), -INF, dtype=torch.float64)
    log_l = tilted_class_update(log_l, 0, 1.0, t=1.0, gamma=0.1)
    log_l = tilted_class_update(log_l, 1, tilted_loss / 10, t=10.0, gamma=0.1)
    log_l = tilted_class_update(log_l, 1, tilted_loss / 10, t=10.0, gamma=0.1)
    assert torch.isfinite(log_l[:2]).all()
    w = tilted_class_weights(log_l, PRESENT)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0)
    assert w[0] < 1e-100 and w[1].item() == pytest.approx(0.5) and w[3] == 0  # class 2 unseen: as hard as class 1


def test_initialisation():
    sampler = TiltedClassSampler(counts_table(), batch_size=2)
    assert sampler.log_l.tolist() == [-INF] * 4
    np.testing.assert_allclose(sampler.weights, [1 / 3, 1 / 3, 1 / 3, 0])  # uniform over the present classes
    sampler.update(2, 0.5, t=1.0, gamma=0.1)
    sampler.update(1, 2.0, t=1.0, gamma=0.1)
    top = math.log(0.1) + 2.0
    np.testing.assert_allclose(sampler.log_l[:3], [-INF, top, math.log(0.1) + 0.5])
    e = np.exp([top, top, math.log(0.1) + 0.5])  # unseen class 0 takes the largest log L̃ of the seen ones
    np.testing.assert_allclose(sampler.weights, [*(e / e.sum()), 0], rtol=1e-12)


# The sampler --------------------------------------------------------------------------------------------------


def test_class_frequencies_follow_the_weights():
    n = 3000
    sampler = with_log_l(
        TiltedClassSampler(counts_table(), batch_size=1, num_batches=n, seed=1), [0.0, 1.0, -0.5, -INF]
    )
    w = sampler.weights.numpy()
    drawn = np.bincount([batch[0][1] for batch in sampler], minlength=4)
    assert drawn[3] == 0  # an absent class is never drawn
    sd = np.sqrt(n * w * (1 - w))
    assert (np.abs(drawn - n * w) <= 5 * sd + 1e-9).all(), (drawn, n * w)


def test_every_image_of_a_batch_contains_the_batch_class():
    counts = counts_table()
    sampler = TiltedClassSampler(counts, batch_size=5, num_batches=60, seed=2)
    classes = set()
    for batch in sampler:
        assert len(batch) == 5
        (c,) = {key[1] for key in batch}  # all keys of a batch share the class
        classes.add(c)
        assert all(counts[index, c] > 0 for index, _ in batch)
    assert classes == {0, 1, 2}


def focus_on(sampler: TiltedClassSampler, c: int) -> None:
    """Weights that are exactly 1 for class c (the others' exp(-800) underflows to 0)."""
    log_l = torch.where(sampler.present, -800.0, -INF).double()
    log_l[c] = 0.0
    sampler.log_l = log_l


def test_draws_are_lazy_each_step_uses_the_current_weights():
    targets = [2, 0, 1, 1, 2, 0]
    sampler = TiltedClassSampler(counts_table(), batch_size=2, num_batches=len(targets), seed=3)
    focus_on(sampler, targets[0])
    for k, batch in enumerate(sampler):
        assert {c for _, c in batch} == {targets[k]}
        if k + 1 < len(targets):
            focus_on(sampler, targets[k + 1])  # what the feedback does between two steps


def test_two_ranks_draw_the_same_classes_and_disjoint_slices_of_one_global_draw():
    log_l = [0.3, 0.0, 0.6, -INF]
    counts = counts_table()
    ranks = [list(with_log_l(TiltedClassSampler(counts, 3, seed=4, num_replicas=2, rank=r), log_l)) for r in (0, 1)]
    whole = list(with_log_l(TiltedClassSampler(counts, 6, num_batches=len(ranks[0]), seed=4, num_replicas=1), log_l))
    assert len(ranks[0]) == len(ranks[1]) == 60 // (3 * 2)
    for k in range(len(whole)):
        assert {c for _, c in ranks[0][k]} == {c for _, c in ranks[1][k]}
        assert ranks[0][k] + ranks[1][k] == whole[k]  # rank r takes positions [3r, 3r + 3) of the step's draw
    assert len({c for batch in whole for _, c in batch}) > 1


def test_same_seed_and_epoch_same_draws_other_epoch_differs():
    a, b = TiltedClassSampler(counts_table(), 2, seed=5), TiltedClassSampler(counts_table(), 2, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_state_dict_round_trip():
    a = TiltedClassSampler(counts_table(), batch_size=2, seed=3)
    a.update(1, 1.5, t=1.0, gamma=0.1)
    a.update(2, 0.5, t=1.0, gamma=0.1)
    a.set_epoch(4)
    b = TiltedClassSampler(counts_table(), batch_size=2, seed=99)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # plain numbers, -inf included
    assert torch.equal(a.log_l, b.log_l) and torch.equal(a.weights, b.weights)
    assert (b.seed, b.epoch) == (3, 4) and list(a) == list(b)
    with pytest.raises(ValueError, match="4"):
        TiltedClassSampler(np.ones((5, 3)), 2).load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0.0"), ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
     ({"gamma": math.nan}, "gamma"), ({"t": math.inf}, "tilt t must be a finite number, got inf"),
     ({"loss": math.nan}, "batch loss L_B must be a finite number, got nan"), ({"c": 3}, "class 3 is not a class"),
     ({"c": -1}, "class -1 is not a class"), ({"loss": 1e308, "t": 10.0}, "t · L_B must be a finite number")],
    ids=["gamma-zero", "gamma-above-one", "gamma-nan", "tilt-infinite", "loss-nan", "class-too-large",
         "class-negative", "tilt-times-loss-overflows"],
)  # fmt: skip
def test_bad_update_inputs(kwargs, message):
    sampler = TiltedClassSampler(counts_table(), batch_size=2)
    args = {"c": 0, "loss": 1.0, "t": 1.0, "gamma": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        sampler.update(**args)
    assert sampler.log_l.tolist() == [-INF] * 4  # unchanged


def test_bad_sampler_and_callback_arguments():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TiltedClassSampler(counts_table(), batch_size=0)
    with pytest.raises(ValueError, match="no labelled pixel"):
        TiltedClassSampler(np.zeros((3, 2)))
    with pytest.raises(RuntimeError, match="batch_size is not set"):
        len(TiltedClassSampler(counts_table()))
    for kwargs, message in (({"gamma": 0}, r"\(0, 1\]"), ({"gamma": 1.5}, r"\(0, 1\]"), ({"t": math.inf}, "finite")):
        with pytest.raises(ValueError, match=f"TiltedClassFeedback: .*{message}"):
            TiltedClassFeedback(**kwargs)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_sampler=UniformSampler(counts_table())))
    with pytest.raises(RuntimeError, match="TiltedClassSampler"):
        TiltedClassFeedback().setup(trainer, None, "fit")


# The DataModule with a batch sampler -----------------------------------------------------------------------------


def _datamodule(sampler=TiltedClassSampler, batch_size=2, seed=11):
    return SegmentationDataModule(
        SyntheticStreets("train", 8, 64, 96), train_sampler=sampler, crop_size=(32, 32), batch_size=batch_size,
        num_workers=0, seed=seed, stats_cache_dir="",
    )  # fmt: skip


def test_datamodule_fills_in_the_batch_size_and_loads_batches_of_one_class():
    dm = _datamodule(batch_size=3)
    dm.setup("fit")
    sampler, counts = dm.train_sampler, dm.class_pixel_counts
    assert (sampler.batch_size, sampler.seed, len(sampler)) == (3, 11, 8 // 3)
    rare = int(np.argmin(np.where(counts.sum(0) > 0, (counts > 0).sum(0), 99)))  # the class in fewest images
    focus_on(sampler, rare)
    loader = dm.train_dataloader()
    assert len(loader) == 2
    for batch in loader:
        assert batch["image"].shape == (3, 3, 32, 32) and batch["class"].tolist() == [rare] * 3
        assert all(counts[i, rare] > 0 for i in batch["index"].tolist())
    # the keys' augmentation seeds follow the sampler's epoch (Lightning sets it on the inner sampler only)
    keys = SeededKeys(sampler, seed=7)
    first = list(keys)
    torch.manual_seed(123)
    assert list(keys) == first and all(len(k) == 3 for batch in first for k in batch)
    sampler.set_epoch(1)
    assert [k[2] for k in list(keys)[0]] != [k[2] for k in first[0]]


def test_datamodule_rejects_a_different_sampler_batch_size():
    dm = _datamodule(sampler=functools.partial(TiltedClassSampler, batch_size=4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size 4 differs from data.batch_size 2"):
        dm.setup("fit")


def test_ordinary_sampler_batches_carry_no_class():
    dm = _datamodule(sampler=None)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["class"].tolist() == [-1, -1]


# Through the CLI ------------------------------------------------------------------------------------------------


def _fit_args(root: Path, record: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(STCE), *tiny_synthetic_args(), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.deterministic", "true", "--trainer.log_every_n_steps", "2", "--trainer.max_epochs", "2",
            "--trainer.max_steps", "-1", "--trainer.callbacks+=recorders.RecordTiltedWeights",
            "--trainer.callbacks.out_dir", str(record), *extra]  # fmt: skip


def _load(record: Path, rank: int = 0) -> dict:
    return json.loads((record / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("stce_full")
    main(_fit_args(root / "run", root / "rec"))
    return root


def test_fit_logs_the_class_weights(full_run):
    rec = _load(full_run / "rec")
    assert sorted(rec["batches"]) == ["0", "1"] and all(len(rec["batches"][e]) == 4 for e in ("0", "1"))
    counts = SegmentationDataModule(SyntheticStreets("train", 8, 64, 128), stats_cache_dir="").class_pixel_counts
    for epoch in ("0", "1"):
        for indices, classes in zip(rec["batches"][epoch], rec["classes"][epoch], strict=True):
            assert len(set(classes)) == 1 and all(counts[i, classes[0]] > 0 for i in indices)
    present = counts.sum(axis=0) > 0
    np.testing.assert_allclose(np.array(rec["weights"]["0"])[present], 1 / present.sum())  # before any update
    end = np.array(rec["weights"]["end"])
    assert end.sum() == pytest.approx(1.0) and (end[~present] == 0).all() and not np.allclose(end, rec["weights"]["0"])
    assert np.isfinite(rec["log_l"]["end"]).sum() == len({c[0] for e in ("0", "1") for c in rec["classes"][e]})
    with open(full_run / "run" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert "tce/w/road" in rows[0] and "tce/w/traffic light" in rows[0]
    logged = [row for row in rows if row["tce/w/road"]]
    assert logged and float(logged[-1]["tce/w/road"]) == pytest.approx(end[0], rel=1e-6)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(full_run, tmp_path, one_thread):
    main(_fit_args(tmp_path / "part", tmp_path / "part_rec", "--trainer.callbacks+=recorders.StopAfterEpoch",
                   "--trainer.callbacks.epoch", "0"))  # fmt: skip
    ckpt = next((tmp_path / "part" / "version_0" / "checkpoints").glob("*.ckpt"))
    main(_fit_args(tmp_path / "part", tmp_path / "resumed_rec", "--ckpt_path", str(ckpt)))
    full, resumed = _load(full_run / "rec"), _load(tmp_path / "resumed_rec")
    assert list(resumed["batches"]) == ["1"]
    assert resumed["log_l"]["1"] == full["log_l"]["1"]  # restored sampler state
    assert resumed["classes"]["1"] == full["classes"]["1"] and resumed["batches"]["1"] == full["batches"]["1"]
    assert resumed["log_l"]["end"] == full["log_l"]["end"]
    assert resumed["weights"]["end"] == full["weights"]["end"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_the_weights_identical(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "WANDB_MODE": "disabled",
    }
    args = _fit_args(tmp_path / "run", tmp_path / "rec", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
                     "--trainer.devices", "2")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tailseg", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [_load(tmp_path / "rec", r) for r in (0, 1)]
    for epoch in ("0", "1"):
        assert len(ranks[0]["classes"][epoch]) == len(ranks[1]["classes"][epoch]) == 2  # 8 // (2 · 2) steps
        assert ranks[0]["classes"][epoch] == ranks[1]["classes"][epoch]  # the same class on both ranks every step
    assert ranks[0]["log_l"] == ranks[1]["log_l"] and ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["weights"]["end"] != ranks[0]["weights"]["0"]  # updates happened
