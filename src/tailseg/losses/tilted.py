"""Tilted cross-entropy (TCE) at image or class level: the batch form of the TCE paper's eqs. 2 and 3.

Tilting (Li, Beirami, Sanjabi and Smith, "Tilted Empirical Risk Minimization", ICLR 2021) replaces a mean of
losses by (1/t) · log mean exp(t · L): t > 0 leans towards the largest losses (fairness; t → ∞ minimises the
worst one), t < 0 towards the smallest (robustness to outliers), and t → 0 gives back the plain mean. Its
gradient is the softmax(t · L)-weighted average of the individual losses' gradients.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy

LEVELS = ("image", "class")
# Below this |t| the tilted mean is replaced by the plain mean, its t → 0 limit. The difference is about
# t · Var(L) / 2, so at most ~1e-6 · Var(L).
TILT_EPS = 1e-6


def check_finite(name: str, value) -> float:
    """`value` as a float; ValueError naming `name` unless it is a finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_tilt(t: float) -> float:
    """`t` as a float; ValueError unless it is a finite number (negative values are allowed)."""
    return check_finite("tilt t", t)


def tilted_mean(values: torch.Tensor, t: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Tilted mean (1/t) · log( mean_i exp(t · values_i) ) over the entries of the last dimension in `mask`.

    Evaluated as a + (1/t) · log1p( mean_i expm1(t · (values_i − a)) ) with the anchor a = the largest (t > 0) or
    smallest (t < 0) valid value, held constant for autograd (the result does not depend on it). Every exponent
    is ≤ 0, so nothing overflows for any t (t = 100 with losses of 50 is fine), and, unlike
    (logsumexp(t · v) − log n) / t, small |t| loses no precision to cancellation (in float32 that form is off by
    ~0.3 at t = 1e-6). For |t| < 1e-6 the plain masked mean, the t → 0 limit, is returned.

    Masking is where-based: entries outside `mask` (which may hold anything, even inf or NaN) get exactly zero
    gradient, rows without a valid entry give 0 with zero gradient, and all gradients stay finite.

    Args:
        values: Losses, reduced over the last dimension.
        t: Tilt, a finite number; > 0 emphasises large values, < 0 small ones.
        mask: Bool tensor of the shape of `values` marking the entries to use; None uses all.

    Returns:
        Tensor of shape values.shape[:-1]: the tilted mean per row, 0 for rows with no valid entry.

    Shape:
        values (..., N), mask (..., N) -> (...).

    Reference:
        TERM (Li et al.), eq. 2: R̃(θ, t) = (1/t) · log( (1/N) · Σ_i exp(t · f(x_i; θ)) ); TCE paper, eqs. 2 and 3.
    """
    t = check_tilt(t)
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    elif mask.shape != values.shape:
        raise ValueError(f"tilted_mean: mask {tuple(mask.shape)} and values {tuple(values.shape)} differ in shape")
    mask = mask.bool()
    zeros = torch.zeros_like(values)
    count = mask.sum(-1)
    has_any = count > 0
    denominator = count.clamp_min(1).to(values.dtype)
    if abs(t) < TILT_EPS:
        return torch.where(mask, values, zeros).sum(-1) / denominator
    with torch.no_grad():
        extreme = torch.full_like(values, -math.inf if t > 0 else math.inf)
        anchor = torch.where(mask, values, extreme)
        anchor = anchor.amax(-1) if t > 0 else anchor.amin(-1)
        anchor = torch.where(has_any, anchor, torch.zeros_like(anchor))
    exponent = torch.where(mask, t * (values - anchor.unsqueeze(-1)), zeros)  # ≤ 0 on valid entries
    shifted_mean = torch.where(mask, torch.expm1(exponent), zeros).sum(-1) / denominator  # in (−1, 0]
    tilted = anchor + torch.log1p(shifted_mean) / t
    return torch.where(has_any, tilted, torch.zeros_like(tilted))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the entries in `mask` along the last dimension; 0 (zero gradient) where none is."""
    return tilted_mean(values, 0.0, mask)


def image_losses(pixel_losses: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean CE L_m over each image's valid pixels, and which images have any.

    Args:
        pixel_losses: Per-pixel CE, 0 at ignored pixels.
        valid: Bool mask of the valid (not ignored) pixels.

    Returns:
        (L (B,), has_valid (B,) bool); L_m = 0 for an image without valid pixels.

    Shape:
        pixel_losses (B, H, W), valid (B, H, W) -> (B,), (B,).

    Reference:
        TCE paper, eq. 2 (L_m, with the mean over the valid pixels instead of all N pixels).
    """
    counts = valid.flatten(1).sum(1)
    sums = torch.where(valid, pixel_losses, torch.zeros_like(pixel_losses)).flatten(1).sum(1)
    return sums / counts.clamp_min(1).to(sums.dtype), counts > 0


def image_class_losses(
    pixel_losses: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(image, class) mean CE L_{m,c} over the valid pixels of class c in image m, and which pairs occur.

    Computed for the whole batch at once by summing into a flat B · C index (index_add / bincount).

    Args:
        pixel_losses: Per-pixel CE, 0 at ignored pixels.
        target: Labels; only read at valid pixels, where they lie in [0, num_classes).
        valid: Bool mask of the valid (not ignored) pixels.
        num_classes: C.

    Returns:
        (L (B, C), present (B, C) bool); L_{m,c} = 0 where class c has no valid pixel in image m.

    Shape:
        pixel_losses, target, valid (B, H, W) -> (B, C), (B, C).

    Reference:
        TCE paper, eq. 3 (L_{m,c}).
    """
    batch = target.shape[0]
    labels = torch.where(valid, target, torch.zeros_like(target)).long()
    offsets = torch.arange(batch, device=target.device).view(batch, *([1] * (target.ndim - 1))) * num_classes
    index = (offsets + labels).flatten()
    keep = valid.flatten()
    contributions = torch.where(keep, pixel_losses.flatten(), torch.zeros_like(pixel_losses.flatten()))
    sums = pixel_losses.new_zeros(batch * num_classes).index_add(0, index, contributions)
    counts = torch.bincount(index[keep], minlength=batch * num_classes)
    means = sums / counts.clamp_min(1).to(sums.dtype)
    return means.view(batch, num_classes), (counts > 0).view(batch, num_classes)


def tilted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, t: float = 1.0, level: str = "image", ignore_index: int = 255
) -> torch.Tensor:
    """Tilted cross-entropy of a batch at image level (eq. 2) or class level (eq. 3).

    - ``"image"``: (1/t) · log mean_m exp(t · L_m) over the images m with valid pixels, L_m the mean CE over
      image m's valid pixels.
    - ``"class"``: per image, (1/t) · log mean_c exp(t · L_{m,c}) over the classes c present among its valid
      pixels (eq. 3's 1/K counts these classes only: L_{m,c} is undefined for absent ones), L_{m,c} the mean CE
      over those pixels; then the plain mean over the images with valid pixels.

    Images without valid pixels drop out; an all-ignored batch gives 0 with a zero (finite) gradient. t → 0
    gives back the untilted means: the mean of the per-image means, or the mean over images of the mean over
    present classes. The CE and the tilt are computed in float32 at least (bf16 / fp16 logits are upcast).

    Args:
        logits: Class scores; C is taken from them.
        target: Labels in [0, C) or `ignore_index`.
        t: Tilt, finite; > 0 promotes fairness (weighs hard images / classes up), < 0 robustness.
        level: ``"image"`` or ``"class"``.
        ignore_index: Label of pixels that are left out.

    Returns:
        Scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> ().

    Reference:
        TCE paper, eqs. 2 and 3.
    """
    t = check_tilt(t)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    check_logits_target(logits, target, "TiltedCrossEntropy")
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    if level == "image":
        values, present = image_losses(losses, valid)
        return tilted_mean(values, t, present)
    values, present = image_class_losses(losses, target, valid, logits.shape[1])
    per_image = tilted_mean(values, t, present)
    return masked_mean(per_image, present.any(-1))


class TiltedCrossEntropy(nn.Module):
    """Tilted cross-entropy (TCE paper, eq. 2 at image level, eq. 3 at class level) over a batch.

    See `tilted_cross_entropy`. The paper mainly trains with a stochastic variant (its Algorithm 1, tilting by
    class-wise sampling); this module is the direct form of eqs. 2 and 3 on each batch.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar. A batch with no valid pixel gives 0.

    Args:
        t: Tilt, finite; > 0 promotes fairness, < 0 robustness; |t| < 1e-6 is plain CE averaging.
        level: ``"image"`` (eq. 2, tilt over the images of the batch) or ``"class"`` (eq. 3, tilt over the
            classes present in each image, averaged over images).
        ignore_index: Label of pixels that are left out.
    """

    def __init__(self, t: float = 1.0, level: str = "image", ignore_index: int = 255) -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.t = check_tilt(t)
        self.level = level
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return f"t={self.t}, level={self.level!r}, ignore_index={self.ignore_index}"

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tilted_cross_entropy(logits, target, self.t, self.level, self.ignore_index)
