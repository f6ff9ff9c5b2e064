"""Tilted cross-entropy (TCE paper, eqs. 2 and 3) and the tilted mean it is built on."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailseg.losses.tilted import TiltedCrossEntropy, image_class_losses, tilted_cross_entropy, tilted_mean

IGNORE = 255


def example_batch(dtype=torch.float64):
    """2 images, 3 classes, 2 x 3 pixels; image 0 holds classes 0 and 2 (and an ignored pixel), image 1 all three."""
    logits = torch.tensor(
        [
            [
                [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]],
                [[0.0, 1.5, 0.5], [1.0, -2.0, 0.0]],
                [[-1.0, 0.0, 2.0], [0.5, 0.0, 1.0]],
            ],
            [
                [[0.0, 0.0, 1.0], [2.0, -1.0, 0.0]],
                [[1.0, 2.0, 0.0], [0.0, 0.5, 1.0]],
                [[0.0, -1.0, 3.0], [1.0, 0.0, -0.5]],
            ],
        ],
        dtype=dtype,
    )
    target = torch.tensor([[[0, 2, IGNORE], [2, 0, 0]], [[1, 1, 2], [0, 2, 0]]])
    return logits, target


def pixel_ce_by_hand(logits, target):
    """{(image, class): [CE of each valid pixel]} from explicit float64 formulas: log Σ_k exp(z_k) − z_y."""
    out = {}
    batch, classes, height, width = logits.shape
    for m in range(batch):
        for i in range(height):
            for j in range(width):
                label = int(target[m, i, j])
                if label == IGNORE:
                    continue
                z = [float(logits[m, k, i, j]) for k in range(classes)]
                out.setdefault((m, label), []).append(math.log(sum(math.exp(v) for v in z)) - z[label])
    return out


def tilt_by_hand(values, t):
    """(1/t) · log( (1/n) · Σ exp(t · v) ), the textbook form (overflows for large t · v)."""
    return math.log(sum(math.exp(t * v) for v in values) / len(values)) / t


def tilt_by_hand_stable(values, t):
    """The same with the largest (t > 0) or smallest (t < 0) value factored out of the exponentials."""
    anchor = max(values) if t > 0 else min(values)
    return anchor + math.log(sum(math.exp(t * (v - anchor)) for v in values) / len(values)) / t


def expected_image_level(logits, target, t, tilt=tilt_by_hand):
    ce = pixel_ce_by_hand(logits, target)
    per_image = [sum((ce[key] for key in ce if key[0] == m), []) for m in range(logits.shape[0])]
    means = [sum(p) / len(p) for p in per_image if p]
    return tilt(means, t) if t != 0 else sum(means) / len(means)


def expected_class_level(logits, target, t, tilt=tilt_by_hand):
    ce = pixel_ce_by_hand(logits, target)
    per_image = []
    for m in range(logits.shape[0]):
        class_means = [sum(v) / len(v) for key, v in ce.items() if key[0] == m]
        if class_means:
            per_image.append(tilt(class_means, t) if t != 0 else sum(class_means) / len(class_means))
    return sum(per_image) / len(per_image)


# ---------------------------------------------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("t", [0.1, 1.0, 5.0, -1.0, -3.0])
def test_image_level_by_hand(t):
    logits, target = example_batch()
    loss = TiltedCrossEntropy(t=t, level="image")(logits, target)
    assert loss.item() == pytest.approx(expected_image_level(logits, target, t), rel=1e-12)


@pytest.mark.parametrize("t", [0.1, 1.0, 5.0, -1.0, -3.0])
def test_class_level_by_hand(t):
    logits, target = example_batch()
    loss = TiltedCrossEntropy(t=t, level="class")(logits, target)
    assert loss.item() == pytest.approx(expected_class_level(logits, target, t), rel=1e-12)


def test_positive_tilt_above_negative_tilt():
    logits, target = example_batch()
    values = [tilted_cross_entropy(logits, target, t, "image").item() for t in (-5.0, -1.0, 0.0, 1.0, 5.0)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


@pytest.mark.parametrize("level", ["image", "class"])
@pytest.mark.parametrize("t", [0.0, 1e-7, -1e-7, 1e-5])
def test_small_tilt_is_plain_mean(level, t):
    logits, target = example_batch()
    expected = (expected_image_level if level == "image" else expected_class_level)(logits, target, 0)
    loss = tilted_cross_entropy(logits, target, t, level)
    assert loss.item() == pytest.approx(expected, rel=1e-4 if t == 1e-5 else 1e-12)
    # float32 keeps the precision for small t (no cancellation in the tilted form).
    loss32 = tilted_cross_entropy(logits.float(), target, t, level)
    assert loss32.item() == pytest.approx(expected, rel=1e-5)


def test_image_level_at_zero_tilt_is_mean_of_per_image_means():
    logits, target = example_batch()
    per_image = [
        torch.nn.functional.cross_entropy(logits[m : m + 1], target[m : m + 1], ignore_index=IGNORE) for m in range(2)
    ]
    loss = TiltedCrossEntropy(t=0.0)(logits, target)
    assert loss.item() == pytest.approx(((per_image[0] + per_image[1]) / 2).item(), rel=1e-12)


def test_class_losses_vectorised_match_loop():
    torch.manual_seed(0)
    batch, classes = 3, 4
    pixel = torch.rand(batch, 5, 6, dtype=torch.float64)
    target = torch.randint(0, classes, (batch, 5, 6))
    target[1, :2] = IGNORE
    target[2] = torch.where(target[2] == 3, IGNORE, target[2])
    valid = target != IGNORE
    pixel = torch.where(valid, pixel, 0.0)
    means, present = image_class_losses(pixel, target, valid, classes)
    for m in range(batch):
        for c in range(classes):
            pixels = pixel[m][target[m] == c]
            assert bool(present[m, c]) == (pixels.numel() > 0)
            assert means[m, c].item() == pytest.approx(pixels.mean().item() if pixels.numel() else 0.0)
    assert not present[2, 3]


@pytest.mark.parametrize("t", [100.0, -100.0])
@pytest.mark.parametrize("level", ["image", "class"])
def test_large_tilt_finite(t, level):
    # Pixel losses of 50 and more with t = ±100: exp(t · L) would overflow any float type.
    logits, target = example_batch(torch.float32)
    logits = 40.0 * logits
    loss = tilted_cross_entropy(logits.requires_grad_(), target, t, level)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    detached = logits.detach().double()
    largest = max(max(v) for v in pixel_ce_by_hand(detached, target).values())
    assert largest > 50 and abs(t) * largest > 710  # exp(710) overflows even float64
    expected_fn = expected_image_level if level == "image" else expected_class_level
    expected = expected_fn(detached, target, t, tilt=tilt_by_hand_stable)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_large_tilt_approaches_worst_and_best_image():
    logits, target = example_batch()
    ce = pixel_ce_by_hand(logits, target)
    means = [sum(sum((ce[k] for k in ce if k[0] == m), [])) / sum(len(ce[k]) for k in ce if k[0] == m) for m in (0, 1)]
    high = tilted_cross_entropy(logits, target, 1000.0, "image").item()
    low = tilted_cross_entropy(logits, target, -1000.0, "image").item()
    assert high == pytest.approx(max(means) - math.log(2) / 1000, abs=1e-9)
    assert low == pytest.approx(min(means) + math.log(2) / 1000, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("t", [2.0, -2.0])
def test_image_level_gradient_is_softmax_weighted(t):
    # TERM: ∇ (1/t) log mean_m exp(t L_m) = Σ_m softmax(t L)_m ∇L_m.
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (3, 5, 5))
    target[1, 0] = IGNORE
    (grad,) = torch.autograd.grad(TiltedCrossEntropy(t=t)(logits, target), logits)

    per_image = [
        torch.nn.functional.cross_entropy(logits[m : m + 1], target[m : m + 1], ignore_index=IGNORE) for m in range(3)
    ]
    weights = torch.softmax(t * torch.stack(per_image).detach(), 0)
    expected = torch.zeros_like(logits)
    for m in range(3):
        (g,) = torch.autograd.grad(per_image[m], logits)
        expected += weights[m] * g
    torch.testing.assert_close(grad, expected)


def test_class_level_gradient_is_softmax_weighted():
    # Per image, softmax over the present classes' losses; then 1/M over images.
    t = 1.5
    logits, target = example_batch()
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(TiltedCrossEntropy(t=t, level="class")(logits, target), logits)
    expected = torch.zeros_like(logits)
    for m in range(2):
        classes = sorted(int(c) for c in target[m].unique() if c != IGNORE)
        losses = []
        for c in classes:
            sub = torch.where(target[m : m + 1] == c, target[m : m + 1], IGNORE)
            losses.append(torch.nn.functional.cross_entropy(logits[m : m + 1], sub, ignore_index=IGNORE))
        weights = torch.softmax(t * torch.stack(losses).detach(), 0)
        for w, loss in zip(weights, losses, strict=True):
            (g,) = torch.autograd.grad(loss, logits)
            expected += w * g / 2
    torch.testing.assert_close(grad, expected)


def test_tilted_mean_masked_entries_get_zero_gradient():
    values = torch.tensor(
        [[1.0, float("inf"), 2.0], [float("nan"), 3.0, float("nan")], [4.0, 5.0, 6.0]], requires_grad=True
    )
    mask = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    for t in (0.0, 2.0, -2.0):
        out = tilted_mean(values, t, mask)
        assert out[2].item() == 0.0 and out[1].item() == pytest.approx(3.0)
        (grad,) = torch.autograd.grad(out.sum(), values)
        assert torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all()
        assert grad[1, 1].item() == pytest.approx(1.0)
        assert grad[0, [0, 2]].sum().item() == pytest.approx(1.0)  # softmax weights


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=6),
    st.floats(-50, 50, allow_nan=False),
)
def test_tilted_mean_between_min_and_max(values, t):
    x = torch.tensor(values, dtype=torch.float64)
    out = tilted_mean(x, t).item()
    assert min(values) - 1e-9 <= out <= max(values) + 1e-9
    if abs(t) >= 1e-6:
        assert out == pytest.approx(tilt_by_hand_stable(values, t), rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Dropping images, all-ignore batches, dtypes, bad inputs.


@pytest.mark.parametrize("level", ["image", "class"])
def test_image_without_valid_pixels_drops_out(level):
    logits, target = example_batch()
    extra_logits = torch.randn(1, 3, 2, 3, dtype=logits.dtype)
    extra_target = torch.full((1, 2, 3), IGNORE)
    with_empty = tilted_cross_entropy(torch.cat([logits, extra_logits]), torch.cat([target, extra_target]), 1.0, level)
    without = tilted_cross_entropy(logits, target, 1.0, level)
    assert with_empty.item() == pytest.approx(without.item(), rel=1e-12)


@pytest.mark.parametrize("level", ["image", "class"])
@pytest.mark.parametrize("t", [1.0, 0.0, -1.0])
def test_all_ignored_batch_is_zero_with_zero_gradient(level, t):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    loss = TiltedCrossEntropy(t=t, level=level)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("level", ["image", "class"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_low_precision_logits(level, dtype):
    logits, target = example_batch(torch.float32)
    low = logits.to(dtype).requires_grad_(True)
    loss = TiltedCrossEntropy(t=1.0, level=level)(low, target)
    assert loss.dtype == torch.float32
    reference = TiltedCrossEntropy(t=1.0, level=level)(low.detach().float(), target)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


def test_module_repr_and_defaults():
    module = TiltedCrossEntropy()
    assert (module.t, module.level, module.ignore_index) == (1.0, "image", 255)
    assert "level='image'" in repr(module)


@pytest.mark.parametrize("t", [float("nan"), float("inf"), -float("inf"), "hot", None])
def test_bad_tilt(t):
    with pytest.raises(ValueError, match="tilt"):
        TiltedCrossEntropy(t=t)
    with pytest.raises(ValueError, match="tilt"):
        tilted_mean(torch.ones(3), t)


def test_bad_level_and_shapes():
    with pytest.raises(ValueError, match="level"):
        TiltedCrossEntropy(level="pixel")
    logits, target = example_batch()
    with pytest.raises(ValueError, match="level"):
        tilted_cross_entropy(logits, target, 1.0, "batch")
    with pytest.raises(ValueError, match="TiltedCrossEntropy"):
        TiltedCrossEntropy()(logits[0], target)
    with pytest.raises(ValueError, match="mask"):
        tilted_mean(torch.ones(2, 3), 1.0, torch.ones(3, dtype=torch.bool))
