"""Data sets, class statistics, transforms and the DataModule."""

from tailseg.data.ade20k import ADE20K
from tailseg.data.base import DataError, SegmentationDataset
from tailseg.data.camvid import CamVid
from tailseg.data.cityscapes import Cityscapes
from tailseg.data.datamodule import SegmentationDataModule, TransformedDataset
from tailseg.data.files import FileSegmentationDataset, ImageMaskFolder
from tailseg.data.stats import class_pixel_counts
from tailseg.data.synthetic import SyntheticStreets
from tailseg.data.voc import PascalVOC

__all__ = [
    "ADE20K",
    "CamVid",
    "Cityscapes",
    "DataError",
    "FileSegmentationDataset",
    "ImageMaskFolder",
    "PascalVOC",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SyntheticStreets",
    "TransformedDataset",
    "class_pixel_counts",
]
