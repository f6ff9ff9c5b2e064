"""Every Lightning behaviour tailseg relies on (`tailseg.lightning_compat`), asserted on tiny real `Trainer` runs, so
that a Lightning upgrade that changes one fails here, by name."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Sampler, TensorDataset

from tailseg import lightning_compat as compat
from tailseg.cli import CKPT_PATH_HELP, main

ROOT = Path(__file__).resolve().parents[1]
BATCHES = 3  # per epoch


class Tiny(pl.LightningModule):
    """A linear model on 4 features; `on_batch_start(trainer)`, when given, runs in `on_train_batch_start`."""

    def __init__(self, on_batch_start=None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.on_batch_start = on_batch_start

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.on_batch_start is not None:
            self.on_batch_start(self.trainer)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _data(batches: int = BATCHES, sampler: Sampler | None = None, workers: int = 0) -> DataLoader:
    dataset = TensorDataset(torch.randn(batches * 2, 4))
    if sampler is not None:
        return DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    return DataLoader(dataset, batch_size=2, num_workers=workers)


def _trainer(root: Path, steps: int, callbacks=(), logger=False, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, callbacks=list(callbacks),
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kwargs)  # fmt: skip


class Progress(pl.Callback):
    """Records (hook, epoch, batch_idx, batches_done_in_epoch, step_unfinished, last_saved_step) at each hook."""

    def __init__(self, checkpoint: ModelCheckpoint) -> None:
        self.checkpoint, self.rows = checkpoint, []

    def _record(self, hook: str, trainer: pl.Trainer, batch_idx: int) -> None:
        self.rows.append((hook, trainer.current_epoch, batch_idx, compat.batches_done_in_epoch(trainer),
                          compat.step_unfinished(trainer), compat.last_saved_step(self.checkpoint)))  # fmt: skip

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record("start", trainer, batch_idx)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._record("step", trainer, -1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record("end", trainer, batch_idx)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A 5-step run (3 batches an epoch) saving after every step, and a run resumed from its step 2 (inside epoch 0)."""
    root = tmp_path_factory.mktemp("compat")
    out = {}
    for name, ckpt in (("full", None), ("resumed", root / "full" / "step=2.ckpt")):
        checkpoint = ModelCheckpoint(dirpath=root / name, filename="{step}", every_n_train_steps=1, save_top_k=-1)
        progress = Progress(checkpoint)
        trainer = _trainer(root, 5, [progress, checkpoint])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(Tiny(), _data(), ckpt_path=ckpt)
        out[name] = {"rows": progress.rows, "trainer": trainer, "checkpoint": checkpoint, "warnings": caught}
    return out


def test_the_installed_lightning_is_tested_and_pyproject_pins_that_range():
    pinned = re.search(r'"pytorch-lightning([^"]*)"', (ROOT / "pyproject.toml").read_text())[1]
    assert pinned == compat.TESTED_LIGHTNING
    assert compat.check_lightning_version()
    assert compat.check_lightning_version("2.6.6")
    for untested in ("2.7.0", "3.0.0", "2.3.3"):
        with pytest.warns(compat.UntestedLightningWarning, match=f"{re.escape(untested)} is installed"):
            assert not compat.check_lightning_version(untested)


def test_batches_done_counts_finished_steps_of_the_epoch(runs):
    """Before a step and inside it the current batch is not counted; from its on_train_batch_end on it is."""
    rows = [(hook, epoch, done) for hook, epoch, _, done, _, _ in runs["full"]["rows"]]
    expected = []
    for step in range(5):
        epoch, k = divmod(step, BATCHES)
        expected += [("start", epoch, k), ("step", epoch, k), ("end", epoch, k + 1)]
    assert rows == expected


def test_batches_done_is_restored_from_a_checkpoint(runs):
    """Resumed from step 2 (2 batches of epoch 0 done, saved in on_train_batch_end): the count goes on from 2."""
    rows = [(hook, epoch, k, done) for hook, epoch, k, done, _, _ in runs["resumed"]["rows"]]
    assert rows[:3] == [("start", 0, 2, 2), ("step", 0, -1, 2), ("end", 0, 2, 3)]
    assert rows[3] == ("start", 1, 0, 0)


def test_a_step_is_unfinished_only_inside_it(runs):
    unfinished = {(hook, flag) for hook, _, _, _, flag, _ in runs["full"]["rows"]}
    assert unfinished == {("start", False), ("step", True), ("end", False)}


def test_last_saved_step_is_the_step_of_the_last_checkpoint_written(runs):
    """ModelCheckpoint saves after the other callbacks' on_train_batch_end: there it still names the step before."""
    saved = [(hook, last) for hook, _, _, _, _, last in runs["full"]["rows"] if hook != "step"]
    assert saved == [(hook, step) for step in range(5) for hook in ("start", "end")]
    assert compat.last_saved_step(runs["full"]["checkpoint"]) == runs["full"]["trainer"].global_step == 5


def test_lightning_warns_that_a_loader_without_state_is_not_resumable_with_this_text(runs):
    messages = [str(w.message) for w in runs["resumed"]["warnings"]]
    assert any(m.startswith(compat.NOT_RESUMABLE_WARNING) for m in messages), messages
    assert not any(m.startswith(compat.NOT_RESUMABLE_WARNING) for m in map(str, runs["full"]["warnings"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.ignore_not_resumable_warning()
        warnings.warn(
            next(m for m in messages if m.startswith(compat.NOT_RESUMABLE_WARNING)), UserWarning, stacklevel=1
        )
    assert caught == []


def test_the_logging_step_is_the_one_set(tmp_path):
    """`set_logging_step` at a batch's start: the rows that batch logs are written under that step."""
    logger = CSVLogger(tmp_path, name="", version=0)
    model = Tiny(on_batch_start=lambda trainer: compat.set_logging_step(trainer, 100 + trainer.global_step))
    _trainer(tmp_path, 3, logger=logger, log_every_n_steps=1).fit(model, _data())
    with open(tmp_path / "version_0" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]
    assert steps == [100, 101, 102]


class Recording(Sampler):
    """A batch sampler of `batches` batches of 2 that records, per draw, how many training steps had finished."""

    def __init__(self, batches: int, finished: list[int]) -> None:
        self.batches, self.finished, self.draws = batches, finished, []

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for k in range(self.batches):
            self.draws.append(self.finished[0])
            yield [2 * k, 2 * k + 1]


class CountSteps(pl.Callback):
    def __init__(self, finished: list[int]) -> None:
        self.finished = finished

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.finished[0] += 1


@pytest.mark.parametrize("workers", [0, 1], ids=lambda w: f"{w}-workers")
def test_the_training_sampler_is_drawn_prefetch_depth_batches_ahead(workers, tmp_path):
    """The draw of step k happens after exactly max(0, k - depth) steps finished (the tilted sampler's `lag`)."""
    finished = [0]
    sampler = Recording(8, finished)
    _trainer(tmp_path, 8, [CountSteps(finished)]).fit(Tiny(), _data(8, sampler, workers))
    depth = compat.training_prefetch_depth(workers)
    assert depth == 2 * workers
    assert sampler.draws == [max(0, k - depth) for k in range(8)]


def _help(subcommand: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([subcommand, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_ckpt_path_help_says_what_tailseg_does(subcommand, capsys):
    """The subcommands' parsers (`subcommand_parsers`) hold `--ckpt_path`, whose help tailseg replaces."""
    assert " ".join(CKPT_PATH_HELP[subcommand].split()) in _help(subcommand, capsys)


class FailInStep(pl.Callback):
    """Raises inside the training step of global step 2; in `on_exception` records the run's batch progress
    (ready, started, processed) before and after `undo_unfinished_batch`."""

    def __init__(self) -> None:
        self.before = self.after = None

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == 2:
            raise RuntimeError("inside the step")

    def on_exception(self, trainer, pl_module, exception) -> None:
        def counts():
            p = trainer.fit_loop.epoch_loop.batch_progress
            return [(t.ready, t.started, t.processed) for t in (p.total, p.current)]

        self.before = counts()
        compat.undo_unfinished_batch(trainer)
        self.after = counts()


def test_a_failed_step_has_counted_its_batch_ready_and_the_undo_takes_it_back(tmp_path):
    """The counts `undo_unfinished_batch` corrects: the failed batch (the third, global step 2, epoch 0) is ready and
    started but not processed; after the undo all three say the two finished batches."""
    spy = FailInStep()
    with pytest.raises(RuntimeError, match="inside the step"):
        _trainer(tmp_path, 5, [spy]).fit(Tiny(), _data())
    assert spy.before == [(3, 3, 2), (3, 3, 2)]
    assert spy.after == [(2, 2, 2), (2, 2, 2)]
