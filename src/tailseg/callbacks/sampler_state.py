"""`SamplerFeedback`: the part every sampler-feeding callback shares - finding the sampler before
training, and keeping its state in checkpoints so that a resumed run draws what an uninterrupted
run draws."""

from __future__ import annotations

import pytorch_lightning as pl


class SamplerFeedback(pl.Callback):
    """Base of `ClassIoUFeedback` and `TiltedClassFeedback`: subclasses implement `sampler(trainer)`,
    which returns `trainer.datamodule.train_sampler` or raises if it is of the wrong kind."""

    def __init__(self) -> None:
        self._pending_state: dict | None = None
        self._sampler = None

    def sampler(self, trainer: pl.Trainer):
        raise NotImplementedError

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._sampler = self.sampler(trainer)  # fails before training if the sampler is of the wrong kind
            if self._pending_state is not None:
                self._sampler.load_state_dict(self._pending_state)
                self._pending_state = None

    def state_dict(self) -> dict:
        return {"sampler": self._sampler.state_dict()} if self._sampler is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        state = state_dict.get("sampler")
        if state is not None and self._sampler is not None:
            self._sampler.load_state_dict(state)
        else:
            self._pending_state = state
