"""`PreemptionCheckpoint`: `last.ckpt` written when training is stopped by SIGTERM or fails with an exception.

Clusters pre-empt jobs with SIGTERM (SLURM also sends it before a job's time limit with
`--signal=TERM@<seconds>`). Lightning then finishes the current step (and its validation, if one is
due), raises `SIGTERMException`, and calls every callback's `on_exception`; this callback writes the
run's state at that point to `<checkpoint dir>/last.ckpt` - the same file `ModelCheckpoint(save_last=True)`
keeps - so that `tailseg fit ... --ckpt_path last` continues exactly where the run stopped
(`tailseg.resume`). An exception raised inside a step (e.g. out of memory) gets the same treatment:
the checkpoint counts that step as not done (its batch too, in Lightning's batch progress, so that a resumed run
validates at the uninterrupted run's steps), and the resumed run trains it again. The forward pass of
the failed step has already moved the batch-norm running statistics, the training confusion matrix
and the random streams, so the callback keeps a copy of those (every tensor of the model's state that
is not a parameter, a small fraction of it) at the start of each step and puts them back before
saving; parameters only change in the optimizer step, at the step's end.

`tailseg fit` adds this callback to every run. Decisions:
- Only while training (between `on_train_start` and `on_train_end`): a failure while setting up has
  no state worth keeping.
- Only on a single process. Under DDP every rank must take part in saving, and Lightning 2.6 lets each
  rank stop on its own view of the signal, so ranks can stop at different steps and a save could wait
  forever; there the periodic `last.ckpt` of `ModelCheckpoint(every_n_train_steps=...)` (the paper
  configs write one every 1000 steps) is what a pre-empted run resumes from.
- Only at an optimizer step's boundary: with `accumulate_grad_batches` > 1 a run stopped inside an
  accumulation window has gradients summed in `.grad` that no checkpoint holds, so nothing is written
  (a warning says so) and the previous checkpoint stays the one to resume from.
- Written to a temporary file and renamed into place, so a kill during the write never leaves a
  broken `last.ckpt`.
- The checkpoint folder is `ModelCheckpoint`'s (`<run dir>/checkpoints`), else `<run dir>/checkpoints`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from tailseg.lightning_compat import batches_done_in_epoch, step_unfinished, undo_unfinished_batch
from tailseg.resume import rng_states, set_rng_states


class PreemptionCheckpoint(pl.Callback):
    """Writes `last.ckpt` when training stops on SIGTERM or an exception (see the module docs)."""

    def __init__(self) -> None:
        self._training = False
        self._step_start: tuple[dict, dict] | None = None  # (non-parameter state, random streams)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = trainer.world_size == 1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._training:
            params = {name for name, _ in pl_module.named_parameters()}
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if k not in params}
            self._step_start = (state, rng_states())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None)
        if not folder:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        return Path(folder) / "last.ckpt"

    def _undo_unfinished_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put back the state of the start of a step that failed."""
        if step_unfinished(trainer) and self._step_start is not None:
            state, rng = self._step_start
            with torch.no_grad():
                pl_module.load_state_dict(state, strict=False)
            set_rng_states(rng)
            undo_unfinished_batch(trainer)  # and its batch, which the resumed run trains again

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self._training:
            return
        self._undo_unfinished_step(trainer, pl_module)
        done = batches_done_in_epoch(trainer)  # batches of the epoch trained on
        if done % trainer.accumulate_grad_batches and done < trainer.num_training_batches:
            rank_zero_warn(
                f"{type(exception).__name__} inside a gradient-accumulation window (batch {done} of the epoch, "
                f"accumulate_grad_batches={trainer.accumulate_grad_batches}): no checkpoint written; resume from "
                "the last one saved"
            )
            return
        path = self.checkpoint_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(tmp)
        os.replace(tmp, path)
        rank_zero_info(
            f"{type(exception).__name__} at global step {trainer.global_step}: saved {path}; "
            "resume with --ckpt_path last (or this path)"
        )
