"""Lightning callbacks: the run report (and, later, sampler / tilt feedback)."""

from tailseg.callbacks.report import ReportWriter, format_iou_table

__all__ = ["ReportWriter", "format_iou_table"]
