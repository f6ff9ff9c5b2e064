"""Lightning callbacks: the run report, sampler and tilt feedback, prediction files, the pre-emption checkpoint."""

from tailseg.callbacks.feedback import ClassIoUFeedback
from tailseg.callbacks.predictions import PredictionWriter
from tailseg.callbacks.preemption import PreemptionCheckpoint
from tailseg.callbacks.report import ReportWriter, format_iou_table
from tailseg.callbacks.tilted import TiltedClassFeedback
from tailseg.callbacks.wandb_media import WandbMedia

__all__ = [
    "ClassIoUFeedback",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ReportWriter",
    "TiltedClassFeedback",
    "WandbMedia",
    "format_iou_table",
]
