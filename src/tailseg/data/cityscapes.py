"""Cityscapes (fine or coarse annotations) in its official folder layout, with the official 19-class mapping.

Expected layout (as unpacked from `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip`)::

    <root>/
      leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
      gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (optional)

The label ids (0..33) are mapped to the 19 train ids (and void to `ignore_index`) with the table of
`cityscapesscripts.helpers.labels`, the official one; class names and colours come from the same table.
Where `*_labelTrainIds.png` files exist (written by `cityscapesscripts/preparation/createTrainIdLabelImgs.py`
from that same table) they are read instead, and only checked.

The `test` split has no public annotations: the official `gtFine/test` files are placeholders in which
almost every pixel is void, so test masks load as (nearly) all `ignore_index`. Use the test split for
predictions only (`prediction_name`, `train_to_label_ids`).

Predictions are written as `<city>_<seq>_<frame>_labelIds.png` holding the official label ids (0..33,
`train_to_label_ids`), the format that `csEvalPixelLevelSemanticLabeling` (cityscapesscripts) and the
benchmark server read: a folder of them can be scored with
`CITYSCAPES_DATASET=<root> CITYSCAPES_RESULTS=<folder> csEvalPixelLevelSemanticLabeling`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS
from PIL import Image

from tailseg.data.base import DataError, layout_error
from tailseg.data.files import FileSegmentationDataset, read_label

#: Splits of each annotation set (`train_extra` only has coarse annotations).
SPLITS = {"gtFine": ("train", "val", "test"), "gtCoarse": ("train", "train_extra", "val")}
IMAGE_SUFFIX = "_leftImg8bit.png"

_TRAIN_LABELS = sorted((label for label in _LABELS if 0 <= label.trainId < 255), key=lambda label: label.trainId)
if [label.trainId for label in _TRAIN_LABELS] != list(range(len(_TRAIN_LABELS))):
    raise ImportError("cityscapesscripts.helpers.labels: the train ids are not 0..C-1 with one label each")

#: Names of train ids 0..18 ("road", "sidewalk", ..., "bicycle").
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)
#: RGB colour of each train id.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = tuple(tuple(label.color) for label in _TRAIN_LABELS)
#: The label id of each train id (7, 8, 11, ..., 33), for writing predictions in the official format.
LABEL_IDS: tuple[int, ...] = tuple(label.id for label in _TRAIN_LABELS)
#: Label ids that can appear as pixel values in `*_labelIds.png` (0..33; the license plate's -1 cannot).
VALID_LABEL_IDS: tuple[int, ...] = tuple(sorted(label.id for label in _LABELS if label.id >= 0))
#: The label id written for void / ignored pixels of predictions ("unlabeled").
UNLABELED_ID = 0


def label_to_train_table(ignore_index: int = 255) -> np.ndarray:
    """A 256-entry int32 lookup table: label id -> train id, void -> `ignore_index`, unknown label ids -> -1."""
    table = np.full(256, -1, np.int32)
    for label in _LABELS:
        if label.id >= 0:
            table[label.id] = label.trainId if 0 <= label.trainId < 255 else ignore_index
    return table


def train_id_table(ignore_index: int = 255) -> np.ndarray:
    """A 256-entry int32 lookup table for `*_labelTrainIds.png`: 0..18 kept, 255 -> `ignore_index`, else -1."""
    table = np.full(256, -1, np.int32)
    table[: len(CLASS_NAMES)] = np.arange(len(CLASS_NAMES))
    table[255] = ignore_index
    return table


def _lookup(values: np.ndarray, table: np.ndarray, source: str, what: str, ignore_index: int) -> np.ndarray:
    """`table[values]`, or DataError naming `source` when a value has no entry (table value -1)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() >= table.size):
        bad = np.unique(values[(values < 0) | (values >= table.size)])
        raise DataError(f"{source}: values {bad.tolist()[:10]} are not {what}")
    present = np.flatnonzero(np.bincount(values.ravel().astype(np.intp), minlength=table.size))
    bad = present[table[present] < 0]
    if bad.size:
        raise DataError(f"{source}: values {bad.tolist()[:10]} are not {what}")
    out = table[values]
    return out.astype(np.uint8) if 0 <= ignore_index <= 255 else out.astype(np.int64)


class Cityscapes(FileSegmentationDataset):
    """Cityscapes with the 19 evaluated classes; void classes map to `ignore_index`.

    Files are listed in sorted order (city, then sequence and frame). `sample_name` is the image path;
    `prediction_name` the official stem `<city>_<seq>_<frame>` under which predictions are submitted.

    Args:
        root: The Cityscapes folder holding `leftImg8bit/` and `gtFine/` (or `gtCoarse/`).
        split: "train", "val" or "test" ("train", "train_extra" or "val" with `annotations="gtCoarse"`).
            The test annotations are placeholders (nearly all void); see the module docs.
        ignore_index: The label given to void pixels.
        annotations: "gtFine" (default) or "gtCoarse".
        prefer_train_ids: Read `*_<annotations>_labelTrainIds.png` where it exists (then no mapping is
            applied, values are only checked); False always reads `*_labelIds.png` and maps it.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        ignore_index: int = 255,
        annotations: str = "gtFine",
        prefer_train_ids: bool = True,
    ) -> None:
        super().__init__(CLASS_NAMES, ignore_index)
        if annotations not in SPLITS:
            raise DataError(f"Cityscapes: annotations must be one of {sorted(SPLITS)}, got {annotations!r}")
        if split not in SPLITS[annotations]:
            raise DataError(
                f"Cityscapes: split must be one of {list(SPLITS[annotations])} for {annotations}, got {split!r}"
            )
        self.root, self.split, self.annotations = Path(root), split, annotations
        self.class_colors: list[tuple[int, int, int]] = list(CLASS_COLORS)
        self.label_ids: tuple[int, ...] = LABEL_IDS
        self._label_table = label_to_train_table(self.ignore_index)
        self._train_table = train_id_table(self.ignore_index)

        image_dir, mask_dir = self.root / "leftImg8bit" / split, self.root / annotations / split
        for folder in (self.root, self.root / "leftImg8bit", image_dir, self.root / annotations, mask_dir):
            if not folder.is_dir():
                raise self._layout_error(folder)
        self.image_paths = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.image_paths:
            raise self._layout_error(image_dir / "<city>" / f"<city>_<seq>_<frame>{IMAGE_SUFFIX}")
        self.mask_paths = []
        self._is_train_ids: list[bool] = []
        for image in self.image_paths:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            folder = mask_dir / image.parent.name
            train_ids = folder / f"{stem}_{annotations}_labelTrainIds.png"
            label_ids = folder / f"{stem}_{annotations}_labelIds.png"
            use_train_ids = prefer_train_ids and train_ids.is_file()
            if not use_train_ids and not label_ids.is_file():
                raise self._layout_error(label_ids, f"the label map of {image}")
            self.mask_paths.append(train_ids if use_train_ids else label_ids)
            self._is_train_ids.append(use_train_ids)

    def _layout_error(self, missing: Path, what: str | None = None) -> DataError:
        root, split, ann = self.root, self.split, self.annotations
        return layout_error(
            "Cityscapes",
            missing,
            what,
            f"  {root}/\n"
            f"    leftImg8bit/{split}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}\n"
            f"    {ann}/{split}/<city>/<city>_<seq>_<frame>_{ann}_labelIds.png\n"
            f"    {ann}/{split}/<city>/<city>_<seq>_<frame>_{ann}_labelTrainIds.png  (optional, preferred)",
        )

    def load_mask(self, index: int) -> np.ndarray:
        """The train-id map of sample `index`; DataError naming the file for values outside the label table."""
        path = self.mask_paths[index]
        if self._is_train_ids[index]:
            table, what = self._train_table, "Cityscapes train ids (0..18, 255)"
        else:
            table, what = self._label_table, "Cityscapes label ids (0..33)"
        return _lookup(read_label(path), table, str(path), what, self.ignore_index)

    def image_group(self, index: int) -> str:
        """The city of sample `index` (the folder of its image, e.g. "frankfurt")."""
        return self.image_paths[index].parent.name

    def prediction_name(self, index: int) -> str:
        """The official stem `<city>_<seq>_<frame>` of sample `index` (its image name without `_leftImg8bit.png`)."""
        return self.image_paths[index].name[: -len(IMAGE_SUFFIX)]

    def prediction_file(self, index: int) -> str:
        """`<city>_<seq>_<frame>_labelIds.png`: the file name the official evaluator matches to the ground truth."""
        return f"{self.prediction_name(index)}_labelIds.png"

    def encode_prediction(self, pred: np.ndarray) -> Image.Image:
        """The official 8-bit label-id PNG (ids 0..33) of a train-id prediction (`train_to_label_ids`)."""
        return Image.fromarray(self.train_to_label_ids(pred))

    def train_to_label_ids(self, pred: np.ndarray) -> np.ndarray:
        """Map a train-id map (0..18, `ignore_index`) to official label ids (uint8); ignored pixels -> 0 (unlabeled).

        Raises:
            DataError: if `pred` holds another value.
        """
        pred = self.check_prediction(pred, "Cityscapes.train_to_label_ids")
        out = np.full(pred.shape, UNLABELED_ID, np.uint8)
        valid = pred != self.ignore_index
        out[valid] = np.asarray(LABEL_IDS, np.uint8)[pred[valid]]
        return out

    def label_to_train_ids(self, label_map: np.ndarray) -> np.ndarray:
        """Map official label ids (0..33) to train ids, void -> `ignore_index` (the inverse of `train_to_label_ids`)."""
        source, what = "Cityscapes.label_to_train_ids", "Cityscapes label ids (0..33)"
        return _lookup(label_map, self._label_table, source, what, self.ignore_index)
