"""Segmentation metrics: per-class IoU (and, later, fairness criteria)."""

from tailseg.metrics.iou import ClassIoU, iou_from_confusion
from tailseg.metrics.summary import summarize_iou

__all__ = ["ClassIoU", "iou_from_confusion", "summarize_iou"]
