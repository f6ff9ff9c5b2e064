"""Reading image and label files, with errors that name the file; a generic image/mask folder data set."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tailseg.data.base import DataError, SegmentationDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as an image ({err})") from err
    return image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as uint8 RGB (H, W, 3); DataError naming the file if it is missing, empty or unreadable."""
    return np.asarray(_open(path).convert("RGB"))


def read_label(path: str | os.PathLike) -> np.ndarray:
    """The single-channel label image at `path` as an integer (H, W) array (palette indices for palette PNGs)."""
    image = _open(path)
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DataError(f"{path}: a label map must be single-channel (L, P or I), got mode {image.mode}")
    return np.asarray(image)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of the image at `path`, read from its header without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot be read as an image ({err})") from err
    return height, width


def file_list_key(paths: Sequence[Path]) -> str:
    """A digest of a list of files: their paths, sizes and modification times."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class FileSegmentationDataset(SegmentationDataset):
    """Base of data sets stored as pairs of image and label files (set `image_paths` / `mask_paths`)."""

    image_paths: list[Path]
    mask_paths: list[Path]

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_paths[index])

    def load_mask(self, index: int) -> np.ndarray:
        return read_label(self.mask_paths[index])

    def image_size(self, index: int) -> tuple[int, int]:
        return image_size(self.image_paths[index])

    def sample_name(self, index: int) -> str:
        return str(self.image_paths[index])

    def cache_key(self) -> str:
        return f"{type(self).__name__}-{len(self)}-" + file_list_key(self.mask_paths + self.image_paths)


class ImageMaskFolder(FileSegmentationDataset):
    """A custom data set: `root/images/<stem>.<ext>` with label maps `root/masks/<stem>.png`.

    Masks hold train ids 0..C-1 and `ignore_index` as pixel values (8- or 16-bit single-channel PNGs;
    palette PNGs give their palette indices). `label_map` rewrites values when the files hold others,
    e.g. `{255: 1}` for binary masks saved as 0/255.

    Every class must appear in the training masks: `fit` stops with the class named when one does not
    (`require_every_class`), since such a class can never be learned and a value that should have been
    that class (255 in 0/255 masks) is most likely counted as the ignore index.

    Args:
        root: The folder.
        class_names: One name per train id.
        images: Sub-folder of the images (`.png`, `.jpg`, `.jpeg`, `.bmp`, `.tif`, `.tiff`, `.webp`).
        masks: Sub-folder of the label maps; None for images without masks (for `predict` only: every
            pixel is `ignore_index`, so validating or training on them measures and learns nothing).
        ignore_index: The void label.
        label_map: Mask values to replace when reading, {value in the file: train id or ignore_index};
            other values are kept.
    """

    require_every_class = True

    def __init__(
        self,
        root: str,
        class_names: Sequence[str],
        images: str = "images",
        masks: str | None = "masks",
        ignore_index: int = 255,
        label_map: dict[int, int] | None = None,
    ) -> None:
        super().__init__(class_names, ignore_index)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        bad = {k: v for k, v in self.label_map.items() if k < 0 or k > 65535 or v < 0 or v > 65535}
        if bad:
            raise DataError(f"ImageMaskFolder: label_map {bad}: values must be in 0..65535")
        image_dir = Path(root) / images
        mask_dir = Path(root) / masks if masks is not None else None
        for folder in (image_dir, mask_dir):
            if folder is not None and not folder.is_dir():
                raise DataError(
                    f"ImageMaskFolder: {folder} is not a folder (expected {root}/{images}/ and {root}/{masks}/)"
                )
        self.image_paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.image_paths:
            raise DataError(f"ImageMaskFolder: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        self.mask_paths = [mask_dir / f"{p.stem}.png" for p in self.image_paths] if mask_dir is not None else []
        missing = [p for p in self.mask_paths if not p.is_file()]
        if missing:
            raise DataError(f"ImageMaskFolder: {len(missing)} label maps are missing, the first: {missing[0]}")

    def load_mask(self, index: int) -> np.ndarray:
        if not self.mask_paths:  # images without masks: nothing is labelled
            return np.full(
                self.image_size(index), self.ignore_index, np.uint16 if self.ignore_index > 255 else np.uint8
            )
        mask = super().load_mask(index)
        if self.label_map:
            out = (
                mask.astype(np.uint16) if max(self.label_map.values()) > 255 and mask.dtype == np.uint8 else mask.copy()
            )
            for value, label in self.label_map.items():
                out[mask == value] = label
            mask = out
        return mask

    def cache_key(self) -> str:
        mapped = f"-map{sorted(self.label_map.items())}" if self.label_map else ""
        masks = "" if self.mask_paths else "-nomasks"
        return super().cache_key() + mapped + masks
