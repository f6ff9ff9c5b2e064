"""What every data set gives the DataModule: raw images, label maps and their names.

A data set here is a plain indexable collection of *untransformed* samples; the
`SegmentationDataModule` owns augmentation, crops and batching. Subclasses implement
`__len__`, `load_image`, `load_mask`, `sample_name` and `cache_key`.

Conventions:
- Images are uint8 RGB arrays of shape (H, W, 3).
- Masks are integer arrays of shape (H, W) holding train ids 0..C-1 and `ignore_index`.
- Every sample is checked when loaded: a label outside [0, C) other than `ignore_index`, or an
  image and mask of different sizes, raises `DataError` naming the sample. The DataModule loads every
  sample of the sets a run uses once before the first step (`tailseg.data.stats.check_samples`).
- `require_every_class = True` (e.g. `ImageMaskFolder`) makes `fit` refuse a training set in which a
  class never appears; the benchmarks' classes are fixed, so their subsets may lack some.

Predictions (`tailseg predict --predict_dir DIR`, `tailseg.callbacks.predictions.PredictionWriter`) are
written in each data set's official format through three overridable methods: `prediction_file(index)`
(the file name, by default `<prediction_name(index)>.png`), `encode_prediction(pred)` (the label image,
by default train ids in an 8-bit "L" PNG) and `encode_color(pred)` (an RGB picture for people).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class DataError(ValueError):
    """A sample or a data set root that cannot be used, with the file or sample named."""


def layout_error(dataset: str, missing, what: str | None, tree: str) -> DataError:
    """The error of a file-based data set whose `missing` file or folder is not there, with the expected tree."""
    return DataError(f"{dataset}: {missing} not found" + (f" ({what})" if what else "") + ". Expected layout:\n" + tree)


def pseudo_random_palette(n: int) -> np.ndarray:
    """`n` fixed, well-spread RGB colours (uint8, (n, 3)) from an integer hash of the class id.

    The same on every machine and NumPy version (no random generator is involved).
    """
    ids = np.arange(n, dtype=np.uint64)
    mixed = (ids + np.uint64(1)) * np.uint64(0x9E3779B1)  # Knuth's multiplicative hash
    mixed ^= mixed >> np.uint64(15)
    mixed = (mixed * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    mixed ^= mixed >> np.uint64(13)
    return np.stack([(mixed >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 8, 0)], axis=1).astype(np.uint8)


class SegmentationDataset(torch.utils.data.Dataset, abc.ABC):
    """Base class of the data sets (synthetic, Cityscapes, VOC, ADE20K).

    Args:
        class_names: One name per train id, in id order.
        ignore_index: The label of pixels that count for nothing (void).
    """

    #: `fit` stops when a class appears in no training mask (`SegmentationDataModule.setup`).
    require_every_class: bool = False

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

    def image_group(self, index: int) -> str | None:
        """The group of sample `index`: the video, city or scene it comes from, whose images are not independent of
        each other (a report's bootstrap can resample groups instead of images, `tailseg.metrics.bootstrap`).
        None by default: the data set has no groups."""
        return None

    def prediction_name(self, index: int) -> str:
        """The name of sample `index` in prediction files: by default the stem of `sample_name(index)`."""
        return Path(self.sample_name(index)).stem

    def prediction_file(self, index: int) -> str:
        """The file name of the prediction of sample `index`: by default `<prediction_name(index)>.png`."""
        return f"{self.prediction_name(index)}.png"

    def check_prediction(self, pred: np.ndarray, who: str) -> np.ndarray:
        """`pred` as an array; `DataError` naming `who` if it holds values other than class ids and the ignore index."""
        pred = np.asarray(pred)
        bad = np.setdiff1d(np.unique(pred), np.append(np.arange(self.num_classes), self.ignore_index))
        if bad.size:
            raise DataError(
                f"{who}: values {bad.tolist()[:10]} are not class ids 0..{self.num_classes - 1} "
                f"or ignore_index {self.ignore_index}"
            )
        return pred

    def encode_prediction(self, pred: np.ndarray) -> Image.Image:
        """The label image of a (H, W) train-id prediction: by default the train ids as an 8-bit "L" PNG
        (16-bit for more than 256 classes). Data sets override this with their official format."""
        pred = np.asarray(pred)
        if pred.ndim != 2:
            raise ValueError(f"{type(self).__name__}.encode_prediction: expected a (H, W) map, got shape {pred.shape}")
        if pred.size and (pred.min() < 0 or pred.max() > 65535):
            raise ValueError(f"{type(self).__name__}.encode_prediction: values outside 0..65535")
        if not pred.size or pred.max() <= 255:
            return Image.fromarray(pred.astype(np.uint8))  # mode "L"
        return Image.fromarray(pred.astype(np.uint16))  # mode "I;16"

    def color_palette(self) -> np.ndarray:
        """(C, 3) uint8 colours of the classes: `class_colors` where the data set has them, else a fixed
        pseudo-random palette (`pseudo_random_palette`)."""
        colors = getattr(self, "class_colors", None)
        if colors is not None and len(colors) >= self.num_classes:
            return np.asarray(colors, dtype=np.uint8)[: self.num_classes].reshape(self.num_classes, 3)
        return pseudo_random_palette(self.num_classes)

    def encode_color(self, pred: np.ndarray) -> Image.Image:
        """An RGB picture of a (H, W) train-id prediction (`color_palette`); other values (e.g. `ignore_index`)
        are black."""
        pred = np.asarray(pred)
        if pred.ndim != 2 or (pred.size and pred.min() < 0):
            raise ValueError(f"{type(self).__name__}.encode_color: expected a (H, W) map of values >= 0")
        lut = np.zeros((max(int(pred.max(initial=0)), self.num_classes - 1) + 1, 3), np.uint8)
        lut[: self.num_classes] = self.color_palette()
        return Image.fromarray(lut[pred])  # mode "RGB"

    def prepare(self, num_workers: int = 1) -> None:  # noqa: B027 - optional hook
        """Do expensive one-off work (rendering, indexing) before the first sample is read."""

    def check_mask(self, mask: np.ndarray, index: int) -> np.ndarray:
        """Raise `DataError` if `mask` holds a label outside [0, C) that is not the ignore index."""
        if mask.dtype.kind in "ui" and mask.size and 0 <= mask.min() and mask.max() < 65536:
            present = np.flatnonzero(np.bincount(mask.ravel()))  # fast for the usual 8/16-bit label maps
        else:
            present = np.unique(mask)
        bad = present[(present != self.ignore_index) & ((present < 0) | (present >= self.num_classes))]
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
