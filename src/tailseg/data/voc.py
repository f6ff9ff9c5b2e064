"""PASCAL VOC 2012 semantic segmentation (21 classes), optionally with the SBD-augmented training set.

Expected layout (the `VOC2012` folder of `VOCtrainval_11-May-2012.tar`)::

    <root>/                                     e.g. VOCdevkit/VOC2012
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png                palette PNGs: index = class id 0..20, 255 = boundary (ignored)
      ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line

With `augmented=True` (the usual 10,582-image "train_aug" set: VOC 2012 train plus the SBD annotations
of Hariharan et al., less the VOC 2012 val images), two more items are expected in the same folder::

      SegmentationClassAug/<id>.png             single-channel PNGs of class ids 0..20 and 255
      ImageSets/Segmentation/train_aug.txt      the 10,582 training ids

`SegmentationClassAug` is the widely shared conversion of the SBD `.mat` files (it also holds the
VOC 2012 val masks); the JPEGs of the SBD-only images are VOC 2011/2012 images and sit in `JPEGImages/`.
A list file may hold bare ids (`2007_000032`) or, as some copies of `train_aug.txt` do, image and
mask paths (`/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png`): the id is taken
from the stem of the first field. Ids are listed in sorted order, duplicates dropped.

Predictions are written as `<id>.png` palette (mode "P") PNGs with the VOC palette, index = class id
(as the evaluation server and `SegmentationClass/` use them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tailseg.data.base import DataError, layout_error
from tailseg.data.files import FileSegmentationDataset, read_label

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("train", "val", "trainval")
#: The label of object boundaries and difficult regions in the VOC masks.
VOC_IGNORE = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard VOC palette, (n, 3) uint8: the bits of index i are spread over R, G, B from the high bit down."""
    colors = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        colors[i] = rgb
    return colors


def palette() -> list[int]:
    """The 256-colour VOC palette as 768 ints (R, G, B, R, G, ...), for `PIL.Image.putpalette`."""
    return voc_colormap(256).ravel().tolist()


def read_id_list(path: Path) -> list[str]:
    """Image ids of a VOC list file (bare ids, or paths whose first field's stem is the id), sorted, unique."""
    ids = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields:
            ids.append(Path(fields[0]).stem)
    return sorted(set(ids))


class PascalVOC(FileSegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes (background included), boundaries (255) ignored.

    Args:
        root: The `VOC2012` folder (see the module docs for its layout).
        split: "train", "val" or "trainval"; with `augmented=True`, "train" means the 10,582-image
            `train_aug.txt` list.
        augmented: Read the masks from `SegmentationClassAug/` (and, for split "train", the list from
            `ImageSets/Segmentation/train_aug.txt`).
        ignore_index: The label given to boundary pixels (255 in the files).
        list_file: Another list of image ids to use instead of the split's default list; a relative path
            is taken relative to `root`.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        augmented: bool = False,
        ignore_index: int = 255,
        list_file: str | None = None,
    ) -> None:
        super().__init__(CLASS_NAMES, ignore_index)
        if split not in SPLITS:
            raise DataError(f"PascalVOC: split must be one of {list(SPLITS)}, got {split!r}")
        self.root, self.split, self.augmented = Path(root), split, bool(augmented)
        self.class_colors: list[tuple[int, int, int]] = [tuple(c) for c in voc_colormap(len(CLASS_NAMES)).tolist()]
        self._table = np.full(256, -1, np.int32)
        self._table[: len(CLASS_NAMES)] = np.arange(len(CLASS_NAMES))
        self._table[VOC_IGNORE] = self.ignore_index

        mask_dir = self.root / ("SegmentationClassAug" if self.augmented else "SegmentationClass")
        if list_file is not None:
            self.list_file = Path(list_file) if Path(list_file).is_absolute() else self.root / list_file
        else:
            name = "train_aug.txt" if self.augmented and split == "train" else f"{split}.txt"
            self.list_file = self.root / "ImageSets" / "Segmentation" / name
        for path in (self.root, self.root / "JPEGImages", mask_dir):
            if not path.is_dir():
                raise self._layout_error(path)
        if not self.list_file.is_file():
            raise self._layout_error(self.list_file, "the image list")
        ids = read_id_list(self.list_file)
        if not ids:
            raise DataError(f"PascalVOC: the image list {self.list_file} holds no ids")
        self.ids = ids
        self.image_paths = [self.root / "JPEGImages" / f"{i}.jpg" for i in ids]
        self.mask_paths = [mask_dir / f"{i}.png" for i in ids]
        for image, mask in zip(self.image_paths, self.mask_paths, strict=True):
            if not image.is_file():
                raise self._layout_error(image, f"listed in {self.list_file}")
            if not mask.is_file():
                raise self._layout_error(mask, f"the label map of {image}")

    def _layout_error(self, missing: Path, what: str | None = None) -> DataError:
        if self.augmented:
            masks = "SegmentationClassAug/<id>.png   (single-channel: class ids 0..20, 255)"
        else:
            masks = "SegmentationClass/<id>.png      (palette PNGs: class ids 0..20, 255)"
        lists = "train_aug.txt, val.txt" if self.augmented else "train.txt, val.txt, trainval.txt"
        return layout_error(
            "PascalVOC",
            missing,
            what,
            f"  {self.root}/   (the VOC2012 folder)\n"
            f"    JPEGImages/<id>.jpg\n"
            f"    {masks}\n"
            f"    ImageSets/Segmentation/{{{lists}}}   (one id per line)",
        )

    def palette(self) -> list[int]:
        """The VOC palette as 768 ints, for `PIL.Image.putpalette` on predictions saved as palette PNGs."""
        return palette()

    def encode_prediction(self, pred: np.ndarray) -> Image.Image:
        """A palette ("P") PNG of a class-id prediction with the VOC palette; `ignore_index` becomes 255.

        Raises:
            DataError: for values that are neither class ids 0..20 nor `ignore_index`.
        """
        pred = self.check_prediction(pred, "PascalVOC.encode_prediction")
        image = Image.fromarray(np.where(pred == self.ignore_index, VOC_IGNORE, pred).astype(np.uint8))
        image.putpalette(self.palette())
        return image

    def load_mask(self, index: int) -> np.ndarray:
        """Class ids of sample `index` (palette indices of the PNG); DataError naming the file for other values."""
        path = self.mask_paths[index]
        values = read_label(path)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(f"{path}: values outside 0..255 in a VOC label map (expected class ids 0..20 and 255)")
        present = np.flatnonzero(np.bincount(values.ravel().astype(np.intp), minlength=256))
        bad = present[self._table[present] < 0]
        if bad.size:
            raise DataError(f"{path}: values {bad.tolist()[:10]} are not VOC class ids (0..20) or 255 (boundary)")
        out = self._table[values]
        return out.astype(np.uint8) if 0 <= self.ignore_index <= 255 else out.astype(np.int64)
