"""Per-class IoU against a hand-computed confusion matrix, with ignore pixels and absent classes."""

from __future__ import annotations

import math

import numpy as np
import torch

from tailseg.metrics import ClassIoU, iou_from_confusion, summarize_iou


def test_iou_hand_computed_with_ignore_and_absent_classes():
    # 4 classes. Class 3 is absent from truth and prediction -> NaN. 255 pixels count for nothing.
    target = torch.tensor([[[0, 0, 1, 1, 255], [2, 2, 2, 0, 255]]])
    preds = torch.tensor([[[0, 1, 1, 1, 3], [2, 2, 0, 0, 0]]])
    metric = ClassIoU(num_classes=4, ignore_index=255)
    metric.update(preds[:, :1], target[:, :1])  # two batches: accumulated over the data set
    metric.update(preds[:, 1:], target[:, 1:])
    iou = metric.compute()
    # class 0: truth at (0,0),(0,1),(1,3); predicted at (0,0),(1,2),(1,3) -> TP 2, FP 1, FN 1 -> 2/4
    # class 1: truth (0,2),(0,3); predicted (0,1),(0,2),(0,3) -> TP 2, FP 1, FN 0 -> 2/3
    # class 2: truth (1,0),(1,1),(1,2); predicted (1,0),(1,1) -> TP 2, FP 0, FN 1 -> 2/3
    np.testing.assert_allclose(iou[:3].numpy(), [0.5, 2 / 3, 2 / 3])
    assert math.isnan(iou[3].item())
    assert torch.nanmean(iou).item() == (0.5 + 2 / 3 + 2 / 3) / 3


def test_class_only_predicted_has_zero_iou():
    confusion = torch.tensor([[3, 1], [0, 0]])  # class 1 never true, predicted once
    iou = iou_from_confusion(confusion)
    assert iou.tolist() == [0.75, 0.0]


def test_summary_leaves_out_nan_and_uses_sample_std():
    summary = summarize_iou([0.2, float("nan"), 0.6, 1.0])
    assert summary["miou"] == 0.6 and summary["worst"] == 0.2
    np.testing.assert_allclose(summary["std"], 0.4)  # sqrt(((0.4)^2 + 0 + 0.4^2) / 2)
    assert math.isnan(summarize_iou([float("nan")])["miou"])
