"""`tailseg matrix` on a tiny configuration: every config x seed trained in its own process, skipped when done
(a finished report of the same config), refused or rerun when the config changed, stopped by SIGTERM and
resumed, one matrix per folder, failures reported, SLURM-style single jobs, and the comparison at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import tiny_synthetic_args
from tailseg.cli import main
from tailseg.matrix import cpu_slots, hold_lock, plan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [str(ROOT / "experiments" / "synthetic" / f"{name}.yaml") for name in ("base", "lmp_only")]


def tiny(steps: int) -> list[str]:
    return ["--", *tiny_synthetic_args(), "--trainer.max_steps", str(steps), "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip


def report(out: Path, method: str, seed: int) -> dict:
    return json.loads((out / method / f"seed{seed}" / "report.json").read_text())


def test_matrix_trains_every_config_and_seed_then_compares(tmp_path, capsys):
    out = tmp_path / "matrix"
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--jobs", "2", *tiny(2)])
    printed = capsys.readouterr().out
    for method, loss in (("base", "CrossEntropy"), ("lmp_only", "LossMaxPooling")):
        for seed in (0, 1):
            run = report(out, method, seed)
            assert run["config"]["seed_everything"] == seed and run["global_step"] == 2
            assert run["config"]["model"]["loss"]["class_path"] == f"tailseg.losses.{loss}"
            assert (out / method / f"seed{seed}" / "log.txt").is_file()
    assert printed.count("start ") == 4 and printed.count("finish ") == 4
    comparison = (out / "comparison.md").read_text()
    assert "seeds per method - base: 2, lmp_only: 2" in comparison and "Gain over base" in comparison
    assert (out / "gains.png").read_bytes()[:4] == b"\x89PNG"

    # Again: everything is done, nothing is trained (no second run directory), the comparison is the same.
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--jobs", "2", *tiny(2)])
    assert capsys.readouterr().out.count("done ") == 4
    assert not list(out.glob("*/seed*/version_1"))
    assert (out / "comparison.md").read_text() == comparison


class SlowSteps(pl.Callback):
    """Sleeps after every training step, so that a run is still going when the test stops it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def _wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


EVERY_STEP = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "1",
              "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}"]  # fmt: skip


def _matrix_in_training(out: Path, steps: int) -> tuple[subprocess.Popen, Path, int]:
    """A matrix process training one slow job (base, seed 3, `steps` steps) that has finished its first step: the
    process, the file of its output and the job's pid."""
    slow = ["--trainer.callbacks+=test_matrix.SlowSteps", "--trainer.callbacks.seconds", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    printed = out.parent / f"{out.name}.out"
    with open(printed, "w") as stdout:
        matrix = subprocess.Popen([sys.executable, "-m", "tailseg", "matrix", CONFIGS[0], "--seeds", "3", "--out",
                                   str(out), "--no-compare", *tiny(steps), *EVERY_STEP, *slow], stdout=stdout,
                                  stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        _wait_for(lambda: (out / "base/seed3/version_0/checkpoints/step=1.ckpt").is_file(), "the first step")
    except AssertionError:
        matrix.kill()
        raise
    return matrix, printed, int(re.search(r"start   base seed 3 -> .*; pid (\d+)\)", printed.read_text())[1])


def test_sigterm_stops_the_jobs_which_save_and_resume(tmp_path):
    """A scheduler stops the matrix: its job saves `last.ckpt` and is gone, the matrix exits with 143, and the same
    command again resumes the run from that checkpoint."""
    out = tmp_path / "matrix"
    matrix, printed, job = _matrix_in_training(out, 6)
    try:
        matrix.send_signal(signal.SIGTERM)
        assert matrix.wait(timeout=120) == 143
    finally:
        matrix.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(job, 0)  # the job is gone, not orphaned
    assert "stopped base seed 3: run the same command again to resume it" in printed.read_text()
    run = out / "base" / "seed3"
    last = run / "version_0" / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 1 <= stopped_at < 6 and not (run / "report.json").exists()

    # The same command resumes (without the slow steps: not part of the experiment, not a tailseg callback).
    main(["matrix", CONFIGS[0], "--seeds", "3", "--out", str(out), "--no-compare", *tiny(6), *EVERY_STEP])
    assert report(out, "base", 3)["global_step"] == 6
    assert (run / "log.txt").read_text().split("--ckpt_path last: ")[-1].splitlines()[0] == str(last)
    resumed = sorted(p.name for p in (run / "version_1" / "checkpoints").glob("step=*.ckpt"))
    assert resumed[0] == f"step={stopped_at + 1}.ckpt"


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie that nobody has reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_matrix_leaves_no_job_training(tmp_path):
    """SIGKILL gives the matrix no chance to stop its jobs: each job gets SIGTERM from the system and saves."""
    matrix, _, job = _matrix_in_training(tmp_path / "matrix", 20)
    matrix.kill()
    matrix.wait()
    _wait_for(lambda: not _alive(job), "the job to stop", timeout=60)
    assert (tmp_path / "matrix" / "base" / "seed3" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the workers' pids from /proc")
def test_sigterm_to_a_runs_whole_process_group_with_loader_workers_still_saves(tmp_path):
    """SLURM's `scancel` or `pkill` signals every process of a run, its loader workers too: the workers ignore it,
    so the training process finishes its step, writes `last.ckpt` and exits with 143, with no "DataLoader worker
    ... is killed by signal" raised at a random point (it once broke the write of `last.ckpt`)."""
    run = tmp_path / "run"
    slow = ["--trainer.callbacks+=test_matrix.SlowSteps", "--trainer.callbacks.seconds", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    command = [sys.executable, "-m", "tailseg", "fit", "--config", CONFIGS[0], "--trainer.default_root_dir", str(run),
               *tiny(20)[1:], "--data.num_workers", "2", *EVERY_STEP, *slow]  # fmt: skip
    with open(tmp_path / "log.txt", "w") as log:
        fit = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for(lambda: (run / "version_0/checkpoints/step=2.ckpt").is_file(), "the second step")
        workers = [int(p) for p in Path(f"/proc/{fit.pid}/task/{fit.pid}/children").read_text().split()]
        assert len(workers) >= 2  # the group holds the loader workers, which get the signal too
        os.killpg(fit.pid, signal.SIGTERM)
        status = fit.wait(timeout=120)
    finally:
        fit.kill()
    printed = (tmp_path / "log.txt").read_text()
    assert status == 143, printed[-3000:]
    assert "killed by signal" not in printed
    last = run / "version_0" / "checkpoints" / "last.ckpt"
    assert 2 <= torch.load(last, map_location="cpu", weights_only=True)["global_step"] < 20
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to exit", timeout=30)


def test_a_run_of_another_config_is_refused_or_rerun_from_scratch(tmp_path, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(Path(CONFIGS[0]).read_text())
    out = tmp_path / "matrix"
    main(["matrix", str(config), "--seeds", "0", "--out", str(out), "--no-compare", *tiny(2)])
    first = report(out, "base", 0)
    config.write_text(config.read_text().replace("momentum: 0.9", "momentum: 0.5"))  # the config is edited
    capsys.readouterr()

    main(["matrix", str(config), "--seeds", "0", "--out", str(out), "--list", *tiny(2)])
    (line,) = capsys.readouterr().out.splitlines()  # one line per job, nothing else: `wc -l` counts the jobs
    assert line.split("\t")[:4] == ["0", "base", "0", "changed"]
    with pytest.raises(SystemExit) as refused:
        main(["matrix", str(config), "--seeds", "0", "--out", str(out), "--no-compare", *tiny(2)])
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("tailseg matrix: error: the config of 1 ")
    assert f"base seed 0 in {out / 'base' / 'seed0'}: model.optimizer.init_args.momentum (was 0.9, now 0.5)" in error[0]
    assert "--rerun-changed" in error[0] and report(out, "base", 0) == first  # nothing touched

    main(["matrix", str(config), "--seeds", "0", "--out", str(out), "--no-compare", "--rerun-changed", *tiny(2)])
    assert "changed base seed 0: model.optimizer.init_args.momentum" in capsys.readouterr().out
    rerun = report(out, "base", 0)
    assert rerun["config"]["model"]["optimizer"]["init_args"]["momentum"] == 0.5 and rerun["global_step"] == 2
    assert Path(rerun["run_dir"]).name == "version_0"  # from scratch, in a fresh folder
    (kept,) = (out / "base").glob(".seed0.replaced-*")
    assert json.loads((kept / "report.json").read_text()) == first

    # A report of a run that trained no step, or of an evaluation, is not a finished run.
    for stage, step in (("fit", 0), ("validate", 2)):
        (out / "base" / "seed0" / "report.json").write_text(json.dumps({**rerun, "stage": stage, "global_step": step}))
        main(["matrix", str(config), "--seeds", "0", "--out", str(out), "--list", *tiny(2)])
        assert capsys.readouterr().out.split("\t")[3] == "to do"


def test_one_matrix_per_folder(tmp_path, capsys):
    out = tmp_path / "matrix"
    held = hold_lock(out / ".matrix.lock")  # as a matrix running on this folder does
    try:
        with pytest.raises(SystemExit) as busy:
            main(["matrix", *CONFIGS, "--seeds", "0", "--out", str(out), *tiny(2)])
        assert busy.value.code == 2
        assert capsys.readouterr().err.strip() == (
            f"tailseg matrix: error: {out} is in use by process {os.getpid()} ({socket.gethostname()})"
        )
        with pytest.raises(SystemExit):  # a SLURM array task too
            main(["matrix", *CONFIGS, "--seeds", "0", "--out", str(out), "--only", "1", *tiny(2)])
        assert f"{out} is in use by process {os.getpid()}" in capsys.readouterr().err
        main(["matrix", *CONFIGS, "--seeds", "0", "--out", str(out), "--list"])  # reading needs no lock
        assert len(capsys.readouterr().out.splitlines()) == 2
    finally:
        held.close()
    with hold_lock(out / ".matrix.lock", shared=True), hold_lock(out / ".matrix.lock", shared=True):
        pass  # array tasks (one job each) share the folder
    assert not list(out.glob("*/seed*"))  # nothing ran


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(CONFIGS[0]).read_text().replace("tailseg.losses.CrossEntropy", "tailseg.losses.NoSuchLoss"))
    out = tmp_path / "matrix"
    with pytest.raises(SystemExit) as stop:
        main(["matrix", str(broken), CONFIGS[1], "--seeds", "0", "--out", str(out), "--jobs", "2", *tiny(2)])
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert "FAILED  broken seed 0" in captured.out and str(out / "broken" / "seed0" / "log.txt") in captured.out
    assert "1 run(s) failed: broken seed 0" in captured.err
    assert report(out, "lmp_only", 0)["global_step"] == 2
    assert "lmp_only: 1" in (out / "comparison.md").read_text()


def test_slurm_list_and_only(tmp_path, capsys):
    out = tmp_path / "matrix"
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["0", "base", "0"], ["1", "base", "1"], ["2", "lmp_only", "0"], ["3", "lmp_only", "1"]
    ]  # fmt: skip
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--only", "2", *tiny(2)])
    assert [p.parent.relative_to(out).as_posix() for p in out.glob("*/seed*/report.json")] == ["lmp_only/seed0"]
    assert not (out / "comparison.md").exists()  # the array's last step compares
    with pytest.raises(SystemExit):
        main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--only", "4"])
    assert "--only 4 is not a job index (0..3)" in capsys.readouterr().err


def test_plan_refuses_ambiguous_or_missing_configs(tmp_path):
    other = tmp_path / "base.yaml"
    other.write_text(Path(CONFIGS[0]).read_text())
    with pytest.raises(ValueError, match="same name 'base'"):
        plan([CONFIGS[0], str(other)], [0], tmp_path)
    with pytest.raises(ValueError, match="is not a file"):
        plan([str(tmp_path / "missing.yaml")], [0], tmp_path)
    with pytest.raises(ValueError, match="repeats a seed"):
        plan([CONFIGS[0]], [1, 1], tmp_path)


def test_the_cores_split_between_jobs_are_those_the_process_may_use(monkeypatch):
    """A SLURM task or `taskset` allows 3 of the machine's 64 cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpu_slots(1) == [{"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}]
    assert [slot["OMP_NUM_THREADS"] for slot in cpu_slots(2)] == ["1", "1"]
