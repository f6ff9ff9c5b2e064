"""Summaries of a per-class IoU vector: mean, worst class and spread."""

from __future__ import annotations

import numpy as np


def summarize_iou(iou) -> dict[str, float]:
    """mIoU, worst-class IoU and sample standard deviation (ddof = 1) over the classes with an IoU.

    Args:
        iou: Per-class IoU (any scale); NaN entries (classes absent from truth and prediction)
            are left out.

    Returns:
        {"miou", "worst", "std"} in the scale of `iou`; NaN where no class has an IoU (std also
        with a single class).
    """
    values = np.asarray(iou, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"miou": float("nan"), "worst": float("nan"), "std": float("nan")}
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return {"miou": float(values.mean()), "worst": float(values.min()), "std": std}
