"""`SamplerFeedback`: what every sampler-feeding callback shares - finding the sampler before training.

The callbacks hold no state: the sampler's state (what it has been fed) is saved and restored with the
DataModule's training stream (`tailseg.resume`), so a resumed run draws what an uninterrupted run draws.
"""

from __future__ import annotations

import pytorch_lightning as pl


class SamplerFeedback(pl.Callback):
    """Base of `ClassIoUFeedback` and `TiltedClassFeedback`: subclasses implement `sampler(trainer)`,
    which returns `trainer.datamodule.train_sampler` or raises if it is of the wrong kind."""

    def sampler(self, trainer: pl.Trainer):
        raise NotImplementedError

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.sampler(trainer)  # fails before training if the sampler is of the wrong kind
