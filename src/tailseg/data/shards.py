"""`EvalShard`: splits an evaluation set across DDP ranks, each image on exactly one rank.

The configs set `trainer.use_distributed_sampler: false` because the training samplers shard their own
sequence. Lightning then leaves every loader alone, so without a sharding sampler each rank of a DDP run
would validate, test and predict the whole set (correct IoU, since identical confusion matrices sum to a
multiple of one, but R times the work). `SegmentationDataModule` gives its validation, test and predict
loaders an `EvalShard` instead.

No padding, no duplicates. `torch.utils.data.DistributedSampler` pads the last shards with repeated
images so that every rank runs the same number of steps, which training needs (every step all-reduces the
gradients). Evaluation does not: `ClassIoU` sums a confusion matrix over the whole split and syncs it once,
at epoch end, and `self.log(...)` in `validation_step` / `test_step` (on_epoch by default) accumulates
locally and syncs only when the epoch's value is computed. A repeated image would be counted twice, so its
pixels would weigh double in the TP / FP / FN of its classes: a bias on the per-class IoU that hurts rare
classes most (the one duplicated image may hold most of a class's pixels). So the shards differ in size by
at most one image and ranks may run one batch more or fewer than each other. (A mean logged with
`self.log(..., batch_size=B, sync_dist=True)` would not be exact then: Lightning 2.6 averages the integer
image count over ranks and truncates it. The model's val/test loss is therefore a torchmetrics `MeanMetric`
weighted by B, which is exact.)

Strided, not contiguous: rank r takes images r, r + R, r + 2R, ... Both layouts give sizes that differ by
at most one, but data sets are listed by folder (Cityscapes by city, ADE20K by scene), so image size and
cost drift along the index; strided shards take a share of every part of the list and finish together,
contiguous blocks would give one rank all of the large images. It is also the layout of
`DistributedSampler(shuffle=False)` without its padding. The order does not matter to the metrics.

Lightning 2.6: `EvalShard` subclasses `DistributedSampler` so that Lightning treats the loader as already
distributed in every setting: with `use_distributed_sampler: true` it would otherwise wrap the sampler in
a `DistributedSamplerWrapper` (validation, test) or `UnrepeatedDistributedSamplerWrapper` (predict) and
shard the shards, losing images. None of `DistributedSampler`'s padding or shuffling is used.

A rank with no image at all cannot take part in evaluation: Lightning raises on that rank only
("has zero length") or skips its loop, and the other ranks then wait forever in the epoch-end sync (and,
inside `fit`, in the buffer broadcast of the DDP wrapper's first forward after training). So `EvalShard`
refuses, on every rank alike, a non-empty set smaller than the number of ranks. An empty set is allowed:
every rank then skips the loop alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch.distributed as dist
from torch.utils.data import DistributedSampler


def _world() -> tuple[int, int]:
    """(number of ranks, this rank) of the default process group, or (1, 0) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EvalShard(DistributedSampler):
    """Evaluation sampler: rank r of R yields indices r, r + R, r + 2R, ... < N, with no padding.

    Every index in 0..N-1 is yielded by exactly one rank; shard sizes are ceil((N - r) / R), so they differ
    by at most one (see the module docs for why there is no padding and why the shards are strided).

    Args:
        dataset: The data set (only its length is used).
        num_replicas: Number of ranks R (default: the world size of `torch.distributed` when it is
            initialised, else 1).
        rank: This rank r (default: the `torch.distributed` rank when initialised, else 0).
        split: Name of the data set in error messages, e.g. "validation".

    Raises:
        ValueError: If `rank` is not in [0, R), or if the data set has fewer images than ranks (but at
            least one): a rank without images would stall the others at the epoch-end sync.
    """

    def __init__(
        self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None, split: str = "evaluation"
    ) -> None:
        world, here = _world()
        num_replicas = world if num_replicas is None else int(num_replicas)
        rank = here if rank is None else int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"EvalShard: rank {rank} is not in [0, {num_replicas})")
        size = len(dataset)
        if 0 < size < num_replicas:
            raise ValueError(
                f"EvalShard: the {split} data set has {size} image(s) for {num_replicas} processes; every process "
                f"needs at least one, and repeating images would bias the IoU. Run at most {size} processes "
                f"(e.g. --trainer.devices {size}) or use more {split} images"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, size, num_replicas))  # instead of DistributedSampler's padded count
        self.total_size = size

    @classmethod
    def for_trainer(cls, dataset: Sized, trainer: Any = None, split: str = "evaluation") -> EvalShard:
        """The shard of this process for a Lightning `trainer` (None: from `torch.distributed`).

        Uses `trainer.distributed_sampler_kwargs`, the ranks Lightning itself would shard over (for DDP the
        world; for strategies that also split the model, the data-parallel group only).
        """
        kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
        if kwargs:
            return cls(dataset, num_replicas=kwargs["num_replicas"], rank=kwargs["rank"], split=split)
        return cls(dataset, split=split)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
