"""Losses, each an `nn.Module` called as `loss(logits[B, C, H, W], target[B, H, W]) -> scalar`."""

from tailseg.losses.ce import CrossEntropy

__all__ = ["CrossEntropy"]
