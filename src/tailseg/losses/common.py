"""Shared input checks, per-pixel cross-entropy and the float32 guard of the loss modules.

Mixed precision (Lightning's `bf16-mixed` / `16-mixed`, i.e. `torch.autocast`): every loss is computed in
float32 whatever the logits' dtype. `in_float32(loss, logits, target)` runs any loss outside autocast on
float32 logits (the model calls every loss, its own or another library's, through it), and
`float32_forward` makes a loss module's own `forward` do the same when it is called directly. So a loss
under autocast has the value of the float32 computation on the logits the network produced (rounded to
bf16 / fp16 by the network, not by the loss), log-probabilities, LMP weights and tilted sums included;
the gradient flows back to the network in the logits' dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def in_float32(loss: Callable[..., torch.Tensor], logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`loss(logits, target)` outside autocast, with bf16 / fp16 logits cast to float32 (float64 stays)."""
    if logits.is_floating_point() and logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    device = logits.device.type
    if not torch.amp.is_autocast_available(device):
        return loss(logits, target)
    with torch.autocast(device_type=device, enabled=False):
        return loss(logits, target)


def float32_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorate a loss module's `forward(self, logits, target)` to compute in float32 (`in_float32`)."""

    @functools.wraps(forward)
    def wrapped(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return in_float32(functools.partial(forward, self), logits, target)

    return wrapped


def check_nonnegative(value: object, field: str, name: str) -> float:
    """`value` as a float; ValueError naming the loss and the field unless it is a finite number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: {field} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_logits_target(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Raise a ValueError naming the loss if the shapes are not (B, C, H, W) and (B, H, W)."""
    if logits.ndim != 4 or target.ndim != 3:
        raise ValueError(
            f"{name}: expected logits (B, C, H, W) and target (B, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree in batch or size"
        )


def pixel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel CE (B, H, W), 0 at ignored pixels, and the (B, H, W) bool mask of valid pixels.

    Computed in float32 at least (bf16 / fp16 logits are upcast), as the softmax of low-precision logits
    loses the small probabilities that rare classes live on; under autocast call it inside `in_float32`.
    """
    valid = target != ignore_index
    compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    losses = F.cross_entropy(compute, target, ignore_index=ignore_index, reduction="none")
    return losses, valid


def mean_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over the valid pixels of the batch (`pixel_cross_entropy`); 0 with a zero gradient when
    no pixel is valid."""
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    return losses.sum() / valid.sum().clamp_min(1)
