"""`WandbMedia`: per-class IoU, fairness and a few predicted validation images in Weights & Biases.

After every validation (every `every_n_validations`-th one; the sanity check does not count) the
callback logs to each `WandbLogger` of the trainer, on global rank 0:

- `val/iou_table`: a `wandb.Table` with columns class, iou (IoU in %, None for classes without one);
- `val/iou_chart`: a bar chart of that table (`wandb.plot.bar`);
- `val/fairness/<criterion>`: `tailseg.metrics.fairness_report` of the IoU in % (miou, worst, std,
  sorted_bottom, sorted_top, p25_threshold, p25_miou, p75_threshold, p75_miou);
- `val/predictions`: the first `num_images` images of the validation set (always the same ones), each a
  `wandb.Image` with the predicted and the true masks as W&B mask overlays ("predictions",
  "ground_truth"; void pixels labelled "void");

together with `trainer/global_step`. The IoU is the model's `latest_iou["val"]`, set by its
`on_validation_epoch_end`; the predictions come from `predict_logits` (the model's tiling), one image at a
time, under the trainer's precision (its validation context): `num_images` forward passes per
validation. The images are read once and kept, without touching torch's random state (training draws
the same numbers with and without this callback).

Without a `WandbLogger` (CSV only, `WANDB_MODE=disabled`) the callback does nothing at all.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from tailseg.metrics import fairness_report


class WandbMedia(pl.Callback):
    """Logs the per-class IoU table and chart, the fairness criteria and predicted masks to W&B (module docs).

    Args:
        num_images: How many validation images to show (the first ones of the set); 0 for none.
        every_n_validations: Log at every n-th validation.
    """

    def __init__(self, num_images: int = 4, every_n_validations: int = 1) -> None:
        if int(num_images) < 0:
            raise ValueError(f"WandbMedia: num_images must be >= 0, got {num_images}")
        if int(every_n_validations) < 1:
            raise ValueError(f"WandbMedia: every_n_validations must be >= 1, got {every_n_validations}")
        self.num_images = int(num_images)
        self.every_n_validations = int(every_n_validations)
        self._validations = 0
        self._samples: list[dict] | None = None

    @staticmethod
    def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = self.wandb_loggers(trainer)
        if not loggers:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        payload = self.metrics_payload(pl_module)
        images = self.images_payload(trainer, pl_module)
        if images:
            payload["val/predictions"] = images
        if not payload:
            return
        payload["trainer/global_step"] = trainer.global_step
        for logger in loggers:
            logger.experiment.log(payload)

    def metrics_payload(self, pl_module: pl.LightningModule) -> dict:
        """The IoU table, its bar chart and the fairness criteria of the latest validation ({} without one)."""
        import wandb

        iou = getattr(pl_module, "latest_iou", {}).get("val")
        if iou is None:
            return {}
        percent = iou.detach().cpu().double().numpy() * 100.0
        names = list(pl_module.class_names)
        rows = [[name, None if math.isnan(v) else float(v)] for name, v in zip(names, percent, strict=True)]
        table = wandb.Table(columns=["class", "iou"], data=rows)
        payload = {"val/iou_table": table}
        measured = wandb.Table(columns=["class", "iou"], data=[row for row in rows if row[1] is not None])
        payload["val/iou_chart"] = wandb.plot.bar(measured, "class", "iou", title="Validation IoU per class (%)")
        if (~np.isnan(percent)).any():
            payload.update({f"val/fairness/{k}": float(v) for k, v in fairness_report(percent).items()})
        return payload

    def _load_samples(self, trainer: pl.Trainer) -> list[dict]:
        if self._samples is None:
            self._samples = []
            dataset = _val_dataset(trainer)
            if dataset is not None and self.num_images:
                raw = getattr(dataset, "dataset", None)
                for index in range(min(self.num_images, len(dataset))):
                    with torch.random.fork_rng(devices=[]):  # loading must not move training's random stream
                        sample = dataset[index]
                    image = torch.as_tensor(sample["image"])
                    mask = np.asarray(sample["mask"], dtype=np.int64)
                    picture = None
                    if callable(getattr(raw, "load_image", None)):  # the untransformed image
                        picture = np.asarray(raw.load_image(index), dtype=np.uint8)
                    if picture is None or picture.shape[:2] != mask.shape:
                        picture = _to_uint8(image)
                    self._samples.append(
                        {"image": image, "mask": mask, "picture": picture, "name": str(sample.get("name", index))}
                    )
        return self._samples

    def images_payload(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list:
        """The fixed validation images with their predicted and true masks (`wandb.Image`s)."""
        import wandb

        samples = self._load_samples(trainer)
        if not samples:
            return []
        names = list(pl_module.class_names)
        ignore = int(getattr(pl_module, "ignore_index", 255))
        labels = {i: name for i, name in enumerate(names)} | {ignore: "void"}
        precision = getattr(trainer, "precision_plugin", None)
        context = precision.val_step_context() if precision is not None else contextlib.nullcontext()
        predict = getattr(pl_module, "predict_logits", pl_module)  # SegmentationModel: its tiling
        was_training = pl_module.training
        pl_module.eval()
        images = []
        try:
            with torch.no_grad(), context:
                for sample in samples:
                    logits = predict(sample["image"][None].to(pl_module.device))
                    prediction = logits.argmax(1)[0].cpu().numpy().astype(np.int64)
                    masks = {"predictions": {"mask_data": prediction, "class_labels": labels},
                             "ground_truth": {"mask_data": sample["mask"], "class_labels": labels}}  # fmt: skip
                    images.append(wandb.Image(sample["picture"], masks=masks, caption=sample["name"]))
        finally:
            pl_module.train(was_training)
        return images


def _val_dataset(trainer: pl.Trainer):
    """The validation data set: the DataModule's val loader's, else the trainer's first val loader's."""
    datamodule = getattr(trainer, "datamodule", None)
    loader = None
    if datamodule is not None and callable(getattr(datamodule, "val_dataloader", None)):
        loader = datamodule.val_dataloader()
    if not loader:
        loader = getattr(trainer, "val_dataloaders", None)
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    return getattr(loader, "dataset", None)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A normalised (3, H, W) image stretched to uint8 (H, W, 3) for display."""
    array = image.detach().cpu().float().numpy().transpose(1, 2, 0)
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-8) * 255).round().astype(np.uint8)
