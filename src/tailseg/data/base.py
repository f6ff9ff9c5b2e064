"""What every data set gives the DataModule: raw images, label maps and their names.

A data set here is a plain indexable collection of *untransformed* samples; the
`SegmentationDataModule` owns augmentation, crops and batching. Subclasses implement
`__len__`, `load_image`, `load_mask`, `sample_name` and `cache_key`.

Conventions:
- Images are uint8 RGB arrays of shape (H, W, 3).
- Masks are integer arrays of shape (H, W) holding train ids 0..C-1 and `ignore_index`.
- Every sample is checked when loaded: a label outside [0, C) other than `ignore_index`, or an
  image and mask of different sizes, raises `DataError` naming the sample.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch


class DataError(ValueError):
    """A sample or a data set root that cannot be used, with the file or sample named."""


class SegmentationDataset(torch.utils.data.Dataset, abc.ABC):
    """Base class of the data sets (synthetic, Cityscapes, VOC, ADE20K).

    Args:
        class_names: One name per train id, in id order.
        ignore_index: The label of pixels that count for nothing (void).
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255) -> None:
        self.class_names = tuple(class_names)
        self.ignore_index = int(ignore_index)
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"{type(self).__name__}: class names must be unique, got {self.class_names}")
        if 0 <= self.ignore_index < len(self.class_names):
            raise DataError(
                f"{type(self).__name__}: ignore_index {self.ignore_index} collides with a class id "
                f"(0..{len(self.class_names) - 1})"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load_image(self, index: int) -> np.ndarray:
        """The RGB image of sample `index`, uint8 (H, W, 3)."""

    @abc.abstractmethod
    def load_mask(self, index: int) -> np.ndarray:
        """The label map of sample `index`, integer (H, W), train ids and `ignore_index`."""

    @abc.abstractmethod
    def sample_name(self, index: int) -> str:
        """A name that identifies sample `index` in messages and output files (e.g. its file stem)."""

    @abc.abstractmethod
    def cache_key(self) -> str:
        """A string that changes whenever the samples may change (e.g. the file list); keys the statistics cache."""

    def prepare(self, num_workers: int = 1) -> None:  # noqa: B027 - optional hook
        """Do expensive one-off work (rendering, indexing) before the first sample is read."""

    def check_mask(self, mask: np.ndarray, index: int) -> np.ndarray:
        """Raise `DataError` if `mask` holds a label outside [0, C) that is not the ignore index."""
        values = np.unique(mask)
        bad = values[(values != self.ignore_index) & ((values < 0) | (values >= self.num_classes))]
        if bad.size:
            raise DataError(
                f"{self.sample_name(index)}: label values {bad.tolist()[:10]} are outside the "
                f"{self.num_classes} classes [0, {self.num_classes}) and are not ignore_index {self.ignore_index}"
            )
        return mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked (image, mask) pair of sample `index`."""
        image, mask = self.load_image(index), self.load_mask(index)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"{self.sample_name(index)}: expected an RGB image (H, W, 3), got shape {image.shape}")
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"{self.sample_name(index)}: image size {image.shape[:2]} and mask size {mask.shape} differ"
            )
        return image, self.check_mask(mask, index)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load(index)
        return {"image": image, "mask": mask, "name": self.sample_name(index), "index": index}
