"""Every use tailseg makes of Lightning's internals, in one place, checked against the tested versions.

Exact resume (`tailseg.resume`), the pre-emption checkpoint and the final checkpoint of a fit read or set
a few things that are not Lightning's public API, or rely on behaviour that Lightning does not document.
They are all here, each behind a function, and `tests/test_lightning_compat.py` asserts each behaviour on
a tiny real `Trainer` run, so that an upgrade that changes one fails there, by name:

| function | what it relies on |
| --- | --- |
| `batches_done_in_epoch` | `fit_loop.epoch_loop.batch_progress.current.processed`: the batches of the current epoch whose training step finished, the current one included from its `on_train_batch_end` on (so also in a checkpoint written there); restored from a checkpoint |
| `step_unfinished` | `current.started > current.processed` between a batch's `on_train_batch_start` hooks and the end of its training step (e.g. in `on_exception` after a failure inside the step) |
| `undo_unfinished_batch` | `batch_progress.total` / `.current`: a step that failed has counted its batch as `ready` and `started` but not `processed`; Lightning restores `total.ready` as saved and counts `val_check_interval` with it (`total_batch_idx`), so a checkpoint that keeps those counts moves every later validation one batch earlier (Lightning issues #19367, #19815) |
| `set_logging_step` | `fit_loop.epoch_loop._batches_that_stepped`: the step the loggers write rows under |
| `last_saved_step` | `ModelCheckpoint._last_global_step_saved`: the global step of the last checkpoint it wrote |
| `training_prefetch_depth` | how many batches of a training epoch have been drawn from the sampler before a step starts: the DataLoader's `prefetch_factor` (2 by default) × `num_workers`, and nothing more from Lightning, whose training fetcher prefetches no batch from a loader that has a length |
| `NOT_RESUMABLE_WARNING`, `ignore_not_resumable_warning` | the text of the warning Lightning gives on a resume inside an epoch when the training DataLoader has no `state_dict` (tailseg's DataModule resumes the stream itself, `tailseg.resume`, and says so in its own line) |
| `subcommand_parsers`, `subcommand_parser` | `LightningCLI._subcommand_parsers`: the parser of each subcommand (fit, validate, test, predict) |

The tested versions are `TESTED_LIGHTNING` (the same range as `pyproject.toml`'s requirement). Importing
this module with a `pytorch-lightning` outside it warns (`UntestedLightningWarning`) once: tailseg may
still work, and `tests/test_lightning_compat.py` says whether it does.
"""

from __future__ import annotations

import re
import warnings
from importlib.metadata import PackageNotFoundError, version

import pytorch_lightning as pl
from packaging.specifiers import SpecifierSet
from pytorch_lightning.callbacks import ModelCheckpoint

#: The pytorch-lightning versions this module (and `pyproject.toml`) is tested with.
TESTED_LIGHTNING = ">=2.4,<2.7"

#: The start of Lightning's warning on a resume inside an epoch with a DataLoader that has no `state_dict`.
NOT_RESUMABLE_WARNING = "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is"

#: The DataLoader's default `prefetch_factor`: batches each worker loads ahead.
DATALOADER_PREFETCH_FACTOR = 2


class UntestedLightningWarning(UserWarning):
    """The installed pytorch-lightning is outside `TESTED_LIGHTNING`."""


def check_lightning_version(installed: str | None = None) -> bool:
    """Whether `installed` (default: the installed pytorch-lightning) is in `TESTED_LIGHTNING`; warns if not.

    Args:
        installed: A version string; None reads the installed package's.

    Returns:
        True inside the tested range.
    """
    if installed is None:
        try:
            installed = version("pytorch-lightning")
        except PackageNotFoundError:
            installed = pl.__version__
    if SpecifierSet(TESTED_LIGHTNING).contains(installed, prereleases=True):
        return True
    warnings.warn(
        f"tailseg is tested with pytorch-lightning{TESTED_LIGHTNING}, but {installed} is installed: exact resume, "
        "the pre-emption checkpoint and the final checkpoint rely on Lightning internals (tailseg.lightning_compat); "
        "run tests/test_lightning_compat.py to check them, or install a tested version",
        UntestedLightningWarning,
        stacklevel=2,
    )
    return False


check_lightning_version()


def batches_done_in_epoch(trainer: pl.Trainer) -> int:
    """How many batches of the current training epoch finished their training step.

    In `on_train_batch_end` hooks (and so in the checkpoints `ModelCheckpoint` writes there) the current batch is
    counted; inside a training step it is not. After a restore the count continues from the checkpoint's.
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def step_unfinished(trainer: pl.Trainer) -> bool:
    """Whether a training step has started (its `on_train_batch_start` hooks ran) and not finished."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return progress.started > progress.processed


def undo_unfinished_batch(trainer: pl.Trainer) -> None:
    """Count the batch of a step that failed as not begun: `ready` and `started` of the batch progress (the epoch's
    and the run's) back to `processed`, the batches whose training step finished.

    A checkpoint written after a failure inside a step (`PreemptionCheckpoint`) then holds the counts of the step's
    start, and the resumed run, which trains that batch again, validates at the steps of the uninterrupted run
    (Lightning schedules `val_check_interval` by `total.ready`, which it restores as saved)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for tracker in (progress.total, progress.current):
        tracker.ready = tracker.started = tracker.processed


def set_logging_step(trainer: pl.Trainer, step: int) -> None:
    """Make the loggers write the next rows under `step` (Lightning counts it itself: the batches that stepped)."""
    loop = trainer.fit_loop.epoch_loop
    if loop._batches_that_stepped != step:
        loop._batches_that_stepped = int(step)


def last_saved_step(callback: ModelCheckpoint) -> int:
    """The global step of the last checkpoint `callback` wrote (0 before any)."""
    return int(callback._last_global_step_saved)


def training_prefetch_depth(num_workers: int, prefetch_factor: int | None = None) -> int:
    """How many batches ahead of the step being trained the training sampler is drawn.

    When step k of an epoch starts, the sampler has yielded the batches of steps up to k + depth: the DataLoader
    keeps `prefetch_factor` × `num_workers` batches in flight (none without workers), and Lightning's training
    fetcher adds none for a loader with a length (tailseg's always have one).

    Args:
        num_workers: The DataLoader's worker processes.
        prefetch_factor: The DataLoader's `prefetch_factor` (None: its default).
    """
    if num_workers <= 0:
        return 0
    return int(num_workers) * int(DATALOADER_PREFETCH_FACTOR if prefetch_factor is None else prefetch_factor)


def ignore_not_resumable_warning() -> None:
    """Silence Lightning's warning that a resume inside an epoch is unreliable with a DataLoader without state.

    tailseg's DataModule resumes the training stream itself (`tailseg.resume`) and says so in its own line.
    """
    warnings.filterwarnings("ignore", message=re.escape(NOT_RESUMABLE_WARNING))


def subcommand_parsers(cli) -> dict:
    """{subcommand: its parser} of a `LightningCLI` built with subcommands (empty without)."""
    return dict(getattr(cli, "_subcommand_parsers", {}))


def subcommand_parser(cli, subcommand: str | None):
    """The parser of `subcommand` (the main parser for None), as `LightningCLI._parser` returns it."""
    return cli.parser if subcommand is None else subcommand_parsers(cli)[subcommand]
