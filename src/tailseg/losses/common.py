"""Shared input checks and per-pixel cross-entropy for the loss modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

    Computed in float32 at least (bf16/fp16 logits are upcast), as the softmax of low-precision
    logits loses the small probabilities that rare classes live on.
    """
    valid = target != ignore_index
    compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    losses = F.cross_entropy(compute, target, ignore_index=ignore_index, reduction="none")
    return losses, valid
