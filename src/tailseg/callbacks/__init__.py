"""Lightning callbacks: the run report and the sampler feedback."""

from tailseg.callbacks.feedback import ClassIoUFeedback
from tailseg.callbacks.report import ReportWriter, format_iou_table

__all__ = ["ClassIoUFeedback", "ReportWriter", "format_iou_table"]
