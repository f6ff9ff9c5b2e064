"""Validation wall time of `tailseg validate` in 1 and in 2 gloo CPU processes (sharded evaluation).

    python benchmarks/bench_eval_ddp.py [--repeats 3] [--images 40] [--height 192] [--width 384]
    python benchmarks/bench_eval_ddp.py --quick      # a few seconds of work: checks that the script runs

Trains a checkpoint for `--fit-steps` steps with `experiments/synthetic/base.yaml` (the demo's MobileNetV3
encoder), then validates it on the same `--images` synthetic validation images with `--trainer.devices 1`
and with `--trainer.strategy ddp --trainer.devices 2` (gloo on the CPU), `--repeats` times, interleaved
(1, 2, 2, 1, 1, 2, ...) so that a noisy machine slows both alike. Every run is a fresh `tailseg` process.

Two times per run, medians printed as a markdown table with their ratio (1 process / 2 processes):

- loop: the validation loop on rank 0, from a barrier at `on_validation_start` to `on_validation_end`,
  which follows the epoch-end sync and so waits for the slower rank;
- command: the whole `tailseg validate` command (start-up, the second process, checkpoint loading).

Each run also reports how many images its IoU covers (`ClassIoU.total_images()`), and the table says
whether the per-class IoU of every run is identical.

Threads: by default 1 process uses torch's default thread count and Lightning gives each of 2 CPU
processes `cpu_count // 2` threads (the same cores in all). `--threads N` sets `OMP_NUM_THREADS=N` for
every process instead. On a busy machine a process whose threads outnumber its free cores slows down
many times over (OpenMP threads wait for one another), which would swamp the comparison: run it on a
quiet machine; the load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"


class ValTimer(pl.Callback):
    """Writes `{"loop_s", "images"}` of the (last) validation to `out` from global rank 0."""

    def __init__(self, out: str) -> None:
        self.out, self.start, self.images = Path(out), 0.0, 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier()  # every rank starts the loop together
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.images = pl_module.iou["val_iou"].total_images()  # a collective; before the model resets the metric

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.out.write_text(json.dumps({"loop_s": time.perf_counter() - self.start, "images": self.images}))


def data_args(images: int, height: int, width: int, train: int) -> list[str]:
    """Overrides of base.yaml: `train` training and `images` validation images of height x width."""
    args = []
    for split, n in (("train", train), ("val", images)):
        args += [f"--data.{split}.init_args.num_images", str(n), f"--data.{split}.init_args.height", str(height),
                 f"--data.{split}.init_args.width", str(width)]  # fmt: skip
    return args


def tailseg(args: list[str], threads: int | None = None) -> float:
    """Runs `python -m tailseg ARGS` in a fresh process (`OMP_NUM_THREADS=threads` if given); its wall seconds."""
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tailseg", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tailseg {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def validate(work: Path, common: list[str], ckpt: str, processes: int, run: int, threads: int | None) -> dict:
    """One `tailseg validate` of the checkpoint in `processes` processes: loop and command seconds, images, IoU."""
    timing, report = work / f"timing_{run}.json", work / f"report_{run}.json"
    ddp = ["--trainer.strategy", "ddp"] if processes > 1 else []
    args = ["validate", *common, "--ckpt_path", ckpt, "--trainer.accelerator", "cpu", "--trainer.devices",
            str(processes), *ddp, "--trainer.default_root_dir", str(work / f"val_{run}"), "--report_path", str(report),
            "--trainer.callbacks+=bench_eval_ddp.ValTimer", "--trainer.callbacks.out", str(timing)]  # fmt: skip
    command_s = tailseg(args, threads)
    loop = json.loads(timing.read_text())
    iou = json.loads(report.read_text())["per_class_iou"]
    return {
        "processes": processes,
        "loop_s": loop["loop_s"],
        "command_s": command_s,
        "images": loop["images"],
        "iou": iou,
    }


def bench(args: argparse.Namespace) -> list[dict]:
    """Trains the checkpoint once, then validates it `repeats` times in 1 and in 2 processes, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench_eval_ddp_") as tmp:
        work = Path(tmp)
        common = ["--config", str(BASE), *data_args(args.images, args.height, args.width, args.train),
                  "--trainer.enable_progress_bar", "false", "--data.stats_cache_dir", str(work / "cache")]  # fmt: skip
        # No validation while fitting; check_val_every_n_epoch 1 makes the checkpoint callback save at epoch end.
        fit = ["fit", *common, "--trainer.max_steps", str(args.fit_steps), "--trainer.limit_val_batches", "0",
               "--trainer.check_val_every_n_epoch", "1", "--trainer.default_root_dir", str(work / "fit")]  # fmt: skip
        tailseg(fit, args.threads)
        ckpt = str(next((work / "fit" / "version_0" / "checkpoints").glob("*.ckpt")))
        order = [p for k in range(args.repeats) for p in ((1, 2) if k % 2 == 0 else (2, 1))]
        return [validate(work, common, ckpt, p, run, args.threads) for run, p in enumerate(order)]


def table(runs: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    """The medians per process count, their ratio and the machine, as markdown."""
    median = {p: {k: statistics.median(r[k] for r in runs if r["processes"] == p) for k in ("loop_s", "command_s")}
              for p in (1, 2)}  # fmt: skip
    covered = sorted({r["images"] for r in runs})
    same_iou = all(r["iou"] == runs[0]["iou"] for r in runs)
    repeats = sum(r["processes"] == 1 for r in runs)
    inherited = os.environ.get("OMP_NUM_THREADS")
    if args.threads is not None or inherited:
        threads = f"OMP_NUM_THREADS={args.threads or inherited} in every process"
    else:
        threads = (
            f"defaults (1 process: {torch.get_num_threads()}, 2 processes: {max(1, (os.cpu_count() or 2) // 2)} each)"
        )
    lines = [
        f"Sharded validation, `tailseg validate` of `experiments/synthetic/base.yaml`: {args.images} synthetic images "
        f"of {args.height}x{args.width}, eval batch 4, median of {repeats} interleaved runs each.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), torch {torch.__version__}, "
        f"Lightning {pl.__version__}, threads: {threads}, load average {load[0]:.2f} before and {load[1]:.2f} "
        f"after (1 min), {datetime.date.today().isoformat()}.",
        "",
        "| processes | validation loop (s) | whole command (s) |",
        "| --- | --- | --- |",
        *(f"| {p} | {median[p]['loop_s']:.2f} | {median[p]['command_s']:.2f} |" for p in (1, 2)),
        f"| ratio 1 / 2 | {median[1]['loop_s'] / median[2]['loop_s']:.2f} | "
        f"{median[1]['command_s'] / median[2]['command_s']:.2f} |",
        "",
        f"Images covered by the IoU in every run: {', '.join(map(str, covered))}; per-class IoU identical in all "
        f"runs: {'yes' if same_iou else 'NO'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="validation images")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3, help="runs per process count, interleaved")
    parser.add_argument("--fit-steps", type=int, default=2, help="training steps of the checkpoint")
    parser.add_argument("--train", type=int, default=16, help="training images (the checkpoint's fit only)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every process (default: unset)")
    parser.add_argument("--quick", action="store_true", help="6 images of 64x128, 1 repeat: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.height, args.width, args.repeats, args.fit_steps, args.train = 6, 64, 128, 1, 1, 8
    before = os.getloadavg()[0]
    runs = bench(args)
    print(table(runs, args, (before, os.getloadavg()[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
