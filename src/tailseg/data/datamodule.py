"""`SegmentationDataModule`: data sets, class statistics, transforms, sampler and loaders.

Data flow for training: the sampler yields an image index, an (index, class) pair for a crop
placed on that class, or an (index, class, False) triple for an image drawn for that class whose
crop is placed uniformly (`TiltedClassSampler(crop_on_class=False)`); `SeededKeys` attaches to each draw an augmentation seed that is a
pure function of (seed, epoch, rank, position); `TransformedDataset` loads the sample, checks
it, and applies `TrainTransform` with that seed. A sampler with `yields_batches = True` (e.g.
`TiltedClassSampler`) yields whole batches of keys instead; it is the DataLoader's `batch_sampler`.
The DataModule's `stream` (`tailseg.resume.TrainingStream`: the seeded sampler and the random streams)
is the state Lightning keeps in every checkpoint besides the weights: `tailseg.resume` lists everything
a checkpoint holds and how a run resumes at any step.

Reproducibility: a training epoch's crops depend only on the DataModule's `seed`, the epoch and
the sampler's state - not on worker count, not on torch's global random state - so a run resumed
from a checkpoint sees exactly the crops of an uninterrupted run. The loaders draw their worker
seeds from private generators and leave torch's global generator (used by dropout) alone.

Stopping: loader workers ignore SIGTERM (`_workers_ignore_sigterm`). A scheduler or `pkill` often sends it
to every process of a run (SLURM's `scancel`, a signal to the process group), and a worker that died of it
made the training process raise "DataLoader worker ... is killed by signal" at a random point, possibly in
the middle of writing `last.ckpt`. The training process alone handles SIGTERM (finishes its step, saves,
exits with 143) and shuts its workers down as it exits; workers whose training process is killed outright
exit on their own (torch's worker watchdog).

Checks before the first step: `setup` loads every sample of the sets the stage uses once (train and
val for `fit`, val for `validate`, test for `test`, the predicted set for `predict`;
`tailseg.data.stats.check_samples`, threads, cached on disk), so a truncated or mismatched file stops the
run before any work with the file named. `fit` also refuses a training loader of 0 batches
(`batch_size` above the number of training images) and, for data sets with `require_every_class`
(`ImageMaskFolder`), a class that appears in no training mask.

Evaluation batches (`eval_batch_size`) hold images of one size: where a set's images differ in size
(known from the check), a batch ends early when the next image's size differs (`SameSizeBatches`), so
every image is predicted whole and at its own size, as with batches of one, with no padding that could
change the predictions near its border. Sets of one image size batch as usual.

Class statistics: `class_pixel_counts` is the (N, C) table of the training set, computed once
(in parallel) and cached on disk (`tailseg.data.stats`). It is *the* channel through which
losses and samplers get class statistics: samplers receive it at construction, and losses
that define `set_class_statistics(counts)` receive it from the model's `setup`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch.utils.data import BatchSampler, DataLoader, Sampler

from tailseg.data.base import DataError, SegmentationDataset
from tailseg.data.shards import EvalShard
from tailseg.data.stats import check_samples, class_pixel_counts
from tailseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from tailseg.lightning_compat import batches_done_in_epoch, training_prefetch_depth
from tailseg.resume import TrainingStream
from tailseg.sampling import UniformSampler
from tailseg.sampling.base import build_sampler


class TransformedDataset(torch.utils.data.Dataset):
    """A data set seen through a transform.

    Keys: an index; an (index, class_id) pair (crop on that class, −1 for none); an
    (index, class_id, seed) triple that also fixes the augmentation's randomness (seed 0 when the
    key has none: evaluation transforms are deterministic, and loading never touches torch's global
    random state, which dropout uses); or an (index, class_id, seed, on_class) quadruple whose
    `on_class` False leaves the crop uniform although the image was drawn for `class_id`
    (`TiltedClassSampler(crop_on_class=False)`). Each sample carries the class it was drawn for as
    "class" (−1 for none), whether or not its crop was placed on it.
    """

    def __init__(self, dataset: SegmentationDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        index, drawn_for = int(key[0]), int(key[1]) if len(key) > 1 else -1
        seed = int(key[2]) if len(key) > 2 else 0
        on_class = bool(key[3]) if len(key) > 3 else True
        focus = drawn_for if on_class and drawn_for >= 0 else None
        image, mask = self.dataset.load(index)
        image_t, mask_t = self.transform(image, mask, seed=seed, focus_class=focus)
        name = self.dataset.sample_name(index)
        return {"image": image_t, "mask": mask_t, "index": index, "name": name, "class": drawn_for}


class SameSizeBatches(BatchSampler):
    """Batches of up to `batch_size` consecutive indices of `sampler` whose images have the same size.

    A `BatchSampler` with its arguments, so that Lightning can put its own sampler in (DDP) and set
    `drop_last=False` (prediction) as for PyTorch's.

    Args:
        sampler: The indices in order (e.g. an `EvalShard`); kept as `.sampler`.
        sizes: (N, 2) image sizes by index.
        batch_size: The most images in a batch.
        drop_last: Must be False: every image is evaluated.
    """

    def __init__(self, sampler: Sampler, sizes: np.ndarray, batch_size: int, drop_last: bool = False) -> None:
        if drop_last:
            raise ValueError("SameSizeBatches: drop_last must be False (every image is evaluated)")
        super().__init__(sampler, int(batch_size), False)
        self.sizes = np.asarray(sizes)

    def __iter__(self):
        batch: list[int] = []
        for index in self.sampler:
            if batch and (len(batch) == self.batch_size or tuple(self.sizes[index]) != tuple(self.sizes[batch[0]])):
                yield batch
                batch = []
            batch.append(int(index))
        if batch:
            yield batch

    def __len__(self) -> int:
        return sum(1 for _ in self)


def missing_class_error(dataset: SegmentationDataset, counts: np.ndarray) -> DataError | None:
    """The error of a training set in which a class has no pixel (None if every class has some).

    The hint for binary masks assumes 2 classes, ignore index 255 and class 1 missing: masks saved as 0/255.
    """
    missing = np.flatnonzero(counts.sum(axis=0) == 0).tolist()
    if not missing:
        return None
    names = ", ".join(f"'{dataset.class_names[c]}' (id {c})" for c in missing)
    message = f"data.train: class {names} appears in no training mask of the {len(dataset)} images; every class needs "
    message += "labelled training pixels (check data.train's class_names and the mask values)"
    if dataset.num_classes == 2 and missing == [1] and dataset.ignore_index == 255:
        message += (
            "; masks saved as 0/255 hold 255, which is the ignore index (ignore_index 255): map 255 to 1 with "
            "label_map: {255: 1} in data.train.init_args and data.val.init_args"
        )
    return DataError(message)


def _positive(field: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"SegmentationDataModule: {field} must be >= 1, got {value}")
    return int(value)


class SegmentationDataModule(pl.LightningDataModule):
    """Owns the data sets, the class statistics, the transforms, the training sampler and the loaders.

    Args:
        train: The training data set (its classes define the task). `fit` needs it; `validate`, `test`
            and `predict` do not read it (the CLI leaves it out for them, so a machine holding only the
            evaluation images can evaluate a checkpoint; what was learned from the training set travels
            in the checkpoint).
        val: The validation data set (whole images).
        test: The test data set (default: none).
        predict: The data set to predict (default: `val`).
        crop_size: (height, width) of the training crops.
        scale_range: Range of the random scale factor of training images.
        hflip: Random horizontal flips of training crops.
        mean: Normalisation mean (per channel, pixel values in [0, 1]).
        std: Normalisation standard deviation.
        batch_size: Training crops per batch (per process).
        eval_batch_size: The most whole images per validation/test/predict batch; a batch holds images of one
            size (`SameSizeBatches` where a set's images differ in size).
        num_workers: Data-loader worker processes.
        train_sampler: A factory called with the (N, C) class pixel-count table that returns the
            training sampler (default: `UniformSampler`). In YAML, a `class_path` whose init
            arguments leave out the table. The DataModule also passes its `seed`, `batch_size` and the
            loader's prefetch depth `lag` (`tailseg.lightning_compat.training_prefetch_depth`) to samplers that
            take them and leave them unset (`tailseg.sampling.base.build_sampler`).
        stats_cache_dir: Folder of the class-statistics cache (default: `$TAILSEG_CACHE` or
            `~/.cache/tailseg`; "" disables it).
        seed: Seed of the augmentation stream and of samplers built without their own seed
            (default: torch's initial seed, i.e. `seed_everything`'s value). Under DDP every rank takes rank 0's.
    """

    def __init__(
        self,
        train: SegmentationDataset | None = None,
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
        sets = [(name, ds) for name, ds in (("train", train), ("val", val), ("test", test), ("predict", predict))
                if ds is not None]  # fmt: skip
        if not sets:
            raise DataError(
                "SegmentationDataModule: no data set is configured (data.train, data.val, data.test or data.predict)"
            )
        (first, reference), *others = sets
        for name, ds in others:
            if tuple(ds.class_names) != tuple(reference.class_names) or ds.ignore_index != reference.ignore_index:
                raise DataError(
                    f"SegmentationDataModule: data set '{name}' has classes {ds.class_names} / ignore "
                    f"{ds.ignore_index}, but '{first}' has {reference.class_names} / ignore {reference.ignore_index}"
                )
        self._reference = reference
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
        self.train_transform = TrainTransform(crop_size, scale_range, hflip, mean, std, reference.ignore_index)
        self.eval_transform = EvalTransform(mean, std)
        self.sampler_factory = train_sampler if train_sampler is not None else UniformSampler
        self.stats_cache_dir = stats_cache_dir
        self.seed = seed
        self.train_sampler: Sampler | None = None
        self.stream: TrainingStream | None = None  # built with the sampler when fitting starts
        self._counts: np.ndarray | None = None
        self.image_sizes: dict[str, np.ndarray] = {}  # (N, 2) image sizes of each checked set ("train", "val", ...)

    # What the CLI links into the model: the classes of the training set, or of the first data set given.
    @property
    def num_classes(self) -> int:
        return self._reference.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self._reference.class_names)

    @property
    def ignore_index(self) -> int:
        return self._reference.ignore_index

    @property
    def class_pixel_counts(self) -> np.ndarray:
        """(N, C) int64 pixel counts of each class in each training image (computed once, cached)."""
        if self.train_set is None:
            raise DataError("SegmentationDataModule: class statistics need the training set (data.train)")
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
            if self.train_set is None:
                raise DataError("SegmentationDataModule: fit needs a training data set (data.train)")
            _ = self.class_pixel_counts  # checks every training mask before training starts
            if getattr(self.train_set, "require_every_class", False) and (
                error := missing_class_error(self.train_set, self.class_pixel_counts)
            ):
                raise error
            self._check("train", self.train_set)
            if self.val_set is not None:
                self.val_set.prepare(workers)
                self._check("val", self.val_set)
            if self.seed is None:
                self.seed = torch.initial_seed() % 2**31
            seed = self._rank_zero_seed(self.seed)
            if seed != self.seed:  # the stream was built before the trainer was attached (the CLI's early checks)
                self.seed, self.train_sampler, self.stream = seed, None, None
            if self.train_sampler is None:
                lag = training_prefetch_depth(self.num_workers)
                self.train_sampler = build_sampler(
                    self.sampler_factory, self.class_pixel_counts, seed=self.seed, batch_size=self.batch_size, lag=lag
                )
                size = getattr(self.train_sampler, "batch_size", None)
                if getattr(self.train_sampler, "yields_batches", False) and int(size) != self.batch_size:
                    raise ValueError(
                        f"SegmentationDataModule: the batch sampler's batch_size {size} differs from "
                        f"data.batch_size {self.batch_size}; leave the sampler's unset"
                    )
                stream = TrainingStream(
                    self.train_sampler, self.seed, self.batch_size, self._batches_trained_in_epoch, self._current_epoch
                )
                if stream.keys.num_batches() == 0:
                    self.train_sampler = None
                    raise DataError(
                        f"data.batch_size {self.batch_size} is larger than the {len(self.train_set)} training images "
                        f"(data.train): an epoch would have 0 training batches (the last incomplete batch is "
                        f"dropped); lower data.batch_size to at most {len(self.train_set)}"
                    )
                self.stream = stream
        for name, ds in (("validate", self.val_set), ("test", self.test_set), ("predict", self.predict_set)):
            if stage == name:
                if ds is None:
                    raise DataError(f"SegmentationDataModule: no '{name}' data set is configured for stage '{stage}'")
                ds.prepare(workers)
                self._check({"validate": "val"}.get(name, name), ds)

    def _check(self, split: str, dataset: SegmentationDataset) -> None:
        """Load every sample of `dataset` once (cached: `check_samples`) and keep its image sizes for batching."""
        if split not in self.image_sizes:
            self.image_sizes[split] = check_samples(dataset, cache_dir=self.stats_cache_dir)

    def _rank_zero_seed(self, seed: int) -> int:
        """Rank 0's `seed` on every DDP rank (each rank may have another `torch.initial_seed()`): all ranks then draw
        shards of one global sequence. Unchanged without a trainer or on one process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return int(seed)
        return int(trainer.strategy.broadcast(int(seed), src=0))

    def _loader_options(self) -> dict:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": _workers_ignore_sigterm if self.num_workers > 0 else None,
            "pin_memory": torch.cuda.is_available(),
            "generator": torch.Generator().manual_seed(self.seed or 0),  # leaves the global generator alone
        }

    def state_dict(self) -> dict:
        """What Lightning keeps in checkpoints for the DataModule: the training stream's state (fit only)."""
        return {"stream": self.stream.state_dict()} if self.stream is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.stream is not None and "stream" in state_dict:
            stream = state_dict["stream"]
            self.stream.load_state_dict(stream)
            self.seed = self.stream.keys.seed
            rank_zero_info(
                f"Resuming the training stream at epoch {stream['epoch']}, after its first {stream['position']} "
                "batches: the sampler's state, the position in the epoch and the random streams come from the "
                "checkpoint, the batches already trained on are skipped (tailseg.resume)"
            )

    def _eval_loader(self, split: str, dataset: SegmentationDataset, sampler: Sampler) -> DataLoader:
        """Whole images of `dataset` in `eval_batch_size` batches, of one image size each (see the module docs)."""
        sizes = self.image_sizes.get(split)
        options = {**self._loader_options()}
        if sizes is not None and len(sizes) and (sizes != sizes[0]).any():
            options["batch_sampler"] = SameSizeBatches(sampler, sizes, self.eval_batch_size)
        else:
            options.update(batch_size=self.eval_batch_size, sampler=sampler)
        return DataLoader(TransformedDataset(dataset, self.eval_transform), **options)

    def _current_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def _batches_trained_in_epoch(self) -> int:
        """Lightning's count of this epoch's batches whose training step finished (for `TrainingStream`); an epoch
        that Lightning ends early (`limit_train_batches`) counts as all of its batches, so a resume starts the next."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        done = batches_done_in_epoch(trainer)
        return self.stream.keys.num_batches() if done >= trainer.num_training_batches else done

    def train_dataloader(self) -> DataLoader:
        """Training crops keyed by the stream's seeded sampler (`tailseg.resume.SeededKeys`)."""
        if self.stream is None:
            self.setup("fit")
        keys, dataset = self.stream.keys, TransformedDataset(self.train_set, self.train_transform)
        if keys.yields_batches:
            return DataLoader(dataset, batch_sampler=keys, **self._loader_options())
        return DataLoader(dataset, sampler=keys, batch_size=self.batch_size, drop_last=True, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        """Whole validation images; under DDP each rank gets its own `EvalShard` (each image once, no padding)."""
        if self.val_set is None:
            return []
        sampler = EvalShard.for_trainer(self.val_set, getattr(self, "trainer", None), split="validation")
        return self._eval_loader("val", self.val_set, sampler)

    def test_dataloader(self) -> DataLoader:
        """Whole test images, sharded across DDP ranks like `val_dataloader`."""
        sampler = EvalShard.for_trainer(self.test_set, getattr(self, "trainer", None), split="test")
        return self._eval_loader("test", self.test_set, sampler)

    def predict_dataloader(self) -> DataLoader:
        """Whole images to predict, sharded across DDP ranks like `val_dataloader` (each rank writes its own)."""
        sampler = EvalShard.for_trainer(self.predict_set, getattr(self, "trainer", None), split="predict")
        return self._eval_loader("predict", self.predict_set, sampler)


def _workers_ignore_sigterm(worker_id: int) -> None:
    """In each loader worker as it starts: SIGTERM is the training process's to handle (see the module docs)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
