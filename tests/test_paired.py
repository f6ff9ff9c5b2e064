"""Paired statistics: Holm, the paired bootstrap against a naive loop, pairing, zero Δ, P(better), two levels."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from tailseg.metrics.bootstrap import iou_from_counts, mean_iou, percentile_interval, resample_weights
from tailseg.metrics.paired import (
    bootstrap_p,
    draw,
    holm,
    paired_bootstrap,
    prob_better,
    seed_and_image_interval,
)


def counts(rng: np.random.Generator, n: int = 40, classes: int = 4, quality: float = 0.6) -> tuple:
    union = rng.integers(50, 200, size=(n, classes))
    intersection = (union * np.clip(quality + rng.normal(0, 0.15, size=(n, classes)), 0, 1)).astype(np.int64)
    return intersection, union


def test_holm_by_hand_and_as_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    out = holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.04])


def test_paired_bootstrap_equals_a_naive_loop():
    rng = np.random.default_rng(1)
    method = [counts(rng, quality=0.65) for _ in range(3)]
    reference = [counts(rng) for _ in range(3)]
    result = paired_bootstrap(method, reference, resamples=200, seed=7)
    seeds, weights = draw(3, 40, 200, 7)
    per_class, miou = [], []
    for r in range(200):
        deltas, mdeltas = [], []
        for j in range(3):
            s, w = seeds[r, j], weights[r]
            a = iou_from_counts(w @ method[s][0], w @ method[s][1])
            b = iou_from_counts(w @ reference[s][0], w @ reference[s][1])
            deltas.append(a - b)
            mdeltas.append(mean_iou(a) - mean_iou(b))
        per_class.append(np.mean(deltas, axis=0))
        miou.append(np.mean(mdeltas))
    per_class, miou = np.array(per_class), np.array(miou)
    np.testing.assert_allclose(result.delta_ci, percentile_interval(per_class))
    np.testing.assert_allclose(result.miou_ci, percentile_interval(miou))
    np.testing.assert_allclose(result.p, bootstrap_p(per_class))
    below, above = (1 + (miou <= 0).sum()) / 201, (1 + (miou >= 0).sum()) / 201
    assert result.miou_p == pytest.approx(min(1.0, 2 * min(below, above)))
    whole = [
        iou_from_counts(m[0].sum(0), m[1].sum(0)) - iou_from_counts(b[0].sum(0), b[1].sum(0))
        for m, b in zip(method, reference, strict=True)
    ]
    np.testing.assert_allclose(result.delta, np.mean(whole, axis=0))
    assert result.pairs == 3 and result.resamples == 200


def test_pairing_narrows_the_interval():
    """method = reference + a constant per-image shift: the paired Δ hardly varies, the unpaired one does."""
    rng = np.random.default_rng(2)
    union = rng.integers(50, 400, size=(60, 3))
    intersection = (union * rng.uniform(0.1, 0.9, size=(60, 3))).astype(np.int64)
    shifted = np.minimum(intersection + 10, union)
    paired = paired_bootstrap([(shifted, union)], [(intersection, union)], resamples=500, seed=0)
    # unpaired: the method's and the reference's images drawn independently
    weights = resample_weights(60, 1000, np.random.default_rng(0)).reshape(500, 2, 60)
    a = mean_iou(iou_from_counts(weights[:, 0] @ shifted, weights[:, 0] @ union))
    b = mean_iou(iou_from_counts(weights[:, 1] @ intersection, weights[:, 1] @ union))
    unpaired = percentile_interval(a - b)
    assert (paired.miou_ci[1] - paired.miou_ci[0]) < 0.25 * (unpaired[1] - unpaired[0])
    assert paired.miou_ci[0] > 0 and paired.miou_p < 0.05


def test_identical_counts_give_zero_and_p_one():
    rng = np.random.default_rng(3)
    same = [counts(rng) for _ in range(2)]
    result = paired_bootstrap(same, same, resamples=100, seed=0)
    np.testing.assert_array_equal(result.delta_ci, np.zeros((2, 4)))
    np.testing.assert_array_equal(result.miou_ci, [0.0, 0.0])
    assert (result.p == 1.0).all() and result.miou_p == 1.0 and (holm(result.p) >= 0.05).all()


def test_prob_better_by_hand():
    assert prob_better([50.0, 52.0, 49.0], [48.0, 52.0, 51.0]) == (pytest.approx((1 + 0.5 + 0) / 3), None)
    assert prob_better([50.0, 52.0, 53.0], [48.0, 51.0, 51.0]) == (1.0, None)
    value, reason = prob_better([50.0, 52.0], [48.0, 51.0])
    assert value is None and reason == "2 seed pairs; needs 3"
    by_seed = prob_better({0: 50.0, 1: 52.0, 2: 49.0, 9: 1.0}, {2: 51.0, 1: 52.0, 0: 48.0})  # seeds paired by number
    assert by_seed == (pytest.approx(0.5), None)
    with pytest.raises(ValueError):
        prob_better([1.0, 2.0, 3.0], [1.0, 2.0])


def test_two_levels_wider_than_images_when_seeds_disagree():
    rng = np.random.default_rng(4)
    seeds = [counts(rng, quality=q) for q in (0.4, 0.6, 0.8)]
    both = seed_and_image_interval(seeds, resamples=400, seed=0)
    one = seed_and_image_interval(seeds[1:2], resamples=400, seed=0)
    assert both.seeds == 3 and one.seeds == 1
    assert (both.miou_ci[1] - both.miou_ci[0]) > 2 * (one.miou_ci[1] - one.miou_ci[0])
    assert both.miou_ci[0] < both.miou < both.miou_ci[1]
    assert one.per_image_miou_ci[0] <= one.per_image_miou <= one.per_image_miou_ci[1]
    whole = iou_from_counts(seeds[1][0].sum(0), seeds[1][1].sum(0))
    np.testing.assert_allclose(one.per_class_iou, whole)
    assert one.miou == pytest.approx(float(mean_iou(whole)))


def test_repeating_one_evaluation_as_more_seeds_does_not_narrow_its_intervals():
    """Seeds are evaluated on the same images, so the test set's error is common to them: k identical evaluations
    carry the information of one and get exactly its intervals (one image draw per resample for every seed)."""
    rng = np.random.default_rng(6)
    one, reference = counts(rng, quality=0.65), counts(rng)
    single = seed_and_image_interval([one], resamples=300, seed=3)
    paired_single = paired_bootstrap([one], [reference], resamples=300, seed=3)
    for k in (2, 5):
        repeated = seed_and_image_interval([one] * k, resamples=300, seed=3)
        np.testing.assert_array_equal(repeated.miou_ci, single.miou_ci)
        np.testing.assert_array_equal(repeated.per_class_iou_ci, single.per_class_iou_ci)
        np.testing.assert_array_equal(repeated.per_image_miou_ci, single.per_image_miou_ci)
        paired = paired_bootstrap([one] * k, [reference] * k, resamples=300, seed=3)
        np.testing.assert_array_equal(paired.miou_ci, paired_single.miou_ci)
        np.testing.assert_array_equal(paired.delta_ci, paired_single.delta_ci)
        assert paired.miou_p == paired_single.miou_p


def test_no_true_difference_is_marked_about_as_often_as_the_level_with_many_seeds():
    """A method that differs from the reference image by image (the same way in every seed) with no difference on
    average over the population of images, plus training noise per seed: over 200 simulated test sets of 40
    images, 5 seed pairs each, ΔmIoU's 95% interval excludes 0 in about 5% of them (an image draw per seed would
    count the test set's error once per seed and mark about 40%)."""
    rng = np.random.default_rng(10)
    n, classes, seeds, trials = 40, 4, 5, 200
    marked = 0
    for trial in range(trials):
        union = rng.integers(100, 300, size=(n, classes))
        quality = rng.uniform(0.4, 0.6, size=(n, classes))
        shift = rng.normal(0.0, 0.08, size=(n, classes))  # the method's difference on each image, mean 0

        def evaluation(q, union=union):
            noisy = q + rng.normal(0.0, 0.01, size=(n, classes))  # this seed's training noise
            return (union * noisy).round().astype(np.int64), union

        method = [evaluation(quality + shift) for _ in range(seeds)]
        reference = [evaluation(quality) for _ in range(seeds)]
        result = paired_bootstrap(method, reference, resamples=400, seed=trial)
        marked += bool(result.miou_p < 0.05)
    assert 0.01 <= marked / trials <= 0.12


def test_groups_and_bad_input():
    rng = np.random.default_rng(5)
    a, b = counts(rng), counts(rng)
    result = paired_bootstrap([a], [b], resamples=50, seed=0, groups=["v1"] * 20 + ["v2"] * 20)
    assert result.delta_ci.shape == (2, 4)
    with pytest.raises(ValueError, match="seeds"):
        paired_bootstrap([a, a], [b], resamples=10, seed=0)
    with pytest.raises(ValueError, match="differ"):
        paired_bootstrap([a], [(b[0][:10], b[1][:10])], resamples=10, seed=0)


def test_class_subset_means_equal_a_naive_loop():
    """Δ of the mean IoU over fixed class subsets, from the draws of the per-class Δ, against a loop by hand; class 3
    is absent (union 0) from all but 2 images of the reference's seed 0 and the method's seed 1, so some drawn pairs
    have no IoU of it on one side: that side's subset mean leaves it out (as mIoU), a pair with no IoU in the whole
    subset on a side is left out of the resample's mean."""
    rng = np.random.default_rng(8)
    method = [counts(rng, quality=0.65) for _ in range(3)]
    reference = [counts(rng) for _ in range(3)]
    for intersection, union in (reference[0], method[1]):
        intersection[:38, 3] = 0
        union[:38, 3] = 0
    subsets = {"low": [0, 3], "absent": [3], "all": [0, 1, 2, 3]}
    result = paired_bootstrap(method, reference, resamples=300, seed=11, subsets=subsets)
    plain = paired_bootstrap(method, reference, resamples=300, seed=11)
    np.testing.assert_array_equal(result.miou_ci, plain.miou_ci)  # the same draws as without subsets
    np.testing.assert_array_equal(result.delta_ci, plain.delta_ci)
    seeds, weights = draw(3, 40, 300, 11)
    left_out = 0
    for name, classes in subsets.items():
        samples = []
        for r in range(300):
            diffs = []
            for j in range(3):
                s, w = seeds[r, j], weights[r]
                a = iou_from_counts(w @ method[s][0], w @ method[s][1])[classes]
                b = iou_from_counts(w @ reference[s][0], w @ reference[s][1])[classes]
                if np.isnan(a).all() or np.isnan(b).all():
                    left_out += 1
                    continue
                diffs.append(np.mean(a[~np.isnan(a)]) - np.mean(b[~np.isnan(b)]))
            samples.append(np.mean(diffs) if diffs else np.nan)
        samples = np.array(samples)
        subset = result.subsets[name]
        assert subset.classes == tuple(classes)
        np.testing.assert_allclose(subset.ci, percentile_interval(samples))
        assert subset.p == pytest.approx(float(bootstrap_p(samples)))
        whole = []
        for m, b in zip(method, reference, strict=True):
            a_iou = iou_from_counts(m[0].sum(0), m[1].sum(0))[classes]
            b_iou = iou_from_counts(b[0].sum(0), b[1].sum(0))[classes]
            whole.append(np.nanmean(a_iou) - np.nanmean(b_iou))
        assert subset.delta == pytest.approx(np.mean(whole))
    assert left_out > 0  # the absent class was left out of some pairs
    np.testing.assert_allclose(result.subsets["all"].ci, result.miou_ci)  # every class: ΔmIoU
    assert result.subsets["all"].p == pytest.approx(result.miou_p)
    assert result.subsets["all"].delta == pytest.approx(result.miou)
    assert plain.subsets == {}


def test_bad_class_subsets():
    rng = np.random.default_rng(9)
    a, b = counts(rng), counts(rng)
    for bad in ([], [0, 0], [4], [-1]):
        with pytest.raises(ValueError, match="subset"):
            paired_bootstrap([a], [b], resamples=10, seed=0, subsets={"bad": bad})
