"""`TiltedClassFeedback`: the batch loss -> the tilted class weights of Stochastic TCE (TCE paper, Algorithm 1).

After every training step the callback takes the step's batch loss L_B (line 5; the loss the model
trained on, detached) and the class c its batch was drawn for (`batch["class"]`, the same for every
crop of the batch), averages L_B over the DDP ranks (one all_gather, so every rank computes the same
mean bit for bit and checks that all ranks trained on the same class), and calls
`TiltedClassSampler.update(c, L_B, t, gamma)` (lines 6-8). The weights therefore stay identical on
all ranks, and so does the class each rank draws for the next steps.

With gradient accumulation Lightning hands the hooks the loss divided by `accumulate_grad_batches`;
the callback multiplies it back, so L_B is the batch's own loss.

It logs `tce/w/<class name>` (the class weights after the update) on every step; the trainer writes
them every `log_every_n_steps`. The sampler's state (log L̃, seed, epoch) is saved with the DataModule's
training stream (`tailseg.resume`), so a resumed run draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from tailseg.callbacks.sampler_feedback import SamplerFeedback
from tailseg.sampling.tilted import TiltedClassSampler, check_finite, check_gamma


class TiltedClassFeedback(SamplerFeedback):
    """Feeds each step's batch loss to `trainer.datamodule.train_sampler` (a `TiltedClassSampler`).

    Args:
        t: The tilt, a finite number (the paper uses 0.1 and 1; larger t leans harder towards the
            classes with the largest loss).
        gamma: The rate γ in (0, 1] of the moving average of each class's tilted loss (line 7).
    """

    def __init__(self, t: float = 1.0, gamma: float = 0.1) -> None:
        try:
            self.t, self.gamma = check_finite("t", t), check_gamma(gamma)
        except ValueError as error:
            raise ValueError(f"TiltedClassFeedback: {error}") from None
        super().__init__()

    def sampler(self, trainer: pl.Trainer) -> TiltedClassSampler:
        sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        if not isinstance(sampler, TiltedClassSampler):
            raise RuntimeError(
                "TiltedClassFeedback needs data.train_sampler: tailseg.sampling.TiltedClassSampler; "
                f"got {type(sampler).__name__}"
            )
        return sampler

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None:  # the training step was skipped
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if "class" not in batch:
            raise RuntimeError("TiltedClassFeedback: the training batch has no 'class' entry")
        classes = torch.as_tensor(batch["class"]).flatten()
        if len(classes) == 0 or bool((classes != classes[0]).any()):
            raise RuntimeError(
                f"TiltedClassFeedback: a batch must be drawn for one class, got classes {classes.tolist()}"
            )
        local = torch.stack([loss.detach().double().reshape(()) * trainer.accumulate_grad_batches,
                             classes[0].double().to(loss.device)])  # fmt: skip
        gathered = pl_module.all_gather(local).reshape(-1, 2).cpu()
        if bool((gathered[:, 1] != gathered[0, 1]).any()):
            raise RuntimeError(
                f"TiltedClassFeedback: the ranks trained on different classes {gathered[:, 1].long().tolist()} at "
                f"global step {trainer.global_step}; their class weights must have diverged"
            )
        c = int(gathered[0, 1])
        sampler = self.sampler(trainer)
        sampler.update(c, float(gathered[:, 0].mean()), self.t, self.gamma)
        for name, w in zip(pl_module.class_names, sampler.weights.tolist(), strict=True):
            pl_module.log(f"tce/w/{name}", w, on_step=True, on_epoch=False, batch_size=len(classes))
