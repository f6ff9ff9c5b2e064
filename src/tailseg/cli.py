"""The `tailseg` command: LightningCLI's fit/validate/test/predict plus `describe` and `compare`.

    tailseg fit --config experiments/synthetic/base.yaml
    tailseg validate --config experiments/synthetic/base.yaml --ckpt_path RUN_DIR/checkpoints/<name>.ckpt
    tailseg predict --config experiments/cityscapes/lmp.yaml --ckpt_path C.ckpt --predict_dir preds/ [--predict_color true]
    tailseg describe --config experiments/synthetic/base.yaml
    tailseg compare runs/synthetic/base runs/synthetic/lmp --sort frequency

Run directories: unless the config sets `trainer.logger`, each run gets a fresh
`<trainer.default_root_dir>/version_<N>/` with the resolved `config.yaml`, `metrics.csv` (CSV
logger), `checkpoints/`, `report.json` and an offline W&B run under `wandb/`. W&B mode comes from
`WANDB_MODE` (default "offline": no account, no network; "online" syncs, "disabled" turns it off).

Predictions: `predict` runs the model (with the config's `model.tiling`) over `data.predict`, or over
`data.val` when that is not set. `--predict_dir DIR` writes one PNG per image into DIR in the data set's
official format (`tailseg.callbacks.predictions.PredictionWriter`; Cityscapes label ids, VOC palette PNGs,
ADE20K ids + 1) and makes `predict` keep nothing in memory (`return_predictions` defaults to false then).
`--predict_color true` adds `<name>_color.png` pictures beside them, `--predict_color_dir DIR2` puts them
in DIR2 instead (for Cityscapes, keep them out of a folder that the official evaluator is to scan).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from tailseg.callbacks import ReportWriter
from tailseg.callbacks.predictions import PredictionWriter
from tailseg.callbacks.wandb_media import WandbMedia
from tailseg.data import SegmentationDataModule
from tailseg.model import SegmentationModel


class TailsegCLI(LightningCLI):
    """LightningCLI with the DataModule's classes linked into the model, run directories and reports."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", ReportWriter)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(SegmentationModel, SegmentationDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "class_names", "ignore_index"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        parser.add_argument("--report_path", type=str | None, default=None, help="Also write report.json to this path.")
        parser.add_argument(
            "--predict_dir",
            type=str | None,
            default=None,
            help="predict: write one PNG per image into this folder, in the data set's official format.",
        )
        parser.add_argument(
            "--predict_color", type=bool, default=False, help="predict: also write <name>_color.png pictures."
        )
        parser.add_argument(
            "--predict_color_dir",
            type=str | None,
            default=None,
            help="predict: write the colour pictures into this folder instead of --predict_dir (implies them).",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.save_config_kwargs["report_path"] = config.get("report_path")
        if self.subcommand == "predict" and config.get("predict_dir") and config.get("return_predictions") is None:
            config["return_predictions"] = False  # the writer has them; holding every map could exhaust memory

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        extra = []
        if config.get("logger") in (None, True) and not config.get("fast_dev_run"):
            kwargs["logger"] = default_loggers(config.get("default_root_dir") or os.getcwd())
            if any(isinstance(logger, WandbLogger) for logger in kwargs["logger"]):
                extra.append(WandbMedia())  # per-class IoU table and chart, fairness, masks of a few images
        writer = self.prediction_writer()
        if writer is not None:
            extra.append(writer)
        if extra:
            callbacks = kwargs.get("callbacks", config.get("callbacks"))
            callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = [*callbacks, *extra]
        return super().instantiate_trainer(**kwargs)

    def prediction_writer(self) -> PredictionWriter | None:
        """The `PredictionWriter` that `--predict_dir` asks for (None without it)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if not config.get("predict_dir"):
            return None
        return PredictionWriter(
            config["predict_dir"], color=bool(config.get("predict_color")), color_dir=config.get("predict_color_dir")
        )


def default_loggers(root: str) -> list:
    """A CSV logger that owns a fresh `root/version_<N>` run directory, and W&B inside it."""
    csv = CSVLogger(save_dir=root, name="")
    run_dir = Path(csv.log_dir)
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return [csv]
    _ = csv.experiment  # claims the (empty) run directory before W&B writes into it
    wandb = WandbLogger(
        project=os.environ.get("WANDB_PROJECT", "tailseg"),
        name=f"{Path(root).resolve().name}-{run_dir.name}",
        save_dir=str(run_dir),
        mode=mode,
    )
    return [csv, wandb]


def main(args: list[str] | None = None) -> None:
    """Entry point of the `tailseg` console script and `python -m tailseg`."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "describe":
        from tailseg.describe import describe_main

        describe_main(argv[1:])
        return
    if argv and argv[0] == "compare":
        from tailseg.compare import compare_main

        compare_main(argv[1:])
        return
    TailsegCLI(args=argv)


if __name__ == "__main__":
    main()
