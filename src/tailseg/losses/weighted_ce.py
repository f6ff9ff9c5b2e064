"""Cross-entropy with inverse median frequency class weights (Eigen & Fergus; [12] of the LMP paper).

Also holds what the class-weighted losses share: the check of the (N, C) class pixel-count table that
reaches a loss through `set_class_statistics`, `ClassWeightedLoss`, the base class that keeps the
per-class weights (fixed at construction, or derived from that table) as a buffer, and `WeightedCrossEntropy`,
the forward of the class-weighted cross-entropies (this one and `ClassBalancedCrossEntropy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy


def check_class_pixel_counts(class_pixel_counts: torch.Tensor, name: str) -> torch.Tensor:
    """Validate an (N, C) class pixel-count table and return it as float64.

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i (tensor or array-like).
        name: Name of the calling loss, for the error messages.

    Returns:
        The table as a float64 CPU tensor of the same shape.

    Raises:
        ValueError: If the table is not 2-D with at least one class, holds negative or non-finite values,
            or has no labelled pixel at all.
    """
    counts = torch.as_tensor(class_pixel_counts).detach().to(device="cpu", dtype=torch.float64)
    if counts.ndim != 2 or counts.shape[1] < 1:
        raise ValueError(f"{name}: class_pixel_counts must be a 2-D (N, C) table, got shape {tuple(counts.shape)}")
    if not torch.isfinite(counts).all():
        raise ValueError(f"{name}: class_pixel_counts holds non-finite values")
    if (counts < 0).any():
        raise ValueError(f"{name}: class_pixel_counts must be non-negative, got minimum {counts.min().item():g}")
    if counts.sum() <= 0:
        raise ValueError(f"{name}: class_pixel_counts has no labelled pixel (shape {tuple(counts.shape)})")
    return counts


def median_frequency_weights(class_pixel_counts: torch.Tensor) -> torch.Tensor:
    """Inverse median frequency class weights (Eigen & Fergus, ICCV 2015).

    freq_c = (pixels of class c) / (labelled pixels of the images in which c appears), where an image's
    labelled pixels are its row sum in the table (ignore pixels are not in the table). The weight is
    w_c = median(freq) / freq_c, the median taken over the classes that appear in at least one image
    (for an even number of such classes, the mean of the two middle values, as `numpy.median`).
    Classes that never appear get weight 0: they have no frequency, and as they never occur as a target
    their weight would only matter for pixels of a data set other than the one counted.

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.

    Returns:
        The (C,) float32 weights; a class of median frequency has weight 1.

    Shape:
        (N, C) -> (C,).

    Raises:
        ValueError: If the table is not a valid (N, C) table with at least one labelled pixel.

    Reference:
        D. Eigen and R. Fergus, "Predicting depth, surface normals and semantic labels with a common
        multi-scale convolutional architecture", ICCV 2015, section 4.3.
    """
    counts = check_class_pixel_counts(class_pixel_counts, "median_frequency_weights")
    class_pixels = counts.sum(0)
    present = class_pixels > 0
    image_pixels = counts.sum(1, keepdim=True)
    pixels_of_images_with_class = (image_pixels * (counts > 0)).sum(0)
    freq = class_pixels / pixels_of_images_with_class.clamp_min(1.0)
    median = torch.quantile(freq[present], 0.5)
    weights = torch.where(present, median / freq.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return weights.float()


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Class-weighted cross-entropy, normalised by the weights: sum_i w_{y_i} ce_i / sum_i w_{y_i}.

    The sums run over the valid (not ignored) pixels of the batch; this is PyTorch's weighted
    `reduction="mean"`. If the weights of the valid pixels sum to 0 (e.g. no valid pixel), the loss is 0
    with a zero gradient rather than NaN.

    Args:
        logits: Class scores; bf16/fp16 are computed in float32.
        target: Class labels, or `ignore_index`.
        weights: Non-negative per-class weights, length C.
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W), weights (C,) -> scalar.
    """
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    pixel_weights = weights.to(device=losses.device, dtype=losses.dtype)[target.masked_fill(~valid, 0)] * valid
    total_weight = pixel_weights.sum()
    return (pixel_weights * losses).sum() / total_weight.clamp_min(torch.finfo(losses.dtype).tiny)


class ClassWeightedLoss(nn.Module):
    """Base class of losses with per-class weights, fixed or set through the class-statistics channel.

    The weights are kept in the `class_weights` buffer (None until known), so they move with the module
    and are saved in checkpoints; loading a checkpoint that holds them restores them even into a fresh
    module whose weights are not set yet. Losses that derive another (C,) vector from the table keep it the
    same way (`LogitAdjustedCrossEntropy`: the log class prior; `BalancedLogitVariation`: the variation
    scales), naming it in `vector_name`.

    Args:
        weights: Fixed per-class weights, or None to derive them from the class pixel-count table.
        from_counts: Maps the (N, C) table to (C,) weights, or None if the loss takes no weights from it.
        field: Name of the constructor argument that holds the weights, for the error messages.
    """

    class_weights: torch.Tensor | None
    #: What the (C,) vector is (plural), for the error messages: a subclass may keep another per-class vector.
    vector_name = "class weights"
    #: Whether the constructor takes fixed values of the vector (the error message then offers them).
    takes_fixed = True

    def __init__(
        self,
        weights: Sequence[float] | None,
        from_counts: Callable[[torch.Tensor], torch.Tensor] | None,
        field: str = "weights",
    ) -> None:
        super().__init__()
        self._field, self._from_counts = field, from_counts
        self.fixed_weights = weights is not None
        fixed = None
        if weights is not None:
            fixed = torch.as_tensor([float(w) for w in weights], dtype=torch.float32)
            if fixed.ndim != 1 or fixed.numel() < 1:
                raise ValueError(f"{type(self).__name__}: {field} must be a non-empty list of floats, got {weights!r}")
            if not torch.isfinite(fixed).all() or (fixed < 0).any():
                raise ValueError(f"{type(self).__name__}: {field} must be finite and non-negative, got {weights!r}")
        self.register_buffer("class_weights", fixed)

    def set_class_statistics(self, class_pixel_counts: torch.Tensor) -> None:
        """Receive the training set's (N, C) class pixel-count table (called by the model at fit start).

        The table is always validated. Fixed weights given to the constructor are kept (the model calls
        this for every loss that defines it, so overriding them would make them useless); the number of
        classes of the table must then equal their length. Otherwise the weights are derived from the table.

        Raises:
            ValueError: If the table is invalid or disagrees with the fixed weights in its number of classes.
        """
        counts = check_class_pixel_counts(class_pixel_counts, type(self).__name__)
        if self.fixed_weights:
            assert self.class_weights is not None
            if counts.shape[1] != self.class_weights.numel():
                raise ValueError(
                    f"{type(self).__name__}: class_pixel_counts has {counts.shape[1]} classes but {self._field} "
                    f"has {self.class_weights.numel()} entries"
                )
        elif self._from_counts is not None:
            self.class_weights = self._from_counts(counts).float()

    def weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The (C,) float32 weights on the logits' device, checked against C of the logits (None if unused)."""
        if self.class_weights is None:
            if self._from_counts is None:
                return None
            fixed = f", or pass fixed `{self._field}`" if self.takes_fixed else ""
            raise RuntimeError(
                f"{type(self).__name__}: {self.vector_name} are not set. They are derived from the training set's "
                "(N, C) class pixel-count table, which SegmentationModel passes to `set_class_statistics(counts)` "
                "at the start of fitting; call `set_class_statistics` yourself when using the loss outside "
                f"`Trainer.fit`{fixed}."
            )
        if self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: {self._field} has {self.class_weights.numel()} entries but the logits have "
                f"C={logits.shape[1]} classes"
            )
        if self.class_weights.device != logits.device or self.class_weights.dtype != torch.float32:
            self.class_weights = self.class_weights.to(device=logits.device, dtype=torch.float32)
        return self.class_weights

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A None buffer is skipped by nn.Module's loader; give it a tensor to load into.
        key = prefix + "class_weights"
        if self.class_weights is None and key in state_dict:
            self.class_weights = torch.empty_like(state_dict[key], device="cpu")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class WeightedCrossEntropy(ClassWeightedLoss):
    """Cross-entropy weighted per class, normalised by the weights: the forward of the class-weighted CE losses.

    loss = sum_i w_{y_i} ce_i / sum_i w_{y_i} over the valid pixels of the batch (`weighted_cross_entropy`).
    Subclasses say where the weights come from (`ClassWeightedLoss`).
    """

    def __init__(
        self,
        weights: Sequence[float] | None,
        from_counts: Callable[[torch.Tensor], torch.Tensor] | None,
        field: str = "weights",
        ignore_index: int = 255,
    ) -> None:
        super().__init__(weights, from_counts, field)
        self.ignore_index = ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        weights = self.weights_for(logits)
        assert weights is not None
        return weighted_cross_entropy(logits, target, weights, self.ignore_index)


class MedianFrequencyCrossEntropy(WeightedCrossEntropy):
    """Cross-entropy weighted by inverse median frequency (Eigen & Fergus), normalised by the weights.

    loss = sum_i w_{y_i} ce_i / sum_i w_{y_i} over the valid pixels of the batch (PyTorch's weighted mean),
    0 if that weight sum is 0. The weights come from the training set's class pixel-count table through
    `set_class_statistics`, which `SegmentationModel` calls at the start of fitting; calling the loss
    before that raises a RuntimeError. Fixed `weights`, if given, are used instead and are not replaced by
    `set_class_statistics`.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        ignore_index: Label of pixels that are left out.
        weights: Fixed per-class weights (length C, non-negative) instead of the median frequency ones.

    Reference:
        D. Eigen and R. Fergus, ICCV 2015; the "inverse median frequency" baseline [12] of the LMP paper.
    """

    def __init__(self, ignore_index: int = 255, weights: list[float] | None = None) -> None:
        super().__init__(weights, median_frequency_weights, "weights", ignore_index)
