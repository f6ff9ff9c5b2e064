"""Epoch samplers that draw one global sequence per epoch and shard it across DDP ranks.

Every sampler here is built from the DataModule's (N, C) class pixel-count table
(`SegmentationDataModule.class_pixel_counts`) plus its own keyword arguments, so a YAML entry

    train_sampler:
      class_path: tailseg.sampling.UniformSampler
      init_args: {seed: 0}

is a factory that the DataModule calls with the table. The sequence of an epoch is a pure
function of (seed, epoch, sampler state); rank r of R takes the draws r, r + R, r + 2R, ... of it,
so the shards are disjoint and together form the global sequence. Ranks default to
torch.distributed's when it is initialised, else a single replica. Lightning calls
`set_epoch` before each training epoch (also with `use_distributed_sampler: false`).
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist


def as_count_table(class_pixel_counts) -> np.ndarray:
    """The (N, C) table as a non-negative int64 numpy array, or a ValueError naming what is wrong."""
    counts = (
        class_pixel_counts.cpu().numpy()
        if isinstance(class_pixel_counts, torch.Tensor)
        else np.asarray(class_pixel_counts)
    )
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 1:
        raise ValueError(f"class_pixel_counts must be an (N images, C classes) table, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)) or (counts < 0).any():
        raise ValueError("class_pixel_counts must hold finite, non-negative pixel counts")
    return counts.astype(np.int64)


def build_sampler(factory: Callable, class_pixel_counts, **context) -> torch.utils.data.Sampler:
    """Build a training sampler from its factory, the (N, C) table and the run's context.

    The DataModule calls this with `seed`, `batch_size` and `lag` (see `TiltedClassSampler`). Each context
    value is passed only when the sampler's constructor takes that argument and the YAML did not fix it
    (a factory from a YAML `class_path` is a `functools.partial` holding the `init_args`; a None there is
    "not fixed"). The samplers are thus complete when built: nothing is patched onto them afterwards.
    """
    target, fixed = factory, {}
    if isinstance(factory, functools.partial):
        target = next((a for a in factory.args if inspect.isclass(a)), factory.func)
        fixed = factory.keywords
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin or other callable without a signature
        params = {}
    kwargs = {k: v for k, v in context.items() if k in params and fixed.get(k) is None}
    return factory(class_pixel_counts, **kwargs)


class ImagesByClass:
    """For each class, the images that contain it (one flat array with per-class offsets), and uniform draws from them.

    Args:
        counts: (N, C) class pixel-count table.
    """

    def __init__(self, counts: np.ndarray) -> None:
        classes, images = np.nonzero(counts.T > 0)
        num_classes = counts.shape[1]
        self.images = torch.from_numpy(images.astype(np.int64))
        self.offsets = torch.from_numpy(np.searchsorted(classes, np.arange(num_classes)).astype(np.int64))
        self.lengths = torch.from_numpy(np.bincount(classes, minlength=num_classes).astype(np.int64))

    def draw(self, classes: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """One image containing each of `classes`, chosen by `uniforms` in [0, 1) (uniform among those images)."""
        n = self.lengths[classes]
        return self.images[self.offsets[classes] + (uniforms * n).long().clamp_max(n - 1)]


class Replicas:
    """`num_replicas` and `rank`: the given values, else torch.distributed's when initialised, else 1 and 0."""

    _num_replicas: int | None = None
    _rank: int | None = None

    def _set_replicas(self, num_replicas: int | None, rank: int | None, name: str) -> None:
        if num_replicas is not None and num_replicas < 1:
            raise ValueError(f"{name}: num_replicas must be >= 1, got {num_replicas}")
        if rank is not None and num_replicas is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"{name}: rank must be in [0, {num_replicas}), got {rank}")
        self._num_replicas, self._rank = num_replicas, rank

    @property
    def num_replicas(self) -> int:
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class EpochSampler(Replicas, torch.utils.data.Sampler, abc.ABC):
    """Base class: (seed, epoch) -> one global sequence of `num_samples` draws, sharded by rank.

    Args:
        class_pixel_counts: (N, C) class pixel counts per training image.
        num_samples: Draws per epoch over all replicas (default N).
        seed: Seed of the sequence; None takes the DataModule's seed (which follows `seed_everything`),
            or 0 when the sampler is used on its own.
        num_replicas: Number of DDP processes (default: torch.distributed's world size, or 1).
        rank: This process's rank (default: torch.distributed's rank, or 0).
    """

    def __init__(
        self,
        class_pixel_counts,
        num_samples: int | None = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.counts = as_count_table(class_pixel_counts)
        self.num_images = self.counts.shape[0]
        self.num_samples = self.num_images if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.seed, self.epoch = (None if seed is None else int(seed)), 0
        self._set_replicas(num_replicas, rank, type(self).__name__)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self) -> torch.Generator:
        """The generator of this epoch's global sequence (identical on every rank)."""
        return torch.Generator().manual_seed((self.seed or 0) * 1_000_003 + self.epoch)

    @abc.abstractmethod
    def draw_epoch(self) -> torch.Tensor:
        """The global sequence of this epoch: int64 (num_samples,) image indices, or (num_samples, 2) (index, class)."""

    def __len__(self) -> int:
        return self.num_samples // self.num_replicas

    def __iter__(self) -> Iterator:
        draws = self.draw_epoch()
        shard = draws[self.rank : len(self) * self.num_replicas : self.num_replicas]
        return iter(shard.tolist() if shard.ndim == 1 else zip(*shard.T.tolist(), strict=True))

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = None if state["seed"] is None else int(state["seed"])
        self.epoch = int(state["epoch"])
