"""Long-tail losses of 2021-2023: logit-adjusted cross-entropy (Menon et al.) and Balanced Logit Variation (Wang et
al.): hand-computed values, the class statistics they derive and keep, the distribution of BLV's noise, its random
stream, and a BLV run resumed through the real CLI."""

from __future__ import annotations

import math

import pytest
import torch

from tailseg.losses import (
    BalancedLogitVariation,
    CrossEntropy,
    LogitAdjustedCrossEntropy,
    blv_perturbation,
    blv_scales,
    logit_adjusted_cross_entropy,
)
from tailseg.losses.common import in_float32
from tailseg.losses.logit_adjust import class_shares, log_class_prior
from test_baseline_losses import IGNORE, as_inputs, random_batch

# 2 images x 4 classes: column sums 6, 3, 1, 0 -> shares 0.6, 0.3, 0.1; class 3 never occurs.
COUNTS = torch.tensor([[4, 1, 1, 0], [2, 2, 0, 0]])
SHARES = [0.6, 0.3, 0.1]

# Two valid pixels of 3 classes and an ignored one (values that would dominate the mean if it were counted).
ROWS = [[1.0, 0.5, -0.5], [0.2, 0.4, 0.0], [9.0, -9.0, 0.0]]
LABELS = [2, 0, IGNORE]


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def margin_form(rows, labels, shares, tau):
    """Mean over the valid pixels of log(1 + sum_{c != y} (pi_c / pi_y)^tau exp(z_c - z_y)), in float64: the
    logit-adjusted loss written as a pairwise margin loss (not the softmax of shifted logits the code computes)."""
    losses = [
        math.log1p(sum((shares[c] / shares[y]) ** tau * math.exp(row[c] - row[y]) for c in range(len(row)) if c != y))
        for row, y in zip(rows, labels, strict=True)
        if y != IGNORE
    ]
    return sum(losses) / len(losses)


def logit_adjusted(counts=COUNTS[:, :3], tau=1.0):
    loss = LogitAdjustedCrossEntropy(tau=tau)
    loss.set_class_statistics(counts)
    return loss


def blv(counts=COUNTS, sigma=6.0):
    loss = BalancedLogitVariation(sigma=sigma)
    loss.set_class_statistics(counts)
    return loss


# --- logit adjustment ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tau", "literal"), [(1.0, 2.071378606167466), (0.5, 1.8010395388593115)])
def test_logit_adjustment_hand_computed(tau, literal):
    # tau = 1: pixel 0 (y = 2, pi 0.1): log(1 + 6 e^1.5 + 3 e^1) = 3.58477; pixel 1 (y = 0, pi 0.6):
    # log(1 + 0.5 e^0.2 + e^-0.2 / 6) = 0.55799; mean 2.07138. The literals were worked out so, in float64.
    assert margin_form(ROWS, LABELS, SHARES, tau) == pytest.approx(literal, rel=1e-12)
    logits, target = as_inputs(ROWS, LABELS)
    assert logit_adjusted(tau=tau)(logits, target).item() == pytest.approx(literal, rel=1e-6)
    # the pure function, in float64 throughout
    log_prior = torch.tensor(SHARES, dtype=torch.float64).log()
    logits64 = torch.tensor(ROWS, dtype=torch.float64).T.reshape(1, 3, 1, 3)
    got = logit_adjusted_cross_entropy(logits64, target, log_prior, tau, IGNORE)
    assert got.dtype == torch.float64 and got.item() == pytest.approx(literal, rel=1e-12)


def test_tau_zero_is_plain_cross_entropy_exactly():
    logits, target = random_batch(c=3, seed=1)
    assert torch.equal(logit_adjusted(tau=0.0)(logits, target), CrossEntropy()(logits, target))
    assert not torch.equal(logit_adjusted(tau=1.0)(logits, target), CrossEntropy()(logits, target))


def test_ignored_pixels_are_left_out_and_an_all_ignored_batch_gives_zero():
    loss = logit_adjusted()
    logits, target = as_inputs(ROWS, LABELS)
    changed = logits.clone()
    changed[..., 2] = torch.tensor([-50.0, 50.0, 3.0]).view(1, 3, 1)  # the ignored pixel only
    assert torch.equal(loss(logits, target), loss(changed, target))
    assert loss(logits, target).item() == pytest.approx(margin_form(ROWS[:2], LABELS[:2], SHARES, 1.0), rel=1e-6)
    logits = logits.requires_grad_(True)
    out = loss(logits, torch.full_like(target, IGNORE))
    out.backward()
    assert out.item() == 0.0 and (logits.grad == 0).all()


def test_the_prior_comes_from_the_table_and_survives_a_state_dict_round_trip():
    trained = logit_adjusted(counts=COUNTS)
    # log of the column sums over the total, class 3 (no pixel) floored to the rarest share, 0.1
    torch.testing.assert_close(trained.log_prior, torch.tensor([0.6, 0.3, 0.1, 0.1]).log())
    assert torch.equal(trained.state_dict()["class_weights"], trained.log_prior)
    fresh = LogitAdjustedCrossEntropy()
    logits, target = random_batch(c=4, seed=2)
    with pytest.raises(
        RuntimeError, match=r"LogitAdjustedCrossEntropy: log class priors are not set.*set_class_statistics"
    ):
        fresh(logits, target)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.log_prior, trained.log_prior)
    assert torch.equal(fresh(logits, target), trained(logits, target))


def test_a_class_absent_from_the_table_takes_the_rarest_share():
    shares = class_shares(COUNTS)
    assert shares.dtype == torch.float64
    torch.testing.assert_close(shares, torch.tensor([0.6, 0.3, 0.1, 0.1], dtype=torch.float64))
    log_prior = log_class_prior(COUNTS)
    assert torch.isfinite(log_prior).all() and log_prior[3] == log_prior[2] == log_prior[:3].min()
    # a validation pixel of the absent class costs what one of the rarest class does, not ~27.6 (epsilon 1e-12)
    loss = logit_adjusted(counts=COUNTS)
    logits = torch.zeros(1, 4, 1, 2)
    value = loss(logits, torch.tensor([[[3, 2]]]))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(loss(logits, torch.tensor([[[2, 2]]])).item(), rel=1e-6)
    # a column of zeros in a table with a single present class: every share floored to 1, the plain cross-entropy
    single = logit_adjusted(counts=torch.tensor([[5, 0, 0]]))
    assert torch.equal(single.log_prior, torch.zeros(3))


def test_the_logit_adjusted_loss_is_the_same_in_train_and_eval_mode():
    """val/loss is the training objective on the validation pixels (the model calls the loss in eval mode)."""
    loss = logit_adjusted(counts=COUNTS)
    logits, target = random_batch(c=4, seed=4)
    assert torch.equal(loss.train()(logits, target), loss.eval()(logits, target))


# --- Balanced Logit Variation --------------------------------------------------------------------------------------


def test_blv_scales_hand_computed():
    # c_k = log(10 / q_k) for q = 6, 3, 1 and the absent class floored to q = 1; max c = log 10
    expected = [math.log(10 / 6) / math.log(10), math.log(10 / 3) / math.log(10), 1.0, 1.0]
    assert expected[:3] == pytest.approx([0.22184874961635637, 0.5228787452803376, 1.0], rel=1e-12)
    scale = blv_scales(COUNTS)
    assert scale.dtype == torch.float32
    torch.testing.assert_close(scale.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(blv_scales(torch.tensor([[7, 7, 7]])), torch.ones(3))  # equal shares: all vary alike
    torch.testing.assert_close(blv_scales(torch.tensor([[9, 0]])), torch.zeros(2))  # one class: nothing to balance


def test_blv_in_eval_mode_is_plain_cross_entropy_and_draws_nothing():
    loss = blv().eval()
    logits, target = random_batch(c=4, seed=5)
    state = torch.get_rng_state()
    assert torch.equal(loss(logits, target), CrossEntropy()(logits, target))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(BalancedLogitVariation().eval()(logits, target), CrossEntropy()(logits, target))  # no table


def test_blv_in_training_mode_is_cross_entropy_of_the_perturbed_logits_from_the_global_stream():
    """The loss equals the float64 cross-entropy of z + s_k clamp(sigma * randn, 0, 1), the noise drawn by hand from
    torch's global stream after the same seed; the same seed gives the same loss, another seed another."""
    sigma = 6.0
    loss = blv(sigma=sigma)
    logits, target = random_batch(c=4, seed=6)
    torch.manual_seed(11)
    value = loss(logits, target)
    torch.manual_seed(11)
    delta = torch.randn(logits.shape) * sigma
    offsets = delta.clamp(0.0, 1.0).double() * blv_scales(COUNTS).double().view(1, 4, 1, 1)
    reference = torch.nn.functional.cross_entropy(logits.double() + offsets, target, ignore_index=IGNORE)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.manual_seed(11)
    assert torch.equal(loss(logits, target), value)
    torch.manual_seed(12)
    assert not torch.equal(loss(logits, target), value)
    assert not torch.equal(value, CrossEntropy()(logits, target))


def test_blv_perturbation_distribution():
    """Many draws: every offset is in [0, s_k]; per class the share of zeros is 1/2 (the paper's clip of the
    Gaussian draw to [0, 1]), the share at s_k is 1 - Phi(1/sigma), and the mean is s_k (sigma / sqrt(2 pi)
    (1 - exp(-1 / (2 sigma^2))) + 1 - Phi(1/sigma)), within 5 standard errors; the rarest class varies most. The
    public code's clip, min(|delta|, 1), has twice that mean and no zeros, and is rejected."""
    sigma, n = 6.0, 200_000
    scale = blv_scales(COUNTS)
    torch.manual_seed(0)
    v = blv_perturbation((n, 4), scale, sigma).double()
    assert (v >= 0).all() and (v <= scale.double()).all()
    tail = 1.0 - normal_cdf(1.0 / sigma)
    mean_unit = sigma / math.sqrt(2 * math.pi) * (1.0 - math.exp(-1.0 / (2 * sigma**2))) + tail
    code_mean_unit = 2 * mean_unit  # E min(|delta|, 1)
    for k in range(4):
        s = scale[k].item()
        column = v[:, k]
        se = column.std().item() / math.sqrt(n)
        assert abs(column.mean().item() - s * mean_unit) < 5 * se
        assert abs(column.mean().item() - s * code_mean_unit) > 50 * se
        for share, p in (((column == 0).double().mean().item(), 0.5), ((column == s).double().mean().item(), tail)):
            assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n)
    spread = v.std(0)
    assert spread[2] > spread[1] > spread[0]  # rarer, more spread (classes 2 and 3 share the rarest scale, 1)
    assert torch.equal(blv_perturbation((5, 4), scale, 0.0), torch.zeros(5, 4))


def test_blv_ignores_ignored_pixels_and_an_all_ignored_batch_gives_zero():
    loss = blv(counts=COUNTS[:, :3])
    logits, target = as_inputs(ROWS, LABELS)
    changed = logits.clone()
    changed[..., 2] = torch.tensor([-50.0, 50.0, 3.0]).view(1, 3, 1)
    torch.manual_seed(3)
    first = loss(logits, target)
    torch.manual_seed(3)
    assert torch.equal(first, loss(changed, target))
    logits = logits.requires_grad_(True)
    out = loss(logits, torch.full_like(target, IGNORE))
    out.backward()
    assert out.item() == 0.0 and (logits.grad == 0).all()


def test_blv_scales_come_from_the_table_and_survive_a_state_dict_round_trip():
    trained = blv()
    torch.testing.assert_close(trained.scale, blv_scales(COUNTS))
    fresh = BalancedLogitVariation()
    logits, target = random_batch(c=4, seed=7)
    with pytest.raises(
        RuntimeError, match=r"BalancedLogitVariation: variation scales are not set.*set_class_statistics"
    ):
        fresh(logits, target)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.scale, trained.scale)
    torch.manual_seed(8)
    expected = trained(logits, target)
    torch.manual_seed(8)
    assert torch.equal(fresh(logits, target), expected)


def test_the_model_switches_blv_to_plain_cross_entropy_for_validation():
    """The loss is a submodule of the model: `model.eval()` (Lightning's validation) puts it in eval mode."""
    from conftest import TINY_ENCODER
    from tailseg.model import SegmentationModel

    model = SegmentationModel(num_classes=4, encoder_name=TINY_ENCODER, loss=blv())
    assert model.train().loss.training and not model.eval().loss.training


# --- both ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LogitAdjustedCrossEntropy, BalancedLogitVariation])
def test_invalid_settings_and_inputs_raise_naming_the_loss(cls):
    field = "tau" if cls is LogitAdjustedCrossEntropy else "sigma"
    for value in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: {field} must be a finite number >= 0, got {value!r}"):
            cls(**{field: value})
    assert getattr(cls(**{field: 0}), field) == 0.0
    loss = cls()
    with pytest.raises(ValueError, match=f"{cls.__name__}.*no labelled pixel"):
        loss.set_class_statistics(torch.zeros(2, 3))
    loss.set_class_statistics(COUNTS)
    logits, target = random_batch(c=3, seed=9)
    with pytest.raises(ValueError, match=r"has 4 entries but the logits have C=3"):
        loss(logits, target)
    with pytest.raises(ValueError, match=f"{cls.__name__}: expected logits"):
        loss(logits[0], target)


@pytest.mark.parametrize("cls", [LogitAdjustedCrossEntropy, BalancedLogitVariation])
def test_low_precision_logits_give_the_float32_loss(cls):
    loss = cls()
    loss.set_class_statistics(COUNTS)
    logits, target = random_batch(c=4, seed=10)
    low = logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        out = in_float32(loss, low, target)
    torch.manual_seed(1)
    reference = loss(low.detach().float(), target)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(reference.item(), rel=1e-6)
    out.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


# --- exact resume through the CLI ---------------------------------------------------------------------------------


def test_a_blv_run_resumed_inside_an_epoch_reaches_the_uninterrupted_run(tmp_path, one_thread):
    """10 steps of experiments/synthetic/blv.yaml (tiny), and the run resumed from step 6 (inside epoch 1): the same
    final weights, optimizer state and logged metrics, bit for bit: the noise of the steps after 6 comes from the
    checkpointed global random stream."""
    from test_resume import _assert_same_run, _checkpoint, _fit

    _fit("blv", tmp_path / "full", 0)
    full = tmp_path / "full" / "version_0"
    state = torch.load(_checkpoint(full, 6), map_location="cpu", weights_only=False)["state_dict"]
    scale = state["loss.class_weights"]  # the scales travel with the checkpoint
    assert scale.shape == (19,) and scale.max().item() == 1.0 and (scale >= 0).all()
    _fit("blv", tmp_path / "full", 0, "--ckpt_path", str(_checkpoint(full, 6)))
    _assert_same_run(full, tmp_path / "full" / "version_1", 6)
