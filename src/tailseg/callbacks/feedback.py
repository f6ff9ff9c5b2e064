"""`ClassIoUFeedback`: per-class training IoU -> the performance-aware sampler (LMP paper, §4).

After the last training batch of every epoch (and, with `every_n_steps`, also every n optimisation
steps) the callback takes the per-class IoU that the model has accumulated on its training
crops since the epoch began, synchronised across DDP ranks by torchmetrics, and calls
`trainer.datamodule.train_sampler.update(iou)`. The sampler draws each epoch's sequence when
the epoch starts, so new probabilities take effect from the next epoch, without reloading
dataloaders (also with persistent workers: samplers run in the main process). The feed after an
epoch's last batch is the one the next epoch is drawn from; updates every n steps only show how the
probabilities evolve in the logs (`sampler/p/<class>`).

Why after the last batch (`on_train_batch_end`) and not at the epoch's end: Lightning runs the
callbacks' `on_train_batch_end` before `ModelCheckpoint` writes a step checkpoint, and a run resumed
from a checkpoint written after an epoch's last batch does not run that epoch's end again. Feeding
there puts the epoch's IoU into every checkpoint that follows the epoch's last step.

It logs `sampler/p/<class name>` (the class-driven probabilities). The sampler's state (IoU, seed,
epoch) is saved with the DataModule's training stream (`tailseg.resume`).
"""

from __future__ import annotations

import pytorch_lightning as pl

from tailseg.callbacks.sampler_feedback import SamplerFeedback


class ClassIoUFeedback(SamplerFeedback):
    """Feeds the training per-class IoU to `trainer.datamodule.train_sampler.update`.

    Args:
        every_n_steps: Also update every n optimisation steps (0: only at epoch ends).
    """

    def __init__(self, every_n_steps: int = 0) -> None:
        if every_n_steps < 0:
            raise ValueError(f"ClassIoUFeedback: every_n_steps must be >= 0, got {every_n_steps}")
        super().__init__()
        self.every_n_steps = int(every_n_steps)

    def sampler(self, trainer: pl.Trainer):
        sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        if sampler is None or not callable(getattr(sampler, "update", None)):
            raise RuntimeError(
                "ClassIoUFeedback needs a training sampler with update(iou), e.g. data.train_sampler: "
                f"tailseg.sampling.PerformanceAwareSampler; got {type(sampler).__name__}"
            )
        return sampler

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            classes = getattr(self.sampler(trainer), "num_classes", None)
            if classes is not None and classes != len(pl_module.class_names):
                raise ValueError(
                    f"ClassIoUFeedback: the sampler's class pixel counts have {classes} class columns, "
                    f"but the model has {len(pl_module.class_names)} classes"
                )

    def _feed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        iou = pl_module.epoch_iou("train")
        sampler = self.sampler(trainer)
        sampler.update(iou.cpu())
        for name, p in zip(pl_module.class_names, sampler.class_probabilities.tolist(), strict=True):
            pl_module.log(f"sampler/p/{name}", float(p), on_step=False, on_epoch=True, batch_size=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_last_batch or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            self._feed(trainer, pl_module)
