"""Online hard example mining cross-entropy, as in the common PSPNet / mmsegmentation implementations."""

from __future__ import annotations

import torch

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Mean cross-entropy over the valid pixels whose true-class probability is at most a threshold.

    The threshold is t = max(`threshold`, p_(m)), where p_(m) is the m-th smallest true-class probability
    among the valid pixels of the batch and m = min(`min_kept`, number of valid pixels): pixels with
    p_y <= t are kept. So every pixel below `threshold` is kept, and at least m pixels (the m hardest) are
    kept even when fewer are below it; ties with p_(m) are all kept. With `threshold` = 1 every valid pixel
    is kept and the loss is the mean cross-entropy. `min_kept` counts pixels over the whole batch
    (mmsegmentation's `OHEMPixelSampler` multiplies it by the batch size; this does not). The selection
    carries no gradient. A batch with no valid pixel gives 0 with a zero gradient.

    p_y is exp(-ce) of the float32 cross-entropy; p_(m) is found with one `topk(min_kept)` over the batch,
    ignored pixels set above every probability, with no host synchronisation.

    Args:
        logits: Class scores; bf16/fp16 are computed in float32.
        target: Class labels, or `ignore_index`.
        threshold: Probability below which pixels are hard, in (0, 1].
        min_kept: Least number of pixels kept over the batch (fewer if the batch has fewer valid pixels).
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Reference:
        A. Shrivastava, A. Gupta and R. Girshick, "Training region-based object detectors with online hard
        example mining", CVPR 2016; the pixel-wise form of PSPNet/OCNet's `OhemCrossEntropy2d` and
        mmsegmentation's `OHEMPixelSampler`.
    """
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    flat_losses, flat_valid = losses.reshape(-1), valid.reshape(-1)
    if flat_losses.numel() == 0:
        return flat_losses.sum()
    with torch.no_grad():
        # ce >= 0, so p <= 1 even where rounding makes ce slightly negative; ignored pixels sort last.
        prob = torch.exp(-flat_losses.clamp_min(0)).masked_fill(~flat_valid, 2.0)
        smallest = prob.topk(min(min_kept, prob.numel()), largest=False).values
        m = flat_valid.sum().clamp(max=min_kept, min=1)
        cut = torch.clamp_min(smallest[m - 1], threshold)
        kept = flat_valid & (prob <= cut)
    return (flat_losses * kept).sum() / kept.sum().clamp_min(1)


class OhemCrossEntropy(torch.nn.Module):
    """OHEM cross-entropy: mean CE over the pixels with true-class probability <= threshold, at least
    `min_kept` of them over the batch (see `ohem_cross_entropy`).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        threshold: Probability below which pixels are hard, in (0, 1].
        min_kept: Least number of (hardest) pixels kept over the batch, >= 1.
        ignore_index: Label of pixels that are left out.

    Reference:
        Shrivastava et al., CVPR 2016; PSPNet/OCNet's `OhemCrossEntropy2d`, mmsegmentation's `OHEMPixelSampler`.
    """

    def __init__(self, threshold: float = 0.7, min_kept: int = 100_000, ignore_index: int = 255) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"{name}: threshold must be in (0, 1], got {threshold!r}")
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 1:
            raise ValueError(f"{name}: min_kept must be an integer >= 1, got {min_kept!r}")
        self.threshold, self.min_kept, self.ignore_index = float(threshold), min_kept, ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        return ohem_cross_entropy(logits, target, self.threshold, self.min_kept, self.ignore_index)
