"""`SegmentationDataModule`: data sets, class statistics, transforms, sampler and loaders.

Data flow for training: the sampler yields an image index, or an (index, class) pair for a
crop placed on that class; `SeededKeys` attaches to each draw an augmentation seed that is a
pure function of (seed, epoch, rank, position); `TransformedDataset` loads the sample, checks
it, and applies `TrainTransform` with that seed. A sampler with `yields_batches = True` (e.g.
`TiltedClassSampler`) yields whole batches of keys instead; it is passed to the DataLoader as
its `batch_sampler`, with its `batch_size` filled in from the DataModule's.

Reproducibility: a training epoch's crops depend only on the DataModule's `seed`, the epoch and
the sampler's state - not on worker count, not on torch's global random state - so a run resumed
from a checkpoint sees exactly the crops of an uninterrupted run. The loaders draw their worker
seeds from private generators and leave torch's global generator (used by dropout) alone.

Class statistics: `class_pixel_counts` is the (N, C) table of the training set, computed once
(in parallel) and cached on disk (`tailseg.data.stats`). It is *the* channel through which
losses and samplers get class statistics: samplers receive it at construction, and losses
that define `set_class_statistics(counts)` receive it from the model's `setup`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from tailseg.data.base import DataError, SegmentationDataset
from tailseg.data.stats import class_pixel_counts
from tailseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from tailseg.sampling import UniformSampler


class TransformedDataset(torch.utils.data.Dataset):
    """A data set seen through a transform.

    Keys: an index; an (index, class_id) pair (crop on that class, −1 for none); or an
    (index, class_id, seed) triple that also fixes the augmentation's randomness. Each sample
    carries its focus class as "class" (−1 for none).
    """

    def __init__(self, dataset: SegmentationDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        index, focus = int(key[0]), int(key[1]) if len(key) > 1 else -1
        seed = int(key[2]) if len(key) > 2 else int(torch.randint(0, 2**31 - 2, ()).item())
        image, mask = self.dataset.load(index)
        image_t, mask_t = self.transform(image, mask, seed=seed, focus_class=focus if focus >= 0 else None)
        name = self.dataset.sample_name(index)
        return {"image": image_t, "mask": mask_t, "index": index, "name": name, "class": focus}


class SeededKeys(Sampler):
    """Wraps a sampler so each draw carries its augmentation seed: (index, class_id, seed).

    The seeds of an epoch are drawn from a generator seeded with (seed, epoch, rank), one per
    position, so they do not depend on workers or on torch's global random state. A batch
    sampler (`yields_batches = True`) yields lists of such triples; the seeds of step k are the
    next `len(batch)` draws of that generator, a pure function of (seed, epoch, rank, step,
    position). Lightning calls `set_epoch` on a batch sampler's inner `sampler` only, so for
    batch samplers the epoch is read from the wrapped sampler.
    """

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        rank = getattr(self.sampler, "rank", 0)
        if getattr(self.sampler, "yields_batches", False):
            epoch = int(getattr(self.sampler, "epoch", self.epoch))
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + int(rank)) % 2**63)
            for batch in self.sampler:
                seeds = torch.randint(0, 2**31 - 2, (len(batch),), generator=g).tolist()
                yield [(int(index), int(focus), seed) for (index, focus), seed in zip(batch, seeds, strict=True)]
            return
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + int(rank)) % 2**63)
        seeds = torch.randint(0, 2**31 - 2, (len(self.sampler),), generator=g).tolist()
        for key, seed in zip(self.sampler, seeds, strict=False):
            index, focus = (key[0], key[1]) if isinstance(key, (tuple, list)) else (key, -1)
            yield int(index), int(focus), seed


def _positive(field: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"SegmentationDataModule: {field} must be >= 1, got {value}")
    return int(value)


class SegmentationDataModule(pl.LightningDataModule):
    """Owns the data sets, the class statistics, the transforms, the training sampler and the loaders.

    Args:
        train: The training data set (its classes define the task).
        val: The validation data set (whole images).
        test: The test data set (default: none).
        predict: The data set to predict (default: `val`).
        crop_size: (height, width) of the training crops.
        scale_range: Range of the random scale factor of training images.
        hflip: Random horizontal flips of training crops.
        mean: Normalisation mean (per channel, pixel values in [0, 1]).
        std: Normalisation standard deviation.
        batch_size: Training crops per batch (per process).
        eval_batch_size: Whole images per validation/test/predict batch.
        num_workers: Data-loader worker processes.
        train_sampler: A factory called with the (N, C) class pixel-count table that returns the
            training sampler (default: `UniformSampler`). In YAML, a `class_path` whose init
            arguments leave out the table.
        stats_cache_dir: Folder of the class-statistics cache (default: `$TAILSEG_CACHE` or
            `~/.cache/tailseg`; "" disables it).
        seed: Seed of the augmentation stream and of samplers built without their own seed
            (default: torch's initial seed, i.e. `seed_everything`'s value).
    """

    def __init__(
        self,
        train: SegmentationDataset,
        val: SegmentationDataset | None = None,
        test: SegmentationDataset | None = None,
        predict: SegmentationDataset | None = None,
        crop_size: tuple[int, int] = (160, 160),
        scale_range: tuple[float, float] = (0.5, 1.5),
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 8,
        eval_batch_size: int = 4,
        num_workers: int = 2,
        train_sampler: Callable[[np.ndarray], Sampler] | None = None,
        stats_cache_dir: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.predict_set = predict if predict is not None else val
        for name, ds in (("val", val), ("test", test), ("predict", predict)):
            if ds is not None and (
                tuple(ds.class_names) != tuple(train.class_names) or ds.ignore_index != train.ignore_index
            ):
                raise DataError(
                    f"SegmentationDataModule: data set '{name}' has classes {ds.class_names} / ignore "
                    f"{ds.ignore_index}, but 'train' has {train.class_names} / ignore {train.ignore_index}"
                )
        if len(crop_size) != 2 or min(crop_size) < 8:
            raise ValueError(f"SegmentationDataModule: crop_size must be (height, width) >= 8, got {crop_size}")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"SegmentationDataModule: scale_range must satisfy 0 < low <= high, got {scale_range}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"SegmentationDataModule: mean and std need 3 channels and std > 0, got {mean}, {std}")
        self.batch_size = _positive("batch_size", batch_size)
        self.eval_batch_size = _positive("eval_batch_size", eval_batch_size)
        if num_workers < 0:
            raise ValueError(f"SegmentationDataModule: num_workers must be >= 0, got {num_workers}")
        self.num_workers = int(num_workers)
        self.train_transform = TrainTransform(crop_size, scale_range, hflip, mean, std, train.ignore_index)
        self.eval_transform = EvalTransform(mean, std)
        self.sampler_factory = train_sampler if train_sampler is not None else UniformSampler
        self.stats_cache_dir = stats_cache_dir
        self.seed = seed
        self.train_sampler: Sampler | None = None
        self._counts: np.ndarray | None = None

    # What the CLI links into the model.
    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.train_set.class_names)

    @property
    def ignore_index(self) -> int:
        return self.train_set.ignore_index

    @property
    def class_pixel_counts(self) -> np.ndarray:
        """(N, C) int64 pixel counts of each class in each training image (computed once, cached)."""
        if self._counts is None:
            self.train_set.prepare(max(1, self.num_workers))
            self._counts = class_pixel_counts(self.train_set, cache_dir=self.stats_cache_dir)
        return self._counts

    @property
    def class_frequency(self) -> np.ndarray:
        """(C,) share of each class among the labelled training pixels."""
        totals = self.class_pixel_counts.sum(axis=0).astype(np.float64)
        return totals / max(totals.sum(), 1.0)

    def setup(self, stage: str) -> None:
        workers = max(1, self.num_workers)
        if stage == "fit":
            _ = self.class_pixel_counts  # checks every training mask before training starts
            if self.val_set is not None:
                self.val_set.prepare(workers)
            if self.seed is None:
                self.seed = torch.initial_seed() % 2**31
            if self.train_sampler is None:
                self.train_sampler = self.sampler_factory(self.class_pixel_counts)
                if getattr(self.train_sampler, "seed", 0) is None:
                    self.train_sampler.seed = self.seed
                if getattr(self.train_sampler, "yields_batches", False):
                    if getattr(self.train_sampler, "batch_size", None) is None:
                        self.train_sampler.batch_size = self.batch_size
                    elif int(self.train_sampler.batch_size) != self.batch_size:
                        raise ValueError(
                            f"SegmentationDataModule: the batch sampler's batch_size {self.train_sampler.batch_size} "
                            f"differs from data.batch_size {self.batch_size}; leave the sampler's unset"
                        )
        for name, ds in (("validate", self.val_set), ("test", self.test_set), ("predict", self.predict_set)):
            if stage == name:
                if ds is None:
                    raise DataError(f"SegmentationDataModule: no '{name}' data set is configured for stage '{stage}'")
                ds.prepare(workers)

    def _loader(self, dataset: SegmentationDataset, transform, batch_size: int | None, **kwargs) -> DataLoader:
        if batch_size is not None:  # None: a batch_sampler in kwargs makes the batches
            kwargs["batch_size"] = batch_size
        return DataLoader(
            TransformedDataset(dataset, transform),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed or 0),  # leaves the global generator alone
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_sampler is None:
            self.setup("fit")
        sampler = SeededKeys(self.train_sampler, self.seed)
        if getattr(self.train_sampler, "yields_batches", False):
            return self._loader(self.train_set, self.train_transform, None, batch_sampler=sampler)
        return self._loader(self.train_set, self.train_transform, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.eval_transform, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_transform, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, self.eval_transform, self.eval_batch_size)
