"""Training samplers: uniform, performance-aware (LMP paper §4), tilted-class (TCE paper), and the frequency-driven
rare-class (DAFormer) and repeat-factor (LVIS) sampling."""

from tailseg.sampling.base import EpochSampler
from tailseg.sampling.frequency import RareClassSampler, RepeatFactorSampler, rare_class_probabilities, repeat_factors
from tailseg.sampling.performance import PerformanceAwareSampler, inverse_iou_probabilities
from tailseg.sampling.tilted import TiltedClassSampler, tilted_class_update, tilted_class_weights
from tailseg.sampling.uniform import UniformSampler

__all__ = [
    "EpochSampler",
    "PerformanceAwareSampler",
    "RareClassSampler",
    "RepeatFactorSampler",
    "rare_class_probabilities",
    "repeat_factors",
    "UniformSampler",
    "inverse_iou_probabilities",
    "TiltedClassSampler",
    "tilted_class_update",
    "tilted_class_weights",
]
