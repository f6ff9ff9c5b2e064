"""Paired comparisons of two methods evaluated on the same images, over seeds: intervals, p-values, Holm.

A comparison of method A with reference B is paired twice:

- by image: both were evaluated on the same images, so one bootstrap resample re-weights the images of A and
  of B with the *same* weight vector (image i drawn w_i times in both). The variance that the two share (an
  image hard for both) cancels in Δ = IoU_A − IoU_B; resampling A and B independently would count it twice;
- by seed: seed s of A is compared with seed s of B (seeds paired by number). With k > 1 seed pairs a resample
  draws k seed pairs with replacement and one image weight vector, the same for every drawn pair, so the
  interval holds the variance across seeds (training noise) as well as across images (test-set noise)
  (Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks", MLSys 2021). With one
  seed pair the interval is over images only and says nothing about another training run.

Why one image draw for all the seeds of a resample: seeds and images are crossed, not nested - every seed is
evaluated on the same test images - so the test set's sampling error is common to all seeds and does not average
out over them. Drawing the images anew for each seed would treat each seed as evaluated on a test set of its
own, and the image part of the variance of a k-seed mean would shrink as 1/k: k copies of one evaluation would
get an interval about 1/sqrt(k) as wide as the evaluation's own, and a method that differs from the reference
only image by image (better on some, worse on others, alike in every seed) would be marked significant more
often the more seeds it has. With one shared draw, k identical evaluations give exactly the interval of one
(the image weights are drawn before the seeds, so they are the very weights of the one-seed resample). This is
the two-way (seeds x images) bootstrap of a crossed design; "resample seeds, then images" is read as applying one
image resample to all the drawn seeds.

A resample's Δ of class c is the mean over its drawn seed pairs of IoU_A,c − IoU_B,c, each IoU from the
re-weighted sums of the per-image counts (`tailseg.metrics.bootstrap`); ΔmIoU likewise with the mIoU of each
side. The point Δ is the mean over the seed pairs of the whole-set Δ. A *class-subset mean* (`subsets`, e.g. the
reference's worst quarter of the classes) is the mIoU restricted to a fixed set S of classes: a resample's Δ_S is
the mean over its drawn seed pairs of mean_S(IoU_A) − mean_S(IoU_B), each side's mean over the classes of S that
have an IoU on that side (NaN left out, as in mIoU), from the same re-weighted counts - the same draws - as the
per-class Δ; a pair where a side has no IoU in any class of S is left out of that mean, as a per-class Δ leaves
out the pairs where its class is absent. S is given, never chosen from the resample: the classes must be the same
on both sides of the paired difference and in every resample (re-sorting per resample would pick each resample's
unluckiest classes, another statistic, biased). Intervals are percentile intervals
(Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13); the two-sided p-value is the one
that inverts them, p = min(1, 2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0))): the largest α at which the (1 − α) percentile
interval still holds 0 (ch. 15-16). Each P* is (1 + count) / (1 + R) over the R resamples where Δ is
defined, so p is never 0 (Davison & Hinkley, 1997, §4.2). Over the classes the p-values are corrected with
Holm's step-down method (S. Holm, "A simple sequentially rejective multiple test procedure", Scandinavian
Journal of Statistics, 1979), which bounds the family-wise error rate without assuming independence.

`prob_better` is P(A > B) over the seed pairs, ties counting one half (Bouthillier et al., 2021, §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tailseg.metrics.bootstrap import iou_from_counts, mean_iou, per_image_miou, percentile_interval, resample_weights

#: Fewest seed pairs for P(method > reference).
MIN_SEEDS_PROB_BETTER = 3

Counts = tuple[np.ndarray, np.ndarray]
"""The (intersection, union) per-image counts of one evaluation, each (n, C)."""


@dataclass(frozen=True)
class PairedResult:
    """Δ = method − reference (IoU as fractions).

    Attributes:
        delta: (C,) point Δ per class (NaN where a class has no IoU on either side).
        delta_ci: (2, C) percentile interval of Δ per class.
        p: (C,) two-sided bootstrap p-value per class (NaN where Δ is never defined).
        miou: Point ΔmIoU.
        miou_ci: (2,) its interval.
        miou_p: Its p-value.
        pairs: Number of seed pairs k.
        resamples: R.
        subsets: {name: `SubsetDelta`} of each class subset asked for (`paired_bootstrap`'s `subsets`).
    """

    delta: np.ndarray
    delta_ci: np.ndarray
    p: np.ndarray
    miou: float
    miou_ci: np.ndarray
    miou_p: float
    pairs: int
    resamples: int
    subsets: dict[str, SubsetDelta] = field(default_factory=dict)


@dataclass(frozen=True)
class SubsetDelta:
    """Δ of the mean IoU over a fixed subset of the classes, method − reference (fractions; see the module docs).

    Attributes:
        classes: The class indices of the subset.
        delta: Point Δ: the mean over the seed pairs of the whole-set Δ of the subset means (NaN if never defined).
        ci: (2,) its percentile interval, from the same resamples as the per-class Δ and ΔmIoU.
        p: Its two-sided bootstrap p-value (`bootstrap_p`).
    """

    classes: tuple[int, ...]
    delta: float
    ci: np.ndarray
    p: float


@dataclass(frozen=True)
class SeedImageResult:
    """A method's figures over seeds with intervals over seeds and images (IoU as fractions).

    Attributes:
        per_class_iou: (C,) mean over the seeds of the whole-set IoU.
        per_class_iou_ci: (2, C).
        miou: Mean over the seeds of the whole-set mIoU.
        miou_ci: (2,).
        per_image_miou: Mean over the seeds of the mean per-image mIoU (`bootstrap.per_image_miou`).
        per_image_miou_ci: (2,).
        seeds: Number of seeds k.
    """

    per_class_iou: np.ndarray
    per_class_iou_ci: np.ndarray
    miou: float
    miou_ci: np.ndarray
    per_image_miou: float
    per_image_miou_ci: np.ndarray
    seeds: int


def _stack(counts: Sequence[Counts], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(k, n, C) intersection and union of k evaluations of the same n images."""
    if len(counts) < 1:
        raise ValueError(f"{name}: no evaluation")
    shapes = {np.shape(i) for i, _ in counts} | {np.shape(u) for _, u in counts}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{name}: the evaluations' per-image counts differ in shape: {sorted(shapes)}")
    return (np.stack([np.asarray(i, np.float64) for i, _ in counts]),
            np.stack([np.asarray(u, np.float64) for _, u in counts]))  # fmt: skip


def draw(
    k: int, n: int, resamples: int, seed: int, groups: Sequence | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The random draws of a two-level resample: the image weights, shared by its seed slots, and which seed
    (pair) each slot takes (module docs).

    Args:
        k: Number of seeds (or seed pairs).
        n: Number of images.
        resamples: R.
        seed: Seed of the random stream.
        groups: A label per image to resample groups of images (`bootstrap.resample_weights`).

    Returns:
        (seeds, weights): (R, k) int indices of the drawn seeds (with replacement when k > 1, else all 0), and
        (R, n) image weights, one vector per resample for all its seed slots (drawn first, so that they do not
        depend on k).
    """
    rng = np.random.default_rng(seed)
    weights = resample_weights(n, resamples, rng, groups)
    seeds = rng.integers(0, k, size=(resamples, k)) if k > 1 else np.zeros((resamples, k), dtype=np.int64)
    return seeds, weights


def _weighted_sums(seeds: np.ndarray, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(R, k, C): Σ_i w_ri · counts[seeds[r, j], i, c]."""
    by_seed = np.stack([weights.astype(np.float64) @ c for c in counts])  # (K, R, C): each seed's resampled sums
    return by_seed[seeds, np.arange(len(weights))[:, None]]


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean over `axis` of the non-NaN values; NaN where there are none (without a warning)."""
    present = ~np.isnan(values)
    count = present.sum(axis=axis)
    total = np.where(present, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap_p(samples: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of "the statistic is 0" along axis 0: min(1, 2 · min(P*(x ≤ 0), P*(x ≥ 0))),
    each P* = (1 + count) / (1 + R) over the R non-NaN samples (see the module docs); NaN where all are NaN."""
    samples = np.asarray(samples, np.float64)
    valid = (~np.isnan(samples)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        below = (1.0 + (samples <= 0).sum(axis=0)) / (1.0 + valid)
        above = (1.0 + (samples >= 0).sum(axis=0)) / (1.0 + valid)
    return np.where(valid > 0, np.minimum(1.0, 2.0 * np.minimum(below, above)), np.nan)


def subset_mean(iou: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The mean IoU over the classes `classes` of the last axis that have an IoU (NaN left out, as `mean_iou`);
    NaN where none of them has one."""
    return mean_iou(np.asarray(iou, np.float64)[..., list(classes)])


def _subset_classes(subsets: Mapping[str, Sequence[int]] | None, num_classes: int) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, classes in (subsets or {}).items():
        indices = tuple(int(c) for c in classes)
        if not indices or len(set(indices)) != len(indices) or not all(0 <= c < num_classes for c in indices):
            raise ValueError(f"paired: subset {name!r} must be distinct class indices in [0, {num_classes}), "
                             f"got {list(classes)}")  # fmt: skip
        out[name] = indices
    return out


def paired_bootstrap(
    method_counts: Sequence[Counts],
    reference_counts: Sequence[Counts],
    resamples: int,
    seed: int,
    groups: Sequence | np.ndarray | None = None,
    level: float = 0.95,
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> PairedResult:
    """Δ = method − reference per class and in mIoU, with percentile intervals and p-values (module docs).

    Args:
        method_counts: k (intersection, union) pairs of (n, C) counts, one per seed.
        reference_counts: The reference's k, seed j paired with the method's seed j; all on the same n images in
            the same order (`PerImage.aligned`).
        resamples: R.
        seed: Seed of the resampling.
        groups: A label per image to resample groups of images instead.
        level: Coverage of the intervals.
        subsets: {name: class indices}: also Δ of the mean IoU over each fixed class subset, from the same
            resamples (`PairedResult.subsets`, see the module docs).

    Raises:
        ValueError: no seed pair, a different number of seeds, counts of different shapes, or a subset that is
            empty, repeats a class or names a class out of range.
    """
    if len(method_counts) != len(reference_counts):
        raise ValueError(f"paired: {len(method_counts)} method seeds for {len(reference_counts)} reference seeds")
    mi, mu = _stack(method_counts, "method")
    ri, ru = _stack(reference_counts, "reference")
    if mi.shape != ri.shape:
        raise ValueError(f"paired: method counts {mi.shape[1:]} and reference counts {ri.shape[1:]} differ")
    k, n, num_classes = mi.shape
    chosen = _subset_classes(subsets, num_classes)
    seeds, weights = draw(k, n, resamples, seed, groups)
    method_iou = iou_from_counts(_weighted_sums(seeds, weights, mi), _weighted_sums(seeds, weights, mu))
    reference_iou = iou_from_counts(_weighted_sums(seeds, weights, ri), _weighted_sums(seeds, weights, ru))
    per_class = _nanmean(method_iou - reference_iou, axis=1)  # (R, C)
    miou = (mean_iou(method_iou) - mean_iou(reference_iou)).mean(axis=1)  # (R,)
    whole_method, whole_reference = iou_from_counts(mi.sum(1), mu.sum(1)), iou_from_counts(ri.sum(1), ru.sum(1))
    by_subset = {}
    for name, classes in chosen.items():
        samples = _nanmean(subset_mean(method_iou, classes) - subset_mean(reference_iou, classes), axis=1)  # (R,)
        point = _nanmean(subset_mean(whole_method, classes) - subset_mean(whole_reference, classes), axis=0)
        by_subset[name] = SubsetDelta(classes=classes, delta=float(point), ci=percentile_interval(samples, level),
                                      p=float(bootstrap_p(samples)))  # fmt: skip
    return PairedResult(
        delta=_nanmean(whole_method - whole_reference, axis=0),
        delta_ci=percentile_interval(per_class, level),
        p=bootstrap_p(per_class),
        miou=float(np.mean(mean_iou(whole_method) - mean_iou(whole_reference))),
        miou_ci=percentile_interval(miou, level),
        miou_p=float(bootstrap_p(miou)),
        pairs=k,
        resamples=resamples,
        subsets=by_subset,
    )


def seed_and_image_interval(
    counts_per_seed: Sequence[Counts],
    resamples: int,
    seed: int,
    groups: Sequence | np.ndarray | None = None,
    level: float = 0.95,
) -> SeedImageResult:
    """A method's IoU over k seeds with intervals holding the variance across seeds and across images: each
    resample draws k seeds with replacement and one image weight vector for all of them (module docs), and
    averages the drawn seeds' figures (Bouthillier et al., 2021). With one seed it is the interval over images;
    k identical evaluations give exactly that interval.

    Args:
        counts_per_seed: k (intersection, union) pairs of (n, C) counts on the same images.
        resamples, seed, groups, level: As `paired_bootstrap`.
    """
    intersection, union = _stack(counts_per_seed, "method")
    k, n, _ = intersection.shape
    seeds, weights = draw(k, n, resamples, seed, groups)
    iou = iou_from_counts(_weighted_sums(seeds, weights, intersection), _weighted_sums(seeds, weights, union))
    images = np.stack([per_image_miou(i, u) for i, u in zip(intersection, union, strict=True)])  # (k, n)
    labelled = ~np.isnan(images)
    picked_images, picked_labelled = images[seeds], labelled[seeds]  # (R, k, n)
    w = weights[:, None, :] * picked_labelled
    with np.errstate(invalid="ignore", divide="ignore"):
        image_means = (w * np.where(picked_labelled, picked_images, 0.0)).sum(-1) / w.sum(-1)
    whole = iou_from_counts(intersection.sum(1), union.sum(1))
    return SeedImageResult(
        per_class_iou=_nanmean(whole, axis=0),
        per_class_iou_ci=percentile_interval(_nanmean(iou, axis=1), level),
        miou=float(np.mean(mean_iou(whole))),
        miou_ci=percentile_interval(mean_iou(iou).mean(axis=1), level),
        per_image_miou=float(np.mean(_nanmean(images, axis=1))),
        per_image_miou_ci=percentile_interval(_nanmean(image_means, axis=1), level),
        seeds=k,
    )


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' `multipletests(method="holm")`) of the non-NaN entries of `p`, the
    family being those entries; NaN entries stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        out[tested] = multipletests(p[tested], method="holm")[1]
    return out


def prob_better(
    method_mious: Sequence[float] | Mapping, reference_mious: Sequence[float] | Mapping
) -> tuple[float | None, str | None]:
    """P(method > reference) over seed pairs: the share of pairs with the method's mIoU higher, a tie counting 1/2.

    Args:
        method_mious: The method's mIoU per seed: {seed: mIoU} (paired with the reference's by seed number, seeds
            of one side only left out) or a sequence (paired by position with the reference's).
        reference_mious: The reference's, of the same kind.

    Returns:
        (probability, None), or (None, reason) with fewer than `MIN_SEEDS_PROB_BETTER` pairs.

    Raises:
        ValueError: sequences of different lengths.
    """
    if isinstance(method_mious, Mapping) and isinstance(reference_mious, Mapping):
        common = [seed for seed in reference_mious if seed in method_mious]
        method_mious, reference_mious = [method_mious[s] for s in common], [reference_mious[s] for s in common]
    a, b = np.asarray(method_mious, np.float64), np.asarray(reference_mious, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"prob_better: {a.size} method seeds for {b.size} reference seeds")
    if a.size < MIN_SEEDS_PROB_BETTER:
        return None, f"{a.size} seed pair{'s' if a.size != 1 else ''}; needs {MIN_SEEDS_PROB_BETTER}"
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / a.size), None
