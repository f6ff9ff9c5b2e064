"""The `tailseg` command: LightningCLI's fit/validate/test/predict plus `describe`, `compare` and `matrix`.

    tailseg fit --config experiments/synthetic/base.yaml
    tailseg validate --config experiments/synthetic/base.yaml --ckpt_path RUN_DIR/checkpoints/<name>.ckpt
    tailseg predict --config experiments/cityscapes/lmp.yaml --ckpt_path C.ckpt --predict_dir preds/ [--predict_color true]
    tailseg describe --config experiments/synthetic/base.yaml
    tailseg compare runs/synthetic/base runs/synthetic/lmp --sort frequency
    tailseg matrix experiments/synthetic/base.yaml experiments/synthetic/lmp.yaml --seeds 0 1 2 --out runs/matrix

Long runs (`tailseg.resume`, `experiments/README.md`): `fit` always ends with the final weights in a
checkpoint (`checkpoints/last.ckpt`, or the file `ModelCheckpoint` saved at the final step) and a
report.json of exactly those weights (`ReportWriter.finish_fit`), writes `last.ckpt` on SIGTERM or an
exception (`PreemptionCheckpoint`), and `--ckpt_path last` resumes from the newest checkpoint under
`trainer.default_root_dir` or a `ModelCheckpoint`'s `dirpath` (`fit` starts afresh when there is none;
`validate`, `test` and `predict` stop with an error). A command stopped by SIGTERM exits with status 143
(`PREEMPTED`), so a job script can requeue exactly the runs that were pre-empted. `validate`,
`test` and `predict` leave `data.train` out: evaluating a checkpoint needs only the evaluation images.

Resuming only the same experiment: every checkpoint records the fingerprint of the config that trained it
(`tailseg_identity`, `tailseg.identity`), and `fit` resumes a checkpoint (`last` or a path) only when it
equals the fingerprint of the config given now; otherwise it stops before building anything, with one
line naming the checkpoint and the fields that differ (an LMP config never continues a BASE run, nor a
500-step config a 1000-step run). To train another config, give it its own `--trainer.default_root_dir`;
to resume a run, give the config it was trained with (its `config.yaml`). `--ckpt_path` resumes a run,
it does not start a new experiment from another one's weights. Decisions: `last` is the newest
checkpoint that can be read (a newer one that cannot, e.g. cut short by a full disk, is passed over with
a warning naming it; for every subcommand); a checkpoint written before fingerprints were recorded is
resumed with a warning that it cannot be checked; with `seed_everything: true` (a seed drawn at every
start) the run continues with the checkpoint's seed, and the config, report and later checkpoints say
so. `validate`, `test` and `predict` do not compare fingerprints: they evaluate the checkpoint they are
given (the weights of another network do not load into the config's).

Run directories: unless the config sets `trainer.logger`, each `fit` gets a fresh
`<trainer.default_root_dir>/version_<N>/` with the resolved `config.yaml`, `metrics.csv` (CSV
logger), `checkpoints/`, `report.json` and an offline W&B run under `wandb/`; `validate`, `test` and
`predict` get theirs under `<trainer.default_root_dir>/evaluations/<subcommand>/version_<N>/`, so the
root's `version_*` folders are the training runs only. W&B mode comes from
`WANDB_MODE` (default "offline": no account, no network; "online" syncs, "disabled" turns it off).

Predictions: `predict` runs the model (with the config's `model.tiling`) over `data.predict`, or over
`data.val` when that is not set. `--predict_dir DIR` writes one PNG per image into DIR in the data set's
official format (`tailseg.callbacks.predictions.PredictionWriter`; Cityscapes label ids, VOC palette PNGs,
ADE20K ids + 1) and makes `predict` keep nothing in memory (`return_predictions` defaults to false then).
`--predict_color true` adds `<name>_color.png` pictures beside them, `--predict_color_dir DIR2` puts them
in DIR2 instead (for Cityscapes, keep them out of a folder that the official evaluator is to scan).
`predict` refuses, before predicting, a folder that holds any image or mask of the configured data sets
and prediction files that exist already (`--overwrite true` replaces them;
`tailseg.callbacks.predictions.check_prediction_folders`).

Help: `tailseg --help` lists every subcommand with one line each (`SUBCOMMANDS`); `tailseg` alone prints
the same to stderr and exits with status 2; `tailseg <subcommand> --help` lists that subcommand's options.

Configuration errors: on the command line (the console script and `python -m tailseg`), a config that
cannot be parsed (a wrong type, an unknown key, a missing config file) or that a class rejects while it
is being built (e.g. `--data.batch_size 0`: a ValueError, TypeError or Lightning's
MisconfigurationException raised while the model, the data or the trainer is instantiated) is reported
as one line, `tailseg <subcommand>: error: <field>: <problem>`, and the exit status is 2. So are, before
the trainer and its run folder are made (`TailsegCLI.check_run`, `check_built`): `validate` or `test`
without `--ckpt_path` (random weights), `test` without `data.test`, a checkpoint of another number of
classes than the data, a `trainer.default_root_dir` that cannot be created or written, an optimizer that
rejects its arguments (a negative lr), for a `fit` that resumes no checkpoint a `model.init_from` file
that cannot be read or does not fit the network (`tailseg.init_weights`), `--predict_dir` as above, and
every data error that the DataModule's `setup` of the stage finds (it reads every sample of the stage's
sets once, cached on disk: a truncated file, a mask of another size, a class missing from the training
masks, 0 training batches; `tailseg.data.datamodule`). Errors raised once the run has started keep their traceback. Set `TAILSEG_TRACEBACK=1`
to get jsonargparse's full message and the full traceback instead. `main(args)` called from Python with
an explicit list behaves as LightningCLI does: the exceptions propagate.

Config files with the logger off: with a logger (the default), each run writes its resolved config to
its own `version_<N>/config.yaml`, never over another run's. With `--trainer.logger false` there is no
run directory and the config goes to `<trainer.default_root_dir>` (the working directory without one):
`fit` writes `config.yaml` there and, as before, refuses to replace an earlier fit's (its checkpoints
are in that folder too); `validate`, `test` and `predict` write `config.<subcommand>.yaml` instead,
replaced by the next run of the same subcommand like the `report.json` beside it, so evaluations run
one after another in one folder do not stop on each other's files nor touch a training config.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NoReturn

import torch
from jsonargparse import ArgumentError
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from tailseg import identity
from tailseg.callbacks import PreemptionCheckpoint, ReportWriter
from tailseg.callbacks.predictions import PredictionWriter, check_prediction_folders
from tailseg.callbacks.wandb_media import WandbMedia
from tailseg.data import SegmentationDataModule
from tailseg.lightning_compat import ignore_not_resumable_warning, subcommand_parser, subcommand_parsers
from tailseg.metrics.bootstrap import DEFAULT_RESAMPLES
from tailseg.model import SegmentationModel

#: One line per subcommand for `tailseg --help`: LightningCLI's four, then tailseg's own.
SUBCOMMANDS = {
    "fit": "train a model; each run gets a fresh <trainer.default_root_dir>/version_<N>/",
    "validate": "evaluate a model (--ckpt_path) on data.val and write report.json",
    "test": "evaluate a model (--ckpt_path) on data.test and write report.json",
    "predict": "run a model over data.predict (or data.val); --predict_dir writes one PNG per image",
    "describe": "class pixel frequencies and image counts of a config's data sets",
    "compare": "per-class IoU, gains and fairness tables of several runs (the papers' tables)",
    "matrix": "train configs x seeds as separate processes (resumable), then compare them",
}

#: The help of `--ckpt_path`, per subcommand: what tailseg does with it (Lightning's own text is about plain Lightning).
_LAST = (
    "'last' = the newest checkpoint under trainer.default_root_dir or a ModelCheckpoint's dirpath "
    "(the runs' version_*/checkpoints/ included)"
)
CKPT_PATH_HELP = {
    "fit": f"Checkpoint to resume training from, exactly at its step (the weights, the optimizer, the training stream: "
    f"tailseg.resume). A path, or {_LAST}; fit resumes only a checkpoint written with the same config, and starts "
    "afresh when there is none. Lightning's 'hpc' and 'registry' work as in Lightning.",
    **{
        name: f"Checkpoint whose weights to {verb}: a path, or {_LAST}, an error when there is none. Without it, the "
        "weights the config builds. Lightning's 'best', 'hpc' and 'registry' work as in Lightning."
        for name, verb in (("validate", "validate"), ("test", "test"), ("predict", "predict with"))
    },
}

#: The subcommands that run the trainer (their names are its stages).
SUBCOMMANDS_OF_TRAINER = ("fit", "validate", "test", "predict")

#: Exit status of a `tailseg` command stopped by SIGTERM (128 + 15, the shells' convention): requeue on it.
PREEMPTED = 143

#: Key of a checkpoint's identity: the fingerprint and method fields of the config that trained it.

#: Exceptions that, raised while the classes are built from the config, mean a wrong config value.
CONFIG_ERRORS = (ValueError, TypeError, MisconfigurationException)

#: Lines of jsonargparse's error messages that only repeat what the other lines say.
_PARSE_NOISE = (
    "Does not validate against any of the",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
)


def usage() -> str:
    """The text of `tailseg --help`: every subcommand with its one-line description."""
    width = max(map(len, SUBCOMMANDS))
    return "\n".join([
        "usage: tailseg <subcommand> [options]",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()),
        "",
        "`tailseg <subcommand> --help` lists the options of one, e.g. `tailseg fit --help`.",
        "TAILSEG_TRACEBACK=1 shows the full message and traceback of configuration errors.",
    ])  # fmt: skip


def fail(prog: str, message: str) -> NoReturn:
    """Print `<prog>: error: <message>` on one line to stderr and exit with status 2 (a usage error)."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


def short_error(message: str, options: Sequence[str] = ()) -> str:
    """A parse or instantiation error on one line: the key and the innermost problem, with its value.

    Args:
        message: The exception's message; jsonargparse's list every alternative of a type on several lines.
        options: The parser's option strings, to suggest the nearest for an unrecognized one.
    """
    parts = []
    for line in message.splitlines():
        text = line.strip().removeprefix("- ").strip()
        if text and not text.startswith(_PARSE_NOISE):
            parts.append(re.sub(r'^Parser key "([^"]+)":', r"\1:", text))
    short = " ".join(parts) or message.strip()
    short = re.sub(r"Expected an? <class '([\w.]+)'>\. Got value: ", r"expected \1, got ", short)
    if unset := re.match(r"(data\.\w+): Expected an instantiatable class", short):  # e.g. init_args without class_path
        short += (
            f" (the config sets no {unset[1]}: give --{unset[1]}.class_path CLASS with its --{unset[1]}.init_args.*)"
        )
    unknown = re.match(r"unrecognized arguments: (\S+)", short)
    if unknown and (close := difflib.get_close_matches(unknown[1].split("=")[0], options, n=1)):
        short += f" (did you mean {close[0]}?)"
    return short


class TailsegCLI(LightningCLI):
    """LightningCLI with the DataModule's classes linked into the model, run directories and reports.

    Args:
        *args, **kwargs: As `LightningCLI`, without the model and datamodule classes.
        short_errors: Report configuration errors as one line and exit with status 2 (see the module docs)
            instead of jsonargparse's usage message and the exception's traceback.
    """

    def __init__(self, *args, short_errors: bool = False, **kwargs) -> None:
        self.short_errors = short_errors
        ignore_not_resumable_warning()  # the DataModule resumes the training stream, and says so (tailseg.resume)
        kwargs.setdefault("save_config_callback", ReportWriter)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs["parser_kwargs"] = {
            "prog": "tailseg",
            "exit_on_error": not short_errors,
            **kwargs.get("parser_kwargs", {}),
        }
        try:
            super().__init__(SegmentationModel, SegmentationDataModule, *args, **kwargs)
        except ArgumentError as error:  # jsonargparse raises it instead of exiting with short_errors
            if not short_errors:
                raise
            argv = sys.argv[1:] if kwargs.get("args") is None else list(kwargs["args"])
            subcommand = next((a for a in argv if a in self.subcommands()), None)
            options = (
                list(subcommand_parser(self, subcommand)._option_string_actions) if hasattr(self, "parser") else []
            )
            fail(f"tailseg {subcommand}" if subcommand else "tailseg", short_error(str(error), options))

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        for subcommand, parser in subcommand_parsers(self).items():  # `--ckpt_path` is added after our arguments
            for action in parser._actions:
                if action.dest == "ckpt_path" and subcommand in CKPT_PATH_HELP:
                    action.help = CKPT_PATH_HELP[subcommand]

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "class_names", "ignore_index"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        parser.add_argument("--report_path", type=str | None, default=None, help="Also write report.json to this path.")
        parser.add_argument(
            "--ci_resamples",
            type=int,
            default=DEFAULT_RESAMPLES,
            help="Bootstrap resamples of the report's 95%% intervals (0: no intervals).",
        )
        parser.add_argument("--ci_seed", type=int, default=0, help="Seed of the report's bootstrap intervals.")
        parser.add_argument(
            "--last_k",
            type=int,
            default=0,
            help="fit: the report's miou_last_k is the mean of the last K validations (0: not reported).",
        )
        parser.add_argument(
            "--ci_unit",
            type=Literal["image", "group"],
            default="image",
            help="What the report's bootstrap resamples: images, or groups of images (videos, cities).",
        )
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
            "--overwrite",
            type=bool,
            default=False,
            help="predict: replace prediction files that --predict_dir already holds (refused otherwise).",
        )
        parser.add_argument(
            "--predict_color_dir",
            type=str | None,
            default=None,
            help="predict: write the colour pictures into this folder instead of --predict_dir (implies them).",
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        self.given_config = self.config.clone()  # what `resolve_last_checkpoint` compares with a checkpoint

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        for key in ("report_path", "ci_resamples", "ci_seed", "ci_unit", "last_k"):
            self.save_config_kwargs[key] = config.get(key)
        if self.subcommand in ("validate", "test", "predict") and config.get("data.train") is not None:
            # evaluation never reads the training set (the checkpoint brings what was learned from it)
            config["data.train"] = None
        if self.subcommand in ("validate", "test", "predict") and config.get("trainer.logger") in (False, []):
            # No run directory: one config per subcommand, replaced like report.json (see the module docs).
            self.save_config_kwargs.update(config_filename=f"config.{self.subcommand}.yaml", overwrite=True)
        if self.subcommand == "predict" and config.get("predict_dir") and config.get("return_predictions") is None:
            config["return_predictions"] = False  # the writer has them; holding every map could exhaust memory

    def instantiate_classes(self) -> None:
        try:
            config = self.config[self.subcommand] if self.subcommand else self.config
            self.resolve_last_checkpoint(config)  # before anything is built or loaded
            self.check_run(config)
            super().instantiate_classes()
            if config.get("ci_unit") == "group" and config.get("ci_resamples") and self.subcommand != "predict":
                # the data sets are built: `--ci_unit group` without 2 groups stops here, in one line
                ReportWriter.check_groups(
                    getattr(self.datamodule, "test_set" if self.subcommand == "test" else "val_set")
                )
        except CONFIG_ERRORS as error:
            if not self.short_errors:
                raise
            fail(f"tailseg {self.subcommand}" if self.subcommand else "tailseg", short_error(str(error)))

    def resolve_last_checkpoint(self, config) -> None:
        """`--ckpt_path last`: the newest readable checkpoint under the root; for `fit`, the checkpoint to resume
        (`last` or a path) must have been trained with this config (see the module docs)."""
        path = config.get("ckpt_path")
        if path is None or "://" in str(path) or path in ("best", "hpc", "registry"):
            return  # Lightning's own names and remote paths (fsspec) are Lightning's to resolve and check
        if path == "last":
            root = config.get("trainer.default_root_dir") or os.getcwd()
            folders = [root, *checkpoint_folders(config.get("trainer.callbacks"))]
            path, recorded = newest_readable_checkpoint(folders)
            config["ckpt_path"] = path
            if path is None and self.subcommand != "fit":
                raise ValueError(f"ckpt_path: 'last' found no readable checkpoint under {', '.join(map(str, folders))}")
            print(f"--ckpt_path last: {path or f'no checkpoint under {root}, starting afresh'}")
            advice = (
                "to start a new run of this config give it another --trainer.default_root_dir, to resume an older "
                "checkpoint of this config give it as --ckpt_path PATH, to resume that run use its own config.yaml"
            )
        else:
            if not Path(path).is_file():
                raise ValueError(f"ckpt_path: {path} is not a file")  # before anything is built or loaded
            if self.subcommand != "fit":
                return
            try:
                recorded = identity.checkpoint_identity(path)
            except Exception as error:  # noqa: BLE001 (torch.load raises many kinds on a damaged file)
                raise ValueError(f"ckpt_path: {path} cannot be read ({type(error).__name__}: {error})") from None
            advice = "--ckpt_path resumes a run exactly: give the config it was trained with (its run's config.yaml)"
        if path is None or self.subcommand != "fit":
            return
        # The config as given: Lightning has put an explicit checkpoint's hyperparameters into `model` since.
        given = self.given_config[self.subcommand]
        current = json.loads(subcommand_parser(self, self.subcommand).dump(given, format="json", skip_none=False))
        if given.get("seed_everything") is True and recorded is not None:
            # a seed drawn at each start: the run continues with the checkpoint's (`TrainingStream`)
            seed = (recorded.get("method_fields") or {}).get("seed_everything")
            current["seed_everything"] = config["seed_everything"] = seed
        check_identity(path, recorded, current, advice)

    def check_run(self, config) -> None:
        """Refuse, before anything is built, runs that could only fail or mislead (ValueError naming the field)."""
        sub = self.subcommand
        if sub == "test" and config.get("data.test") is None:
            raise ValueError(
                "data.test: `tailseg test` needs a test data set; set data.test in the config or give it on the command "
                "line, e.g. --data.test.class_path tailseg.data.ImageMaskFolder --data.test.init_args.root DIR "
                "--data.test.init_args.class_names '[...]'"
            )
        if sub in ("validate", "test") and config.get("ckpt_path") is None:
            raise ValueError(
                f"ckpt_path: `tailseg {sub}` without a checkpoint would score random weights; give "
                "--ckpt_path PATH.ckpt, or --ckpt_path last for the newest checkpoint under trainer.default_root_dir"
            )
        root = Path(config.get("trainer.default_root_dir") or os.getcwd())
        if "://" in str(config.get("trainer.default_root_dir")):
            return  # a remote root (fsspec) is the file system's to check
        existing = next(folder for folder in (root.absolute(), *root.absolute().parents) if folder.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = f"{existing} is not a folder" if not existing.is_dir() else f"{existing} is not writable"
            raise ValueError(f"trainer.default_root_dir: {root}: the run folder cannot be created there ({why})")

    def check_built(self, writer: PredictionWriter | None) -> None:
        """Refuse, once the model and the data are built and before the trainer (its run folder): a checkpoint of
        another number of classes than the data, a `model.init_from` that does not fit the network (a `fit` that
        resumes no checkpoint: read and checked here, loaded when fitting starts), a `--predict_dir` (`writer`)
        that would overwrite files, and data that `SegmentationDataModule.setup` of the stage rejects (every
        sample read once, cached; a class missing from the training masks; 0 training batches)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        path = config.get("ckpt_path")
        if path is not None and "://" not in str(path) and Path(path).is_file():
            classes = checkpoint_classes(path)
            if classes is not None and classes != self.datamodule.num_classes:
                raise ValueError(
                    f"ckpt_path: {path} holds a model of {classes} classes, but the data has "
                    f"{self.datamodule.num_classes} ({', '.join(self.datamodule.class_names)})"
                )
        if self.subcommand == "fit" and path is None and isinstance(self.model, SegmentationModel):
            self.model.prepare_init_from()
        if self.subcommand == "predict" and writer is not None:
            dm = self.datamodule
            sets = [ds for ds in (dm.train_set, dm.val_set, dm.test_set, dm.predict_set) if ds is not None]
            check_prediction_folders(writer, dm.predict_set, sets, overwrite=bool(config.get("overwrite")))
        if self.subcommand in SUBCOMMANDS_OF_TRAINER and isinstance(self.datamodule, SegmentationDataModule):
            self.datamodule.setup(self.subcommand)  # the trainer sets it up again: nothing is done twice

    def instantiate_trainer(self, **kwargs):
        config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("trainer") or {}
        writer = self.prediction_writer()
        self.check_built(writer)
        extra = []
        if config.get("logger") in (None, True) and not config.get("fast_dev_run"):
            root = config.get("default_root_dir") or os.getcwd()
            if self.subcommand in ("validate", "test", "predict"):  # evaluations stay out of the training runs
                kwargs["logger"] = default_loggers(
                    Path(root) / "evaluations" / self.subcommand, f"{Path(root).resolve().name}-{self.subcommand}"
                )
            else:
                kwargs["logger"] = default_loggers(root)
            if any(isinstance(logger, WandbLogger) for logger in kwargs["logger"]):
                extra.append(WandbMedia())  # per-class IoU table and chart, fairness, masks of a few images
        if writer is not None:
            extra.append(writer)
        if self.subcommand == "fit" and not config.get("fast_dev_run"):
            extra.append(PreemptionCheckpoint())  # last.ckpt on SIGTERM or an exception
        if extra:
            callbacks = kwargs.get("callbacks", config.get("callbacks"))
            callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = [*callbacks, *extra]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """The end of fit is the final model: `ReportWriter.finish_fit` saves and, if needed, validates it."""
        if self.trainer.fast_dev_run:
            return
        for callback in self.trainer.callbacks:
            if isinstance(callback, ReportWriter):
                callback.finish_fit(self.trainer, self.model)

    def prediction_writer(self) -> PredictionWriter | None:
        """The `PredictionWriter` that `--predict_dir` asks for (None without it)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if not config.get("predict_dir"):
            return None
        return PredictionWriter(
            config["predict_dir"], color=bool(config.get("predict_color")), color_dir=config.get("predict_color_dir")
        )


class _Parsed(Exception):
    """Stops `_ParseOnly` once the command line is parsed; carries the CLI (its parser)."""

    def __init__(self, cli: TailsegCLI) -> None:
        super().__init__("parsed")
        self.cli = cli


class _ParseOnly(TailsegCLI):
    """The CLI up to the parsed config: nothing is built (`resolved_config`)."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self)


_PARSER: list[TailsegCLI] = []  # the `_ParseOnly` CLI of `resolved_config`, built once per process


def resolved_config(args: list[str]) -> dict:
    """The resolved config of the command line `tailseg ARGS` (a subcommand first) as `report.json`'s `config` and
    the checkpoints' identity have it, without building or running anything (a fraction of a second).

    Raises:
        jsonargparse.ArgumentError: a config that does not parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightningCLI's about args and sys.argv both given; jsonargparse's
        if not _PARSER:
            try:
                _ParseOnly(args=args, parser_kwargs={"exit_on_error": False})
            except _Parsed as parsed:
                _PARSER.append(parsed.cli)
        cli = _PARSER[0]
        config = cli.parser.parse_args(args)
        subcommand = config["subcommand"]
        return json.loads(subcommand_parser(cli, subcommand).dump(config[subcommand], format="json", skip_none=False))


def checkpoint_folders(callbacks) -> list[str]:
    """The `dirpath` of every `ModelCheckpoint` among the config's `trainer.callbacks` that sets one."""
    entries = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    folders = []
    for entry in entries:
        init = getattr(entry, "init_args", None) if not isinstance(entry, dict) else entry.get("init_args")
        path = str(getattr(entry, "class_path", None) or (entry.get("class_path") if isinstance(entry, dict) else ""))
        dirpath = init.get("dirpath") if init is not None else None
        if path.endswith("ModelCheckpoint") and dirpath:
            folders.append(str(dirpath))
    return folders


def checkpoints_newest_first(folders: list[str]) -> list[Path]:
    """The checkpoints under `folders`, newest (by modification time) first: `<folder>/version_*/checkpoints/*.ckpt`
    (runs with the default loggers), `<folder>/checkpoints/*.ckpt` (the logger off) or `<folder>/*.ckpt` (a
    `ModelCheckpoint` folder)."""
    patterns = ("version_*/checkpoints/*.ckpt", "checkpoints/*.ckpt", "*.ckpt")
    found = {path for folder in folders for pattern in patterns for path in Path(folder).glob(pattern)}
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def newest_readable_checkpoint(folders: list[str]) -> tuple[str | None, dict | None]:
    """The newest checkpoint under `folders` that can be read, and its identity (`tailseg.identity.checkpoint_identity`); (None, None) if
    there is none. A newer one that cannot be read (e.g. cut short by a full disk) is passed over with a warning."""
    for path in checkpoints_newest_first(folders):
        try:
            return str(path), identity.checkpoint_identity(path)
        except Exception as error:  # noqa: BLE001 (torch.load raises many kinds on a damaged file)
            rank_zero_warn(
                f"--ckpt_path last: passing over {path}, it cannot be read ({type(error).__name__}: {error})"
            )
    return None, None


def check_identity(path: str, recorded: dict | None, current: dict, advice: str) -> None:
    """Refuse to resume checkpoint `path` (identity `recorded`) with the resolved config `current` when they are
    different experiments (`tailseg.identity`); a checkpoint without an identity is resumed with a warning.

    Raises:
        ValueError: one line naming the checkpoint, the differing fields and `advice`.
    """
    if recorded is None:
        rank_zero_warn(
            f"{path} records no config fingerprint (written before tailseg stored one): resuming it without "
            "checking that it was trained with this config"
        )
        return
    if not identity.same_experiment(recorded, current):
        changed = identity.describe_differences(
            identity.recorded_fields(recorded) or {}, identity.method_fields(current)
        )
        raise ValueError(f"ckpt_path: {path} was trained with another config: {changed or 'unknown fields'}; {advice}")


def checkpoint_classes(path: str | os.PathLike) -> int | None:
    """The `num_classes` a checkpoint's model was built with (its saved hyper-parameters), None if it does not say.

    The file is memory-mapped, so the weights are not read."""
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # not a zip file (the legacy format): no memory map
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any reason a file is not a checkpoint
        raise ValueError(
            f"ckpt_path: {path} cannot be read as a checkpoint ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"ckpt_path: {path} is not a Lightning checkpoint")
    classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
    return int(classes) if classes is not None else None


def default_loggers(root: str | os.PathLike, name: str | None = None) -> list:
    """A CSV logger that owns a fresh `root/version_<N>` run directory, and W&B inside it.

    Args:
        root: The folder of the runs.
        name: The first part of the W&B run's name (default: the folder's name), `<name>-version_<N>`.
    """
    csv = CSVLogger(save_dir=str(root), name="")
    run_dir = Path(csv.log_dir)
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return [csv]
    _ = csv.experiment  # claims the (empty) run directory before W&B writes into it
    wandb = WandbLogger(
        project=os.environ.get("WANDB_PROJECT", "tailseg"),
        name=f"{name or Path(root).resolve().name}-{run_dir.name}",
        save_dir=str(run_dir),
        mode=mode,
    )
    return [csv, wandb]


def main(args: list[str] | None = None) -> TailsegCLI | None:
    """Entry point of the `tailseg` console script and `python -m tailseg`.

    Args:
        args: The command line after `tailseg`. None (the console script) reads `sys.argv` and reports
            configuration errors as one line (unless `TAILSEG_TRACEBACK` is set); a list, from Python,
            lets them propagate as exceptions.

    Returns:
        For a list of `args` and a training or evaluation subcommand, the CLI that ran it (its `model`,
        `datamodule` and `trainer` are what the config built); otherwise None.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv:
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help"):
        print(usage())
        return
    if not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        fail("tailseg", f"unknown subcommand {argv[0]!r} (choose from {', '.join(SUBCOMMANDS)}; see tailseg --help)")
    if argv[0] == "describe":
        from tailseg.describe import describe_main

        describe_main(argv[1:], short_errors=args is None and os.environ.get("TAILSEG_TRACEBACK", "") in ("", "0"))
        return
    if argv[0] == "compare":
        from tailseg.compare import compare_main

        compare_main(argv[1:])
        return
    if argv[0] == "matrix":
        from tailseg.matrix import matrix_main

        matrix_main(argv[1:])
        return
    if args is None:  # LightningCLI reads sys.argv itself (and warns when given both)
        try:
            TailsegCLI(short_errors=os.environ.get("TAILSEG_TRACEBACK", "") in ("", "0"))
        except SIGTERMException:
            raise SystemExit(PREEMPTED) from None  # the state is saved: a job script can requeue on this status
    else:
        return TailsegCLI(args=argv)
    return None


if __name__ == "__main__":
    main()
