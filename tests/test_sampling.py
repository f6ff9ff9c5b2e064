"""Performance-aware sampling: probabilities, draws, shards, determinism, state and bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from tailseg.data import SegmentationDataModule, SyntheticStreets
from tailseg.data.datamodule import TransformedDataset
from tailseg.data.transforms import TrainTransform
from tailseg.resume import SeededKeys
from tailseg.sampling import PerformanceAwareSampler, inverse_iou_probabilities


def counts_table(n: int = 200, seed: int = 0) -> np.ndarray:
    """Class 0 everywhere, class 1 in half the images, class 2 in 5%, class 3 never."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n, 4), np.int64)
    counts[:, 0] = rng.integers(100, 1000, n)
    counts[rng.random(n) < 0.5, 1] = 50
    counts[rng.random(n) < 0.05, 2] = 3
    counts[0, 2] = 3
    return counts


def test_probabilities_inverse_to_iou_absent_classes_never():
    sampler = PerformanceAwareSampler(counts_table())
    np.testing.assert_allclose(sampler.class_probabilities.numpy(), [1 / 3, 1 / 3, 1 / 3, 0])  # before any update
    sampler.update(torch.tensor([0.9, 0.5, float("nan"), 0.2]))
    # scores 1 - IoU = 0.1, 0.5, 1 (NaN counts as IoU 0); class 3 absent from training: 0.
    np.testing.assert_allclose(sampler.class_probabilities.numpy(), np.array([0.1, 0.5, 1.0, 0.0]) / 1.6, rtol=1e-6)
    assert sampler.class_probabilities.sum().item() == pytest.approx(1.0)


def test_power_and_all_perfect():
    present = np.array([True, True, False])
    np.testing.assert_allclose(inverse_iou_probabilities(np.array([0.5, 0.0, 0.3]), present, 2.0), [0.2, 0.8, 0.0])
    np.testing.assert_allclose(inverse_iou_probabilities(np.array([1.0, 1.0, 0.3]), present), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(inverse_iou_probabilities(np.array([0.5, 0.0, 0.3]), present, 0.0), [0.5, 0.5, 0.0])


def test_draws_follow_mix_and_class_probabilities_and_contain_the_class():
    counts = counts_table()
    n = 40_000
    sampler = PerformanceAwareSampler(counts, mix=0.3, num_samples=n, seed=1)
    sampler.update([0.8, 0.6, 0.0, 0.5])
    draws = sampler.draw_epoch()
    index, cls = draws[:, 0].numpy(), draws[:, 1].numpy()
    driven = cls >= 0
    sd = np.sqrt(0.3 * 0.7 / n)
    assert abs(driven.mean() - 0.3) < 5 * sd
    expected = sampler.class_probabilities.numpy()
    observed = np.bincount(cls[driven], minlength=4) / driven.sum()
    assert np.abs(observed - expected).max() < 5 * np.sqrt(0.25 / driven.sum())
    assert (counts[index[driven], cls[driven]] > 0).all()  # every class-driven image contains its class
    assert observed[3] == 0
    # Uniform draws cover the images uniformly.
    hist = np.bincount(index[~driven], minlength=len(counts))
    assert hist.min() > 0


def test_shards_are_disjoint_and_form_the_global_sequence():
    counts = counts_table(101)
    full = [tuple(x) for x in PerformanceAwareSampler(counts, seed=5, num_replicas=1, rank=0)]
    shards = [list(PerformanceAwareSampler(counts, seed=5, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 101 // 3 for s in shards)
    positions = [list(range(r, 3 * 33, 3)) for r in range(3)]
    for r in range(3):
        assert shards[r] == [full[p] for p in positions[r]]  # rank r takes draws r, r+3, ...
    assert len(set(sum(positions, []))) == 99


def test_same_seed_and_epoch_same_draws_other_epoch_differs():
    counts = counts_table()
    a, b = PerformanceAwareSampler(counts, seed=3), PerformanceAwareSampler(counts, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_state_dict_round_trip():
    counts = counts_table()
    a = PerformanceAwareSampler(counts, seed=3)
    a.update([0.1, 0.2, 0.3, np.nan])
    a.set_epoch(4)
    b = PerformanceAwareSampler(counts, seed=99)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    assert torch.equal(a.class_probabilities, b.class_probabilities)


def test_epoch_draw_is_fast_enough_to_be_vectorised():
    """Shape check on a large table (the timing target lives in benchmarks/bench_sampler.py)."""
    counts = np.random.default_rng(0).integers(0, 3, (100_000, 19))
    draws = PerformanceAwareSampler(counts, seed=0).draw_epoch()
    assert draws.shape == (100_000, 2)


@pytest.mark.parametrize("mix", [-0.1, 1.5, float("nan")])
def test_bad_mix(mix):
    with pytest.raises(ValueError, match="mix"):
        PerformanceAwareSampler(counts_table(), mix=mix)


def test_bad_iou_and_counts():
    sampler = PerformanceAwareSampler(counts_table())
    with pytest.raises(ValueError, match="expected 4 per-class IoU values"):
        sampler.update([0.1, 0.2])
    with pytest.raises(ValueError, match=r"IoU must be in \[0, 1\].*1\.5"):
        sampler.update([0.1, 1.5, 0.2, 0.3])
    with pytest.raises(ValueError, match="table"):
        PerformanceAwareSampler(np.zeros(5))
    with pytest.raises(ValueError, match="non-negative"):
        PerformanceAwareSampler(-np.ones((3, 2)))


def test_class_driven_keys_crop_on_the_class():
    ds = SyntheticStreets("train", num_images=12, height=96, width=192, seed=0)
    view = TransformedDataset(ds, TrainTransform(crop_size=(32, 32), scale_range=(1.0, 1.0)))
    traffic_light = ds.class_names.index("traffic light")
    images = [i for i in range(len(ds)) if (ds.load_mask(i) == traffic_light).any()]
    assert images
    for i in images:
        for seed in range(5):
            assert (view[(i, traffic_light, seed)]["mask"] == traffic_light).any()


def test_seeded_keys_make_crops_independent_of_global_randomness():
    counts = counts_table(20)
    sampler = PerformanceAwareSampler(counts, seed=0)
    keys_a = list(SeededKeys(sampler, seed=7))
    torch.manual_seed(123)
    keys_b = list(SeededKeys(sampler, seed=7))
    assert keys_a == keys_b and all(len(k) == 3 for k in keys_a)


def test_datamodule_gives_the_sampler_its_seed():
    dm = SegmentationDataModule(
        SyntheticStreets("train", 6, 64, 64),
        train_sampler=functools.partial(PerformanceAwareSampler, mix=1.0),  # a factory as the YAML makes it
        crop_size=(32, 32),
        batch_size=2,
        num_workers=0,
        seed=11,
    )
    dm.setup("fit")
    assert dm.train_sampler.seed == 11
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)


def test_feedback_rejects_counts_that_disagree_with_the_model_and_samplers_without_update():
    from types import SimpleNamespace

    from tailseg.callbacks import ClassIoUFeedback
    from tailseg.sampling import UniformSampler

    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_sampler=PerformanceAwareSampler(counts_table())))
    with pytest.raises(ValueError, match="4 class columns, but the model has 3 classes"):
        ClassIoUFeedback().setup(trainer, SimpleNamespace(class_names=["a", "b", "c"]), "fit")
    trainer.datamodule.train_sampler = UniformSampler(counts_table())
    with pytest.raises(RuntimeError, match="needs a training sampler with update"):
        ClassIoUFeedback().setup(trainer, SimpleNamespace(class_names=["a", "b", "c", "d"]), "fit")
