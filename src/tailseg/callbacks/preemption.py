"""`PreemptionCheckpoint`: `last.ckpt` written when training is stopped by SIGTERM or fails with an exception.

Clusters pre-empt jobs with SIGTERM (SLURM also sends it before a job's time limit with
`--signal=TERM@<seconds>`). Lightning then finishes the current step (and its validation, if one is
due), raises `SIGTERMException`, and calls every callback's `on_exception`; this callback writes the
run's state at that point to `<checkpoint dir>/last.ckpt` - the same file `ModelCheckpoint(save_last=True)`
keeps - so that `tailseg fit ... --ckpt_path last` continues exactly where the run stopped
(`tailseg.resume`). An exception raised inside a step (e.g. out of memory) gets the same treatment:
the checkpoint counts that step as not done, and the resumed run trains it again. The forward pass of
the failed step has already moved the batch-norm running statistics, the training confusion matrix
and the random streams, so on one process the callback keeps a copy of those (every tensor of the
model's state that is not a parameter, a small fraction of it) at the start of each step and puts them
back before saving; parameters only change in the optimizer step, at the step's end.

`tailseg fit` adds this callback to every run. Decisions:
- Only while training (between `on_train_start` and `on_train_end`): a failure while setting up has
  no state worth keeping.
- Under DDP every rank must take part in saving. SIGTERM reaches all ranks (Lightning broadcasts it), so
  it is always saved; other exceptions only on a single process, where no other rank can be left waiting.
- The checkpoint folder is `ModelCheckpoint`'s (`<run dir>/checkpoints`), else `<run dir>/checkpoints`.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from tailseg.resume import rng_states, set_rng_states


class PreemptionCheckpoint(pl.Callback):
    """Writes `last.ckpt` when training stops on SIGTERM or an exception (see the module docs)."""

    def __init__(self) -> None:
        self._training = self._unfinished = False
        self._step_start: tuple[dict, dict] | None = None  # (non-parameter state, random streams)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.world_size > 1:
            return  # under DDP only SIGTERM is saved, and it stops between steps
        params = {name for name, _ in pl_module.named_parameters()}
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if k not in params}
        self._step_start = (state, rng_states())

    def _undo_unfinished_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Put back the state of the start of a step that failed; True if there was one."""
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.started == progress.processed or self._step_start is None:
            return False
        state, rng = self._step_start
        with torch.no_grad():
            pl_module.load_state_dict(state, strict=False)
        set_rng_states(rng)
        return True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._unfinished:
            # Lightning counts a logged step on resuming from any checkpoint but one written at a step's end
            # (`_TrainingEpochLoop.reset`); a step that failed was never counted, so take it back here.
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None)
        if not folder:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        return Path(folder) / "last.ckpt"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self._training:
            return
        if not isinstance(exception, SIGTERMException) and trainer.world_size > 1:
            return
        self._unfinished = self._undo_unfinished_step(trainer, pl_module)
        path = self.checkpoint_path(trainer)
        try:
            trainer.save_checkpoint(path)
        finally:
            self._unfinished = False
        rank_zero_info(
            f"{type(exception).__name__} at global step {trainer.global_step}: saved {path}; "
            "resume with --ckpt_path last (or this path)"
        )
