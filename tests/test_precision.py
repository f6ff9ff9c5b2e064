"""Mixed precision: every loss under bf16 / fp16 autocast computes in float32; training runs with bf16-mixed.

(Lightning's `16-mixed` falls back to `bf16-mixed` on the CPU; fp16 autocast itself runs on the CPU, so the
losses are checked under both.)

The references are the same losses computed in float32 (no autocast) and in float64. Tolerances:

- on the bf16 / fp16 logits the network produced, the autocast loss equals the float32 loss of those logits to
  float32 rounding (rel 1e-5): the guard upcasts before anything else, so nothing is computed in bf16;
- against the float32 loss of the unrounded logits it differs by at most 3·δ + 1e-4 (δ = the largest
  rounding error of a logit): cross-entropy is 2-Lipschitz in the max-norm of the logits, the
  averaging reductions keep that, and LMP's weights (p = 1.3, m = 25 %) sum to at most 4^(1 - 1/1.3)
  ≈ 1.38, whence 3 (the focal loss is checked with class weights of at most 1.5, which keeps it there).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_synthetic_args
from tailseg.cli import main
from tailseg.losses import (
    BootstrappedCrossEntropy,
    CrossEntropy,
    FocalLoss,
    LossMaxPooling,
    MedianFrequencyCrossEntropy,
    OhemCrossEntropy,
    TiltedCrossEntropy,
)
from tailseg.losses.common import in_float32

ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255
C = 5


def _losses():
    counts = torch.tensor([[40, 30, 20, 10, 25], [50, 20, 30, 15, 20]])
    mfce = MedianFrequencyCrossEntropy()
    mfce.set_class_statistics(counts)
    return {
        "ce": CrossEntropy(),
        "lmp_p1.3": LossMaxPooling(p=1.3, ratio=0.25),
        "lmp_p1": LossMaxPooling(p=1.0, ratio=0.25),
        "tce_image_t1": TiltedCrossEntropy(t=1.0, level="image"),
        "tce_class_t1": TiltedCrossEntropy(t=1.0, level="class"),
        "tce_class_t-1": TiltedCrossEntropy(t=-1.0, level="class"),
        "focal": FocalLoss(gamma=2.0, alpha=[1.0, 1.2, 0.8, 1.5, 1.0]),
        "median_freq": mfce,
        "bootstrap": BootstrappedCrossEntropy(ratio=0.25),
        "ohem": OhemCrossEntropy(threshold=0.7, min_kept=8),
    }


LOSSES = list(_losses())


def _case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial batches of the loss tests: (logits (2, C, 6, 7) float32, target)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, C, 6, 7, generator=g)
    target = torch.randint(0, C, (2, 6, 7), generator=g)
    target[:, 0, :3] = IGNORE
    if name == "random":
        logits = logits * 2
    elif name == "saturated":  # softmax saturated: probabilities of 1e-40 and below
        logits = logits * 60
    elif name == "confident_wrong":  # a logit of 1e4 on a wrong class: CE of about 1e4 per pixel
        wrong = (target.clamp_max(C - 1) + 1) % C
        logits = logits.scatter(1, wrong.unsqueeze(1), 1e4)
    elif name == "tied":
        logits = torch.zeros_like(logits)
    elif name == "one_valid_pixel":
        target = torch.full_like(target, IGNORE)
        target[1, 2, 3] = 4
    elif name == "all_ignored":
        target = torch.full_like(target, IGNORE)
    return logits, target


CASES = ["random", "saturated", "confident_wrong", "tied", "one_valid_pixel", "all_ignored"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_under_autocast_is_the_float32_loss(name, case, dtype):
    loss_fn = _losses()[name]
    logits, target = _case(case)
    low = logits.to(dtype).requires_grad_(True)  # what a network under autocast hands the loss
    with torch.autocast("cpu", dtype=dtype):
        out = loss_fn(low, target)
    assert out.dtype == torch.float32 and torch.isfinite(out), f"{name} on {case}: {out}"
    same_logits = loss_fn(low.detach().float(), target)
    torch.testing.assert_close(out, same_logits, rtol=1e-5, atol=1e-6)
    reference = loss_fn(logits.double(), target)  # float64 on the unrounded logits
    delta = (logits - low.detach().float()).abs().max().item()
    assert abs(out.item() - reference.item()) <= 3 * delta + 1e-4 + 1e-6 * abs(reference.item()), (
        f"{name} on {case}: {dtype} {out.item()} vs float64 {reference.item()} (logit rounding {delta})"
    )
    out.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()
    if case == "all_ignored":
        assert out.item() == 0 and (low.grad == 0).all()


@pytest.mark.parametrize("name", ["ce", "lmp_p1.3", "tce_class_t1", "focal"])
def test_loss_of_a_bf16_network_output_under_autocast(name):
    """The logits come from a convolution inside autocast (bf16); the loss and its gradient stay finite and
    the loss equals the float32 loss of those logits."""
    loss_fn = _losses()[name]
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 6, 7, generator=g) * 4
    conv = torch.nn.Conv2d(8, C, 1)
    _, target = _case("random")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(features)
        assert logits.dtype == torch.bfloat16  # autocast is really on
        out = loss_fn(logits, target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss_fn(logits.detach().float(), target), rtol=1e-5, atol=1e-6)
    out.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_in_float32_turns_autocast_off_for_any_loss():
    """The model calls every loss through `in_float32`, also losses from other libraries: inside, autocast is
    off and the logits are float32."""
    seen = {}

    def foreign_loss(logits, target):
        seen["dtype"], seen["autocast"] = logits.dtype, torch.is_autocast_enabled("cpu")
        return (logits @ logits.transpose(-1, -2)).mean()  # a matmul: bf16 under autocast, were it on

    logits, target = _case("random")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = in_float32(foreign_loss, logits.bfloat16(), target)
    assert seen == {"dtype": torch.float32, "autocast": False} and out.dtype == torch.float32


SETUPS = {
    "ce_uniform": ["base"],
    "lmp_performance_aware": ["lmp"],
    "tce_class": ["tce_class"],
    "stce": ["stce"],
    "focal": ["focal"],
    "median_freq": ["median_freq"],
}


@pytest.mark.parametrize("setup", SETUPS)
def test_fit_with_bf16_mixed_precision(setup, tmp_path):
    """A few training steps of each method with Lightning's bf16-mixed on the CPU: the network ran in bf16, the
    loss in float32 and finite (the model raises on a non-finite loss), and the run validated and reported."""
    (config,) = SETUPS[setup]
    main(["fit", "--config", str(ROOT / f"experiments/synthetic/{config}.yaml"), *tiny_synthetic_args(),
          "--trainer.callbacks+=recorders.RecordLogitsDtype", "--trainer.callbacks.out", str(tmp_path / "dtypes.json"),
          "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "6", "--trainer.check_val_every_n_epoch", "1",
          "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
          "--report_path", str(tmp_path / "report.json")])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["global_step"] == 6 and math.isfinite(report["miou"])
    assert json.loads((tmp_path / "dtypes.json").read_text()) == {
        "logits": ["torch.bfloat16"],
        "loss": ["torch.float32"],
    }
