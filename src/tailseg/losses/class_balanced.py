"""Class-balanced cross-entropy: weights from the effective number of samples (Cui et al., CVPR 2019)."""

from __future__ import annotations

import functools

import torch

from tailseg.losses.weighted_ce import WeightedCrossEntropy, check_class_pixel_counts

COUNTS = ("images", "pixels")

#: `beta` given as this word is set from the training counts: `median_beta`.
MEDIAN = "median"


def median_beta(n: torch.Tensor) -> float:
    """β = 1 − 1 / median(n_c) over the classes that occur: the effective number's saturation point 1 / (1 − β)
    placed at the median class count.

    Why (a decision; Cui et al. tune β on a grid per data set, for image counts): E_n saturates at 1 / (1 − β)
    samples, so a β fixed across data sets means something else on each. 1 − 1e-6 over pixels tells CamVid's
    classes apart (tens of millions of labelled pixels; weights 0.52-3.1) but weights every Cityscapes class
    nearly alike, since each has more than 1e6 pixels. With the saturation point at the median count, on every
    data set the frequent half of the classes are weighted nearly alike (E_n between 0.63 and 1 times the
    median) and the rare half about inversely to their counts: between no weighting (β = 0) and inverse
    frequency (β → 1) by the same rule everywhere. CamVid (pixels): β = 1 − 3.5e-7, weights 0.25-3.9 (inverse
    frequency: 0.04-4.5).
    """
    present = n[n > 0].double()
    if len(present) == 0:
        raise ValueError("median_beta: no class occurs in the training counts")
    return float(1.0 - 1.0 / max(float(present.median()), 1.0 + 1e-12))


def effective_number_weights(
    class_pixel_counts: torch.Tensor, beta: float | str, count: str = "images"
) -> torch.Tensor:
    """Class-balanced weights w_c = (1 − β) / (1 − β^{n_c}), scaled so that Σ_c w_c = C' (Cui et al., eq. 3-4).

    E_n = (1 − β^n) / (1 − β) is the effective number of n samples (Cui et al., eq. 3): the expected
    coverage of n samples of a class whose feature space has volume 1 / (1 − β). The weight is 1 / E_{n_c},
    normalised so that the weights of the C' classes that occur sum to C' (the paper's normalisation, which
    keeps the loss's scale that of unweighted cross-entropy). Classes that never occur get weight 0.

    What counts as a sample of class c (`count`):
    - "images": the training images that contain c (an image is one sample of every class it shows, as an
      image with several labels in multi-label classification). β then has the paper's scale: 0.9-0.9999.
    - "pixels": the labelled pixels of c. E_n saturates at 1 / (1 − β) samples, so β must be within about
      1 / (pixels of a frequent class) of 1 to tell the classes apart: 1 − 1e-6 for the tens of millions of
      labelled pixels of the synthetic set and CamVid, nearer 1 for Cityscapes' billions; `median_beta` sets it
      from the counts.
    On the synthetic benchmark counting pixels (β = 1 − 1e-6) gave +4.3 mIoU over cross-entropy and the best
    rarest-five IoU of all methods, counting images (β = 0.999) −2.7: image counts favour classes that are in
    few images (large vehicles) over thin classes that are in many (BENCHMARKS.md, "Leaderboard").

    β^n is computed as exp(n · log β) in float64 (β = 1 − 1e-9 and n = 10^9 are exact to rounding).
    β = 0 gives equal weights; β → 1 approaches inverse frequency.

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.
        beta: β in [0, 1), or "median" for `median_beta` of the counts.
        count: "images" or "pixels", see above.

    Returns:
        (C,) float32 weights.

    Reference:
        Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss Based on Effective Number of
        Samples", CVPR 2019.
    """
    check_beta(beta, "effective_number_weights")
    if count not in COUNTS:
        raise ValueError(f"effective_number_weights: count must be one of {COUNTS}, got {count!r}")
    counts = check_class_pixel_counts(class_pixel_counts, "effective_number_weights")
    n = (counts > 0).sum(0).double() if count == "images" else counts.sum(0).double()
    beta = median_beta(n) if beta == MEDIAN else float(beta)
    present = n > 0
    if beta == 0.0:
        inverse_effective = torch.ones_like(n)
    else:
        log_beta = torch.log(torch.tensor(float(beta), dtype=torch.float64))
        # (1 − β) / (1 − β^n) with 1 − β^n = −expm1(n log β): no cancellation for β near 1
        inverse_effective = -torch.expm1(log_beta) / -torch.expm1(n.clamp_min(1.0) * log_beta)
    weights = torch.where(present, inverse_effective, 0.0)
    return (weights * present.sum() / weights.sum()).float()


def check_beta(beta, owner: str) -> None:
    """ValueError naming `owner` unless `beta` is a number in [0, 1) or "median"."""
    if beta == MEDIAN:
        return
    try:
        ok = 0.0 <= float(beta) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{owner}: beta must be a number in [0, 1) or {MEDIAN!r}, got {beta!r}")


class ClassBalancedCrossEntropy(WeightedCrossEntropy):
    """Cross-entropy weighted by the inverse effective number of samples (Cui et al.), normalised by the weights.

    loss = Σ_i w_{y_i} ce_i / Σ_i w_{y_i} over the valid pixels of the batch (PyTorch's weighted mean), with
    w from `effective_number_weights` of the training set's class pixel-count table, which
    `SegmentationModel` passes to `set_class_statistics` at the start of fitting.

    Decision: the batch-level normalisation by Σ w (as `MedianFrequencyCrossEntropy`) rather than Cui et
    al.'s per-sample sum; the relative weights between classes, which are what the method is about, are the
    paper's.

    Args:
        beta: β of the effective number, in [0, 1), or "median": set from the training counts by `median_beta`
            (what the configs use, with pixel counts, so that β means the same on every data set).
        count: What a sample of a class is: "images" (default, β on the paper's scale) or "pixels" (see
            `effective_number_weights`).
        ignore_index: Label of pixels that are left out.

    Reference:
        Y. Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
    """

    def __init__(self, beta: float | str = 0.999, count: str = "images", ignore_index: int = 255) -> None:
        check_beta(beta, "ClassBalancedCrossEntropy")
        if count not in COUNTS:
            raise ValueError(f"ClassBalancedCrossEntropy: count must be one of {COUNTS}, got {count!r}")
        beta = beta if beta == MEDIAN else float(beta)
        super().__init__(None, functools.partial(effective_number_weights, beta=beta, count=count), "weights",
                         ignore_index)  # fmt: skip
        self.beta, self.count = beta, count
