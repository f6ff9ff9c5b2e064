"""Baseline losses (median frequency CE, class-balanced CE, focal, bootstrapped CE, OHEM) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailseg.losses.bootstrap import BootstrappedCrossEntropy, bootstrapped_cross_entropy
from tailseg.losses.ce import CrossEntropy
from tailseg.losses.class_balanced import ClassBalancedCrossEntropy, effective_number_weights
from tailseg.losses.focal import FocalLoss, focal_loss, inverse_frequency_weights
from tailseg.losses.ohem import OhemCrossEntropy
from tailseg.losses.weighted_ce import MedianFrequencyCrossEntropy, median_frequency_weights

IGNORE = 255

# One image, C=3, H=1, W=4; pixel 2 is ignored.
LOGITS = [[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0], [0.5, -1.0, 2.0]]
LABELS = [0, 1, IGNORE, 2]

# 3 images x 4 classes; class 3 never appears.
COUNTS = [[10, 0, 5, 0], [20, 10, 0, 0], [30, 10, 20, 0]]


def as_inputs(logits_rows, labels, requires_grad=False):
    """(W, C) rows and W labels of one image -> logits (1, C, 1, W), target (1, 1, W)."""
    logits = torch.tensor(logits_rows, dtype=torch.float32).T.reshape(1, len(logits_rows[0]), 1, len(labels))
    return logits.clone().requires_grad_(requires_grad), torch.tensor(labels).reshape(1, 1, len(labels))


def softmax_prob(row, label):
    """p_label = exp(z_label) / sum_c exp(z_c), in float64."""
    return math.exp(row[label]) / sum(math.exp(z) for z in row)


def hand_ce(rows, labels):
    """-log p_y per valid pixel, as {pixel index: loss}."""
    return {i: -math.log(softmax_prob(r, y)) for i, (r, y) in enumerate(zip(rows, labels, strict=True)) if y != IGNORE}


def random_batch(b=2, c=4, h=3, w=5, seed=0, ignore_fraction=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_fraction] = IGNORE
    return logits, target


LOSS_IDS = ["median-frequency", "class-balanced", "focal", "bootstrap-k3", "bootstrap-batch-half", "ohem"]


def all_losses():
    mfce, cbce, focal = MedianFrequencyCrossEntropy(), ClassBalancedCrossEntropy(beta=0.9), FocalLoss()
    for loss in (mfce, cbce, focal):
        loss.set_class_statistics(torch.tensor([[5, 3, 2, 1], [1, 0, 0, 2]]))
    return [mfce, cbce, focal, BootstrappedCrossEntropy(k=3), BootstrappedCrossEntropy(ratio=0.5, per_image=False),
            OhemCrossEntropy(threshold=0.7, min_kept=4)]  # fmt: skip


# --- class weights from the (N, C) table -------------------------------------------------------------------------


def test_median_frequency_weights_hand_computed():
    # Row sums (labelled pixels per image): 15, 30, 60.
    # class 0: 60 px, in images 0, 1, 2 -> 60 / 105 = 4/7
    # class 1: 20 px, in images 1, 2    -> 20 / 90  = 2/9
    # class 2: 25 px, in images 0, 2    -> 25 / 75  = 1/3
    # median over present classes = 1/3; class 3 never appears -> 0.
    weights = median_frequency_weights(torch.tensor(COUNTS))
    assert weights.dtype == torch.float32 and weights.shape == (4,)
    np.testing.assert_allclose(weights.numpy(), [(1 / 3) / (4 / 7), (1 / 3) / (2 / 9), 1.0, 0.0], rtol=1e-6)


def test_median_frequency_weights_even_number_of_classes_takes_mean_of_middle_values():
    # freq 0: 30 / 40 = 0.75, freq 1: 10 / 40 = 0.25 (both in the only image) -> median 0.5.
    weights = median_frequency_weights(torch.tensor([[30, 10]]))
    np.testing.assert_allclose(weights.numpy(), [0.5 / 0.75, 0.5 / 0.25], rtol=1e-6)


def test_inverse_frequency_weights_hand_computed_mean_one_over_present_classes():
    # Column sums 60, 20, 25, 0 -> alpha proportional to 1/60, 1/20, 1/25; mean over the 3 present = 1.
    inverse = np.array([1 / 60, 1 / 20, 1 / 25])
    alpha = inverse_frequency_weights(torch.tensor(COUNTS))
    np.testing.assert_allclose(alpha.numpy(), [*(inverse / inverse.mean()), 0.0], rtol=1e-6)
    assert alpha.sum().item() == pytest.approx(3.0)
    np.testing.assert_allclose(inverse_frequency_weights(torch.tensor([[7, 7, 7]])).numpy(), [1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        pytest.param([1, 2, 3], "2-D", id="not-2d"),
        pytest.param([[1, -2]], "non-negative", id="negative-count"),
        pytest.param([[0, 0]], "no labelled pixel", id="all-zero"),
        pytest.param([[1.0, float("nan")]], "non-finite", id="nan-count"),
    ],
)
def test_invalid_count_tables_raise(counts, message):
    with pytest.raises(ValueError, match=message):
        median_frequency_weights(torch.tensor(counts))
    with pytest.raises(ValueError, match=f"FocalLoss.*{message}"):
        FocalLoss().set_class_statistics(torch.tensor(counts))
    with pytest.raises(ValueError, match=f"MedianFrequencyCrossEntropy.*{message}"):
        MedianFrequencyCrossEntropy().set_class_statistics(torch.tensor(counts))


# --- median frequency cross-entropy ------------------------------------------------------------------------------


def test_median_frequency_ce_hand_computed():
    counts = np.array([[10, 0, 5], [20, 10, 0], [30, 10, 20]])  # weights 7/12, 3/2, 1 (as above)
    weights = [(1 / 3) / (4 / 7), (1 / 3) / (2 / 9), 1.0]
    ce = hand_ce(LOGITS, LABELS)
    expected = sum(weights[LABELS[i]] * loss for i, loss in ce.items()) / sum(weights[LABELS[i]] for i in ce)
    loss = MedianFrequencyCrossEntropy()
    loss.set_class_statistics(torch.as_tensor(counts))  # as SegmentationModel.on_fit_start passes it
    logits, target = as_inputs(LOGITS, LABELS)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_median_frequency_ce_raises_before_class_statistics():
    logits, target = as_inputs(LOGITS, LABELS)
    with pytest.raises(RuntimeError, match="set_class_statistics"):
        MedianFrequencyCrossEntropy()(logits, target)
    with pytest.raises(RuntimeError, match="set_class_statistics"):
        FocalLoss(alpha="inverse_frequency")(logits, target)


def test_fixed_weights_are_used_kept_and_checked_against_the_logits():
    weights = [0.5, 2.0, 3.0]
    ce = hand_ce(LOGITS, LABELS)
    expected = sum(weights[LABELS[i]] * loss for i, loss in ce.items()) / sum(weights[LABELS[i]] for i in ce)
    loss = MedianFrequencyCrossEntropy(weights=weights)
    logits, target = as_inputs(LOGITS, LABELS)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    loss.set_class_statistics(torch.tensor([[1, 2, 3]]))  # validated, does not replace the fixed weights
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="3 entries"):
        loss.set_class_statistics(torch.tensor([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match=r"weights has 2 entries but the logits have C=3"):
        MedianFrequencyCrossEntropy(weights=[1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="weights"):
        MedianFrequencyCrossEntropy(weights=[1.0, -1.0])
    derived = MedianFrequencyCrossEntropy()
    derived.set_class_statistics(torch.tensor([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="C=3"):
        derived(logits, target)


def test_effective_number_weights_hand_computed():
    # images holding each class: (3, 2, 2, 0); beta = 0.5: E_n = (1 - 0.5^n) / 0.5 = (1.75, 1.5, 1.5); w ∝ 1 / E_n,
    # scaled to sum to the 3 present classes
    inverse = np.array([1 / 1.75, 1 / 1.5, 1 / 1.5])
    expected = np.append(3 * inverse / inverse.sum(), 0.0)
    np.testing.assert_allclose(effective_number_weights(torch.tensor(COUNTS), 0.5).numpy(), expected, rtol=1e-6)
    # beta = 0: equal weights; pixels, beta near 1: against (1 - b) / (1 - b^n) in exact rational arithmetic
    np.testing.assert_allclose(effective_number_weights(torch.tensor(COUNTS), 0.0).numpy(), [1, 1, 1, 0])
    from fractions import Fraction

    beta = Fraction(999_999, 1_000_000)
    pixels = [60, 20, 25]
    exact = [float((1 - beta) / (1 - beta**n)) for n in pixels]
    exact = [3 * w / sum(exact) for w in exact] + [0.0]
    got = effective_number_weights(torch.tensor(COUNTS), float(beta), count="pixels").numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-5)
    # beta -> 1 approaches inverse frequency: the weights' ratio tends to the inverse ratio of the pixel counts
    near_one = effective_number_weights(torch.tensor(COUNTS), 1 - 1e-12, count="pixels").numpy()
    assert near_one[1] / near_one[0] == pytest.approx(3.0, rel=1e-4)


def test_class_balanced_ce_equals_torch_weighted_cross_entropy():
    loss_fn = ClassBalancedCrossEntropy(beta=0.9)
    loss_fn.set_class_statistics(torch.tensor(COUNTS))
    logits, target = random_batch(c=4, seed=3)
    reference = torch.nn.functional.cross_entropy(
        logits.double(), target, weight=loss_fn.class_weights.double(), ignore_index=IGNORE
    )
    assert loss_fn(logits, target).item() == pytest.approx(reference.item(), rel=1e-6)


def test_weights_from_statistics_survive_a_checkpoint_round_trip():
    trained = MedianFrequencyCrossEntropy()
    trained.set_class_statistics(torch.tensor(COUNTS))
    fresh = MedianFrequencyCrossEntropy()
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh.class_weights, trained.class_weights)


# --- focal loss --------------------------------------------------------------------------------------------------


def test_focal_hand_computed_with_alpha_and_ignore():
    alpha = [0.5, 2.0, 1.0]
    expected = 0.0
    for row, y in zip(LOGITS, LABELS, strict=True):
        if y != IGNORE:
            p = softmax_prob(row, y)
            expected -= alpha[y] * (1 - p) ** 2 * math.log(p)
    expected /= 3  # mean over the 3 valid pixels, not over the sum of alpha
    logits, target = as_inputs(LOGITS, LABELS)
    assert FocalLoss(gamma=2.0, alpha=alpha)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_inverse_frequency_alpha_from_statistics():
    loss = FocalLoss(gamma=2.0)  # alpha="inverse_frequency" by default
    loss.set_class_statistics(torch.tensor([[60, 20, 25]]))
    alpha = np.array([1 / 60, 1 / 20, 1 / 25])
    alpha = alpha / alpha.mean()
    logits, target = as_inputs(LOGITS, LABELS)
    expected = focal_loss(logits, target, 2.0, torch.tensor(alpha), IGNORE).item()
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_gamma_zero_without_alpha_is_cross_entropy():
    logits, target = random_batch()
    torch.testing.assert_close(FocalLoss(gamma=0.0, alpha=None)(logits, target), CrossEntropy()(logits, target))
    ce = hand_ce(LOGITS, LABELS)
    logits, target = as_inputs(LOGITS, LABELS)
    assert FocalLoss(gamma=0, alpha=None)(logits, target).item() == pytest.approx(sum(ce.values()) / 3, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_finite_even_for_saturated_pixels(gamma):
    logits, target = random_batch()
    logits[:, 0] = 200.0  # p = 1 exactly in float32 where the target is class 0
    logits.requires_grad_(True)
    FocalLoss(gamma=gamma, alpha=None)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# --- bootstrapped cross-entropy ----------------------------------------------------------------------------------


def test_bootstrap_hand_computed_per_image_and_per_batch():
    rows_b = [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 4.0]]
    labels_b = [IGNORE, 1, 0, IGNORE]  # only 2 valid pixels: k=3 is clamped to 2
    ce_a, ce_b = hand_ce(LOGITS, LABELS), hand_ce(rows_b, labels_b)
    top_a, top_b = sorted(ce_a.values(), reverse=True), sorted(ce_b.values(), reverse=True)
    logits = torch.cat([as_inputs(LOGITS, LABELS)[0], as_inputs(rows_b, labels_b)[0]])
    target = torch.cat([as_inputs(LOGITS, LABELS)[1], as_inputs(rows_b, labels_b)[1]])
    # k=2 per image: 2 + 2 pixels.
    assert BootstrappedCrossEntropy(k=2)(logits, target).item() == pytest.approx((sum(top_a[:2]) + sum(top_b)) / 4)
    # k=3: image a keeps 3, image b its 2 valid pixels -> mean over 5 kept pixels.
    assert BootstrappedCrossEntropy(k=3)(logits, target).item() == pytest.approx((sum(top_a) + sum(top_b)) / 5)
    # ratio 0.5: ceil(1.5) = 2 of a, ceil(1) = 1 of b.
    expected = (sum(top_a[:2]) + top_b[0]) / 3
    assert BootstrappedCrossEntropy(ratio=0.5)(logits, target).item() == pytest.approx(expected)
    # Over the batch: the 2 hardest of all 5 valid pixels.
    pooled = sorted(top_a + top_b, reverse=True)
    assert BootstrappedCrossEntropy(k=2, per_image=False)(logits, target).item() == pytest.approx(sum(pooled[:2]) / 2)


def test_bootstrap_ratio_count_is_not_inflated_by_rounding():
    # 0.28 * 25 is 7.000000000000001 in floating point; ceil must still give 7 of the 25 valid pixels.
    logits, target = random_batch(b=1, c=3, h=5, w=5, seed=7, ignore_fraction=0.0)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    expected = ce.sort(descending=True).values[:7].mean()
    torch.testing.assert_close(BootstrappedCrossEntropy(ratio=0.28)(logits, target), expected)


def test_bootstrap_ratio_one_is_mean_cross_entropy():
    logits, target = random_batch(b=3, seed=1)
    loss = BootstrappedCrossEntropy(ratio=1.0)(logits, target)
    torch.testing.assert_close(loss, CrossEntropy()(logits, target))
    # With equal valid counts per image this is also the mean of the per-image mean CEs.
    target = torch.randint(0, 4, (3, 3, 5), generator=torch.Generator().manual_seed(2))
    target[:, 0, 0] = IGNORE
    per_image = torch.stack([CrossEntropy()(logits[i : i + 1], target[i : i + 1]) for i in range(3)]).mean()
    torch.testing.assert_close(BootstrappedCrossEntropy(ratio=1.0)(logits, target), per_image)


def test_bootstrap_selects_exactly_the_top_k_pixels():
    logits, target = random_batch(b=2, h=4, w=4, seed=3, ignore_fraction=0.0)
    logits.requires_grad_(True)
    BootstrappedCrossEntropy(k=5)(logits, target).backward()
    touched = logits.grad.abs().sum(1).flatten(1) > 0
    ce = torch.nn.functional.cross_entropy(logits.detach(), target, reduction="none").flatten(1)
    for i in range(2):
        hardest = set(np.argsort(-ce[i].numpy())[:5].tolist())
        assert set(torch.nonzero(touched[i]).flatten().tolist()) == hardest


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    hw=st.integers(1, 12),
    k=st.integers(1, 15),
    ratio=st.floats(0.05, 1.0),
    per_image=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_bootstrap_matches_a_loop_over_images(b, hw, k, ratio, per_image, seed):
    logits, target = random_batch(b=b, c=3, h=1, w=hw, seed=seed, ignore_fraction=0.4)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").double()
    groups = [ce[i][target[i] != IGNORE] for i in range(b)] if per_image else [ce[target != IGNORE]]
    for kw in ({"k": k}, {"ratio": ratio}):
        kept = []
        for values in groups:
            n = values.numel()
            count = min(k, n) if "k" in kw else min(n, math.ceil(ratio * n - 1e-6))  # documented rule
            kept += sorted(values.tolist(), reverse=True)[:count]
        expected = sum(kept) / len(kept) if kept else 0.0
        got = bootstrapped_cross_entropy(logits, target, per_image=per_image, ignore_index=IGNORE, **kw)
        assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# --- OHEM cross-entropy ------------------------------------------------------------------------------------------


def test_ohem_hand_computed_threshold_and_min_kept():
    probs = {i: softmax_prob(LOGITS[i], y) for i, y in enumerate(LABELS) if y != IGNORE}
    ce = hand_ce(LOGITS, LABELS)
    logits, target = as_inputs(LOGITS, LABELS)
    # p_y: pixel 0 ~0.665, pixel 1 ~0.114, pixel 3 ~0.786.
    assert sorted(probs, key=probs.get) == [1, 0, 3]
    # threshold 0.7 keeps pixels 0 and 1 (min_kept=1 does not bind).
    expected = (ce[0] + ce[1]) / 2
    assert OhemCrossEntropy(threshold=0.7, min_kept=1)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # threshold 0.05 keeps nothing by itself; min_kept=2 raises it to the 2nd smallest probability (pixel 0).
    assert OhemCrossEntropy(threshold=0.05, min_kept=2)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # min_kept=1 keeps only the hardest pixel.
    assert OhemCrossEntropy(threshold=0.05, min_kept=1)(logits, target).item() == pytest.approx(ce[1], rel=1e-6)
    # min_kept above the number of valid pixels keeps all of them.
    all_mean = sum(ce.values()) / 3
    assert OhemCrossEntropy(threshold=0.05, min_kept=100)(logits, target).item() == pytest.approx(all_mean, rel=1e-6)


def test_ohem_threshold_one_keeps_all_pixels():
    logits, target = random_batch(b=2, seed=4)
    logits[:, 1] = 100.0  # saturated pixels (p = 1) are kept too
    torch.testing.assert_close(
        OhemCrossEntropy(threshold=1.0, min_kept=1)(logits, target), CrossEntropy()(logits, target)
    )


def test_ohem_min_kept_counts_over_the_batch():
    logits, target = random_batch(b=2, h=4, w=4, seed=5, ignore_fraction=0.2)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    valid_ce = ce[target != IGNORE]
    hardest = valid_ce.sort(descending=True).values[:7]  # lowest probability = highest loss
    loss = OhemCrossEntropy(threshold=1e-9, min_kept=7)(logits, target)
    assert loss.item() == pytest.approx(hardest.mean().item(), rel=1e-6)


# --- shared behaviour --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(LOSS_IDS)), ids=LOSS_IDS)
def test_all_ignore_batch_gives_zero_and_zero_gradient(index):
    loss_fn = all_losses()[index]
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), IGNORE)
    loss = loss_fn(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("index", range(len(LOSS_IDS)), ids=LOSS_IDS)
def test_bf16_logits_give_a_float32_loss_close_to_float32(index):
    loss_fn = all_losses()[index]
    logits, target = random_batch(c=4, seed=6)
    low = logits.bfloat16().requires_grad_(True)
    loss = loss_fn(low, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(loss_fn(low.detach().float(), target).item(), rel=1e-5)
    loss.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FocalLoss(gamma=-1.0), r"gamma must be .*>= 0, got -1.0"),
        (lambda: FocalLoss(gamma=float("nan")), "gamma"),
        (lambda: FocalLoss(alpha="inverse_median"), "alpha must be 'inverse_frequency'.*'inverse_median'"),
        (lambda: FocalLoss(alpha=[1.0, -0.5]), "alpha must be finite and non-negative"),
        (lambda: OhemCrossEntropy(threshold=0.0), r"threshold must be in \(0, 1\], got 0.0"),
        (lambda: OhemCrossEntropy(threshold=1.5), "threshold.*1.5"),
        (lambda: OhemCrossEntropy(min_kept=0), "min_kept must be an integer >= 1, got 0"),
        (lambda: BootstrappedCrossEntropy(k=0), "k must be an integer >= 1, got 0"),
        (lambda: BootstrappedCrossEntropy(ratio=0.0), r"ratio must be in \(0, 1\], got 0.0"),
        (lambda: BootstrappedCrossEntropy(ratio=1.2), "ratio.*1.2"),
        (lambda: BootstrappedCrossEntropy(), "exactly one of k and ratio"),
        (lambda: BootstrappedCrossEntropy(k=3, ratio=0.5), "exactly one of k and ratio"),
        (lambda: MedianFrequencyCrossEntropy(weights=[]), "weights must be a non-empty list"),
        (lambda: ClassBalancedCrossEntropy(beta=1.0), r"beta must be a number in \[0, 1\) or 'median', got 1.0"),
        (lambda: ClassBalancedCrossEntropy(beta="mean"), r"beta must be a number in \[0, 1\) or 'median', got 'mean'"),
        (lambda: ClassBalancedCrossEntropy(count="boxes"), "count must be one of.*'boxes'"),
    ],
    ids=[
        "focal-negative-gamma",
        "focal-nan-gamma",
        "focal-unknown-alpha",
        "focal-negative-alpha",
        "ohem-threshold-zero",
        "ohem-threshold-above-one",
        "ohem-min-kept-zero",
        "bootstrap-k-zero",
        "bootstrap-ratio-zero",
        "bootstrap-ratio-above-one",
        "bootstrap-neither-k-nor-ratio",
        "bootstrap-both-k-and-ratio",
        "median-frequency-empty-weights",
        "class-balanced-beta-one",
        "class-balanced-beta-word",
        "class-balanced-unknown-count",
    ],
)
def test_invalid_arguments_raise_naming_the_field(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("index", range(len(LOSS_IDS)), ids=LOSS_IDS)
def test_shape_mismatch_names_the_loss(index):
    loss_fn = all_losses()[index]
    with pytest.raises(ValueError, match=type(loss_fn).__name__):
        loss_fn(torch.randn(1, 4, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long))


def test_median_beta_puts_the_saturation_point_at_the_median_class_count():
    # Pixels 100, 400, 900 and an absent class: median of the present ones 400, so beta = 1 - 1/400.
    counts = torch.tensor([[60, 0, 900, 0], [40, 400, 0, 0]])
    beta = 1 - 1 / 400
    n = np.array([100.0, 400.0, 900.0])
    inverse_effective = (1 - beta) / (1 - beta**n)  # by hand, float64
    expected = np.append(inverse_effective * 3 / inverse_effective.sum(), 0.0)
    got = effective_number_weights(counts, "median", count="pixels").double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[2] / got[1] < 1.6 < got[0] / got[1]  # above the median nearly alike, below about inversely
    loss = ClassBalancedCrossEntropy(beta="median", count="pixels")
    loss.set_class_statistics(counts)
    np.testing.assert_allclose(loss.class_weights.double().numpy(), expected, rtol=1e-6)
