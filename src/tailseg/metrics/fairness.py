"""Fairness criteria of a per-class IoU vector (TCE paper, §3 and Table 3) and the LMP "worst k" argument.

The TCE paper (Szabó, Jamali-Rad and Mannava, "Tilted Cross-Entropy (TCE): Promoting Fairness in Semantic
Segmentation", CVPRW 2021) judges a model's fairness across classes by

1. the mean IoU of the bottom / top 25 % of the classes when the classes are sorted by the IoU of a reference
   model (the MCCE model) -- "sorted 25 %";
2. the 25th / 75th percentile of the model's *own* class IoUs and the mean IoU of the classes at or below / at
   or above it -- "(25th perc., mIoU)";
3. the worst class IoU and the standard deviation across classes -- "overall".

Which reading reproduces the paper: with the 19 Cityscapes IoUs of its Table 1, every entry of its Table 3 is
reproduced to the printed 2 decimals (no entry off) by: ⌈0.25 · 19⌉ = 5 classes for "sorted 25 %" (the paper:
"5 classes out of 19"); percentiles with linear interpolation between order statistics (numpy's default method,
position p · (K − 1)); the classes *at or below* (*at or above*) the threshold for the percentile means; and the
sample standard deviation (ddof = 1; ddof = 0 gives 14.56 instead of the printed 14.96 for MCCE). The
"lower"/"higher"/"nearest"/inverted-CDF percentile methods do not reproduce the thresholds (e.g. 62.98 or
66.21 instead of 64.60 for MCCE).

`worst_k_to_match` turns the argument of the loss max-pooling paper (Rota Bulò, Neuhold and Kontschieder,
"Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017, §5.2: "to match the result of LMP, one has to
e.g. improve the worst 7 categories by 5 % each or the worst 10 categories by 3 % each") into a function.
"""

from __future__ import annotations

import math

import numpy as np

from tailseg.metrics.summary import summarize_iou

# fraction · K is rounded to this many decimals before the ceiling, so that e.g. 0.55 · 100 = 55.00000000000001
# counts as 55 classes, not 56.
_COUNT_DECIMALS = 9
# A target met to within this relative floating-point tolerance counts as reached in `worst_k_to_match`.
_MATCH_RTOL = 1e-9


def _as_vector(values, name: str) -> np.ndarray:
    """`values` (sequence, numpy array or tensor) as a float64 1-D array; ValueError if not 1-D or holding ±inf."""
    if hasattr(values, "detach"):  # torch.Tensor (possibly on an accelerator or requiring grad)
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D per-class IoU vector, got shape {array.shape}")
    if np.isinf(array).any():
        raise ValueError(f"{name}: IoU values must be finite (or NaN for classes without an IoU)")
    return array


def _require_some(values: np.ndarray, name: str) -> None:
    if values.size == 0 or np.isnan(values).all():
        raise ValueError(f"{name}: needs at least one class with a (non-NaN) IoU, got {values.size} entries, all NaN")


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:  # also False for NaN
        raise ValueError(f"fraction must lie in the open interval (0, 1), got {fraction}")
    return fraction


def class_count(fraction: float, num_classes: int) -> int:
    """Number of classes in a bottom / top `fraction` of `num_classes`: ⌈fraction · K⌉, at least 1.

    Args:
        fraction: Share of the classes, in (0, 1).
        num_classes: K.

    Returns:
        ⌈fraction · K⌉ (5 for the paper's 25 % of 19 Cityscapes classes), with fraction · K rounded to 9 decimals
        first so that floating-point noise does not add a class.
    """
    return max(1, math.ceil(round(_check_fraction(fraction) * num_classes, _COUNT_DECIMALS)))


def sorted_bottom_top(iou, reference, fraction: float = 0.25) -> tuple[float, float]:
    """Mean IoU of the classes that are lowest / highest in `reference` (TCE paper, Table 3 "sorted 25 %").

    Classes are ranked by `reference` (the paper: the MCCE model's IoU, the same ranking for every model), and
    the mean of `iou` is taken over the ⌈fraction · K⌉ lowest and the ⌈fraction · K⌉ highest of them. Ties in
    `reference` are broken by class index (stable sort).

    Args:
        iou: Per-class IoU of the model judged (1-D, any scale).
        reference: Per-class IoU of the reference model, same length and class order.
        fraction: Share of the classes in each of the bottom and top groups, in (0, 1).

    Returns:
        (bottom mean, top mean) in the scale of `iou`. Classes NaN in `iou` *or* in `reference` are dropped
        first, so K is the number of classes with an IoU in both.

    Raises:
        ValueError: for bad `fraction`, non-1-D input, lengths that differ, or no class with an IoU in both.
    """
    fraction = _check_fraction(fraction)
    values, ref = _as_vector(iou, "iou"), _as_vector(reference, "reference")
    if values.shape != ref.shape:
        raise ValueError(f"iou and reference must have the same number of classes, got {values.size} and {ref.size}")
    keep = ~(np.isnan(values) | np.isnan(ref))
    if not keep.any():
        raise ValueError("iou and reference: no class has a (non-NaN) IoU in both")
    values, ref = values[keep], ref[keep]
    order = np.argsort(ref, kind="stable")
    n = class_count(fraction, values.size)
    return float(values[order[:n]].mean()), float(values[order[-n:]].mean())


def percentile_groups(iou, fraction: float = 0.25) -> tuple[float, float, float, float]:
    """Percentile thresholds of a model's own IoUs and the mean IoU beyond them (TCE paper, Table 3 tuples).

    Args:
        iou: Per-class IoU (1-D, any scale); NaN classes are left out.
        fraction: The lower percentile is 100 · fraction, the upper one 100 · (1 − fraction).

    Returns:
        (low threshold, mean IoU of the classes ≤ it, high threshold, mean IoU of the classes ≥ it), in the scale
        of `iou`. Thresholds use linear interpolation between order statistics (numpy's default percentile
        method), the reading that reproduces the paper's Table 3.

    Raises:
        ValueError: for bad `fraction`, non-1-D input, or no class with an IoU.
    """
    fraction = _check_fraction(fraction)
    values = _as_vector(iou, "iou")
    _require_some(values, "iou")
    values = values[~np.isnan(values)]
    low, high = (float(q) for q in np.percentile(values, [100.0 * fraction, 100.0 * (1.0 - fraction)]))
    # Each threshold lies between the smallest and largest value, so neither group is empty.
    return low, float(values[values <= low].mean()), high, float(values[values >= high].mean())


def fairness_report(iou, reference=None, fraction: float = 0.25) -> dict[str, float]:
    """All fairness criteria of the TCE paper (§3 "Fairness and its evaluation criteria", Table 3) for one model.

    Args:
        iou: Per-class IoU of the model (sequence, numpy array or tensor; 1-D; any scale, e.g. [0, 1] or
            [0, 100]). NaN entries (classes without an IoU) are left out.
        reference: Per-class IoU of the reference model that ranks the classes for `sorted_bottom` /
            `sorted_top` (the paper: the MCCE model). Defaults to `iou` itself. Same length and class order as
            `iou`; only these two keys use it.
        fraction: Share of the classes in the bottom / top groups, in (0, 1); the paper's 25 % is 0.25.

    Returns:
        In the scale of `iou`:

        - ``miou``, ``worst``, ``std``: mean, lowest class IoU and sample standard deviation (ddof = 1) over the
          classes with an IoU (`summarize_iou`; std is NaN with a single class);
        - ``sorted_bottom``, ``sorted_top``: mean IoU of the ⌈fraction · K⌉ classes lowest / highest in
          `reference` (see `sorted_bottom_top`; classes NaN in either vector are dropped, K counts the rest);
        - ``p25_threshold``, ``p25_miou``: the 100 · fraction-th percentile of the model's own IoU (linear
          interpolation) and the mean IoU of the classes at or below it;
        - ``p75_threshold``, ``p75_miou``: the 100 · (1 − fraction)-th percentile and the mean IoU of the classes
          at or above it.

        The ``p25_*`` / ``p75_*`` names are fixed (the paper's default); with another `fraction` they hold the
        100 · fraction-th and 100 · (1 − fraction)-th percentiles.

    Raises:
        ValueError: `fraction` outside (0, 1); `iou` or `reference` not 1-D, empty, all NaN, or holding ±inf;
            `iou` and `reference` of different lengths or without a class that has an IoU in both.

    Reference:
        TCE paper, Table 3; with its Table 1 IoUs this function reproduces every printed entry.
    """
    fraction = _check_fraction(fraction)
    values = _as_vector(iou, "iou")
    _require_some(values, "iou")
    ref = values if reference is None else _as_vector(reference, "reference")
    _require_some(ref, "reference")
    bottom, top = sorted_bottom_top(values, ref, fraction)
    low, low_miou, high, high_miou = percentile_groups(values, fraction)
    return {
        **summarize_iou(values),
        "sorted_bottom": bottom,
        "sorted_top": top,
        "p25_threshold": low,
        "p25_miou": low_miou,
        "p75_threshold": high,
        "p75_miou": high_miou,
    }


def worst_k_to_match(base_iou, target_miou: float, step: float) -> int:
    """How many of the base model's worst classes must each gain `step` for its mIoU to reach `target_miou`.

    The smallest k such that the mean of `base_iou`, with its k lowest classes raised by `step` each, is at least
    `target_miou` (LMP paper §5.2). Gains are not capped at the top of the scale: the scale of `base_iou` is not
    known (IoU in [0, 1] or [0, 100]), and the worst classes are far from it in practice. Without a cap the mean
    grows by step / K per raised class, so k = ⌈K · (target − mIoU) / step⌉; it is evaluated class by class so
    that floating-point noise cannot add one (a target met to a relative 1e-9 counts as reached).

    Args:
        base_iou: Per-class IoU of the base model (1-D, any scale); NaN classes are left out (K counts the rest).
        target_miou: mIoU to reach, same scale.
        step: Gain of each raised class, same scale, > 0.

    Returns:
        k in [0, K]; 0 when the base mIoU already reaches the target.

    Raises:
        ValueError: `step` not a positive finite number, `target_miou` not finite, `base_iou` not 1-D, empty or
            all NaN, or the target out of reach even with all K classes raised.

    Reference:
        LMP paper §5.2 and Table 3a. With the BASE₊ row of Table 3a (mIoU 73.625) and LMP's 75.06 this gives
        k = 6 for step 5 and k = 10 for step 3 (the paper: "the worst 7 categories by 5 % ... or the worst 10
        categories by 3 %").
    """
    step, target = float(step), float(target_miou)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive finite number, got {step}")
    if not math.isfinite(target):
        raise ValueError(f"target_miou must be finite, got {target}")
    values = _as_vector(base_iou, "base_iou")
    _require_some(values, "base_iou")
    values = np.sort(values[~np.isnan(values)])
    tolerance = _MATCH_RTOL * max(1.0, abs(target), float(np.abs(values).max()), step)
    for k in range(values.size + 1):
        raised = values.copy()
        raised[:k] += step
        if raised.mean() >= target - tolerance:
            return k
    raise ValueError(
        f"target mIoU {target} is out of reach: raising all {values.size} classes by {step} gives {raised.mean()}"
    )
