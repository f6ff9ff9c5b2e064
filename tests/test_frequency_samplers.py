"""Rare-class sampling (DAFormer) and repeat-factor sampling (LVIS): distributions, the sampler contract, bad input."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from tailseg.data import SegmentationDataModule, SyntheticStreets
from tailseg.sampling import RareClassSampler, RepeatFactorSampler, rare_class_probabilities, repeat_factors


def counts_table() -> np.ndarray:
    """8 images, 4 classes: class 0 everywhere (large), class 1 in images 0-3, class 2 only 2 pixels in image 5
    and 40 in image 6, class 3 never."""
    counts = np.zeros((8, 4), np.int64)
    counts[:, 0] = 1000
    counts[:4, 1] = 100
    counts[5, 2], counts[6, 2] = 2, 40
    return counts


def test_rare_class_probabilities_hand_worked():
    counts = counts_table()
    share = np.array([8000, 400, 42, 0]) / 8442
    expected = np.exp((1 - share[:3]) / 0.1)
    expected = np.append(expected / expected.sum(), 0.0)
    np.testing.assert_allclose(rare_class_probabilities(counts.sum(0), counts.sum(0) > 0, 0.1), expected, rtol=1e-12)
    # A tiny temperature does not overflow: the rarest present class takes (almost) every draw.
    p = rare_class_probabilities(counts.sum(0).astype(float), counts.sum(0) > 0, 1e-4)
    assert np.isfinite(p).all() and p[2] == pytest.approx(1.0) and p[3] == 0.0


def test_rare_class_draws_follow_the_distribution_and_hold_enough_pixels():
    counts = counts_table()
    n = 30_000
    sampler = RareClassSampler(counts, temperature=0.5, min_pixels=10, num_samples=n, seed=2)
    draws = sampler.draw_epoch().numpy()
    index, cls = draws[:, 0], draws[:, 1]
    observed = np.bincount(cls, minlength=4) / n
    expected = sampler.class_probabilities.numpy()
    assert np.abs(observed - expected).max() < 5 * math.sqrt(0.25 / n)
    assert observed[3] == 0
    assert (counts[index, cls] >= 10).all()  # image 5 (2 pixels of class 2) is never drawn for class 2
    assert set(index[cls == 2]) == {6} and set(index[cls == 1]) == {0, 1, 2, 3}


def test_rare_class_falls_back_to_any_image_when_none_has_enough_pixels():
    counts = counts_table()
    draws = RareClassSampler(counts, min_pixels=500, num_samples=2000, seed=0).draw_epoch().numpy()
    # class 1 (100 px) and class 2 (<= 40 px) have no image with 500 pixels: all images holding them qualify
    assert set(draws[draws[:, 1] == 2, 0]) == {5, 6}
    assert set(draws[draws[:, 1] == 1, 0]) == {0, 1, 2, 3}


def test_repeat_factors_hand_worked():
    counts = counts_table()
    # image shares f = (1, 0.5, 0.25, 0); t = 1: class factors (1, sqrt 2, 2); image 4 holds only class 0
    np.testing.assert_allclose(repeat_factors(counts, 1.0), [math.sqrt(2)] * 4 + [1.0, 2.0, 2.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(repeat_factors(np.zeros((2, 3), np.int64) + [[1, 0, 0]], 0.5), [1.0, 1.0])


def test_repeat_factor_epochs_repeat_each_image_by_its_factor():
    counts = counts_table()
    counts[:4, 1] = 0  # factors now exactly (1, 1, 1, 1, 1, 2, 2, 1): no stochastic rounding
    sampler = RepeatFactorSampler(counts, threshold=1.0, seed=4)
    assert len(sampler) == 10
    for epoch in range(3):
        sampler.set_epoch(epoch)
        np.testing.assert_array_equal(np.bincount(list(sampler), minlength=8), [1, 1, 1, 1, 1, 2, 2, 1])
    # Fractional factors: each image's share of the draws over many epochs is r_i / sum(r).
    sampler = RepeatFactorSampler(counts_table(), threshold=1.0, seed=4)
    assert len(sampler) == round(4 * math.sqrt(2) + 6)
    seen = np.zeros(8)
    for epoch in range(400):
        sampler.set_epoch(epoch)
        seen += np.bincount(sampler.draw_epoch().numpy(), minlength=8)
    factors = repeat_factors(counts_table(), 1.0)
    np.testing.assert_allclose(seen / seen.sum(), factors / factors.sum(), atol=0.01)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(functools.partial(RareClassSampler, temperature=0.5), id="rare-class"),
        pytest.param(functools.partial(RepeatFactorSampler, threshold=1.0), id="repeat-factor"),
    ],
)
def test_sampler_contract_shards_determinism_state(make):
    counts = np.tile(counts_table(), (5, 1))
    full = list(make(counts, seed=5, num_replicas=1, rank=0))
    shards = [list(make(counts, seed=5, num_replicas=3, rank=r)) for r in range(3)]
    for r in range(3):
        assert shards[r] == full[r : 3 * len(shards[r]) : 3]  # rank r takes draws r, r + 3, ...
    a, b = make(counts, seed=5), make(counts, seed=99)
    a.set_epoch(3)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


@pytest.mark.parametrize(
    "make, field",
    [
        pytest.param(functools.partial(RareClassSampler, temperature=0.0), "temperature", id="rare-T-zero"),
        pytest.param(functools.partial(RareClassSampler, temperature=float("nan")), "temperature", id="rare-T-nan"),
        pytest.param(functools.partial(RareClassSampler, min_pixels=0), "min_pixels", id="rare-min-pixels"),
        pytest.param(functools.partial(RepeatFactorSampler, threshold=-1.0), "threshold", id="repeat-threshold"),
    ],
)
def test_bad_arguments_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make(counts_table())


def test_rare_class_crops_land_on_the_class_through_the_datamodule():
    train = SyntheticStreets("train", 12, 96, 192, seed=0)
    dm = SegmentationDataModule(
        train,
        train_sampler=functools.partial(RareClassSampler, temperature=0.01, min_pixels=20),
        crop_size=(32, 32),
        scale_range=(1.0, 1.0),
        batch_size=4,
        num_workers=0,
        seed=3,
        stats_cache_dir="",
    )
    dm.setup("fit")
    keys = list(dm.train_sampler)
    batches = list(dm.train_dataloader())
    masks = torch.cat([b["mask"] for b in batches])
    assert len(masks) == len(keys) == len(train)
    for (_, cls), mask in zip(keys, masks, strict=True):
        assert (mask == cls).any()  # the crop of every draw shows the class it was drawn for
