"""`ReportWriter`: saves the resolved config and writes `report.json` into the run directory.

It is the CLI's config-saving callback (a `SaveConfigCallback`): the resolved config goes to
`<run dir>/config.yaml` when a run starts (never over an earlier run's), and after `validate`,
`test` and at the end of `fit` (from the last validation) `<run dir>/report.json` holds:

- `stage`: "validate", "test" or "fit";
- `per_class_iou`: {class name: IoU in %}, null for classes absent from truth and prediction;
- `miou`, `worst`, `std`: mean, lowest and sample standard deviation (ddof 1) over the
  classes that have an IoU, in %;
- `fairness`: the TCE paper's fairness criteria of the per-class IoU in % (`fairness_report`:
  miou, worst, std, sorted_bottom / sorted_top of the 25% lowest / highest classes, p25 / p75
  thresholds and the mIoU of the classes beyond them), sorted by the model's own IoU;
- `class_frequency`: {class name: share of the labelled training pixels};
- `config`: the resolved config; `checkpoint`: the checkpoint evaluated (fit: the last one
  saved); `run_dir`, `epoch`, `global_step`.

`--report_path PATH` writes the same report to PATH as well. The per-class table is printed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.cli import SaveConfigCallback

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


class ReportWriter(SaveConfigCallback):
    """Config saving plus `report.json` after validate, test and fit (see the module docs).

    Args:
        parser, config, config_filename, overwrite, multifile: as `SaveConfigCallback`.
        report_path: An extra path to write the report to.
    """

    def __init__(self, *args, report_path: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.report_path = report_path

    def build_report(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, log_dir: str | None
    ) -> dict | None:
        key = "test" if stage == "test" else "val"
        iou = pl_module.latest_iou.get(key)
        if iou is None:
            return None
        values = iou.double().numpy()
        summary = summarize_iou(values)
        percent = values * 100.0
        fairness = fairness_report(percent) if (~np.isnan(percent)).any() else None
        datamodule = getattr(trainer, "datamodule", None)
        frequency = None
        if datamodule is not None and getattr(datamodule, "train_set", None) is not None:
            frequency = dict(zip(pl_module.class_names, datamodule.class_frequency.tolist(), strict=True))
        if stage == "fit":
            callback = trainer.checkpoint_callback
            checkpoint = (callback.last_model_path or callback.best_model_path) if callback is not None else None
        else:
            checkpoint = trainer.ckpt_path
        return {
            "stage": stage,
            "per_class_iou": {n: _percent(v) for n, v in zip(pl_module.class_names, values, strict=True)},
            "miou": _percent(summary["miou"]),
            "worst": _percent(summary["worst"]),
            "std": _percent(summary["std"]),
            "fairness": None if fairness is None else {k: _rounded(v) for k, v in fairness.items()},
            "class_frequency": frequency,
            "config": json.loads(self.parser.dump(self.config, format="json", skip_none=False)),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "run_dir": log_dir,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a broadcast: every rank must take part, only rank zero writes
        if not trainer.is_global_zero:
            return
        report = self.build_report(trainer, pl_module, stage, log_dir)
        if report is None:
            return
        targets = [Path(log_dir) / "report.json"] if log_dir else []
        if self.report_path:
            targets.append(Path(self.report_path))
        text = json.dumps(report, indent=2, allow_nan=False)
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        print(f"\n{format_iou_table(report)}\nreport: {', '.join(map(str, targets))}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, pl_module, "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, pl_module, "fit")
