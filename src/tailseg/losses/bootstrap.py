"""Online bootstrapped cross-entropy (Wu, Shen & van den Hengel; [43] of the LMP paper)."""

from __future__ import annotations

import math

import torch

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy


def bootstrapped_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    k: int | None = None,
    ratio: float | None = None,
    per_image: bool = True,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Mean cross-entropy of the hardest (highest-loss) valid pixels of each image, or of the batch.

    With `per_image`, each image keeps its k_i hardest valid pixels, k_i = min(k, n_i) for a fixed `k`
    or k_i = ceil(ratio * n_i) for a `ratio`, n_i being the image's number of valid pixels; the ceiling
    makes every image with a valid pixel contribute at least one, and ratio = 1 keeps all. Without
    `per_image` the same rule is applied once to the valid pixels of the whole batch. The loss is the
    mean over all kept pixels of the batch (the sum of their losses divided by sum_i k_i), so an image with
    no valid pixel drops out, and a batch with none gives 0 with a zero gradient. Ties between equal
    losses at the cut are broken arbitrarily; the value does not depend on the choice.

    Vectorised: ignored pixels are set to -inf, one `topk` of width max_i k_i runs over all images, and
    the columns beyond each image's k_i are masked out.

    Args:
        logits: Class scores; bf16/fp16 are computed in float32.
        target: Class labels, or `ignore_index`.
        k: Number of pixels kept per image (per batch without `per_image`), >= 1; exclusive with `ratio`.
        ratio: Fraction of the valid pixels kept, in (0, 1]; exclusive with `k`.
        per_image: Select within each image (Wu et al.) rather than over the whole batch.
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Reference:
        Z. Wu, C. Shen and A. van den Hengel, "High-performance semantic segmentation using very deep
        fully convolutional networks", arXiv:1604.04339, 2016 (online bootstrapping).
    """
    if (k is None) == (ratio is None):
        raise ValueError(f"bootstrapped_cross_entropy: give exactly one of k and ratio, got k={k!r}, ratio={ratio!r}")
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    groups = losses.shape[0] if per_image else 1
    scores = losses.reshape(groups, -1)
    valid = valid.reshape(groups, -1)
    pixels = scores.shape[1]
    count = valid.sum(1)
    if k is not None:
        kept = count.clamp_max(k)
        width = min(k, pixels)
    else:
        # A small slack keeps ceil(0.28 * 25) at 7 despite 0.28 * 25 = 7.000000000000001 in floating point.
        kept = torch.ceil(count.double() * ratio - 1e-6).clamp(min=0).long().minimum(count)
        width = min(math.ceil(ratio * pixels), pixels)
    if width == 0:
        return scores.sum() * 0.0
    top = scores.masked_fill(~valid, float("-inf")).topk(width, dim=1).values
    selected = torch.arange(width, device=top.device) < kept.unsqueeze(1)
    return torch.where(selected, top, 0.0).sum() / kept.sum().clamp_min(1)


class BootstrappedCrossEntropy(torch.nn.Module):
    """Online bootstrapping: mean cross-entropy of each image's k hardest valid pixels (see
    `bootstrapped_cross_entropy`).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        k: Pixels kept per image (per batch without `per_image`), clamped to the valid count; >= 1.
        ratio: Fraction of each image's valid pixels kept (ceil), in (0, 1]. Exactly one of k and ratio.
        per_image: Select the hardest pixels within each image (crop), as Wu et al.; False selects over
            the whole batch.
        ignore_index: Label of pixels that are left out.

    Reference:
        Wu, Shen and van den Hengel, arXiv:1604.04339, 2016; the "Online BS" baseline [43] of the LMP paper.
    """

    def __init__(
        self, k: int | None = None, ratio: float | None = None, per_image: bool = True, ignore_index: int = 255
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if (k is None) == (ratio is None):
            raise ValueError(f"{name}: give exactly one of k and ratio, got k={k!r}, ratio={ratio!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"{name}: k must be an integer >= 1, got {k!r}")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1):
            raise ValueError(f"{name}: ratio must be in (0, 1], got {ratio!r}")
        self.k, self.ratio = k, None if ratio is None else float(ratio)
        self.per_image, self.ignore_index = bool(per_image), ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        return bootstrapped_cross_entropy(logits, target, self.k, self.ratio, self.per_image, self.ignore_index)
