"""tailseg: semantic segmentation under class imbalance (LMP, performance-aware sampling, TCE)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
