"""`SegmentationModel`: DeepLabV3+ with an injected loss, SGD + poly, per-class IoU.

What it logs: `train/loss`, `train/miou`, `train/iou/<class>` (accumulated over each epoch on the
training crops), `val/loss`, `val/miou`, `val/iou/<class>` and the same under `test/`. IoU is
data-set-level (one confusion matrix summed over the whole split); classes absent from both
the predictions and the ground truth are NaN and left out of the mean.

Class statistics reach a loss through one channel: if the loss defines
`set_class_statistics(counts)`, the model's `setup` (fit, validate, test, predict) calls it with
the DataModule's (N, C) `class_pixel_counts` table (as a tensor).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tailseg.inference import Tiling
from tailseg.losses import CrossEntropy
from tailseg.metrics import ClassIoU
from tailseg.optim import PolyLR

STAGES = ("train", "val", "test")


def rng_states() -> dict:
    """The random states that training consumes (Python, NumPy, torch CPU and CUDA), as tensors and plain
    numbers so that `torch.load(weights_only=True)` can read the checkpoint."""
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
        },  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
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
        torch.cuda.set_rng_state_all(states["cuda"])


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the batch's samples."""


class SegmentationModel(pl.LightningModule):
    """DeepLabV3+ (segmentation-models-pytorch) trained with a pluggable loss.

    Args:
        num_classes: Number of classes (linked from the DataModule by the CLI).
        class_names: Names of the classes, for metric keys (linked from the DataModule).
        ignore_index: Label of void pixels (linked from the DataModule).
        encoder_name: smp encoder, e.g. "resnet101" (the papers), "resnet18", "mobilenet_v2".
        encoder_weights: Pre-trained encoder weights, e.g. "imagenet" (needs a network the first
            time), or None for random initialisation.
        encoder_output_stride: 8 or 16.
        decoder_atrous_rates: The ASPP's three atrous rates.
        decoder_channels: Width of the decoder.
        loss: The training loss, `loss(logits, target) -> scalar`; default cross-entropy.
        optimizer: A factory `params -> Optimizer`; default SGD(lr=0.01, momentum=0.9,
            weight_decay=1e-4).
        lr_scheduler: A factory `(optimizer, total_steps) -> LRScheduler`, stepped every step;
            default `PolyLR(power=0.9)` over `trainer.estimated_stepping_batches`.
        tiling: How validation, test and prediction see an image: `Tiling(mode="whole")` (default),
            "efficient", "optimized" or "slide" (`tailseg.inference.Tiling`). Its `pad_to` is raised
            to a multiple of the encoder's output stride, which DeepLabV3+ needs.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_output_stride: int = 16,
        decoder_atrous_rates: tuple[int, int, int] = (12, 24, 36),
        decoder_channels: int = 256,
        loss: nn.Module | None = None,
        optimizer: Callable[[object], Optimizer] | None = None,
        lr_scheduler: Callable[[Optimizer, int], LRScheduler] | None = None,
        tiling: Tiling | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"SegmentationModel: num_classes must be >= 2, got {num_classes}")
        if encoder_output_stride not in (8, 16):
            raise ValueError(f"SegmentationModel: encoder_output_stride must be 8 or 16, got {encoder_output_stride}")
        names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"SegmentationModel: {len(names)} class_names for num_classes={num_classes}")
        self.save_hyperparameters(ignore=["loss"] if loss is None else [])
        self.class_names, self.ignore_index = names, int(ignore_index)
        self.net = smp.DeepLabV3Plus(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_output_stride=encoder_output_stride,
            decoder_atrous_rates=tuple(decoder_atrous_rates),
            decoder_channels=decoder_channels,
            classes=num_classes,
        )
        self.loss = loss if loss is not None else CrossEntropy(ignore_index=ignore_index)
        loss_ignore = getattr(self.loss, "ignore_index", self.ignore_index)
        if loss_ignore != self.ignore_index:
            raise ValueError(
                f"SegmentationModel: the loss's ignore_index ({loss_ignore}) differs from the data's ({self.ignore_index}); "
                "set model.loss.init_args.ignore_index to match"
            )
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.tiling = tiling if tiling is not None else Tiling("whole")
        self.tiling.pad_to = math.lcm(self.tiling.pad_to, int(self.net.encoder.output_stride))
        # ModuleDict keys may not shadow nn.Module attributes ("train"), hence the suffix.
        self.iou = nn.ModuleDict({f"{s}_iou": ClassIoU(num_classes, ignore_index) for s in STAGES})
        self.latest_iou: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        setter = getattr(self.loss, "set_class_statistics", None)
        datamodule = getattr(self.trainer, "datamodule", None)
        if callable(setter) and getattr(datamodule, "train_set", None) is not None:
            setter(torch.as_tensor(datamodule.class_pixel_counts))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); samples in the batch: {', '.join(map(str, batch['name']))}"
            )
        self.iou["train_iou"].update(logits.detach().argmax(1), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of whole images under the configured tiling (validation, test, prediction)."""
        return self.tiling(self, images)

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self.predict_logits(batch["image"])
        self.iou[f"{stage}_iou"].update(logits.argmax(1), batch["mask"])
        self.log(f"{stage}/loss", self.loss(logits, batch["mask"]), batch_size=len(logits), sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"prediction": self.predict_logits(batch["image"]).argmax(1), "name": batch["name"]}

    def epoch_iou(self, stage: str) -> torch.Tensor:
        """Per-class IoU accumulated so far in this epoch (`stage`: train, val or test), synced across ranks."""
        return self.iou[f"{stage}_iou"].compute()

    def _log_iou(self, stage: str) -> None:
        iou = self.iou[f"{stage}_iou"].compute()
        self.iou[f"{stage}_iou"].reset()
        if self.trainer.sanity_checking:
            return
        self.latest_iou[stage] = iou.detach().cpu()
        self.log(f"{stage}/miou", torch.nanmean(iou).float(), prog_bar=stage != "train")
        for name, value in zip(self.class_names, iou.float(), strict=True):
            self.log(f"{stage}/iou/{name}", value)

    def on_train_epoch_end(self) -> None:
        self._log_iou("train")

    def on_validation_epoch_end(self) -> None:
        self._log_iou("val")

    def on_test_epoch_end(self) -> None:
        self._log_iou("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        # A resumed run continues torch's random stream (dropout) where the checkpointed run left it.
        if getattr(self, "_rng_to_restore", None) is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        else:
            optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = (
            PolyLR(optimizer, total) if self.scheduler_factory is None else self.scheduler_factory(optimizer, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
