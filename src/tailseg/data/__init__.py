"""Data sets, class statistics, transforms and the DataModule."""

from tailseg.data.base import DataError, SegmentationDataset
from tailseg.data.datamodule import SegmentationDataModule, TransformedDataset
from tailseg.data.stats import class_pixel_counts
from tailseg.data.synthetic import SyntheticStreets

__all__ = [
    "DataError",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SyntheticStreets",
    "TransformedDataset",
    "class_pixel_counts",
]
