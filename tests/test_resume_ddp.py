"""Exact resume under DDP: 2 gloo processes on the CPU, resumed inside an epoch, end with the weights and the sampler
state of the uninterrupted 2-process run (`tailseg.resume`); and what a resume refuses instead of drawing otherwise.

The DDP runs train the performance-aware sampler (`base_plus.yaml`, fed the training IoU at each epoch's end) with
`seed_everything: false` and each process seeded with its own seed at start-up (a `sitecustomize` module; torch's
default seed is the same in every process), so that the ranks' own seeds and random streams differ: the sampler's
seed must come from rank 0 and each rank must get its own streams back. 8 images, 2 per batch and rank: 2 steps an epoch, 5 steps in all.
The resumed run starts from the uninterrupted run's checkpoint of step 3, one batch into epoch 1, so the epoch's
training confusion matrix in it (summed over the ranks) decides the IoU fed at that epoch's end, and so epoch 2.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_synthetic_args
from tailseg.lightning_compat import NOT_RESUMABLE_WARNING
from tailseg.sampling import TiltedClassSampler

ROOT = Path(__file__).resolve().parents[1]
BASE_PLUS = ROOT / "experiments" / "synthetic" / "base_plus.yaml"
DDP = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
STEPS, RESUME_AT = 5, 3


def _fit(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """`tailseg fit` of 5 steps in 2 processes under `tmp/runs`, a checkpoint `step=<k>.ckpt` after every step."""
    site = tmp / "site"  # each rank starts from its own seed (torch's default seed is the same in every process)
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os\nimport torch\ntorch.manual_seed(1000 + int(os.environ.get('LOCAL_RANK', '0')))\n"
    )
    paths = os.pathsep.join([str(site), str(ROOT / "src")])
    env = {**os.environ, "PYTHONPATH": paths, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("PL_GLOBAL_SEED", None)  # left by runs in this process: it would seed every rank alike
    args = ["fit", "--config", str(BASE_PLUS), *tiny_synthetic_args(), *DDP, "--seed_everything", "false",
            "--trainer.max_steps", str(STEPS), "--trainer.max_epochs", "-1", "--trainer.deterministic", "true",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp / "runs"), "--data.stats_cache_dir", str(tmp / "cache"),
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "1",
            "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}", *extra]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tailseg", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _checkpoint(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step={step}.ckpt", map_location="cpu", weights_only=False)


def _metrics_after(run: Path, step: int) -> list[dict]:
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [row for row in rows if int(row["step"]) > step]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(the uninterrupted run, the run resumed from its step 3, the resumed command's output)."""
    tmp = tmp_path_factory.mktemp("resume_ddp")
    _fit(tmp)
    full = tmp / "runs" / "version_0"
    resumed = _fit(tmp, "--ckpt_path", str(full / "checkpoints" / f"step={RESUME_AT}.ckpt"))
    return full, tmp / "runs" / "version_1", resumed


@pytest.mark.slow
def test_two_processes_resumed_inside_an_epoch_reach_the_uninterrupted_run(runs):
    full, resumed, _ = runs
    a, b = _checkpoint(full, STEPS), _checkpoint(resumed, STEPS)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"tensors differ after resuming from step {RESUME_AT}: {different[:5]}"
    momentum = [(s["momentum_buffer"], b["optimizer_states"][0]["state"][i]["momentum_buffer"])
                for i, s in a["optimizer_states"][0]["state"].items()]  # fmt: skip
    assert all(torch.equal(x, y) for x, y in momentum)
    sampler = a["SegmentationDataModule"]["stream"]["sampler"]
    assert json.dumps(sampler) == json.dumps(b["SegmentationDataModule"]["stream"]["sampler"])  # NaN-safe
    assert sampler["drawn"]["epoch"] == 2 and any(v == v for v in sampler["iou"])  # fed at epoch 1's end
    assert _metrics_after(full, RESUME_AT) == _metrics_after(resumed, RESUME_AT) != []
    assert sorted(p.name for p in (resumed / "checkpoints").glob("step=*.ckpt")) == ["step=4.ckpt", "step=5.ckpt"]


@pytest.mark.slow
def test_the_checkpoint_holds_the_whole_epoch_and_every_rank(runs):
    """Step 3: the confusion of epoch 1's first step on both ranks (2 crops each); each rank's own random streams."""
    full, _, _ = runs
    state = _checkpoint(full, RESUME_AT)
    assert int(state["state_dict"]["iou.train_iou.num_images"]) == 4  # 2 ranks x 2 crops
    assert int(state["state_dict"]["iou.train_iou.confusion"].sum()) > 2 * 64 * 64  # more pixels than one rank's
    stream = state["SegmentationDataModule"]["stream"]
    assert (stream["epoch"], stream["position"]) == (1, 1)
    ranks = stream["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # not seeded alike


@pytest.mark.slow
def test_the_resume_says_what_it_resumes_instead_of_lightnings_warning(runs):
    *_, resumed = runs
    assert "Resuming the training stream at epoch 1, after its first 1 batches" in resumed.stderr
    assert NOT_RESUMABLE_WARNING not in resumed.stderr + resumed.stdout


# --- the tilted sampler's history -----------------------------------------------------------------------------


def _tilted(lag: int) -> TiltedClassSampler:
    counts = torch.tensor([[5, 1, 0], [3, 0, 2], [1, 4, 4], [2, 2, 2]])
    return TiltedClassSampler(counts, batch_size=2, num_batches=8, seed=3, lag=lag)


def _trained(lag: int, steps: int) -> TiltedClassSampler:
    """A sampler after `steps` steps of epoch 0, each fed a loss that depends on the step and class."""
    sampler = _tilted(lag)
    for k, batch in enumerate(sampler.iterate(0)):
        if k == steps:
            break
        sampler.update(batch[0][1], 0.3 + 0.1 * k + batch[0][1], t=1.0, gamma=0.5)
    return sampler


def test_the_tilted_sampler_refuses_a_history_too_short_for_its_lag():
    """A checkpoint of a run with 1 worker (lag 2) resumed with 2 (lag 4) at step 5: step 5 is drawn from w after
    1 update, 4 updates ago, but the state holds the last 2 values: the sampler stops instead of using another w."""
    state = _trained(2, 5).state_dict()
    same = _tilted(2)
    same.load_state_dict(state)
    assert len(list(same.iterate(5))) == 3  # the lag of the run that wrote it: fine
    deeper = _tilted(4)
    deeper.load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"holds only the last 2 values: .* written with lag 2"):
        next(deeper.iterate(5))
    deeper.set_epoch(1)  # a new epoch needs no history
    assert len(list(deeper.iterate(0))) == 8
