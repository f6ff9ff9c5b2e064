"""Performance-aware sampling costs: epoch draws, class statistics, and the training step.

    python benchmarks/bench_sampler.py [--images 100000] [--classes 19] [--steps 30]

1. `update` + one epoch's draw of `PerformanceAwareSampler` for N images and C classes (median of
   repeats; the target is <= 50 ms on the CPU for N = 100,000, C = 19).
2. Building the class statistics (`class_pixel_counts`) of the synthetic data set: images/s.
3. Training-step time (data loading included) with the performance-aware sampler versus uniform
   sampling, same model and data, interleaved in blocks; medians and their ratio.
4. The per-step cost of Stochastic TCE's update (TCE paper, Algorithm 1, lines 6-8) plus drawing the
   next batch's class and images, for C = 19 (the target is <= 1 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from tailseg.data import SegmentationDataModule, SyntheticStreets, class_pixel_counts
from tailseg.losses import CrossEntropy
from tailseg.model import SegmentationModel
from tailseg.sampling import PerformanceAwareSampler, TiltedClassSampler, UniformSampler


def bench_draw(images: int, classes: int, repeats: int = 11) -> dict:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 1000, (images, classes)) * (rng.random((images, classes)) < 0.3)
    sampler = PerformanceAwareSampler(counts, seed=0)
    times = []
    for epoch in range(repeats):
        iou = rng.random(classes)
        start = time.perf_counter()
        sampler.update(iou)
        sampler.set_epoch(epoch)
        draws = list(sampler)
        times.append(time.perf_counter() - start)
    assert len(draws) == images
    return {"part": "update + epoch draw", "images": images, "classes": classes,
            "median_ms": round(1000 * statistics.median(times), 2)}  # fmt: skip


def bench_stats(num_images: int) -> dict:
    ds = SyntheticStreets("train", num_images=num_images, seed=123)
    start = time.perf_counter()
    ds.prepare(num_workers=torch.get_num_threads())
    rendered = time.perf_counter() - start
    start = time.perf_counter()
    class_pixel_counts(ds, cache_dir="")
    counted = time.perf_counter() - start
    return {"part": "class statistics (synthetic 192x384)", "images": num_images,
            "render_images_per_s": round(num_images / rendered, 1), "count_images_per_s": round(num_images / counted, 1)}  # fmt: skip


def bench_step(steps: int, encoder: str) -> dict:
    train = SyntheticStreets("train", num_images=64, seed=0)
    model = SegmentationModel(19, encoder_name=encoder, loss=CrossEntropy())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loaders = {}
    for name, factory in (("uniform", UniformSampler), ("performance-aware", PerformanceAwareSampler)):
        dm = SegmentationDataModule(train, crop_size=(128, 128), batch_size=8, num_workers=0, train_sampler=factory,
                                    stats_cache_dir="", seed=0)  # fmt: skip
        dm.setup("fit")
        if name == "performance-aware":
            dm.train_sampler.update(np.full(19, 0.5))
        loaders[name] = dm.train_dataloader()
    times: dict[str, list[float]] = {k: [] for k in loaders}
    iterators = {k: iter(v) for k, v in loaders.items()}
    for block in range(steps // 5):
        for name, it in iterators.items():
            for _ in range(5):
                start = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    iterators[name] = it = iter(loaders[name])
                    batch = next(it)
                loss = model.loss(model(batch["image"]), batch["mask"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if block > 0:  # the first block warms up
                    times[name].append(time.perf_counter() - start)
    uniform, aware = statistics.median(times["uniform"]), statistics.median(times["performance-aware"])
    return {"part": "training step (8x128x128, data loading included)", "encoder": encoder,
            "uniform_s": round(uniform, 4), "performance_aware_s": round(aware, 4), "ratio": round(aware / uniform, 4),
            "steps_each": len(times["uniform"])}  # fmt: skip


def bench_stce(classes: int, images: int, repeats: int = 2001) -> dict:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 1000, (images, classes)) * (rng.random((images, classes)) < 0.3)
    sampler = TiltedClassSampler(counts, batch_size=8, num_batches=repeats, seed=0)
    batches = iter(sampler)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = next(batches)
        sampler.update(batch[0][1], float(rng.random() * 3), 1.0, 0.1)
        times.append(time.perf_counter() - start)
    return {"part": "Stochastic TCE: update + next batch's draw", "classes": classes, "images": images,
            "median_ms": round(1000 * statistics.median(times[1:]), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--stats-images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--encoder", default="timm-mobilenetv3_small_100")
    args = parser.parse_args()
    print(json.dumps(bench_draw(args.images, args.classes)), flush=True)
    print(json.dumps(bench_stats(args.stats_images)), flush=True)
    print(json.dumps(bench_stce(args.classes, 10_000)), flush=True)
    print(json.dumps(bench_step(args.steps, args.encoder)), flush=True)


if __name__ == "__main__":
    main()
