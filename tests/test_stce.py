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
from tailseg.data.base import SegmentationDataset
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


START = [0.0, 0.0, 0.0, -INF]  # the sampler's start: L̃ = 1 for the present classes, 0 for the absent class 3


def test_update_matches_hand_computation():
    """γ = 0.5, t = 1, from the start L̃ = 1; class 0 sees the batch losses 1 then 2, then class 1 sees 1."""
    log_l = torch.tensor(START, dtype=torch.float64)
    log_l = tilted_class_update(log_l, 0, 1.0, t=1.0, gamma=0.5)
    assert log_l[0].item() == pytest.approx(math.log(0.5 + 0.5 * math.e), rel=1e-15)  # L̃_0 = 0.5 · 1 + 0.5 · e¹
    log_l = tilted_class_update(log_l, 0, 2.0, t=1.0, gamma=0.5)
    l0 = 0.5 * (0.5 + 0.5 * math.e) + 0.5 * math.e**2  # L̃_0 = 0.5 · L̃_0 + 0.5 · e²
    assert log_l[0].item() == pytest.approx(math.log(l0), rel=1e-15)
    assert log_l[1:].tolist() == [0.0, 0.0, -INF]
    np.testing.assert_allclose(tilted_class_weights(log_l, PRESENT), [l0 / (l0 + 2), 1 / (l0 + 2), 1 / (l0 + 2), 0],
                               rtol=1e-12)  # fmt: skip
    log_l = tilted_class_update(log_l, 1, 1.0, t=1.0, gamma=0.5)
    l1 = 0.5 + 0.5 * math.e
    w = tilted_class_weights(log_l, PRESENT)
    np.testing.assert_allclose(w, [l0 / (l0 + l1 + 1), l1 / (l0 + l1 + 1), 1 / (l0 + l1 + 1), 0], rtol=1e-12)
    assert tilted_class_update(log_l, 2, 3.0, t=2.0, gamma=1.0)[2].item() == pytest.approx(6.0)  # γ = 1: t · L_B
    assert tilted_class_update(log_l, 3, 1.0, t=1.0, gamma=0.5)[3].item() == pytest.approx(math.log(0.5 * math.e))
    with pytest.raises(ValueError, match="every present class"):  # Σ L̃ = 0: the paper's start, w undefined
        tilted_class_weights(torch.full((4,), -INF), PRESENT)


def test_update_returns_a_new_tensor():
    log_l = torch.zeros(3, dtype=torch.float64)
    out = tilted_class_update(log_l, 1, 1.0, 1.0, 0.1)
    assert log_l.tolist() == [0.0, 0.0, 0.0] and out[1].item() == pytest.approx(math.log(0.9 + 0.1 * math.e))


@pytest.mark.parametrize("tilted_loss", [500.0, 5000.0])
def test_no_overflow_at_large_tilted_loss(tilted_loss):
    log_l = torch.tensor(START, dtype=torch.float64)
    log_l = tilted_class_update(log_l, 0, 1.0, t=1.0, gamma=0.1)
    log_l = tilted_class_update(log_l, 1, tilted_loss / 10, t=10.0, gamma=0.1)
    log_l = tilted_class_update(log_l, 1, tilted_loss / 10, t=10.0, gamma=0.1)
    assert torch.isfinite(log_l[:3]).all()
    assert log_l[1].item() == pytest.approx(math.log(0.19) + tilted_loss, rel=1e-12)  # (1 - 0.9²) e^{t L}, 1 lost
    w = tilted_class_weights(log_l, PRESENT)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0)
    assert w[0] < 1e-100 and w[2] < 1e-100 and w[1].item() == pytest.approx(1.0) and w[3] == 0


def test_initialisation():
    """The start is L̃ = 1 = e^{t · 0} (log L̃ = 0) for every present class, L̃ = 0 for the absent class 3."""
    sampler = TiltedClassSampler(counts_table(), batch_size=2)
    assert sampler.log_l.tolist() == START
    assert sampler.weights.tolist() == [1 / 3, 1 / 3, 1 / 3, 0.0]  # uniform over the present classes, exactly


@pytest.mark.parametrize("c, loss, t, gamma", [(2, 0.5, 1.0, 0.1), (1, 2.0, 1.0, 0.1), (0, 3.7, 0.1, 0.1),
                                               (1, 1.3, -1.0, 0.25), (2, 80.0, 10.0, 0.1)])  # fmt: skip
def test_the_first_update_from_the_start(c, loss, t, gamma):
    """One update of class c: log L̃_c = log((1 − γ) + γ e^{t L}) (float64, by hand); the others stay at 0."""
    sampler = TiltedClassSampler(counts_table(), batch_size=2)
    sampler.update(c, loss, t=t, gamma=gamma)
    if t * loss < 700:
        expected = math.log((1 - gamma) + gamma * math.exp(t * loss))
    else:  # e^{t L} overflows float64: log((1 − γ) + γ e^{tL}) = t L + log γ + log1p((1 − γ) e^{-tL} / γ)
        expected = t * loss + math.log(gamma) + math.log1p((1 - gamma) * math.exp(-t * loss) / gamma)
    assert sampler.log_l[c].item() == pytest.approx(expected, rel=1e-14, abs=1e-15)
    others = [v for k, v in enumerate(sampler.log_l.tolist()) if k != c]
    assert others == [v for k, v in enumerate(START) if k != c]
    z = np.array(START[:3])
    z[c] = expected
    e = np.exp(z - z.max())
    np.testing.assert_allclose(sampler.weights, [*(e / e.sum()), 0], rtol=1e-12)


def test_equal_losses_keep_the_weights_uniform():
    """Every class fed the same batch loss: uniform at step 0; uniform whenever the classes have been updated
    equally often (each round of one update per class); uniform to 1e-12 after many steps drawn by the sampler
    itself, once the start's share (1 − γ)^k has decayed; and at every step when that loss is 0 (e^{t · 0} = 1
    is the start)."""
    uniform = [1 / 3, 1 / 3, 1 / 3, 0.0]
    rounds = TiltedClassSampler(counts_table(), batch_size=2)
    assert rounds.weights.tolist() == uniform
    for _ in range(50):
        for c in (2, 0, 1):
            rounds.update(c, 1.7, t=1.0, gamma=0.1)
        np.testing.assert_allclose(rounds.weights, uniform, rtol=0, atol=1e-15)
    drawn = TiltedClassSampler(counts_table(), batch_size=1, num_batches=3000, seed=8)
    classes = []
    for batch in drawn:
        classes.append(batch[0][1])
        drawn.update(batch[0][1], 1.7, t=1.0, gamma=0.1)
    assert min(np.bincount(classes, minlength=3)[:3]) > 300  # (1 − γ)^300 (e^1.7 − 1) < 1e-12
    np.testing.assert_allclose(drawn.weights, uniform, rtol=0, atol=1e-12)
    zero = TiltedClassSampler(counts_table(), batch_size=1, num_batches=200, seed=9)
    for batch in zero:
        zero.update(batch[0][1], 0.0, t=1.0, gamma=0.1)
        np.testing.assert_allclose(zero.weights, uniform, rtol=0, atol=1e-12)


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


def test_a_state_of_the_previous_start_loads_only_if_every_present_class_was_updated():
    """The previous start kept classes not yet updated at log L̃ = −inf and weighted them as the hardest updated
    one; that rule is gone, so such a state is refused with a message, and the sampler keeps its own state. A
    state of the previous start whose present classes were all updated continues with the same weights."""
    old = {"seed": 3, "epoch": 2, "log_l": [0.4, -INF, math.log(0.1) + 2.0, -INF], "updates": 1, "recent": [],
           "lag": 0}  # fmt: skip
    sampler = TiltedClassSampler(counts_table(), batch_size=2, seed=5)
    with pytest.raises(ValueError, match=r"-inf for the present class\(es\) \[1\]: .*previous start"):
        sampler.load_state_dict(old)
    recent = {**old, "log_l": [0.4, 0.3, 0.2, -INF], "recent": [[0.4, -INF, 0.2, -INF]], "lag": 2}
    with pytest.raises(ValueError, match="previous start"):
        TiltedClassSampler(counts_table(), batch_size=2, lag=2).load_state_dict(recent)
    assert (sampler.seed, sampler.epoch, sampler.log_l.tolist()) == (5, 0, START)  # untouched
    seen = {**old, "log_l": [0.4, 1.1, math.log(0.1) + 2.0, -INF]}
    sampler.load_state_dict(seen)
    e = np.exp(seen["log_l"][:3])
    np.testing.assert_allclose(sampler.weights, [*(e / e.sum()), 0], rtol=1e-12)
    assert (sampler.seed, sampler.epoch) == (3, 2)


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
    assert sampler.log_l.tolist() == START  # unchanged


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


class CornerImages(SegmentationDataset):
    """64 x 64 images of class 0 with class 1 in the 4 x 4 top-left corner (class 2 nowhere)."""

    def __init__(self, n: int = 4) -> None:
        super().__init__(("ground", "corner", "never"))
        self.n = n

    def __len__(self) -> int:
        return self.n

    def load_image(self, index: int) -> np.ndarray:
        return np.full((64, 64, 3), 40 * index, np.uint8)

    def load_mask(self, index: int) -> np.ndarray:
        mask = np.zeros((64, 64), np.uint8)
        mask[:4, :4] = 1
        return mask

    def sample_name(self, index: int) -> str:
        return f"corner_{index}"

    def cache_key(self) -> str:
        return f"corner-{self.n}"


def _corner_batches(crop_on_class: bool, steps: int = 30) -> tuple[TiltedClassSampler, list[dict]]:
    sampler = functools.partial(TiltedClassSampler, num_batches=steps, crop_on_class=crop_on_class)
    dm = SegmentationDataModule(CornerImages(), train_sampler=sampler, crop_size=(32, 32), scale_range=(1.0, 1.0),
                                batch_size=2, num_workers=0, seed=13, stats_cache_dir="")  # fmt: skip
    dm.setup("fit")
    focus_on(dm.train_sampler, 1)  # every step draws class 1, the corner
    return dm.train_sampler, list(dm.train_dataloader())


def test_crop_on_class_false_crops_uniformly_but_the_batch_names_the_drawn_class():
    """Class 1 fills a 4 x 4 corner of 64 x 64 images, crops are 32 x 32: placed on the class, every crop holds
    some of it; uniform (the paper's form), about (4 / 33)² = 1.5% do; the batches name class 1 either way."""
    on_class, uniform = _corner_batches(True)[1], _corner_batches(False)[1]
    for batches in (on_class, uniform):
        assert len(batches) == 30 and all(batch["class"].tolist() == [1, 1] for batch in batches)
    holds = [bool((mask == 1).any()) for batch in on_class for mask in batch["mask"]]
    assert all(holds)
    holds = [bool((mask == 1).any()) for batch in uniform for mask in batch["mask"]]
    assert sum(holds) <= len(holds) // 4, sum(holds)  # 60 crops: expected 0.9 with the corner, at most 15 allowed
    assert list(SeededKeys(_corner_batches(False)[0], seed=7))[0][0][3] is False  # (index, class, seed, False)


def test_the_feedback_updates_the_drawn_class_of_a_uniformly_cropped_batch():
    sampler, batches = _corner_batches(False, steps=2)
    sampler.log_l = torch.tensor([0.0, 0.0, -INF], dtype=torch.float64)  # the start (class 2 is absent)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_sampler=sampler), accumulate_grad_batches=1,
                              global_step=0)  # fmt: skip
    module = SimpleNamespace(all_gather=lambda x: x, log=lambda *args, **kwargs: None,
                             class_names=["ground", "corner", "never"])  # fmt: skip
    loss = torch.tensor(0.8, dtype=torch.float64)
    TiltedClassFeedback(t=1.0, gamma=0.1).on_train_batch_end(trainer, module, loss, batches[0], 0)
    assert sampler.log_l.tolist() == [0.0, pytest.approx(math.log(0.9 + 0.1 * math.exp(0.8)), rel=1e-15), -INF]


def test_crop_on_class_must_be_a_bool():
    with pytest.raises(ValueError, match="crop_on_class must be true or false, got 'no'"):
        TiltedClassSampler(counts_table(), batch_size=2, crop_on_class="no")


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
    drawn = {c[0] for e in ("0", "1") for c in rec["classes"][e]}
    end_log_l = np.array(rec["log_l"]["end"])
    assert (np.isfinite(end_log_l) == present).all()  # L̃ = 0 only for the absent classes
    assert all(end_log_l[c] == 0.0 for c in range(len(present)) if present[c] and c not in drawn)  # at the start
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
