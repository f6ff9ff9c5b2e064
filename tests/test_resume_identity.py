"""`fit` resumes only a checkpoint of its own config: every checkpoint records the config's fingerprint
(`tailseg.identity`), `--ckpt_path last` or a path of another config's run is refused in one line before
anything is built, a damaged newest checkpoint is passed over, and a checkpoint of before fingerprints
resumes with a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_synthetic_args
from tailseg import identity
from tailseg.cli import TailsegCLI, main, resolved_config

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"
LMP = ROOT / "experiments" / "synthetic" / "lmp_only.yaml"
STEPS = 4


def _args(config: Path, root: Path, *extra: str) -> list[str]:
    """`fit` of `STEPS` steps (2 an epoch) with a checkpoint `step=<k>.ckpt` after every step."""
    return ["fit", "--config", str(config), *tiny_synthetic_args(train=4), "--trainer.max_steps", str(STEPS),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "1",
            "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}",
            "--report_path", str(root / "report.json"), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A BASE run that failed inside step 2: `step=1.ckpt`, `step=2.ckpt` and `last.ckpt` (at step 2)."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(RuntimeError, match="simulated failure at step 2"):
        main(_args(BASE, root, "--trainer.callbacks+=test_resume.FailAtStep", "--trainer.callbacks.step", "2"))
    return root


@pytest.fixture
def run(interrupted, tmp_path) -> Path:
    """A copy of the interrupted run (modification times kept: `last.ckpt` is the newest)."""
    return Path(shutil.copytree(interrupted, tmp_path / "run"))


def _checkpoints(run: Path) -> Path:
    return run / "version_0" / "checkpoints"


def _resumed_from(printed: str) -> str:
    return printed.split("--ckpt_path last: ")[-1].splitlines()[0]


def test_every_checkpoint_records_the_fingerprint_of_its_config(run):
    current = resolved_config(_args(BASE, run, "--ckpt_path", "last"))
    for name in ("step=1.ckpt", "step=2.ckpt", "last.ckpt"):
        recorded = torch.load(_checkpoints(run) / name, map_location="cpu", weights_only=True)["tailseg_identity"]
        assert recorded["fingerprint"] == identity.fingerprint(current)
        assert recorded["method_fields"] == identity.method_fields(current)
        assert recorded["method_fields"]["model.loss.class_path"] == "tailseg.losses.CrossEntropy"
        assert recorded["method_fields"]["trainer.max_steps"] == STEPS


def test_the_same_config_resumes_its_run_and_another_is_refused(run, capsys):
    main(_args(BASE, run, "--ckpt_path", "last"))
    assert _resumed_from(capsys.readouterr().out) == str(_checkpoints(run) / "last.ckpt")
    finished = json.loads((run / "report.json").read_text())
    assert finished["global_step"] == STEPS and Path(finished["run_dir"]).name == "version_1"
    assert sorted(p.name for p in (run / "version_1" / "checkpoints").glob("*.ckpt")) == ["step=3.ckpt", "step=4.ckpt"]

    # LMP on the folder of the finished BASE run: one line naming the checkpoint and the loss; nothing is built.
    with pytest.raises(SystemExit) as refused:
        TailsegCLI(args=_args(LMP, run, "--ckpt_path", "last"), short_errors=True)
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tailseg fit: error: ckpt_path: ")
    assert "was trained with another config: " in lines[0] and "model.loss.class_path (was " in lines[0]
    assert "'tailseg.losses.CrossEntropy', now 'tailseg.losses.LossMaxPooling')" in lines[0]
    assert "another --trainer.default_root_dir" in lines[0]
    newest = max((run / "version_1" / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert str(newest) in lines[0]
    assert sorted(p.name for p in run.glob("version_*")) == ["version_0", "version_1"]  # no new run directory
    assert json.loads((run / "report.json").read_text()) == finished


def test_an_explicit_checkpoint_of_another_config_is_refused(run):
    """Lightning puts a checkpoint's hyperparameters into `model`; the config as given is what is compared."""
    with pytest.raises(ValueError, match=r"step=2\.ckpt was trained with another config: model\.loss\.class_path"):
        main(_args(LMP, run, "--ckpt_path", str(_checkpoints(run) / "step=2.ckpt")))
    with pytest.raises(ValueError, match=r"another config: trainer\.max_steps \(was 4, now 6\); --ckpt_path resumes"):
        main(_args(BASE, run, "--trainer.max_steps", "6", "--ckpt_path", str(_checkpoints(run) / "step=2.ckpt")))
    assert not (run / "version_1").exists() and not (run / "report.json").exists()


def test_a_damaged_newest_checkpoint_is_passed_over(run, capsys):
    last = _checkpoints(run) / "last.ckpt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 2)  # as a full disk leaves it
    with pytest.warns(UserWarning, match=r"passing over .*last\.ckpt, it cannot be read"):
        main(_args(BASE, run, "--ckpt_path", "last"))
    assert _resumed_from(capsys.readouterr().out) == str(_checkpoints(run) / "step=2.ckpt")
    assert json.loads((run / "report.json").read_text())["global_step"] == STEPS


def test_a_checkpoint_without_a_fingerprint_resumes_with_a_warning(run, capsys):
    for path in _checkpoints(run).glob("*.ckpt"):  # as written before checkpoints recorded one
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        del checkpoint["tailseg_identity"]
        torch.save(checkpoint, path)
    (_checkpoints(run) / "step=1.ckpt").unlink()
    (_checkpoints(run) / "step=2.ckpt").unlink()
    with pytest.warns(UserWarning, match=r"last\.ckpt records no config fingerprint"):
        main(_args(BASE, run, "--ckpt_path", "last"))
    assert _resumed_from(capsys.readouterr().out) == str(_checkpoints(run) / "last.ckpt")
    assert json.loads((run / "report.json").read_text())["global_step"] == STEPS


def test_evaluation_takes_the_newest_readable_checkpoint(run, capsys):
    (_checkpoints(run) / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=r"passing over .*last\.ckpt"):
        main(["validate", "--config", str(BASE), *tiny_synthetic_args(train=4), "--trainer.default_root_dir", str(run),
              "--trainer.enable_progress_bar", "false", "--ckpt_path", "last"])  # fmt: skip
    assert _resumed_from(capsys.readouterr().out) == str(_checkpoints(run) / "step=2.ckpt")
