"""Training samplers: uniform, performance-aware (LMP paper §4) and tilted-class sampling."""

from tailseg.sampling.base import EpochSampler
from tailseg.sampling.performance import PerformanceAwareSampler, inverse_iou_probabilities
from tailseg.sampling.tilted import TiltedClassSampler, tilted_class_update, tilted_class_weights
from tailseg.sampling.uniform import UniformSampler

__all__ = [
    "EpochSampler",
    "PerformanceAwareSampler",
    "UniformSampler",
    "inverse_iou_probabilities",
    "TiltedClassSampler",
    "tilted_class_update",
    "tilted_class_weights",
]
