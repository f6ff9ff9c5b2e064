"""What a checkpoint holds beyond the weights, and how a run resumes exactly from any step.

A run stopped at any optimisation step - a step-interval `last.ckpt`, the checkpoint written on
SIGTERM or an exception (`tailseg.callbacks.PreemptionCheckpoint`), or any other checkpoint - and
resumed with `tailseg fit ... --ckpt_path PATH` reaches the weights of the uninterrupted run bit for
bit on the CPU (on GPUs, up to the non-determinism of the kernels). A tailseg checkpoint is
Lightning's, and this is all it holds:

| part of the checkpoint | written by | what |
| --- | --- | --- |
| `state_dict` | the model | the weights; the loss's class weights (median frequency, focal α) and other per-class vectors derived from the class statistics (logit adjustment's log prior, BLV's variation scales); the recall loss's moving average of the recall, with `momentum` (`tailseg.losses.recall`: the same on every DDP rank, its counts summed over the ranks); the training confusion matrix of the epoch so far (`SegmentationModel.iou.train_iou`, a persistent torchmetrics state, summed over the DDP ranks: the epoch's training IoU, which the performance-aware sampler is fed, then covers the whole epoch) |
| `optimizer_states`, `lr_schedulers` | Lightning | SGD momentum, position of the poly schedule |
| `loops` | Lightning | epoch, global step, batches done in the epoch |
| `SegmentationDataModule` | the DataModule | the **training stream** below |
| `callbacks` | Lightning | `ModelCheckpoint`'s bookkeeping |
| `class_frequency` | the model | the training set's class pixel shares, for the reports of later evaluations |
| `val_history` | the model | every validation's per-class IoU by global step, for the report's mean of the last k validations |
| `hyper_parameters` | Lightning | the model's constructor arguments |

The training stream (`TrainingStream.state_dict`, kept by the DataModule) is the one home of everything
that decides what the rest of the run draws:

- `seed`: the seed of the augmentation stream;
- `epoch`, `position`: the epoch and how many of its batches were trained on (Lightning's own batch
  progress at the time of saving, so a checkpoint written while a step failed counts that step as
  not done);
- `sampler`: the sampler's state - seed, epoch and the feedback it received: the performance-aware
  sampler's IoU (`tailseg.sampling.PerformanceAwareSampler`), the tilted sampler's log L̃ and its last
  few values (`tailseg.sampling.TiltedClassSampler`);
- `rng`: Python's, NumPy's and torch's global random streams of the training process (dropout, the
  logit noise of `BalancedLogitVariation`); under DDP those of every rank.

Augmentations need no state: each crop's randomness is a pure function of (seed, epoch, rank,
position) (`SeededKeys`). Callbacks hold no training state of their own.

How the stream resumes: Lightning saves and restores a DataModule's `state_dict` / `load_state_dict`. On
restore the sampler gets its state back and the epoch's sequence is drawn again from the same (seed,
epoch, state); the batches already trained on are left out (skipped as keys, without loading an
image), so the next batch is the one the uninterrupted run trained on next. A checkpoint written after
an epoch's last batch resumes at the start of the next epoch. (Lightning also restores stateful
training loaders, but only when it builds the loader after the restore; with `max_epochs` set, the
poly schedule's `trainer.estimated_stepping_batches` builds it before, so the DataModule's hooks are
the reliable place.)

Lightning warns, on a resume inside an epoch, that the training DataLoader is not resumable; that is
not so here (the stream above resumes it), so `tailseg`'s CLI silences that warning and the DataModule
says in one line what it resumed (`tailseg.lightning_compat` holds the warning's text).

Under DDP (`trainer.strategy: ddp`, any number of processes) a run resumes exactly too: rank 0 writes
the checkpoint, and everything in it is the same on every rank or is put together from all of them:
- the seed of the training stream is rank 0's on every rank (the DataModule broadcasts it), so every
  rank draws its shard of one global sequence, and the sampler's state (fed the same values on every
  rank: the synced IoU, the mean batch loss) is the same on all;
- the position in the epoch is the same on every rank (every rank trains the same number of steps);
- the training confusion matrix of the epoch so far is summed over the ranks when the checkpoint is
  written (every rank saves the checkpoint, so this is a collective), and on loading rank 0 keeps the
  sum while the other ranks start from zero: the epoch's IoU, a sum over the ranks, then counts every
  crop once, and being a sum of integer counts it equals the uninterrupted run's exactly;
- the random streams of every rank are gathered into the checkpoint, and each rank gets its own back
  (they differ when the ranks were not seeded alike, `seed_everything: false`).
`tests/test_resume_ddp.py` checks it with 2 processes: the resumed run ends with the weights and the
sampler state of the uninterrupted one, bit for bit.

Limits:
- Resuming exactly needs the world size of the run that wrote the checkpoint (the shards of the global
  sequence, the batches per epoch and the random streams depend on it); with another one the run goes
  on, with a warning, but not as the uninterrupted run would have.
- The tilted class sampler draws each step from w as it was `lag` updates earlier (`lag` = 2 ×
  `data.num_workers`); a run resumed inside an epoch with more loader workers than the run that wrote
  the checkpoint needs older values of w than the checkpoint holds, and stops with an error instead of
  drawing from another w.
- Metrics logged at the checkpoint's own step after it was written (e.g. the validation of that step)
  are in the interrupted run's `metrics.csv` only: the resumed run continues with the next step.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

_SEED_RANGE = 2**31 - 2


def rng_states() -> dict:
    """The global random states of this process (Python, NumPy, torch CPU and its CUDA device), as tensors and
    plain numbers so that `torch.load(weights_only=True)` can read a checkpoint that holds them."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` saved."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = states["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def every_rank_rng_states() -> dict:
    """`rng_states` of this process; under DDP of every rank, as {"ranks": [rank 0's, rank 1's, ...]}.

    A collective under DDP (all ranks call it, as they all save a checkpoint): the ranks' streams differ when
    they were not seeded alike (`seed_everything: false`), and each must get its own back.
    """
    rank, world = _world()
    if world == 1:
        return rng_states()
    gathered: list = [None] * world
    dist.all_gather_object(gathered, rng_states())
    return {"ranks": gathered}


def set_every_rank_rng_states(states: dict) -> None:
    """Restore what `every_rank_rng_states` saved: each rank its own states.

    A checkpoint written by another number of processes cannot resume exactly: this warns (on rank 0) and gives
    each rank the states of the saved rank with its number, or of the last saved rank.
    """
    rank, world = _world()
    ranks = states["ranks"] if "ranks" in states else [states]
    if len(ranks) != world and rank == 0:
        warnings.warn(
            f"the checkpoint was written by {len(ranks)} process(es), this run has {world}: the run goes on, but not "
            "as the uninterrupted run would have (resume with the world size of the run that wrote it; tailseg.resume)",
            stacklevel=2,
        )
    set_rng_states(ranks[min(rank, len(ranks) - 1)])


class SeededKeys(Sampler):
    """Wraps a training sampler so that each draw carries its augmentation seed: (index, class_id, seed), or
    (index, class_id, seed, False) for a sampler key (index, class_id, False) (drawn for the class, crop not
    placed on it: `TransformedDataset`).

    The seeds of an epoch come from a generator seeded with (seed, epoch, rank), one per position, so they
    depend neither on the workers nor on torch's global random state. A batch sampler (`yields_batches =
    True`, e.g. `TiltedClassSampler`) yields lists of such triples, the seeds of step k being the next
    `len(batch)` draws of that generator.

    The epoch: with `epoch_source` (the DataModule passes the trainer's current epoch) each iteration reads
    the epoch it is for when it starts and sets it on the wrapped sampler. Lightning also calls `set_epoch`,
    but after a restore from a checkpoint written at an epoch's end it passes the epoch after the one it
    trains, and with loader workers it creates the first iterator before calling it at all; reading the
    epoch at the start of the iteration is right in every case. Without a source, `set_epoch` decides.

    `resume_at(epoch, batches)` makes every iteration of that epoch leave out its first `batches` batches
    (keys and seeds are drawn and dropped; no image is loaded), until an iteration of another epoch starts.

    Args:
        sampler: The training sampler (yields indices, (index, class) pairs or (index, class, on_class) triples,
            or batches of pairs or triples).
        seed: Seed of the augmentation stream.
        batch_size: Keys per batch (ignored for batch samplers, which make their own batches).
        epoch_source: Returns the epoch being trained, or None when unknown (see above).
    """

    def __init__(
        self, sampler: Sampler, seed: int, batch_size: int = 1, epoch_source: Callable[[], int | None] | None = None
    ) -> None:
        self.sampler, self.seed, self.batch_size = sampler, int(seed), int(batch_size)
        self.epoch_source = epoch_source
        self._epoch = 0
        self._next_epoch = 0  # the epoch a restored checkpoint continues with: iterations start there at the earliest
        self._skip: tuple[int, int] | None = None  # (epoch, batches of it already trained on)

    @property
    def yields_batches(self) -> bool:
        return bool(getattr(self.sampler, "yields_batches", False))

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", self._epoch))

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def num_batches(self) -> int:
        """Batches per epoch (the DataLoader drops an incomplete last batch)."""
        return len(self.sampler) if self.yields_batches else len(self.sampler) // self.batch_size

    def resume_at(self, epoch: int, batches: int) -> None:
        """Continue epoch `epoch` after its first `batches` batches; after all of them, start epoch `epoch + 1`."""
        done = batches >= self.num_batches()
        self._next_epoch = int(epoch) + 1 if done else int(epoch)
        self._skip = None if done else (int(epoch), int(batches))
        self.set_epoch(self._next_epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def _generator(self) -> torch.Generator:
        rank = int(getattr(self.sampler, "rank", 0))
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + rank) % 2**63)

    def __iter__(self) -> Iterator:
        current = self.epoch_source() if self.epoch_source is not None else None
        if current is not None:
            self.set_epoch(max(int(current), self._next_epoch))
        skip = 0
        if self._skip is not None:
            if self._skip[0] == self.epoch:
                skip = self._skip[1]
            else:
                self._skip = None  # that epoch is over
        g = self._generator()
        if self.yields_batches:
            size = int(self.sampler.batch_size)
            for _ in range(skip):
                torch.randint(0, _SEED_RANGE, (size,), generator=g)
            for batch in self.sampler.iterate(skip):
                seeds = torch.randint(0, _SEED_RANGE, (len(batch),), generator=g).tolist()
                yield [_seeded(key, seed) for key, seed in zip(batch, seeds, strict=True)]
            return
        seeds = torch.randint(0, _SEED_RANGE, (len(self.sampler),), generator=g).tolist()
        for key, seed in islice(zip(self.sampler, seeds, strict=False), skip * self.batch_size, None):
            yield _seeded(key, seed)


def _seeded(key, seed: int) -> tuple:
    """The sampler key `key` (an index, (index, class) or (index, class, on_class)) with its augmentation seed:
    (index, class, seed), class −1 for an index, and `on_class` appended when the key has it."""
    if not isinstance(key, (tuple, list)):
        return int(key), -1, seed
    index, focus, *on_class = key
    return (int(index), int(focus), seed, *(bool(flag) for flag in on_class))


class TrainingStream:
    """The state of a run that is not weights: the seeded training sampler and the random streams.

    The DataModule owns one (`SegmentationDataModule.stream`, built when fitting starts) and hands its
    `state_dict` to Lightning, which keeps it in every checkpoint (under the DataModule's class name) and
    returns it to `load_state_dict` when a run resumes, before the first batch is drawn.

    Args:
        sampler: The training sampler.
        seed: Seed of the augmentation stream.
        batch_size: Crops per batch (per process).
        progress: Returns how many batches of the current epoch were trained on (the DataModule passes
            Lightning's batch progress); None counts 0, i.e. a checkpoint restarts its epoch.
        epoch_source: Returns the epoch being trained (`SeededKeys`).
    """

    def __init__(
        self,
        sampler: Sampler,
        seed: int,
        batch_size: int,
        progress: Callable[[], int] | None = None,
        epoch_source: Callable[[], int | None] | None = None,
    ) -> None:
        self.sampler, self.progress = sampler, progress
        self.keys = SeededKeys(sampler, seed, batch_size, epoch_source)

    def state_dict(self) -> dict:
        return {
            "seed": self.keys.seed,
            "epoch": self.keys.epoch,
            "position": int(self.progress()) if self.progress is not None else 0,
            "sampler": self.sampler.state_dict(),
            "rng": every_rank_rng_states(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.keys.seed = int(state["seed"])  # a run seeded afresh at each start (`seed_everything: true`) too
        self.sampler.load_state_dict(state["sampler"])
        self.keys.resume_at(int(state["epoch"]), int(state["position"]))
        set_every_rank_rng_states(state["rng"])
