"""A callback that records which images each rank evaluated and predicted, for the sharded-evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from tailseg.callbacks.predictions import PredictionWriter


class RecordEvalIndices(pl.Callback):
    """Writes `<out_dir>/rank<r>.json` when the run ends (give each run its own `out_dir`).

    It holds the image indices of every validation batch (`val_batches`, sanity checks left out) and of
    every predict batch (`predict_batches`), `ClassIoU.total_images()` of each validation epoch
    (`val_total_images`; a collective, called on every rank before the model resets the metric), the confusion
    matrix of each validation epoch summed over the ranks (`val_confusion`, the same collective) and, in predict
    runs, how many files this rank's `PredictionWriter` wrote (`written`).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"val_batches": [], "predict_batches": [], "val_total_images": [], "val_confusion": [],
                       "written": None}  # fmt: skip

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.record["val_batches"].append(batch["index"].tolist())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        metric = pl_module.iou["val_iou"]
        total = metric.total_images()  # before the model's hook resets the metric
        with metric.sync_context(dist_sync_fn=metric.dist_sync_fn, should_sync=metric._to_sync):
            confusion = metric.confusion.tolist()  # summed over the ranks
        if not trainer.sanity_checking:
            self.record["val_total_images"].append(total)
            self.record["val_confusion"].append(confusion)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.record["predict_batches"].append(batch["index"].tolist())

    def on_predict_end(self, trainer, pl_module) -> None:
        writers = [c for c in trainer.callbacks if isinstance(c, PredictionWriter)]
        self.record["written"] = sum(w.written for w in writers) if writers else None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))
