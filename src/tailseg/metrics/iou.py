"""Per-class intersection over union accumulated over a whole data set (or epoch)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from a (C, C) confusion matrix (rows: truth, cols: prediction).

    Classes absent from both the ground truth and the predictions (0 / 0) are NaN, so that
    `torch.nanmean` leaves them out of the mean.
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


class ClassIoU(Metric):
    """Data-set-level per-class IoU: sums a confusion matrix over batches (and DDP ranks).

    Args:
        num_classes: C.
        ignore_index: Target label left out of the confusion matrix.

    Shape:
        update(preds (B, H, W) int, target (B, H, W) int); compute() -> (C,) float64, NaN for
        classes absent from both.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.add_state(
            "confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        truth, pred = target[keep].long(), preds[keep].long()  # labels were checked when loaded
        index = truth * self.num_classes + pred
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> torch.Tensor:
        return iou_from_confusion(self.confusion)
