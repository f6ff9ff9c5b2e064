"""Cross-entropy over the valid pixels: the papers' BASE / MCCE loss."""

from __future__ import annotations

import torch
from torch import nn

from tailseg.losses.common import check_logits_target, float32_forward, mean_cross_entropy


class CrossEntropy(nn.Module):
    """Mean cross-entropy over all valid pixels of the batch (TCE paper, eq. 1).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar. A batch with no valid pixel gives 0.

    Args:
        ignore_index: Label of pixels that are left out.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        return mean_cross_entropy(logits, target, self.ignore_index)
