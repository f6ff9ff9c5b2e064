"""Bootstrap intervals of IoU: the vectorised resampling against a naive loop with the same draws, the coverage
of the 95% interval on simulated test sets with a known IoU, and the group (cluster) bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from tailseg.metrics.bootstrap import (
    iou_from_counts,
    iou_intervals,
    mean_iou,
    per_image_miou,
    percentile_interval,
    resample_weights,
    resampled_iou,
)


def counts(rng: np.random.Generator, n: int, p: np.ndarray, pixels: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(intersection, union) of n images and C classes: union ~ Poisson(pixels), intersection ~ Binomial(union, p)
    with p of shape (n, C) or (C,): the true data-set IoU of class c is E[p_c] (ratio of expectations)."""
    p = np.broadcast_to(p, (n, np.shape(p)[-1]))
    union = rng.poisson(pixels, size=p.shape)
    return rng.binomial(union, p), union


def test_iou_of_hand_worked_counts():
    intersection = np.array([[3, 0, 0], [1, 0, 2]])
    union = np.array([[4, 0, 1], [4, 0, 2]])
    np.testing.assert_allclose(iou_from_counts(intersection.sum(0), union.sum(0)), [0.5, np.nan, 2 / 3])
    np.testing.assert_allclose(mean_iou(iou_from_counts(intersection.sum(0), union.sum(0))), (0.5 + 2 / 3) / 2)
    # image 0: classes 0 (3/4) and 2 (0/1) present; image 1: 0 (1/4) and 2 (2/2)
    np.testing.assert_allclose(per_image_miou(intersection, union), [(0.75 + 0) / 2, (0.25 + 1) / 2])


def test_the_vectorised_resampling_equals_a_naive_loop_with_the_same_draws():
    rng = np.random.default_rng(1)
    intersection, union = counts(rng, 37, rng.uniform(0.1, 0.9, 5))
    union[:, 4] = 0  # a class absent everywhere
    intersection[:, 4] = 0
    union[::3, 3] = intersection[::3, 3] = 0  # a class absent from some images
    weights = resample_weights(37, 50, np.random.default_rng(7))
    fast = resampled_iou(weights, intersection, union)
    draws = np.random.default_rng(7).multinomial(37, np.full(37, 1 / 37), size=50)
    for r in range(50):
        chosen = np.repeat(np.arange(37), draws[r])  # the images of resample r, with repeats
        i, u = intersection[chosen].sum(0), union[chosen].sum(0)
        expected = [i[c] / u[c] if u[c] else np.nan for c in range(5)]
        np.testing.assert_allclose(fast[r], expected)
    assert np.isnan(fast[:, 4]).all() and not np.isnan(fast[:, :4]).any()


def test_group_weights_weigh_each_image_by_its_group():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = resample_weights(6, 200, np.random.default_rng(0), groups)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    assert (weights[:, [0, 2, 3]].sum(1) == 3).all()  # 3 groups drawn per resample
    with pytest.raises(ValueError, match="one group"):
        resample_weights(3, 10, np.random.default_rng(0), ["v", "v", "v"])
    with pytest.raises(ValueError, match="2 group labels for 3 images"):
        resample_weights(3, 10, np.random.default_rng(0), ["v", "w"])


def test_percentile_interval_leaves_out_nan_and_keeps_all_nan():
    samples = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    low_high = percentile_interval(samples, level=0.5)
    np.testing.assert_allclose(low_high[:, 0], [1.5, 2.5])
    assert np.isnan(low_high[:, 1]).all()


def test_the_report_figures_are_reproducible_and_bracket_the_point_estimate():
    rng = np.random.default_rng(3)
    intersection, union = counts(rng, 60, np.array([0.8, 0.5, 0.2]))
    a = iou_intervals(intersection, union, resamples=500, seed=11)
    b = iou_intervals(intersection, union, resamples=500, seed=11)
    c = iou_intervals(intersection, union, resamples=500, seed=12)
    np.testing.assert_array_equal(a["miou_ci"], b["miou_ci"])
    assert not np.array_equal(a["miou_ci"], c["miou_ci"])
    assert a["miou_ci"][0] < a["miou"] < a["miou_ci"][1]
    assert (a["per_class_iou_ci"][0] < a["per_class_iou"]).all() and (
        a["per_class_iou"] < a["per_class_iou_ci"][1]
    ).all()
    assert a["per_image_miou_ci"][0] < a["per_image_miou"] < a["per_image_miou_ci"][1]
    np.testing.assert_allclose(a["miou"], mean_iou(iou_from_counts(intersection.sum(0), union.sum(0))))


def coverage(sets: int, make, groups=None, resamples: int = 1000) -> np.ndarray:
    """Share of `sets` simulated test sets whose 95% interval covers the true IoU, per class and for the mIoU."""
    rng = np.random.default_rng(2024)
    hits = []
    for s in range(sets):
        (intersection, union), truth = make(rng)
        result = iou_intervals(intersection, union, resamples=resamples, seed=s, groups=groups)
        low, high = result["per_class_iou_ci"]
        mlow, mhigh = result["miou_ci"]
        hits.append([*((low <= truth) & (truth <= high)), mlow <= truth.mean() <= mhigh])
    return np.mean(hits, axis=0)


@pytest.mark.slow
def test_the_95_interval_covers_the_true_iou_of_independent_images():
    """200 test sets of 80 images; image-level p ~ Beta around the class means: the truth is E[p]."""
    means = np.array([0.85, 0.55, 0.25])

    def make(rng):
        p = rng.beta(20 * means, 20 * (1 - means), size=(80, 3))
        return counts(rng, 80, p), means

    covered = coverage(200, make)
    assert ((0.90 <= covered) & (covered <= 0.99)).all(), covered


@pytest.mark.slow
def test_frames_of_one_video_need_the_group_bootstrap():
    """20 videos of 8 frames: frames share their video's p. Resampling images ignores that and covers the truth far
    less often than 95%; resampling videos covers it as promised."""
    means = np.array([0.7, 0.4])
    groups = np.repeat(np.arange(20), 8)

    def make(rng):
        video = rng.beta(6 * means, 6 * (1 - means), size=(20, 2))
        p = np.clip(video[groups] + rng.normal(0, 0.01, size=(160, 2)), 0.01, 0.99)
        return counts(rng, 160, p), means

    by_image = coverage(200, make)
    by_video = coverage(200, make, groups=groups)
    assert (by_image < 0.85).all(), by_image
    assert ((0.88 <= by_video) & (by_video <= 0.99)).all(), by_video
