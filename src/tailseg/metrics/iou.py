"""Per-class intersection over union accumulated over a whole data set (or epoch)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from a (C, C) confusion matrix (rows: truth, cols: prediction).

    Classes absent from both the ground truth and the predictions (0 / 0) are NaN, so that
    `torch.nanmean` leaves them out of the mean.
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


class ClassIoU(Metric):
    """Data-set-level per-class IoU: sums a confusion matrix over batches (and DDP ranks).

    It also counts the images it has seen (`num_images`, B per `update`), so that a report can say how
    many images its IoU covers; under DDP with sharded evaluation loaders `total_images()` equals the
    size of the split, and anything else (a padded or unsharded loader) shows up there.

    Args:
        num_classes: C.
        ignore_index: Target label left out of the confusion matrix.
        **kwargs: As `torchmetrics.Metric` (e.g. `sync_on_compute`).

    Shape:
        update(preds (B, H, W) int, target (B, H, W) int); compute() -> (C,) float64, NaN for
        classes absent from both; total_images() -> int.

    Attributes:
        confusion: (C, C) int64 confusion matrix of this rank since the last `reset` (rows: truth).
        num_images: () int64 number of images this rank has counted since the last `reset`.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.add_state(
            "confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        truth, pred = target[keep].long(), preds[keep].long()  # labels were checked when loaded
        index = truth * self.num_classes + pred
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )
        self.num_images += target.shape[0] if target.ndim == 3 else 1  # a lone (H, W) map is one image

    def compute(self) -> torch.Tensor:
        return iou_from_confusion(self.confusion)

    def total_images(self) -> int:
        """The number of images counted since the last `reset`, summed over DDP ranks.

        Synced like `compute()` (not at all with `sync_on_compute=False`), so under DDP it is a collective:
        call it on every rank, at the same point (e.g. beside `compute()` in an epoch-end hook), and before
        `reset()`, which sets the count back to 0. Without torch.distributed it is the local count.
        """
        if self._is_synced:  # inside compute() or an explicit sync(): the state already holds the total
            return int(self.num_images)
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            return int(self.num_images)


def per_image_counts(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-class intersection and union pixel counts.

    Intersection I_bc = #{truth == pred == c}, union U_bc = #{truth == c or pred == c}, over the pixels of image b
    whose truth is not `ignore_index`: the diagonal, and row plus column sums minus the diagonal, of each image's
    confusion matrix. Summed over the images they are the whole set's (`ClassIoU.confusion`'s) figures.

    Args:
        preds: (B, H, W) predicted class ids.
        target: (B, H, W) true class ids and `ignore_index`.
        num_classes: C.
        ignore_index: Target label left out.

    Returns:
        (intersection, union), each (B, C) int64.
    """
    b = target.shape[0]
    keep = target != ignore_index
    image = torch.arange(b, device=target.device).view(b, *([1] * (target.ndim - 1))).expand_as(target)[keep]
    index = (image * num_classes + target[keep].long()) * num_classes + preds[keep].long()
    confusion = torch.bincount(index, minlength=b * num_classes**2).reshape(b, num_classes, num_classes)
    intersection = confusion.diagonal(dim1=1, dim2=2)
    return intersection.clone(), confusion.sum(1) + confusion.sum(2) - intersection


class PerImageCounts(Metric):
    """The per-image intersection and union counts of an evaluation, with each image's data-set index.

    `cat` states: under DDP `compute()` gathers the images of every rank (each evaluated on exactly one, see
    `tailseg.data.shards`), and returns them ordered by index, so the result does not depend on the sharding.

    Args:
        num_classes: C.
        ignore_index: Target label left out.
        **kwargs: As `torchmetrics.Metric`.

    Shape:
        update(preds (B, H, W) int, target (B, H, W) int, index (B,) int); compute() -> (index (n,),
        intersection (n, C), union (n, C)), int64, sorted by index.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        for name in ("index", "intersection", "union"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        intersection, union = per_image_counts(preds, target, self.num_classes, self.ignore_index)
        self.index.append(torch.as_tensor(index, device=target.device).long().reshape(-1))
        self.intersection.append(intersection)
        self.union.append(union)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def cat(state) -> torch.Tensor:
            return torch.cat(state) if isinstance(state, list) else state

        index, intersection, union = cat(self.index), cat(self.intersection), cat(self.union)
        order = torch.argsort(index)
        return (
            index[order],
            intersection.reshape(-1, self.num_classes)[order],
            union.reshape(-1, self.num_classes)[order],
        )
