"""`ReportWriter`: saves the resolved config and writes `report.json` into the run directory.

It is the CLI's config-saving callback (a `SaveConfigCallback`): the resolved config goes to
`<run dir>/config.yaml` when a run starts (never over an earlier run's), and after `validate`,
`test` and at the end of `fit` `<run dir>/report.json` holds the numbers of one set of weights.

The end of `fit` is the final model (`finish_fit`, called by `tailseg fit` once training has
stopped): the final weights are saved as `<run dir>/checkpoints/last.ckpt` unless `ModelCheckpoint`
has just saved them (then that file is the final checkpoint: no second copy); if the last validation did not run at the final step (e.g.
`check_val_every_n_epoch` does not divide the run, or it never validated), one more runs on the
final weights; and the report names that checkpoint and step. Without a validation set the report
still names the final checkpoint, with null metrics.

The report:

- `stage`: "validate", "test" or "fit";
- `per_class_iou`: {class name: IoU in %}, null for classes absent from truth and prediction;
- `miou`, `worst`, `std`: mean, lowest and sample standard deviation (ddof 1) over the
  classes that have an IoU, in %;
- `fairness`: the TCE paper's fairness criteria of the per-class IoU in % (`fairness_report`:
  miou, worst, std, sorted_bottom / sorted_top of the 25% lowest / highest classes, p25 / p75
  thresholds and the mIoU of the classes beyond them), sorted by the model's own IoU;
- `class_frequency`: {class name: share of the labelled training pixels}, and
  `class_frequency_source`: "training set" (read from the training masks) or "checkpoint" (stored in
  the checkpoint when it was trained: evaluation does not need the training set);
- `num_images`: how many images the metrics cover (summed over DDP ranks; each image is evaluated
  on exactly one rank);
- `config`: the resolved config; `checkpoint`: the checkpoint whose weights the numbers belong to
  (fit: the final one); `run_dir`, `epoch`; `global_step`: the training step of those weights (for
  `validate` and `test` the checkpoint's, null without one);
- `split`: the images the numbers are measured on: "val" (`fit` and `validate`) or "test" (`test`);
- `trained`: whether the weights were trained: for `fit` a step was taken (`global_step` > 0), for
  `validate` and `test` a checkpoint was loaded and its step is > 0 (false: the numbers are those of
  the initial weights, and the analysis never ranks them);
- `fingerprint` and `method_fields`: `tailseg.identity.fingerprint` and `method_fields` of `config` (what
  defines the experiment; the analysis compares only seeds that agree on it); `checkpoint_fingerprint`: for
  `validate` and `test`, the fingerprint of the run that trained the checkpoint (its `fit` report's
  `fingerprint`; the evaluation's own config leaves the training set out, so its own fingerprint differs), null
  for `fit`.

`--report_path PATH` writes the same report to PATH as well; `validate` and `test` refuse, before they
evaluate, a PATH that holds the report of a `fit` (an evaluation never replaces a training report; a `fit`
may replace an earlier one). The per-class table is printed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback

from tailseg import identity
from tailseg.callbacks.preemption import PreemptionCheckpoint
from tailseg.lightning_compat import last_saved_step
from tailseg.metrics import fairness_report, summarize_iou


def _rounded(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _percent(value: float | None) -> float | None:
    return None if value is None else _rounded(100.0 * float(value))


def format_iou_table(report: dict) -> str:
    """The per-class IoU of a report as an aligned text table, most frequent class first."""
    freq = report.get("class_frequency") or {}
    names = sorted(report["per_class_iou"], key=lambda n: -(freq.get(n) or 0.0))
    width = max(len(n) for n in names)
    lines = [f"{'class':<{width}}  {'IoU %':>7}  {'pixels %':>8}"]
    for name in names:
        iou = report["per_class_iou"][name]
        share = freq.get(name)
        lines.append(
            f"{name:<{width}}  {'n/a' if iou is None else f'{iou:7.2f}':>7}  {'' if share is None else f'{100 * share:8.3f}'}"
        )
    summary = "  ".join(f"{key} {report[key]:.2f}" for key in ("worst", "std") if report[key] is not None)
    lines.append(
        f"{'mIoU':<{width}}  {report['miou'] if report['miou'] is not None else float('nan'):7.2f}   {summary}"
    )
    return "\n".join(lines)


def checkpoint_fingerprint(path: str | None) -> str | None:
    """The fingerprint of the run that wrote checkpoint `path` (None without one, or for an older checkpoint)."""
    if not path or "://" in str(path):
        return None
    try:
        recorded = identity.checkpoint_identity(path)
    except Exception:  # noqa: BLE001 (torch.load raises many kinds; the weights were loaded, so this is rare)
        return None
    return (recorded or {}).get("fingerprint")


class ReportWriter(SaveConfigCallback):
    """Config saving plus `report.json` after validate, test and fit (see the module docs).

    Args:
        parser, config, config_filename, overwrite, multifile: as `SaveConfigCallback`.
        report_path: An extra path to write the report to.
    """

    def __init__(self, *args, report_path: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.report_path = report_path
        self._quiet = False  # True during the final validation of fit, whose report `finish_fit` writes

    def build_report(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        stage: str,
        log_dir: str | None,
        checkpoint: str | None = None,
    ) -> dict:
        key = "test" if stage == "test" else "val"
        iou = pl_module.latest_iou.get(key)
        values = iou.double().numpy() if iou is not None else None
        summary = summarize_iou(values) if values is not None else {"miou": None, "worst": None, "std": None}
        percent = values * 100.0 if values is not None else None
        fairness = fairness_report(percent) if percent is not None and (~np.isnan(percent)).any() else None
        frequency = getattr(pl_module, "class_frequency", None)
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        step = trainer.global_step if stage == "fit" else getattr(pl_module, "checkpoint_step", None)
        return {
            "stage": stage,
            "per_class_iou": None
            if values is None
            else {n: _percent(v) for n, v in zip(pl_module.class_names, values, strict=True)},
            "miou": _percent(summary["miou"]),
            "worst": _percent(summary["worst"]),
            "std": _percent(summary["std"]),
            "fairness": None if fairness is None else {k: _rounded(v) for k, v in fairness.items()},
            "num_images": pl_module.latest_num_images.get(key) if values is not None else None,
            "class_frequency": None if frequency is None else dict(zip(pl_module.class_names, frequency, strict=True)),
            "class_frequency_source": getattr(pl_module, "class_frequency_source", None) if frequency else None,
            "config": config,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "run_dir": log_dir,
            "epoch": trainer.current_epoch,
            "global_step": step,
            "split": key,
            "trained": bool(step) and (stage == "fit" or bool(checkpoint)),
            **identity.run_identity(config),
            "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint) if stage != "fit" else None,
        }

    @staticmethod
    def final_checkpoint(trainer: pl.Trainer) -> str:
        """The checkpoint of the final weights: the one `ModelCheckpoint` wrote at the final step (its `last.ckpt`,
        or without a monitored metric its newest file), else a new `<checkpoint dir>/last.ckpt`. Every rank must
        call this."""
        callback = trainer.checkpoint_callback
        newest = ""
        if isinstance(callback, ModelCheckpoint) and last_saved_step(callback) == trainer.global_step:
            newest = callback.last_model_path or (callback.best_model_path if callback.monitor is None else "")
            newest = newest if newest and Path(newest).is_file() else ""
        newest = trainer.strategy.broadcast(newest)  # rank 0 decides, so every rank saves (or not) alike
        if newest:
            return newest
        path = PreemptionCheckpoint.checkpoint_path(trainer)  # the run's `last.ckpt`, wherever its checkpoints go
        trainer.save_checkpoint(path)
        return str(path)

    def finish_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The end of `fit` (see the module docs): save the final weights, validate them if the last validation
        was at another step, and write the report. Every rank must call this."""
        if trainer.interrupted:
            return  # stopped by an exception or a signal: PreemptionCheckpoint has saved the state
        checkpoint = self.final_checkpoint(trainer)
        datamodule = getattr(trainer, "datamodule", None)
        has_val = getattr(datamodule, "val_set", None) is not None and trainer.limit_val_batches != 0
        if has_val and pl_module.latest_iou_step.get("val") != trainer.global_step:
            self._quiet = True
            try:
                trainer.validate(pl_module, datamodule=datamodule, verbose=False)
            finally:
                self._quiet = False
        self.write(trainer, pl_module, "fit", checkpoint)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, checkpoint: str | None) -> None:
        log_dir = trainer.log_dir  # a broadcast: every rank must take part, only rank zero writes
        if not trainer.is_global_zero:
            return
        report = self.build_report(trainer, pl_module, stage, log_dir, checkpoint)
        targets = [Path(log_dir) / "report.json"] if log_dir else []
        if self.report_path:
            targets.append(Path(self.report_path))
        text = json.dumps(report, indent=2, allow_nan=False)
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        table = format_iou_table(report) if report["per_class_iou"] is not None else "no validation data: no metrics"
        print(f"\n{table}\nreport: {', '.join(map(str, targets))}")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a `--report_path` that holds a training report in `validate` and `test`, before anything is
        written or evaluated (see the module docs); then save the config."""
        if stage in ("validate", "test") and not self._quiet and self.report_path:
            holder = self.training_report_run(self.report_path) if trainer.is_global_zero else None
            holder = trainer.strategy.broadcast(holder)
            if holder is not None:
                raise ValueError(
                    f"report_path {self.report_path} holds the training report of {holder}; "
                    "write the evaluation elsewhere"
                )
        super().setup(trainer, pl_module, stage)

    @staticmethod
    def training_report_run(path: str | os.PathLike) -> str | None:
        """The run (its `run_dir`, else the file's folder) whose `fit` report `path` holds; None if it holds none."""
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(report, dict) or "per_class_iou" not in report or report.get("stage", "fit") != "fit":
            return None
        return str(report.get("run_dir") or Path(path).parent)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Every checkpoint carries `tailseg_identity`: the fingerprint and method fields of the run's config
        (`tailseg.identity`), which `--ckpt_path` checks before resuming."""
        if getattr(self, "_identity", None) is None:  # the config does not change during a run
            self._identity = identity.run_identity(
                json.loads(self.parser.dump(self.config, format="json", skip_none=False))
            )
        checkpoint[identity.CHECKPOINT_KEY] = self._identity

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not self._quiet:
            self.write(trainer, pl_module, "validate", trainer.ckpt_path)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, pl_module, "test", trainer.ckpt_path)
