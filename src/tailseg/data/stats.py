"""Per-image class pixel counts: the (N, C) table that losses and samplers read.

`class_pixel_counts(dataset)` reads every label map once, in a thread pool (PNG decoding
releases the GIL), checks it (labels, image/mask sizes) and counts the pixels of each class.
The table is cached on disk as `.npy`, keyed by the data set's `cache_key()` (its file list),
its class count and ignore index, so the next run with the same files loads it at once.

The cache folder is `$TAILSEG_CACHE` if set, else `~/.cache/tailseg`.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tailseg.data.base import DataError, SegmentationDataset


def default_cache_dir() -> Path:
    return Path(os.environ.get("TAILSEG_CACHE", Path.home() / ".cache" / "tailseg"))


def count_classes(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class 0..num_classes-1 in `mask` (other values, e.g. ignore, are not counted)."""
    flat = mask.ravel()
    flat = flat[flat < num_classes] if flat.dtype.kind == "u" else flat[(flat >= 0) & (flat < num_classes)]
    return np.bincount(flat, minlength=num_classes).astype(np.int64)


def _count_one(dataset: SegmentationDataset, index: int) -> np.ndarray:
    image_shape = _image_shape(dataset, index)
    mask = dataset.check_mask(dataset.load_mask(index), index)
    if image_shape is not None and tuple(image_shape) != tuple(mask.shape):
        raise DataError(
            f"{dataset.sample_name(index)}: image size {tuple(image_shape)} and mask size {mask.shape} differ"
        )
    return count_classes(mask, dataset.num_classes)


def _image_shape(dataset: SegmentationDataset, index: int):
    """The image's (H, W) without decoding it when the data set can tell (`image_size`), else None."""
    size = getattr(dataset, "image_size", None)
    return size(index) if callable(size) else None


def class_pixel_counts(
    dataset: SegmentationDataset, num_workers: int | None = None, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """The (N, C) int64 table of class pixel counts per image of `dataset`, cached on disk.

    Args:
        dataset: The data set; every label map is read and checked once.
        num_workers: Threads used to read the masks (default: the CPU count).
        cache_dir: Where the table is cached (default: `default_cache_dir()`); "" disables the cache.

    Returns:
        counts[i, c] = number of pixels of class c in sample i.
    """
    key = f"{dataset.cache_key()}|C={dataset.num_classes}|ignore={dataset.ignore_index}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    folder = default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir != "" else None)
    path = folder / f"class_counts-{digest}.npy" if folder is not None else None
    if path is not None and path.is_file():
        counts = np.load(path)
        if counts.shape == (len(dataset), dataset.num_classes):
            return counts
    workers = num_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, workers)) as pool:
        rows = list(pool.map(lambda i: _count_one(dataset, i), range(len(dataset))))
    counts = np.stack(rows) if rows else np.zeros((0, dataset.num_classes), np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
        np.save(tmp, counts)
        os.replace(tmp, path)
    return counts
