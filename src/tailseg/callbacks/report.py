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

The figure of the end of training, as the LMP paper reports it (`--last_k K`, in a config `last_k: K`; 0, the
default, leaves the fields null; fit reports only):

- `miou_last_k`: the mean over the last K validations of the run (by global step, the final one included; fewer
  if the run validated fewer times) of each validation's mIoU, in %; `per_class_iou_last_k`: {class: the mean of
  its IoU over those validations where it has one, in %}; `last_k`: {"k": K, "steps": [the validations' global
  steps]}. A run resumed from a checkpoint counts the validations before the interruption as well (the
  checkpoint holds them: `tailseg.resume`). No interval: the last k validations of one run are not independent
  measurements; across seeds the analysis treats the figure like `miou`.

Per-image counts and intervals (evaluations only have them; the fields are null without a validation set):

- `per_image`: each evaluated image's name (`prediction_name`: the file stem, the same on every machine;
  `sample_name` where stems repeat), group (`image_group`: CamVid's video, Cityscapes' city; null where the data
  set has none for some image) and per-class intersection and union pixel counts, in `per_class_iou`'s class
  order and in data-set order, in the format of `tailseg.analysis.per_image`: inline up to
  `PER_IMAGE_INLINE_CELLS` (20000) images x classes, else `{"file": "<report stem>.per_image.npz"}`, written
  beside each report. Summed over the images they give `per_class_iou` exactly;
- `miou_ci95`, `per_class_iou_ci95` ({class: [low, high] or null}) and `per_image_miou_ci95`: 95% percentile
  bootstrap intervals, [low, high] in % with 2 decimals, from the per-image counts
  (`tailseg.metrics.bootstrap.iou_intervals`: a resample re-weights the images' counts before they are summed;
  IoU is never averaged over images except in `per_image_miou`); `per_image_miou` (in % like `miou`): the mean
  over the images of each image's mIoU over the classes in its truth or prediction;
- `ci`: {"resamples", "seed", "unit", "groups", "level"}: how they were drawn; `groups` is the number of groups
  among the evaluated images (null where the data set has none), whatever the unit.

`--ci_resamples R` (default 2000; 0: no intervals, the interval fields and `ci` are null), `--ci_seed S` (default 0;
the same seed gives the same intervals) and `--ci_unit image|group`. The unit is `image` by default, and the
analysis tables use it (`tailseg compare --ci_unit` chooses theirs): it says how much the figure would move with
other frames of the same videos or cities. Frames of one video are not independent, so `group` (resample videos or
cities, the cluster bootstrap) is the honest unit where a set spans several of them (Cityscapes val: 3 cities, few
for an interval), but it needs at least 2 groups and is refused before evaluating without them: CamVid's val set is
101 frames of one video (0016E5), where a group interval is impossible; the cross-video evidence there is the
leave-one-video-out check of experiments/README.md. An evaluation of a single image has no intervals (null, like
`--ci_resamples 0`): every resample of one image is that image, and a zero-width interval would claim a certainty it
does not have.

`--report_path PATH` writes the same report to PATH as well; `validate` and `test` refuse, before they
evaluate, a PATH that holds the report of a `fit` (an evaluation never replaces a training report; a `fit`
may replace an earlier one). The per-class table is printed.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback

from tailseg import identity
from tailseg.analysis.per_image import PerImage, per_image_file
from tailseg.callbacks.preemption import PreemptionCheckpoint
from tailseg.lightning_compat import last_saved_step
from tailseg.metrics import fairness_report, summarize_iou
from tailseg.metrics.bootstrap import DEFAULT_RESAMPLES, iou_intervals, per_image_miou

#: A report holds its per-image counts inline up to this many cells (images x classes), else in a file beside it.
PER_IMAGE_INLINE_CELLS = 20000
#: What a bootstrap resample draws: images, or groups of images (`SegmentationDataset.image_group`).
CI_UNITS = ("image", "group")
CI_LEVEL = 0.95


def _rounded(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _percent(value: float | None) -> float | None:
    return None if value is None else _rounded(100.0 * float(value))


def _interval(pair: np.ndarray) -> list[float] | None:
    """[low, high] of a fraction interval in % with 2 decimals; None where it is NaN."""
    low, high = (float(v) for v in pair)
    return None if math.isnan(low) or math.isnan(high) else [round(100.0 * low, 2), round(100.0 * high, 2)]


def interval_fields(
    per_image: PerImage | None,
    class_names: list[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    unit: str = "image",
) -> dict:
    """The report's per-image mIoU and bootstrap intervals of per-image counts (see the module docs).

    Args:
        per_image: The evaluation's per-image counts (None: every field is null).
        class_names: The classes, in the counts' column order.
        resamples: R; 0 leaves the intervals and `ci` null.
        seed: Seed of the resampling.
        unit: "image" or "group" (resample `per_image.groups`; they must be there).

    Returns:
        {"per_image_miou", "miou_ci95", "per_class_iou_ci95", "per_image_miou_ci95", "ci"}.

    Raises:
        ValueError: `unit` is "group" and the images have no groups or all share one.
    """
    fields: dict = {"per_image_miou": None, "miou_ci95": None, "per_class_iou_ci95": None}
    fields.update(per_image_miou_ci95=None, ci=None)
    if per_image is None or not per_image.names:
        return fields
    images = per_image_miou(per_image.intersection, per_image.union)
    fields["per_image_miou"] = _percent(float(np.nanmean(images))) if (~np.isnan(images)).any() else None
    if resamples <= 0 or len(per_image.names) < 2:
        return fields
    if unit == "group" and per_image.groups is None:
        raise ValueError("ci_unit group: the evaluated images have no groups; use --ci_unit image")
    groups = per_image.groups if unit == "group" else None
    figures = iou_intervals(per_image.intersection, per_image.union, resamples, seed, groups, CI_LEVEL)
    fields["miou_ci95"] = _interval(figures["miou_ci"])
    fields["per_class_iou_ci95"] = {
        name: _interval(figures["per_class_iou_ci"][:, c]) for c, name in enumerate(class_names)
    }
    fields["per_image_miou_ci95"] = _interval(figures["per_image_miou_ci"])
    fields["ci"] = {
        "resamples": int(resamples),
        "seed": int(seed),
        "unit": unit,
        "groups": None if per_image.groups is None else len(set(per_image.groups)),
        "level": CI_LEVEL,
    }
    return fields


def per_image_entry(per_image: PerImage | None, target: str | os.PathLike) -> dict | None:
    """The report's `per_image` field for a report written to `target`: the counts inline when they have at most
    `PER_IMAGE_INLINE_CELLS` cells, else `{"file": <per_image_file(target)'s name>}` (see `write_per_image`)."""
    if per_image is None:
        return None
    if per_image.intersection.size <= PER_IMAGE_INLINE_CELLS:
        return {
            "names": list(per_image.names),
            "groups": None if per_image.groups is None else list(per_image.groups),
            "intersection": per_image.intersection.tolist(),
            "union": per_image.union.tolist(),
        }
    return {"file": per_image_file(target).name}


def write_per_image(per_image: PerImage, path: str | os.PathLike) -> None:
    """Write the counts to `path` (a `.npz`, replaced atomically) in the format of `tailseg.analysis.per_image`."""
    path = Path(path)
    arrays = {"names": np.asarray(per_image.names, dtype=str)}
    if per_image.groups is not None:
        arrays["groups"] = np.asarray(per_image.groups, dtype=str)
    arrays.update(intersection=per_image.intersection.astype(np.int64), union=per_image.union.astype(np.int64))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(tmp, path)


def evaluated_set(trainer: pl.Trainer, key: str):
    """The data set of the evaluation `key` ("val" or "test") of `trainer`'s DataModule, or None."""
    return getattr(getattr(trainer, "datamodule", None), f"{key}_set", None)


def image_groups(dataset, indices) -> list[str] | None:
    """The group of each image, or None unless the data set gives every one of them a group."""
    groups = [dataset.image_group(int(i)) for i in indices] if hasattr(dataset, "image_group") else [None]
    return None if any(g is None for g in groups) else [str(g) for g in groups]


def collect_per_image(dataset, counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> PerImage | None:
    """The per-image counts of an evaluation (`SegmentationModel.latest_per_image`), named after `dataset`'s
    images (see the module docs); None without counts."""
    if counts is None:
        return None
    index, intersection, union = (t.cpu().numpy().astype(np.int64) for t in counts)
    if dataset is None:
        names, groups = [str(i) for i in index], None
    else:
        names = [dataset.prediction_name(int(i)) for i in index]
        if len(set(names)) != len(names):
            names = [dataset.sample_name(int(i)) for i in index]
        groups = image_groups(dataset, index)
    return PerImage(names, groups, intersection, union)


_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
# A list that json.dumps spread over lines: its newlines cannot be inside a JSON string (escaped there).
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


def report_text(report: dict) -> str:
    """`report` as indented JSON with every list of numbers on one line (a per-image row, an interval), so that
    the per-image counts take a line per image rather than per number."""
    text = json.dumps(report, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(re.split(r",\n\s*", m.group(1))) + "]", text)


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
    if report.get("miou_ci95") and report.get("ci"):
        low, high = report["miou_ci95"]
        lines.append(f"mIoU 95% interval [{low:.2f}, {high:.2f}] (bootstrap over {report['ci']['unit']}s)")
    return "\n".join(lines)


def last_k_fields(history: dict[int, list[float]], class_names: list[str], k: int) -> dict:
    """`miou_last_k`, `per_class_iou_last_k` and `last_k` of the module docs from a model's `val_history`
    ({global step: per-class IoU as fractions, NaN where a class has none}); null fields for k = 0 or no history."""
    steps = sorted(history)[-k:] if k > 0 else []
    if not steps:
        return {"miou_last_k": None, "per_class_iou_last_k": None, "last_k": None}
    table = np.array([history[step] for step in steps], dtype=np.float64)  # (validations, classes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class without an IoU in every validation: NaN
        per_class = np.nanmean(table, axis=0)
        miou = np.nanmean(np.nanmean(table, axis=1))
    return {
        "miou_last_k": _percent(miou),
        "per_class_iou_last_k": {n: _percent(v) for n, v in zip(class_names, per_class, strict=True)},
        "last_k": {"k": k, "steps": steps},
    }


def checkpoint_fingerprint(path: str | None) -> str | None:
    """The fingerprint of the run that wrote checkpoint `path` (None without one, or for an older checkpoint)."""
    if not path or "://" in str(path):
        return None
    try:
        recorded = identity.checkpoint_identity(path)
    except Exception:  # noqa: BLE001 (torch.load raises many kinds; the weights were loaded, so this is rare)
        return None
    return identity.recorded_fingerprint(recorded) if recorded else None


class ReportWriter(SaveConfigCallback):
    """Config saving plus `report.json` after validate, test and fit (see the module docs).

    Args:
        parser, config, config_filename, overwrite, multifile: as `SaveConfigCallback`.
        report_path: An extra path to write the report to.
        ci_resamples: Bootstrap resamples of the report's intervals (0: none).
        ci_seed: Seed of the resampling.
        ci_unit: "image" or "group": what a resample draws (see the module docs).
        last_k: How many of the last validations `miou_last_k` averages (0: none; see the module docs).

    Raises:
        ValueError: A negative `ci_resamples` or `last_k`, or an unknown `ci_unit`.
    """

    def __init__(
        self,
        *args,
        report_path: str | None = None,
        ci_resamples: int = DEFAULT_RESAMPLES,
        ci_seed: int = 0,
        ci_unit: str = "image",
        last_k: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(last_k) < 0:
            raise ValueError(f"last_k must be >= 0 (0: no mean of the last validations), got {last_k}")
        self.last_k = int(last_k)
        if int(ci_resamples) < 0:
            raise ValueError(f"ci_resamples must be >= 0 (0: no intervals), got {ci_resamples}")
        if ci_unit not in CI_UNITS:
            raise ValueError(f"ci_unit must be one of {list(CI_UNITS)}, got {ci_unit!r}")
        self.report_path = report_path
        self.ci_resamples, self.ci_seed, self.ci_unit = int(ci_resamples), int(ci_seed), ci_unit
        self._quiet = False  # True during the final validation of fit, whose report `finish_fit` writes
        self._per_image: PerImage | None = None  # the counts of the report last built (written by `write`)

    def build_report(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        stage: str,
        log_dir: str | None,
        checkpoint: str | None = None,
        target: str | os.PathLike = "report.json",
    ) -> dict:
        """The report (see the module docs) as written to `target` (which names the file of large per-image
        counts; `write` writes that file)."""
        key = "test" if stage == "test" else "val"
        iou = pl_module.latest_iou.get(key)
        values = iou.double().numpy() if iou is not None else None
        summary = summarize_iou(values) if values is not None else {"miou": None, "worst": None, "std": None}
        percent = values * 100.0 if values is not None else None
        fairness = fairness_report(percent) if percent is not None and (~np.isnan(percent)).any() else None
        frequency = getattr(pl_module, "class_frequency", None)
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        step = trainer.global_step if stage == "fit" else getattr(pl_module, "checkpoint_step", None)
        counts = getattr(pl_module, "latest_per_image", {}).get(key) if values is not None else None
        per_image = collect_per_image(evaluated_set(trainer, key), counts)
        self._per_image = per_image
        intervals = interval_fields(
            per_image, list(pl_module.class_names), self.ci_resamples, self.ci_seed, self.ci_unit
        )
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
            **intervals,
            **last_k_fields(
                getattr(pl_module, "val_history", {}), list(pl_module.class_names), self.last_k if stage == "fit" else 0
            ),  # fmt: skip
            "per_image": per_image_entry(per_image, target),
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
        targets = [Path(log_dir) / "report.json"] if log_dir else []
        if self.report_path:
            targets.append(Path(self.report_path))
        report = self.build_report(
            trainer, pl_module, stage, log_dir, checkpoint, targets[0] if targets else "report.json"
        )
        per_image = self._per_image
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            report["per_image"] = per_image_entry(per_image, path)
            beside = per_image_file(path)
            if report["per_image"] is not None and "file" in report["per_image"]:
                write_per_image(per_image, beside)  # before the report that names it
            elif beside.is_file():
                beside.unlink()  # an earlier, larger evaluation's counts: not this report's
            text = report_text(report)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        table = format_iou_table(report) if report["per_class_iou"] is not None else "no validation data: no metrics"
        print(f"\n{table}\nreport: {', '.join(map(str, targets))}")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a `--report_path` that holds a training report in `validate` and `test`, and `--ci_unit group`
        for a set without 2 groups, before anything is written or evaluated (see the module docs); then save the
        config."""
        if self.ci_unit == "group" and self.ci_resamples > 0:
            self.check_groups(evaluated_set(trainer, "test" if stage == "test" else "val"))
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
    def check_groups(dataset) -> None:
        """ValueError (one line) unless every image of `dataset` (None: nothing to check) has a group and there are
        at least 2 groups: what `--ci_unit group` needs."""
        if dataset is None or len(dataset) == 0:
            return
        groups = image_groups(dataset, range(len(dataset)))
        what = f"the evaluated set ({type(dataset).__name__}, {len(dataset)} images)"
        if groups is None:
            raise ValueError(f"ci_unit group: {what} has no image groups; use --ci_unit image")
        if len(set(groups)) < 2:
            raise ValueError(
                f"ci_unit group: all images of {what} are in one group ({groups[0]!r}); a group interval needs at "
                "least 2; use --ci_unit image"
            )

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
