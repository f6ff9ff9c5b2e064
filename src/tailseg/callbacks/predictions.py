"""`PredictionWriter`: one PNG per predicted image, in the data set's official format.

`tailseg predict --config X --ckpt_path C --predict_dir DIR` adds this callback; it can also be listed
under `trainer.callbacks`. After every predict batch it writes, for each image of the batch:

- `DIR/<dataset.prediction_file(index)>`: `dataset.encode_prediction(pred)`, the data set's official
  encoding (Cityscapes: `<city>_<seq>_<frame>_labelIds.png` with label ids 0..33; PASCAL VOC: `<id>.png`
  palette PNGs; ADE20K: `<stem>.png` with train id + 1; others: train ids in an 8-bit PNG);
- with `color=True`, `<color_dir or DIR>/<dataset.prediction_name(index)>_color.png`: an RGB picture
  (`dataset.encode_color`).

The data set is `trainer.datamodule.predict_set` (the DataModule's `predict`, by default its `val`), and
each image is found by the batch's `"index"`. The prediction is the model's `predict_step` output, a
`(B, H, W)` train-id tensor or a dict holding it under `"prediction"`.

Distributed runs: every rank writes the images of its own batches. `SegmentationDataModule`'s predict
loader is sharded (`tailseg.data.shards.EvalShard`: each image on exactly one rank, whatever
`trainer.use_distributed_sampler` says), and so is any loader with a `DistributedSampler`. When the
predict loader is not sharded across ranks (another DataModule, with `use_distributed_sampler: false`),
all ranks see every image and only global rank 0 writes. Files are written to a temporary name and
renamed into place, so a reader never sees half a file.

Safety (`check_prediction_folders`, which `tailseg predict` runs before predicting): the folders must not
hold any file of the data sets (an image or mask of a file-based data set, i.e. one with `image_paths` /
`mask_paths`: `--predict_dir` pointed at the masks folder would overwrite the ground truth), and files that
the run would write must not exist yet unless `overwrite` (`--overwrite true`).

Cityscapes: the official `csEvalPixelLevelSemanticLabeling` matches every `<city>_<seq>_<frame>*.png`
below `CITYSCAPES_RESULTS`, so colour pictures in the same folder make it stop with "Found multiple
predictions"; give them another folder (`color_dir`, `--predict_color_dir`) when the folder is to be scored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DistributedSampler

from tailseg.data.shards import EvalShard

SHARDED_SAMPLERS = (EvalShard, DistributedSampler)


def _is_sharded(loader) -> bool:
    """Whether a DataLoader splits its samples across ranks: an `EvalShard` or a `DistributedSampler`, as its
    sampler or inside its batch sampler (Lightning's predict loop wraps the batch sampler, keeping `.sampler`)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    samplers = (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None), batch_sampler)
    return any(isinstance(s, SHARDED_SAMPLERS) for s in samplers)


def _save(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def dataset_files(dataset) -> list[Path]:
    """The image and mask files of a file-based data set (`image_paths`, `mask_paths`); none for others."""
    return [Path(p) for p in (*getattr(dataset, "image_paths", ()), *getattr(dataset, "mask_paths", ()))]


def check_prediction_folders(writer: PredictionWriter, predicted, datasets, overwrite: bool = False) -> None:
    """Refuse (ValueError naming the folder and a file) prediction folders that hold files of `datasets`, or files
    that predicting `predicted` would replace when not `overwrite` (see the module docs)."""
    folders = {writer.predict_dir.resolve(): "--predict_dir"}
    if writer.color:
        folders.setdefault(writer.color_dir.resolve(), "--predict_color_dir")
    for folder, option in folders.items():
        for dataset in datasets:
            inside = next((f for f in dataset_files(dataset) if f.resolve().is_relative_to(folder)), None)
            if inside is not None:
                raise ValueError(
                    f"{option}: {folder} holds files of the data set ({inside}); predictions written there could "
                    "overwrite them: choose a folder outside the data set"
                )
    names = [writer.predict_dir / predicted.prediction_file(i) for i in range(len(predicted))]
    if writer.color:
        names += [writer.color_dir / f"{predicted.prediction_name(i)}_color.png" for i in range(len(predicted))]
    existing = [path for path in names if path.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"--predict_dir: {len(existing)} prediction files already exist, the first: {existing[0]}; "
            "give --overwrite true to replace them, or another folder"
        )


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted image as a PNG in the data set's official format (see the module docs).

    Args:
        predict_dir: Folder of the label PNGs (created if missing).
        color: Also write `<prediction_name>_color.png` RGB pictures.
        color_dir: Folder of the colour pictures (default: `predict_dir`); implies `color`.
    """

    def __init__(self, predict_dir: str, color: bool = False, color_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.predict_dir = Path(predict_dir)
        self.color = bool(color) or color_dir is not None
        self.color_dir = Path(color_dir) if color_dir is not None else self.predict_dir
        self.written = 0
        self._writes_here = True

    @staticmethod
    def dataset(trainer: pl.Trainer):
        """The data set being predicted: `trainer.datamodule.predict_set`."""
        dataset = getattr(getattr(trainer, "datamodule", None), "predict_set", None)
        if dataset is None:
            raise RuntimeError(
                "PredictionWriter needs a DataModule with a `predict_set` (tailseg.data.SegmentationDataModule "
                "with data.predict or data.val configured)"
            )
        return dataset

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dataset(trainer)  # fail before the first batch, not after it
        self.written = 0
        loaders = trainer.predict_dataloaders
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        sharded = any(_is_sharded(loader) for loader in loaders if loader is not None)
        self._writes_here = trainer.world_size == 1 or sharded or trainer.global_rank == 0
        if self._writes_here:
            self.predict_dir.mkdir(parents=True, exist_ok=True)
            if self.color:
                self.color_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction,
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._writes_here:
            return
        dataset = self.dataset(trainer)
        preds = prediction["prediction"] if isinstance(prediction, dict) else prediction
        preds = preds.detach().cpu().numpy() if isinstance(preds, torch.Tensor) else np.asarray(preds)
        indices = batch["index"]
        indices = indices.tolist() if isinstance(indices, torch.Tensor) else [int(i) for i in indices]
        if len(indices) != len(preds):
            raise ValueError(
                f"PredictionWriter: {len(preds)} predictions for {len(indices)} images in batch {batch_idx}"
            )
        for pred, index in zip(preds, indices, strict=True):
            _save(dataset.encode_prediction(pred), self.predict_dir / dataset.prediction_file(index))
            if self.color:
                _save(dataset.encode_color(pred), self.color_dir / f"{dataset.prediction_name(index)}_color.png")
            self.written += 1
