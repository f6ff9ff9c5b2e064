"""Tiny data sets written in the official folder layouts of Cityscapes, PASCAL VOC 2012 and ADE20K.

Each helper writes random-but-seeded images and label maps (a few classes each, plus void pixels) under
`root` and returns `root` as a Path, ready to pass as `root` to the matching data set class.
Usage from tests: `from fixtures import write_ade20k, write_cityscapes, write_voc`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tailseg.data.cityscapes import label_to_train_table
from tailseg.data.voc import palette

CITIES = ("aachen", "bochum", "bremen")
#: Cityscapes label ids drawn in the fixtures: unlabeled, ego vehicle, static (void) and road, sidewalk,
#: building, vegetation, sky, person, car, bicycle.
CITYSCAPES_FIXTURE_IDS = (0, 1, 4, 7, 8, 11, 21, 23, 24, 26, 33)
#: VOC class ids drawn as objects in the fixtures (background 0 and boundary 255 are always present).
VOC_FIXTURE_CLASSES = (1, 7, 12, 15, 20)
#: ADE20K labels drawn in the fixtures (0 = unlabelled; 1 wall, 3 sky, 4 floor, 13 person, 150 flag).
ADE20K_FIXTURE_LABELS = (0, 1, 3, 4, 13, 150)


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    return np.random.default_rng([seed, *(k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys)])


def _image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _bands(rng: np.random.Generator, size: tuple[int, int], values: Sequence[int]) -> np.ndarray:
    """A label map of horizontal bands holding `values` from top to bottom; each band is 0.75-1.25 of h / len(values)."""
    h, n = size[0], len(values)
    edges = (np.arange(1, n) * h / n + rng.uniform(-0.25, 0.25, n - 1) * h / n).round().astype(int)
    mask = np.empty(size, np.uint8)
    for value, top, bottom in zip(values, [0, *edges], [*edges, h], strict=True):
        mask[top:bottom] = value
    return mask


def _box(
    rng: np.random.Generator,
    mask: np.ndarray,
    value: int,
    border: int | None = None,
    cols: tuple[int, int] | None = None,
) -> None:
    """Draw a random rectangle of `value` into `mask` (with a 1-pixel frame of `border`), within columns `cols`."""
    h = mask.shape[0]
    start, stop = cols or (0, mask.shape[1])
    w = stop - start
    bh, bw = rng.integers(max(2, h // 6), max(3, h // 2)), rng.integers(max(2, w // 6), max(3, w // 2))
    top, left = rng.integers(0, h - bh + 1), start + rng.integers(0, w - bw + 1)
    if border is not None:
        mask[max(0, top - 1) : top + bh + 1, max(0, left - 1) : left + bw + 1] = border
    mask[top : top + bh, left : left + bw] = value


def _save(array: np.ndarray, path: Path, **params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **params)


def write_cityscapes(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    images_per_split: int = 2,
    size: tuple[int, int] = (64, 128),
    train_ids: bool = False,
    seed: int = 0,
    annotations: str = "gtFine",
) -> Path:
    """Write a tiny Cityscapes under `root`: `leftImg8bit/<split>/<city>/...` and `<annotations>/<split>/<city>/...`.

    Images go round-robin to the cities "aachen", "bochum", "bremen" and are named
    `<city>_<seq:06d>_000019_leftImg8bit.png` (seq = the image's index in its split). Each labelIds map
    holds sky / building / vegetation / sidewalk / road bands, a car box (left half), a person or bicycle
    box (right half), and void pixels: unlabeled (left columns), static (top row), ego vehicle (bottom rows).

    Args:
        root: The Cityscapes folder to create.
        splits: Splits to write.
        images_per_split: Images in each split.
        size: (H, W) of every image.
        train_ids: Also write `*_labelTrainIds.png` next to each `*_labelIds.png` (as
            `createTrainIdLabelImgs.py` does), mapped with the official table.
        seed: Seed of the pixels.
        annotations: "gtFine" or "gtCoarse".

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    table = label_to_train_table(255)
    for split in splits:
        for i in range(images_per_split):
            rng = _rng(seed, split, i)
            city = CITIES[i % len(CITIES)]
            stem = f"{city}_{i:06d}_000019"
            mask = _bands(rng, size, (23, 11, 21, 8, 7))
            _box(rng, mask, 26, cols=(size[1] // 8, size[1] // 2))
            _box(rng, mask, int(rng.choice([24, 33])), cols=(size[1] // 2, size[1]))
            mask[-max(1, size[0] // 16) :] = 1  # ego vehicle
            mask[:, : max(1, size[1] // 16)] = 0  # unlabeled
            mask[0, :] = 4  # static
            _save(_image(rng, size), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            folder = root / annotations / split / city
            _save(mask, folder / f"{stem}_{annotations}_labelIds.png")
            if train_ids:
                _save(table[mask].astype(np.uint8), folder / f"{stem}_{annotations}_labelTrainIds.png")
    return root


def write_voc(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    images_per_split: int = 2,
    size: tuple[int, int] = (48, 64),
    augmented: bool = False,
    extra_aug_images: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny VOC2012 folder under `root`: JPEGImages, SegmentationClass (palette PNGs), ImageSets lists.

    Split s gets ids `<2007 + k>_<i:06d>` (k = the split's position in `splits`); `trainval.txt` lists
    the train and val ids. Each mask is background (0) with one object box of a class from
    `VOC_FIXTURE_CLASSES` framed by boundary pixels (255).

    Args:
        root: The VOC2012 folder to create.
        splits: Lists to write under `ImageSets/Segmentation/` (train, val; trainval when both).
        images_per_split: Images in each split.
        size: (H, W) of every image.
        augmented: Also write `SegmentationClassAug/<id>.png` (greyscale class ids) for every image,
            `extra_aug_images` SBD-only images (ids `2011_<i:06d>`, with no `SegmentationClass` mask) and
            `ImageSets/Segmentation/train_aug.txt` = train ids + SBD-only ids.
        extra_aug_images: SBD-only images written with `augmented=True`.
        seed: Seed of the pixels.

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    lists: dict[str, list[str]] = {}

    def sample(image_id: str, voc: bool) -> None:
        rng = _rng(seed, image_id)
        mask = np.zeros(size, np.uint8)
        _box(rng, mask, int(rng.choice(VOC_FIXTURE_CLASSES)), border=255)
        _save(_image(rng, size), root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        if voc:
            label = Image.fromarray(mask)  # mode L; putpalette makes it a palette (P) image
            label.putpalette(palette())
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            label.save(root / "SegmentationClass" / f"{image_id}.png")
        if augmented:
            _save(mask, root / "SegmentationClassAug" / f"{image_id}.png")

    for k, split in enumerate(splits):
        lists[split] = [f"{2007 + k}_{i:06d}" for i in range(images_per_split)]
        for image_id in lists[split]:
            sample(image_id, voc=True)
    if "train" in lists and "val" in lists:
        lists["trainval"] = sorted(lists["train"] + lists["val"])
    if augmented:
        extra = [f"2011_{i:06d}" for i in range(extra_aug_images)]
        for image_id in extra:
            sample(image_id, voc=False)
        lists["train_aug"] = sorted(lists.get("train", []) + extra)
    folder = root / "ImageSets" / "Segmentation"
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in lists.items():
        (folder / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_ade20k(
    root: str | os.PathLike,
    splits: Sequence[str] = ("training", "validation"),
    images_per_split: int = 2,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write a tiny ADEChallengeData2016 folder under `root`: `images/<split>/*.jpg`, `annotations/<split>/*.png`.

    Files are named `ADE_train_<i:08d>` / `ADE_val_<i:08d>` (i from 1). Each annotation holds bands of
    the labels in `ADE20K_FIXTURE_LABELS` (0 = unlabelled included) in a random order.

    Args:
        root: The ADEChallengeData2016 folder to create.
        splits: "training" and/or "validation".
        images_per_split: Images in each split.
        size: (H, W) of every image.
        seed: Seed of the pixels.

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    for split in splits:
        prefix = {"training": "ADE_train", "validation": "ADE_val"}.get(split, f"ADE_{split}")
        for i in range(1, images_per_split + 1):
            rng = _rng(seed, split, i)
            stem = f"{prefix}_{i:08d}"
            mask = _bands(rng, size, rng.permutation(ADE20K_FIXTURE_LABELS).tolist())
            _save(_image(rng, size), root / "images" / split / f"{stem}.jpg", quality=95)
            _save(mask, root / "annotations" / split / f"{stem}.png")
    return root


#: CamVid labels drawn in the fixtures: 0 sky, 1 building, 3 road, 4 pavement, 5 tree, 8 car, 9 pedestrian,
#: 10 bicyclist and 11 (unlabelled / void).
CAMVID_FIXTURE_LABELS = (0, 1, 3, 4, 5, 8, 9, 10, 11)
#: The sequence prefix of the fixture names of each CamVid split (as in the real names, e.g. 0001TP_006690).
CAMVID_PREFIXES = {"train": "0001TP", "val": "0016E5", "test": "Seq05VD"}


def write_camvid(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    images_per_split: int = 3,
    size: tuple[int, int] = (36, 48),
    seed: int = 0,
) -> Path:
    """Write a tiny CamVid (SegNet layout) under `root`: `<split>/<name>.png`, `<split>annot/<name>.png`, `<split>.txt`.

    Names are `<prefix>_<30 * i:06d>` with the prefix of `CAMVID_PREFIXES` (0001TP train, 0016E5 val,
    Seq05VD test). Each 8-bit label map holds sky / building / tree / pavement / road bands, a car box
    (left half), a pedestrian or bicyclist box (right half), and void pixels (11) in the left columns and
    the bottom row. `<split>.txt` lists "<split>/<name>.png <split>annot/<name>.png" pairs.

    Args:
        root: The CamVid folder to create.
        splits: Splits to write ("train", "val", "test").
        images_per_split: Images in each split.
        size: (H, W) of every image.
        seed: Seed of the pixels.

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    for split in splits:
        names = [f"{CAMVID_PREFIXES.get(split, split)}_{30 * i:06d}" for i in range(images_per_split)]
        for i, name in enumerate(names):
            rng = _rng(seed, "camvid", split, i)
            mask = _bands(rng, size, (0, 1, 5, 4, 3))
            _box(rng, mask, 8, cols=(size[1] // 8, size[1] // 2))
            _box(rng, mask, int(rng.choice([9, 10])), cols=(size[1] // 2, size[1]))
            mask[:, : max(1, size[1] // 16)] = 11  # unlabelled
            mask[-1, :] = 11
            _save(_image(rng, size), root / split / f"{name}.png")
            _save(mask, root / f"{split}annot" / f"{name}.png")
        lines = "".join(f"{split}/{name}.png {split}annot/{name}.png\n" for name in names)
        (root / f"{split}.txt").write_text(lines)
    return root


def write_image_mask_folder(
    root: str | os.PathLike,
    sizes: Sequence[tuple[int, int]] = ((48, 64), (48, 64)),
    labels: Sequence[int] = (0, 1, 2),
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write an `ImageMaskFolder` under `root`: `images/img<i><suffix>` and `masks/img<i>.png`, one pair per size.

    Each mask holds horizontal bands of `labels` (e.g. (0, 255) for binary masks saved as 0/255), so every
    label appears in every mask; the images are random pixels.

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    for i, size in enumerate(sizes):
        rng = _rng(seed, "own", i)
        _save(
            _image(rng, tuple(size)),
            root / "images" / f"img{i}{suffix}",
            **({"quality": 95} if suffix == ".jpg" else {}),
        )
        _save(_bands(rng, tuple(size), list(labels)), root / "masks" / f"img{i}.png")
    return root
