"""Per-image class pixel counts: the (N, C) table that losses and samplers read.

`class_pixel_counts(dataset)` reads every label map once, in a thread pool (PNG decoding
releases the GIL), checks it (labels, image/mask sizes) and counts the pixels of each class.
The table is cached on disk as `.npy`, keyed by the data set's `cache_key()` (its file list),
its class count and ignore index, so the next run with the same files loads it at once.

`check_samples(dataset)` loads every sample once (the image decoded in full, the mask checked against
the image's size and the classes), in a thread pool, and returns the (N, 2) image sizes; it is cached
the same way, so a data set checked once is not read again until its files change. A sample that
cannot be used raises `DataError` naming its file before anything else runs.

The cache folder is `$TAILSEG_CACHE` if set, else `~/.cache/tailseg`. A cached result assumes that
`cache_key()` changes whenever a file may have changed (file-based data sets: path, size, mtime).
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


def cache_path(dataset: SegmentationDataset, kind: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache file of `kind` ("class_counts", "checked") for `dataset`, keyed by its `cache_key()`, class
    count and ignore index; None when `cache_dir` is "" (no cache). `cache_dir` None: `default_cache_dir()`."""
    key = f"{dataset.cache_key()}|C={dataset.num_classes}|ignore={dataset.ignore_index}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    folder = default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir != "" else None)
    return folder / f"{kind}-{digest}.npy" if folder is not None else None


def _cached(dataset, kind: str, cache_dir, columns: int, row, num_workers: int | None) -> np.ndarray:
    """The (N, columns) table of `row(dataset, index)` over the data set, from the cache or computed in threads."""
    path = cache_path(dataset, kind, cache_dir)
    if path is not None and path.is_file():
        table = np.load(path)
        if table.shape == (len(dataset), columns):
            return table
    workers = num_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, workers)) as pool:
        rows = list(pool.map(lambda i: row(dataset, i), range(len(dataset))))
    table = np.stack(rows).astype(np.int64) if rows else np.zeros((0, columns), np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, path)
    return table


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
    return _cached(dataset, "class_counts", cache_dir, dataset.num_classes, _count_one, num_workers)


def _check_one(dataset: SegmentationDataset, index: int) -> np.ndarray:
    image, _ = dataset.load(index)  # decodes the image in full; checks the sizes and the labels
    return np.asarray(image.shape[:2], np.int64)


def check_samples(
    dataset: SegmentationDataset, num_workers: int | None = None, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Load and check every sample of `dataset` once (cached on disk); the (N, 2) int64 (height, width) of its images.

    Args:
        dataset: The data set, prepared (`prepare()`).
        num_workers: Threads used to read the files (default: the CPU count).
        cache_dir: As for `class_pixel_counts`.

    Raises:
        DataError: Naming the first sample that cannot be read or does not match its mask.
    """
    return _cached(dataset, "checked", cache_dir, 2, _check_one, num_workers)
