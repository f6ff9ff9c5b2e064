"""Exact resume from any step: a run stopped at step k and resumed with --ckpt_path ends with the weights,
optimizer, sampler / tilt state and logged metrics of the uninterrupted run, bit for bit on the CPU.

Every case trains 10 steps (8 images, batch 2: 4 steps an epoch, so the run ends inside epoch 2) through
the real CLI, saving a checkpoint after every step, and resumes from a step inside an epoch and from an
epoch's last step (written before that epoch's end, i.e. before its training IoU reached the end-of-epoch
hooks), for the uniform, the performance-aware (with ClassIoUFeedback) and the tilted class sampler
(Stochastic TCE), with 0, 1 and 2 loader workers. The stop itself is also exercised: an exception inside a
step and SIGTERM, both caught by `PreemptionCheckpoint`.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import tiny_synthetic_args
from tailseg.cli import PREEMPTED, main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    name: ROOT / "experiments" / "synthetic" / f"{name}.yaml"
    for name in ("base", "base_plus", "stce", "rare_class", "repeat_factor", "blv")
}
STEPS = 10


class FailAtStep(pl.Callback):
    """Raises inside the training step of global step `step` (after the forward pass has begun)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated failure at step {self.step}")


class TermAtStep(pl.Callback):
    """Sends this process SIGTERM during step `step`, as a cluster pre-empting the job would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


EVERY_STEP = ("--trainer.callbacks.every_n_train_steps", "1")


def _fit(config: str, root: Path, workers: int, *extra: str, when: tuple[str, ...] = EVERY_STEP) -> None:
    """Fit 10 steps (unless `extra` says otherwise) with a checkpoint `step=<k>.ckpt` saved as `when` says."""
    main(["fit", "--config", str(CONFIGS[config]), *tiny_synthetic_args(), "--data.num_workers", str(workers),
          "--trainer.max_steps", str(STEPS), "--trainer.max_epochs", "-1", "--trainer.check_val_every_n_epoch", "1",
          "--trainer.log_every_n_steps", "1", "--trainer.deterministic", "true", "--trainer.enable_progress_bar",
          "false", "--trainer.default_root_dir", str(root), "--trainer.callbacks+=ModelCheckpoint", *when,
          "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}", *extra])  # fmt: skip


def _checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step={step}.ckpt"


def _final_state(run: Path) -> dict:
    """The state of the run's final checkpoint (the one of the highest step; `last.ckpt` when no other has it)."""
    checkpoints = [torch.load(p, map_location="cpu", weights_only=False) for p in (run / "checkpoints").glob("*.ckpt")]
    ckpt = max(checkpoints, key=lambda c: c["global_step"])
    return {"step": ckpt["global_step"], "weights": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"][0]["state"],
            "stream": ckpt["SegmentationDataModule"]["stream"]["sampler"]}  # fmt: skip


def _metrics_after(run: Path, step: int) -> list[dict]:
    """Logged rows of steps after `step`, without empty cells (the two runs log the same keys)."""
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [row for row in rows if int(row["step"]) > step]


def _assert_same_run(full: Path, resumed: Path, step: int) -> None:
    a, b = _final_state(full), _final_state(resumed)
    assert a["step"] == b["step"] and a["weights"].keys() == b["weights"].keys()
    different = [k for k in a["weights"] if not torch.equal(a["weights"][k], b["weights"][k])]
    assert not different, f"tensors differ after resuming from step {step}: {different[:5]}"
    assert all(torch.equal(a["optimizer"][i]["momentum_buffer"], b["optimizer"][i]["momentum_buffer"])
               for i in a["optimizer"])  # fmt: skip
    assert json.dumps(a["stream"]) == json.dumps(b["stream"])  # sampler state: seed, epoch, IoU or log L̃ (NaN-safe)
    assert _metrics_after(full, step) == _metrics_after(resumed, step) != []


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1, 2], ids=lambda w: f"{w}-workers")
@pytest.mark.parametrize("config", ["base", "base_plus", "stce"])
def test_resume_from_any_step_reaches_the_uninterrupted_run(config, workers, tmp_path, one_thread):
    _fit(config, tmp_path / "full", workers)
    full = tmp_path / "full" / "version_0"
    assert (full / "checkpoints" / f"step={STEPS}.ckpt").is_file()
    # step 6: inside epoch 1; step 4: epoch 0's last step, saved before that epoch's end-of-epoch hooks
    for version, step in enumerate((6, 4), start=1):
        _fit(config, tmp_path / "full", workers, "--ckpt_path", str(_checkpoint(full, step)))
        _assert_same_run(full, tmp_path / "full" / f"version_{version}", step)


@pytest.mark.parametrize("stop", ["checkpoint", "exception", "sigterm"])
def test_resume_keeps_the_validation_schedule_of_val_check_interval(stop, tmp_path, one_thread):
    """Validation every 3 training batches across epochs (`val_check_interval`, `check_val_every_n_epoch: null`, as
    the CamVid configs): a run resumed inside an epoch - from a step's checkpoint, from the checkpoint of a failure
    inside a step, from the one written on SIGTERM - validates at the same steps as the uninterrupted run.

    Lightning counts that schedule with its batch progress, whose `completed` count in a checkpoint written after a
    batch's training step can lag the batch by one (Lightning issues #19367, #19815); restored as it is, every
    resume would move the later validations one batch earlier (`tailseg.lightning_compat.align_batch_progress`)."""
    interval = ("--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", "3")
    _fit("base", tmp_path / "full", 0, *interval)
    full = tmp_path / "full" / "version_0"
    val_steps = [int(row["step"]) for row in _metrics_after(full, -1) if "val/miou" in row]
    assert val_steps == [2, 5, 8, 10], val_steps  # after batches 3, 6, 9 (logged at step - 1) and the end of fit
    if stop == "checkpoint":
        ckpt, step = _checkpoint(full, 5), 5
    else:
        stopper = ["--trainer.callbacks+=test_resume.FailAtStep" if stop == "exception" else
                   "--trainer.callbacks+=test_resume.TermAtStep", "--trainer.callbacks.step", "5"]  # fmt: skip
        with pytest.raises(BaseException) as stopped:  # RuntimeError, or Lightning's SIGTERMException
            _fit("base", tmp_path / "part", 0, *interval, *stopper)
        assert type(stopped.value).__name__ == ("RuntimeError" if stop == "exception" else "SIGTERMException")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ckpt = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
        step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    _fit("base", tmp_path / "full", 0, *interval, "--ckpt_path", str(ckpt))
    _assert_same_run(full, tmp_path / "full" / "version_1", step)


@pytest.mark.parametrize("config", ["rare_class", "repeat_factor"])
def test_the_frequency_samplers_resume_exactly(config, tmp_path, one_thread):
    """The peers' samplers keep the contract: a run resumed inside an epoch reaches the uninterrupted one."""
    _fit(config, tmp_path / "full", 1)
    full = tmp_path / "full" / "version_0"
    _fit(config, tmp_path / "full", 1, "--ckpt_path", str(_checkpoint(full, 6)))
    _assert_same_run(full, tmp_path / "full" / "version_1", 6)


def test_the_stream_state_names_the_position_in_the_epoch(tmp_path, one_thread):
    _fit("base_plus", tmp_path, 0, "--trainer.max_steps", "6")
    state = torch.load(_checkpoint(tmp_path / "version_0", 6), map_location="cpu", weights_only=False)
    stream = state["SegmentationDataModule"]["stream"]
    assert (stream["epoch"], stream["position"]) == (1, 2)  # 4 steps an epoch: 2 steps into epoch 1
    assert set(stream) == {"seed", "epoch", "position", "sampler", "rng"}
    assert len(stream["sampler"]["iou"]) == 19 and stream["sampler"]["drawn"]["epoch"] == 1
    assert "iou.train_iou.confusion" in state["state_dict"]  # the epoch's training confusion so far
    assert int(state["state_dict"]["iou.train_iou.confusion"].sum()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("step", [3, 5], ids=["last-step-of-an-epoch", "inside-an-epoch"])
def test_an_exception_inside_a_step_leaves_a_checkpoint_that_resumes_exactly(step, tmp_path, one_thread):
    """Step 3 is epoch 0's last: it fails before its training IoU is fed to the sampler."""
    _fit("base_plus", tmp_path / "full", 0)
    with pytest.raises(RuntimeError, match=f"simulated failure at step {step}"):
        _fit("base_plus", tmp_path / "part", 0, "--trainer.callbacks+=test_resume.FailAtStep",
             "--trainer.callbacks.step", str(step))  # fmt: skip
    last = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == step  # not done
    _fit("base_plus", tmp_path / "part", 0, "--ckpt_path", str(last))
    _assert_same_run(tmp_path / "full" / "version_0", tmp_path / "part" / "version_1", step)


@pytest.mark.slow
def test_sigterm_stops_after_the_step_and_resumes_exactly(tmp_path, one_thread):
    _fit("stce", tmp_path / "full", 0)
    with pytest.raises(BaseException) as stopped:  # Lightning's SIGTERMException
        _fit("stce", tmp_path / "part", 0, "--trainer.callbacks+=test_resume.TermAtStep",
             "--trainer.callbacks.step", "5")  # fmt: skip
    assert type(stopped.value).__name__ == "SIGTERMException"
    last = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6  # step 5 was finished
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _fit("stce", tmp_path / "part", 0, "--ckpt_path", str(last))
    _assert_same_run(tmp_path / "full" / "version_0", tmp_path / "part" / "version_1", 6)


@pytest.mark.slow
def test_resume_from_epoch_end_checkpoints(tmp_path, one_thread):
    """Checkpoints written at each epoch's end (`on_train_epoch_end`), with a loader worker."""
    when = ("--trainer.callbacks.every_n_epochs", "1", "--trainer.callbacks.save_on_train_epoch_end", "true")
    _fit("base_plus", tmp_path, 1, when=when)
    full = tmp_path / "version_0"
    for version, step in enumerate((4, 8), start=1):
        _fit("base_plus", tmp_path, 1, "--ckpt_path", str(_checkpoint(full, step)), when=when)
        _assert_same_run(full, tmp_path / f"version_{version}", step)


@pytest.mark.slow
def test_resume_with_loaders_reloaded_every_epoch(tmp_path, one_thread):
    """`max_epochs` set (the schedule builds the loader before the restore) and loaders rebuilt every epoch."""
    extra = (
        "--trainer.max_steps",
        "-1",
        "--trainer.max_epochs",
        "3",
        "--trainer.reload_dataloaders_every_n_epochs",
        "1",
    )
    _fit("stce", tmp_path, 1, *extra)
    full = tmp_path / "version_0"
    _fit("stce", tmp_path, 1, *extra, "--ckpt_path", str(_checkpoint(full, 6)))
    _assert_same_run(full, tmp_path / "version_1", 6)


@pytest.mark.slow
def test_resume_keeps_the_seed_of_a_run_seeded_at_random(tmp_path, one_thread):
    """`seed_everything: true` draws a new seed at every start; the resumed run keeps the checkpoint's."""
    _fit("base", tmp_path, 0, "--seed_everything", "true")
    full = tmp_path / "version_0"
    _fit("base", tmp_path, 0, "--seed_everything", "true", "--ckpt_path", str(_checkpoint(full, 6)))
    _assert_same_run(full, tmp_path / "version_1", 6)


@pytest.mark.slow
def test_sigterm_inside_a_gradient_accumulation_window_writes_no_checkpoint(tmp_path, one_thread):
    """With 2 batches a step, SIGTERM during the first batch of step 2 stops after it, half-way through the step:
    no checkpoint holds the summed gradients, so none is written (and the step checkpoints remain)."""
    with pytest.raises(BaseException) as stopped, pytest.warns(UserWarning, match="gradient-accumulation window"):
        _fit("base", tmp_path, 0, "--trainer.accumulate_grad_batches", "2",
             "--trainer.callbacks+=test_resume.TermAtStep", "--trainer.callbacks.step", "2")  # fmt: skip
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert type(stopped.value).__name__ == "SIGTERMException"
    checkpoints = sorted(p.name for p in (tmp_path / "version_0" / "checkpoints").iterdir())
    assert checkpoints == ["step=1.ckpt", "step=2.ckpt"]  # no last.ckpt


@pytest.mark.slow
def test_the_command_stopped_by_sigterm_exits_with_143_after_saving(tmp_path):
    """What a job script requeues on (`tailseg.cli.PREEMPTED`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-m", "tailseg", "fit", "--config", str(CONFIGS["base"]), *tiny_synthetic_args(),
         "--trainer.max_steps", "10", "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar",
         "false", "--trainer.callbacks+=test_resume.TermAtStep", "--trainer.callbacks.step", "3"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == PREEMPTED == 143, done.stderr[-2000:]
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
