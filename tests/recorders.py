"""A callback that records what each rank trained on, for the DDP and resume tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl


class RecordDraws(pl.Callback):
    """Writes `<out_dir>/rank<r>.json`: the image indices of every training batch per epoch, and the
    sampler's class probabilities and IoU when each epoch starts and when fitting ends."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"batches": {}, "probabilities": {}, "iou": {}}

    def _sampler_state(self, trainer, key: str) -> None:
        sampler = trainer.datamodule.train_sampler
        if hasattr(sampler, "class_probabilities"):
            self.record["probabilities"][key] = sampler.class_probabilities.tolist()
            self.record["iou"][key] = [None if v != v else v for v in sampler.iou.tolist()]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sampler_state(trainer, str(trainer.current_epoch))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record["batches"].setdefault(str(trainer.current_epoch), []).append(batch["index"].tolist())

    def on_fit_end(self, trainer, pl_module) -> None:
        self._sampler_state(trainer, "end")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))


class StopAfterEpoch(pl.Callback):
    """Stops fitting after epoch `epoch` (0-based), as an interrupted run would, with its schedule unchanged."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


class RecordTiltedWeights(pl.Callback):
    """Writes `<out_dir>/rank<r>.json`: per epoch the image indices and the class of every training batch, and
    the tilted sampler's class weights (and log L̃) when each epoch starts and when fitting ends."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"batches": {}, "classes": {}, "weights": {}, "log_l": {}}

    def _sampler_state(self, trainer, key: str) -> None:
        sampler = trainer.datamodule.train_sampler
        self.record["weights"][key] = sampler.weights.tolist()
        self.record["log_l"][key] = sampler.log_l.tolist()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sampler_state(trainer, str(trainer.current_epoch))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = str(trainer.current_epoch)
        self.record["batches"].setdefault(epoch, []).append(batch["index"].tolist())
        self.record["classes"].setdefault(epoch, []).append(batch["class"].tolist())

    def on_fit_end(self, trainer, pl_module) -> None:
        self._sampler_state(trainer, "end")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))


class RecordLogitsDtype(pl.Callback):
    """Writes `<out>`: the dtypes of the network's outputs in training steps and of the training losses."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict = {"logits": set(), "loss": set()}

    def on_fit_start(self, trainer, pl_module) -> None:
        def hook(module, inputs, output):
            if module.training:
                self.record["logits"].add(str(output.dtype))

        pl_module.net.register_forward_hook(hook)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.record["loss"].add(str(loss.dtype))

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out.write_text(json.dumps({k: sorted(v) for k, v in self.record.items()}))
