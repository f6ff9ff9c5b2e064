"""Training samplers: uniform, and (later) performance-aware and tilted-class sampling."""

from tailseg.sampling.base import EpochSampler
from tailseg.sampling.uniform import UniformSampler

__all__ = ["EpochSampler", "UniformSampler"]
