"""How close to the model's own speed a training step runs, and whether the data pipeline keeps up.

    python benchmarks/bench_training.py                      # the preset of the device: cuda -> gpu, else cpu
    python benchmarks/bench_training.py --preset gpu --parts step loop losses data tiling --workers 4 8 15

The same script on the CPU and on CUDA. Every part prints JSON lines (`part` names it); times are medians,
and the variants of a part are timed round-robin (one step of each in turn), so that machine noise hits them
alike and their ratios are measured side by side.

1. `step` - the model's own speed: forward + loss + backward + SGD step on one batch held in memory, for
   each loss (cross-entropy, LMP, class-level TCE) x precision (`32`, `bf16-mixed`: the forward and loss
   under bf16 autocast, as Lightning runs them) x memory layout (contiguous, channels-last). Images/s, peak
   memory (CUDA: max allocated; CPU: the process's peak resident set, which only grows, so it is the largest
   so far) and the ratio to cross-entropy in the same precision and layout. Each timed step follows an untimed
   step of the same variant: the first step after a switch of model, layout or precision is slower (measured on
   the CPU: cross-entropy, always first of its group, came out 8-16% slower than LMP without it). The step of Stochastic TCE is the
   cross-entropy step and that of LMP + performance-aware sampling the LMP step: sampling is not in `step`.
2. `loop` - the real training loop (Lightning `Trainer`, DataLoader workers, sampler, feedback callbacks) on
   a Cityscapes-size fixture (2048x1024 PNGs): CE + uniform sampling (the reference), LMP + performance-aware
   sampling + `ClassIoUFeedback`, Stochastic TCE (`TiltedClassSampler` + `TiltedClassFeedback`), at the
   preset's precision and layout. Per step: the median of the times between consecutive step starts (data
   waits included) and the mean over the timed steps (what a run pays, epoch ends included), each as a ratio
   to the reference loop and to the model's own step of part 1.
3. `losses` - the loss ops alone (forward + backward) against cross-entropy, float32 and bf16 logits
   (`bench_losses.py`).
4. `data` - the training pipeline's samples/s at Cityscapes size (decode, scale, crop, flip, normalise) per
   number of workers, against the model's consumption (images/s of the reference step of part 1).
5. `tiling` - validation seconds per 1024x2048 image per tiling mode (`bench_data.py`), at the preset's
   precision.

Presets (`--preset`): `gpu` is the LMP paper's Cityscapes model as a GPU user runs it - DeepLabV3+ ResNet-101
at output stride 8 (ASPP 12/24/36), 512x1024 crops, batch 8, bf16-mixed, channels-last in the loop; `cpu`
is sized to finish in minutes on a 2-core CPU - MobileNetV3-large at output stride 16, 256x512 crops,
batch 4, float32. Every field can be overridden (`--encoder`, `--crop`, `--batch`, ...). Weights are random
(no download): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import bench_losses  # noqa: E402
from tailseg.callbacks import ClassIoUFeedback, TiltedClassFeedback  # noqa: E402
from tailseg.data import Cityscapes, SegmentationDataModule  # noqa: E402
from tailseg.losses import CrossEntropy, LossMaxPooling, TiltedCrossEntropy  # noqa: E402
from tailseg.losses.common import in_float32  # noqa: E402
from tailseg.model import SegmentationModel  # noqa: E402
from tailseg.sampling import PerformanceAwareSampler, TiltedClassSampler  # noqa: E402

PRESETS = {
    "gpu": {"encoder": "resnet101", "output_stride": 8, "crop": [512, 1024], "batch": 8,
            "precision": "bf16-mixed", "channels_last": True, "steps": 20, "workers": [4, 8, 15]},
    "cpu": {"encoder": "timm-mobilenetv3_large_100", "output_stride": 16, "crop": [256, 512], "batch": 4,
            "precision": "32", "channels_last": False, "steps": 10, "workers": [1, 2]},
}  # fmt: skip
LOSSES = {
    "cross-entropy": CrossEntropy,
    "LMP (p=1.3, m=25%)": functools.partial(LossMaxPooling, 1.3, 0.25),
    "TCE (class, t=1)": functools.partial(TiltedCrossEntropy, 1.0, "class"),
}
NUM_CLASSES = 19


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device: str) -> float:
    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1)


def build_model(args, loss: torch.nn.Module, channels_last: bool) -> SegmentationModel:
    rates = (12, 24, 36) if args.output_stride == 8 else (6, 12, 18)
    return SegmentationModel(NUM_CLASSES, encoder_name=args.encoder, encoder_output_stride=args.output_stride,
                             decoder_atrous_rates=rates, loss=loss, channels_last=channels_last)  # fmt: skip


# --- 1. the model's own step -------------------------------------------------------------------------------------


def bench_step(args) -> list[dict]:
    device, (h, w), b = args.device, args.crop, args.batch
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, h, w, generator=g).to(device)
    target = torch.randint(0, NUM_CLASSES, (b, h, w), generator=g)
    target[:, : h // 20] = 255  # some ignored pixels, as in real label maps
    target = target.to(device)
    variants = {}
    for layout in (False, True):
        model = build_model(args, CrossEntropy(), layout).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for precision in ("32", "bf16-mixed"):
            for name, make in LOSSES.items():
                variants[(name, precision, layout)] = (model, optimizer, make().to(device))

    def step(key) -> float:
        model, optimizer, loss_fn = variants[key]
        autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=key[1] == "bf16-mixed")
        _sync(device)
        start = time.perf_counter()
        with autocast:
            loss = in_float32(loss_fn, model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    peaks = {}
    for key in variants:  # warm-up (and cuDNN's algorithm search); the peak memory of each variant alone
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step(key)
        peaks[key] = _peak_mib(device)
    times = {key: [] for key in variants}
    for _ in range(args.steps):
        for key in variants:
            step(key)  # untimed: the first step after another variant pays for the switch (caches, autocast casts)
            times[key].append(step(key))
    rows = []
    for key, values in times.items():
        name, precision, layout = key
        median = statistics.median(values)
        ce = statistics.median(times[("cross-entropy", precision, layout)])
        reference = statistics.median(times[("cross-entropy", "32", False)])
        rows.append({"part": "step", "loss": name, "precision": precision, "channels_last": layout,
                     "step_s": round(median, 4), "images_per_s": round(b / median, 2),
                     "ratio_to_ce": round(median / ce, 3), "ratio_to_ce_fp32": round(median / reference, 3),
                     "peak_memory_mib": peaks[key], "steps": len(values)})  # fmt: skip
    return rows


# --- 2. the real loop ----------------------------------------------------------------------------------------------


class StepTimes(pl.Callback):
    """The wall time between the starts of consecutive training steps, after `warmup` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.starts = warmup, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(str(pl_module.device.type))
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(str(pl_module.device.type))
        self.starts.append(time.perf_counter())

    def times(self) -> list[float]:
        starts = self.starts[self.warmup :]
        return [b - a for a, b in zip(starts, starts[1:], strict=False)]


LOOPS = {
    "CE + uniform": (CrossEntropy, None, None),
    "LMP + performance-aware": (LOSSES["LMP (p=1.3, m=25%)"], functools.partial(PerformanceAwareSampler, mix=0.5),
                                ClassIoUFeedback),
    "Stochastic TCE": (CrossEntropy, TiltedClassSampler, functools.partial(TiltedClassFeedback, t=1.0, gamma=0.1)),
}  # fmt: skip


def bench_loop(args, root: Path, own_step: dict[str, float]) -> list[dict]:
    device, warmup = args.device, 3
    rows, results = [], {}
    for name, (make_loss, sampler, feedback) in LOOPS.items():
        data = SegmentationDataModule(Cityscapes(str(root), "train"), crop_size=tuple(args.crop),
                                      batch_size=args.batch, num_workers=args.loop_workers,
                                      train_sampler=sampler, stats_cache_dir="", seed=0)  # fmt: skip
        model = build_model(args, make_loss(), args.channels_last)
        timer = StepTimes(warmup)
        callbacks = [timer] + ([feedback()] if feedback is not None else [])
        trainer = pl.Trainer(accelerator=device, devices=1, precision=args.precision, max_steps=warmup + args.steps,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=callbacks, use_distributed_sampler=False)  # fmt: skip
        trainer.fit(model, datamodule=data)
        results[name] = timer.times()
    reference = results["CE + uniform"]
    own = own_step[args.precision, args.channels_last]
    for name, times in results.items():
        median, mean = statistics.median(times), statistics.fmean(times)
        rows.append({"part": "loop", "method": name, "precision": args.precision, "channels_last": args.channels_last,
                     "workers": args.loop_workers, "step_s_median": round(median, 4), "step_s_mean": round(mean, 4),
                     "images_per_s": round(args.batch / mean, 2),
                     "ratio_to_ce_uniform": round(median / statistics.median(reference), 3),
                     "ratio_to_ce_uniform_mean": round(mean / statistics.fmean(reference), 3),
                     "ratio_to_model_step": round(median / own, 3), "steps": len(times)})  # fmt: skip
    return rows


# --- main ----------------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: gpu on cuda, else cpu")
    parser.add_argument("--parts", nargs="+", default=["step", "loop", "losses", "data", "tiling"],
                        choices=["step", "loop", "losses", "data", "tiling"])  # fmt: skip
    parser.add_argument("--encoder")
    parser.add_argument("--output-stride", type=int, choices=[8, 16])
    parser.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], help="of the loop and tiling parts")
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--steps", type=int, help="timed steps per variant")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts of the data part")
    parser.add_argument("--loop-workers", type=int, help="workers of the loop part (default: the largest of --workers)")
    parser.add_argument("--images", type=int, default=None, help="fixture images (default: 2 epochs' worth of steps)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the losses and tiling parts")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset or ("gpu" if args.device == "cuda" else "cpu")]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.loop_workers is None:
        args.loop_workers = max(args.workers)
    if args.images is None:
        args.images = max(16, args.batch * 8)  # 8 steps per epoch: epoch ends (and the feedback) are in the loop
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or "cpu")
    print(json.dumps({"part": "machine", "device": device_name, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "lightning": pl.__version__,
                      "date": time.strftime("%Y-%m-%d"), "settings": vars(args)}), flush=True)  # fmt: skip
    own_step = {}
    if "step" in args.parts or "loop" in args.parts or "data" in args.parts:
        for row in bench_step(args):
            print(json.dumps(row), flush=True)
            if row["loss"] == "cross-entropy":
                own_step[row["precision"], row["channels_last"]] = row["step_s"]
    if "losses" in args.parts:
        h, w = args.crop
        for bf16 in (False, True):
            for row in bench_losses.bench((args.batch, NUM_CLASSES, h, w), args.repeats, args.device,
                                          {"Algorithm 1, sequential (reference)"}, bf16=bf16):  # fmt: skip
                print(json.dumps({"part": "losses", **row}), flush=True)
    if "loop" in args.parts or "data" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            bench_data.write_fixture(root, args.images)
            if "loop" in args.parts:
                for row in bench_loop(args, root, own_step):
                    print(json.dumps(row), flush=True)
            if "data" in args.parts:
                consumption = args.batch / own_step[args.precision, args.channels_last]
                for workers in args.workers:
                    row = bench_data.bench_pipeline(root, workers, max(8, args.steps), tuple(args.crop), args.batch)
                    row.update(part="data", model_images_per_s=round(consumption, 2),
                               ratio_to_model=round(row["samples_per_s"] / consumption, 3))  # fmt: skip
                    print(json.dumps(row), flush=True)
    if "tiling" in args.parts:
        rates = (12, 24, 36) if args.output_stride == 8 else (6, 12, 18)
        model = SegmentationModel(NUM_CLASSES, encoder_name=args.encoder, encoder_output_stride=args.output_stride,
                                  decoder_atrous_rates=rates, channels_last=args.channels_last)  # fmt: skip
        for row in bench_data.bench_tiling(args.encoder, args.repeats, model, args.device,
                                           args.precision == "bf16-mixed"):  # fmt: skip
            print(json.dumps({**row, "part": "tiling"}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
