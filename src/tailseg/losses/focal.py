"""Softmax focal loss (Lin et al.) with inverse class frequency weights, as configured in the TCE paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tailseg.losses.common import check_logits_target, check_nonnegative, float32_forward
from tailseg.losses.weighted_ce import ClassWeightedLoss, check_class_pixel_counts


def inverse_frequency_weights(class_pixel_counts: torch.Tensor) -> torch.Tensor:
    """Inverse normalised class pixel counts over the whole training set, normalised to mean 1.

    freq_c = (pixels of class c) / (all labelled pixels), from the column sums of the table;
    alpha_c = (1 / freq_c) / mean_{c' present}(1 / freq_{c'}) for the classes present in the table, and 0
    for classes that never appear (they have no frequency and never occur as a target).

    Why mean 1 (so sum_c alpha_c = number of present classes, C when all are present) rather than sum 1:
    with uniform class frequencies every alpha_c is 1, so the focal loss with gamma = 0 is exactly the
    cross-entropy, and the loss keeps the scale of the cross-entropy it is compared with, so the same
    learning rate applies. Normalising to sum 1 would shrink the loss, and in effect the learning rate,
    by a factor of C. Only the ratios of the alpha_c are fixed by "inverse frequency"; the scale is a choice.

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.

    Returns:
        The (C,) float32 weights alpha.

    Shape:
        (N, C) -> (C,).

    Raises:
        ValueError: If the table is not a valid (N, C) table with at least one labelled pixel.

    Reference:
        TCE paper (Szabo et al.), section 3: focal loss with gamma = 2 and alpha "set to the inverse
        (normalized) class pixel counts computed across the whole dataset".
    """
    counts = check_class_pixel_counts(class_pixel_counts, "inverse_frequency_weights")
    class_pixels = counts.sum(0)
    present = class_pixels > 0
    inverse = torch.where(present, class_pixels.sum() / class_pixels.clamp_min(1e-300), 0.0)
    return (inverse / inverse[present].mean()).float()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Softmax focal loss, FL_i = -alpha_{y_i} (1 - p_{y_i})^gamma log p_{y_i}, averaged over the valid pixels.

    Normalisation: the sum over the valid pixels of the batch divided by their number (not by the sum of
    their alpha, unlike the weighted cross-entropy); a batch with no valid pixel gives 0 with a zero
    gradient. With gamma = 0 and alpha = None this is the mean cross-entropy.

    Computed in float32 at least (bf16/fp16 logits are upcast), with log p from `log_softmax` and
    1 - p = -expm1(log p), which keeps its precision for well-classified pixels. 1 - p is clamped below
    at the smallest normal float, so that for 0 < gamma < 1 a saturated pixel (p = 1) has a zero
    rather than NaN gradient.

    Args:
        logits: Class scores.
        target: Class labels, or `ignore_index`.
        gamma: Focusing parameter, >= 0.
        alpha: Per-class weights (C,), or None for no class weighting.
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W), alpha (C,) -> scalar.

    Reference:
        T.-Y. Lin, P. Goyal, R. Girshick, K. He and P. Dollar, "Focal loss for dense object detection",
        ICCV 2017.
    """
    compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    valid = target != ignore_index
    safe_target = target.masked_fill(~valid, 0)
    log_p = F.log_softmax(compute, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
    losses = -one_minus_p.pow(gamma) * log_p
    if alpha is not None:
        losses = losses * alpha.to(device=losses.device, dtype=losses.dtype)[safe_target]
    return (losses * valid).sum() / valid.sum().clamp_min(1)


class FocalLoss(ClassWeightedLoss):
    """Softmax focal loss, mean over the valid pixels of the batch (see `focal_loss`).

    `alpha="inverse_frequency"` (the TCE paper's configuration, with gamma = 2) derives the class weights
    from the training set's class pixel-count table (`inverse_frequency_weights`, mean 1 over the present
    classes), which reaches the loss through `set_class_statistics` at the start of fitting; calling the
    loss before that raises a RuntimeError. A list gives fixed weights, which `set_class_statistics` does
    not replace; None disables class weighting.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        gamma: Focusing parameter, >= 0 (0 gives the alpha-weighted cross-entropy).
        alpha: "inverse_frequency", None, or a list of C non-negative weights.
        ignore_index: Label of pixels that are left out.

    Reference:
        Lin et al., ICCV 2017; configuration of the TCE paper, section 3.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: str | list[float] | None = "inverse_frequency",
        ignore_index: int = 255,
    ) -> None:
        name = type(self).__name__
        gamma = check_nonnegative(gamma, "gamma", name)
        if isinstance(alpha, str):
            if alpha != "inverse_frequency":
                raise ValueError(f"{name}: alpha must be 'inverse_frequency', None or a list of floats, got {alpha!r}")
            super().__init__(None, inverse_frequency_weights, field="alpha")
        else:
            super().__init__(alpha, None, field="alpha")
        self.gamma, self.alpha, self.ignore_index = gamma, alpha, ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        return focal_loss(logits, target, self.gamma, self.weights_for(logits), self.ignore_index)
