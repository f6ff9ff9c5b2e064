"""Per-image intersection and union counts of an evaluation, as `report.json` carries them.

Every evaluation's report holds, for each image, its name, its group (the video or city it comes from, where
the data set says; else null) and the per-class intersection and union pixel counts, under `per_image`:

- inline for small sets: `{"names": [...], "groups": [...] | null, "intersection": [[...], ...], "union":
  [[...], ...]}` (n lists of C integers each, classes in the report's `per_class_iou` order);
- in a compressed NumPy file beside the report for large ones: `{"file": "<report stem>.per_image.npz"}`, the
  file holding the arrays `names`, `groups` (absent without groups), `intersection` and `union` ((n, C) integers).

`load_per_image(report, folder)` reads either; a report without `per_image` (written by an older tailseg) gives
None, and the analysis then says that its intervals are unavailable instead of showing a zero-width interval.
Summed over the images, the counts are the whole-set confusion's: `intersection.sum(0) / union.sum(0)` is the
report's per-class IoU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PerImage:
    """The per-image counts of one evaluation.

    Attributes:
        names: The image names, in the evaluation's order.
        groups: The group of each image (e.g. CamVid's video), or None where the data set has none.
        intersection: (n, C) int64 pixel counts of truth == prediction == c per image.
        union: (n, C) int64 pixel counts of truth == c or prediction == c per image.
    """

    names: list[str]
    groups: list[str] | None
    intersection: np.ndarray
    union: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.intersection.shape != self.union.shape or self.intersection.shape[0] != n:
            raise ValueError(
                f"per_image: {n} names, intersection {self.intersection.shape}, union {self.union.shape} disagree"
            )
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"per_image: {len(self.groups)} groups for {n} images")

    def aligned(self, names: list[str]) -> PerImage:
        """The counts of the images `names`, in that order (KeyError naming the first missing image)."""
        where = {name: i for i, name in enumerate(self.names)}
        missing = [name for name in names if name not in where]
        if missing:
            raise KeyError(f"per_image: image {missing[0]!r} is not in this evaluation ({len(missing)} missing)")
        index = np.array([where[name] for name in names], dtype=np.int64)
        groups = None if self.groups is None else [self.groups[i] for i in index]
        return PerImage(list(names), groups, self.intersection[index], self.union[index])


def per_image_file(report_path: str | os.PathLike) -> Path:
    """The NumPy file of a report's per-image counts: `<folder>/<report stem>.per_image.npz`."""
    path = Path(report_path)
    return path.with_name(f"{path.stem}.per_image.npz")


def load_per_image(report: dict, folder: str | os.PathLike) -> PerImage | None:
    """The per-image counts of `report` (read from `folder`/<file> when stored beside it); None without them.

    Raises:
        ValueError: `per_image` names a file that is missing or malformed.
    """
    entry = report.get("per_image")
    if not entry:
        return None
    if "file" in entry:
        path = Path(folder) / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as data:
                groups = data["groups"].tolist() if "groups" in data.files else None
                return PerImage(data["names"].tolist(), groups, data["intersection"].astype(np.int64),
                                data["union"].astype(np.int64))  # fmt: skip
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: the per-image counts of the report cannot be read ({error})") from error
    return PerImage(
        list(entry["names"]),
        None if entry.get("groups") is None else list(entry["groups"]),
        np.asarray(entry["intersection"], dtype=np.int64).reshape(len(entry["names"]), -1),
        np.asarray(entry["union"], dtype=np.int64).reshape(len(entry["names"]), -1),
    )
