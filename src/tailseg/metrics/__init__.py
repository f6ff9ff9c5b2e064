"""Segmentation metrics: per-class IoU and the TCE paper's fairness criteria."""

from tailseg.metrics.fairness import fairness_report, worst_k_to_match
from tailseg.metrics.iou import ClassIoU, PerImageCounts, iou_from_confusion, per_image_counts
from tailseg.metrics.summary import summarize_iou

__all__ = [
    "ClassIoU",
    "PerImageCounts",
    "fairness_report",
    "iou_from_confusion",
    "per_image_counts",
    "summarize_iou",
    "worst_k_to_match",
]
