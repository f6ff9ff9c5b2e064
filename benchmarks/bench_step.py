"""Training-step time, images/s and peak memory of a configured model and loss.

    python benchmarks/bench_step.py --config experiments/synthetic/base.yaml [--steps 20] [--device cpu|cuda]

Builds the model and loss exactly as `tailseg fit --config ...` would (through the CLI's parser),
feeds random crops of the configured crop and batch size, and times forward + backward +
optimizer step. Reports the median of `--steps` timed steps after `--warmup` untimed ones.
Peak memory: CUDA's max allocated bytes on a GPU, the process's peak resident set on the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch

from tailseg.cli import TailsegCLI


def build(config: str, overrides: list[str]):
    cli = TailsegCLI(args=["--config", config, "--trainer.logger", "false", *overrides], run=False)
    return cli.model, cli.datamodule


def bench(config: str, overrides: list[str], steps: int, warmup: int, device: str) -> dict:
    model, data = build(config, overrides)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    h, w = data.train_transform.crop_size
    b = data.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, h, w, generator=g).to(device)
    target = torch.randint(0, model.hparams.num_classes, (b, h, w), generator=g).to(device)
    target[:, :4] = 255
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for k in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model.loss(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "config": config,
        "loss": type(model.loss).__name__,
        "encoder": model.hparams.encoder_name,
        "batch": [b, 3, h, w],
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads",
        "step_s_median": round(step, 4),
        "images_per_s": round(b / step, 2),
        "peak_memory_mib": round(peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="one or more configs, each timed in turn")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args, overrides = parser.parse_known_args(argv)
    for config in args.config:
        print(json.dumps(bench(config, overrides, args.steps, args.warmup, args.device)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
