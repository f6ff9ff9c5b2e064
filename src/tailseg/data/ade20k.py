"""ADE20K as released for the MIT SceneParsing benchmark (ADEChallengeData2016): 150 classes.

Expected layout (as unpacked from `ADEChallengeData2016.zip`)::

    <root>/                                     the ADEChallengeData2016 folder
      images/training/ADE_train_<n>.jpg         20,210 images
      images/validation/ADE_val_<n>.jpg         2,000 images
      annotations/training/ADE_train_<n>.png    single-channel: 0 = other / unlabelled, k = class k (1..150)
      annotations/validation/ADE_val_<n>.png

Label 0 becomes `ignore_index` and label k becomes train id k-1, as in the benchmark's evaluation.
Predictions are written back in the benchmark's encoding: `<image stem>.png`, 8-bit, train id + 1
(1..150; 0 "unlabelled" is never predicted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tailseg.data.base import DataError, layout_error
from tailseg.data.files import FileSegmentationDataset, read_label

#: The 150 class names in label order 1..150 (train ids 0..149): the first synonym of each entry of the
#: "Name" column of objectInfo150.csv (objectInfo150.txt) of the ADE20K SceneParsing benchmark
#: (https://github.com/CSAILVision/sceneparsing).
CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
#: Split folder names, and the short aliases accepted for them.
SPLITS = ("training", "validation")
SPLIT_ALIASES = {"train": "training", "val": "validation"}


class ADE20K(FileSegmentationDataset):
    """ADE20K SceneParsing (ADEChallengeData2016): 150 classes; unlabelled pixels (0) are ignored.

    Images are listed in sorted file-name order; the mask of `images/<split>/<stem>.jpg` is
    `annotations/<split>/<stem>.png`.

    Args:
        root: The `ADEChallengeData2016` folder.
        split: "training" or "validation" (or the aliases "train" and "val").
        ignore_index: The label given to unlabelled pixels (0 in the files).
    """

    def __init__(self, root: str, split: str = "training", ignore_index: int = 255) -> None:
        super().__init__(CLASS_NAMES, ignore_index)
        canonical = SPLIT_ALIASES.get(split, split)
        if canonical not in SPLITS:
            raise DataError(f"ADE20K: split must be one of {list(SPLITS)} (or {sorted(SPLIT_ALIASES)}), got {split!r}")
        self.root, self.split = Path(root), canonical
        self._table = np.full(256, -1, np.int32)
        self._table[0] = self.ignore_index
        self._table[1 : len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))

        image_dir, mask_dir = self.root / "images" / canonical, self.root / "annotations" / canonical
        for folder in (self.root, self.root / "images", image_dir, self.root / "annotations", mask_dir):
            if not folder.is_dir():
                raise self._layout_error(folder)
        self.image_paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not self.image_paths:
            raise self._layout_error(image_dir / "<name>.jpg")
        self.mask_paths = [mask_dir / f"{p.stem}.png" for p in self.image_paths]
        for image, mask in zip(self.image_paths, self.mask_paths, strict=True):
            if not mask.is_file():
                raise self._layout_error(mask, f"the label map of {image}")

    def _layout_error(self, missing: Path, what: str | None = None) -> DataError:
        return layout_error(
            "ADE20K",
            missing,
            what,
            f"  {self.root}/   (the ADEChallengeData2016 folder)\n"
            f"    images/{self.split}/<name>.jpg\n"
            f"    annotations/{self.split}/<name>.png   (0 = unlabelled, 1..150 = classes)",
        )

    def encode_prediction(self, pred: np.ndarray) -> Image.Image:
        """The benchmark's 8-bit PNG of a train-id prediction: label = train id + 1 (`ignore_index` -> 0).

        Raises:
            DataError: for values that are neither train ids 0..149 nor `ignore_index`.
        """
        pred = self.check_prediction(pred, "ADE20K.encode_prediction")
        return Image.fromarray(np.where(pred == self.ignore_index, 0, pred + 1).astype(np.uint8))

    def load_mask(self, index: int) -> np.ndarray:
        """Train ids of sample `index` (label k -> k-1, 0 -> `ignore_index`); DataError naming the file for k > 150."""
        path = self.mask_paths[index]
        values = read_label(path)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(f"{path}: values outside 0..150 in an ADE20K label map")
        present = np.flatnonzero(np.bincount(values.ravel().astype(np.intp), minlength=256))
        bad = present[self._table[present] < 0]
        if bad.size:
            raise DataError(f"{path}: values {bad.tolist()[:10]} are not ADE20K labels (0 = unlabelled, 1..150)")
        out = self._table[values]
        return out.astype(np.uint8) if 0 <= self.ignore_index <= 255 else out.astype(np.int64)
