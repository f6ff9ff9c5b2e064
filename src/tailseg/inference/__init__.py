"""Inference over whole images or tiles (LMP paper's efficient / optimized tiling, sliding windows)."""

from tailseg.inference.tiling import Tiling, predict_efficient, predict_optimized, predict_slide, predict_whole

__all__ = ["Tiling", "predict_efficient", "predict_optimized", "predict_slide", "predict_whole"]
