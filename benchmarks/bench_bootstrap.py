"""Cost of the intervals in reports and comparisons: the bootstrap of IoU from per-image counts.

    python benchmarks/bench_bootstrap.py [--images 233] [--classes 11] [--resamples 2000] [--seeds 3]

1. `tailseg.metrics.bootstrap.iou_intervals`: one evaluation's per-class, mIoU and per-image intervals
   (CamVid's test split: 233 images, 11 classes; the target is well under a second).
2. `tailseg.metrics.paired.seed_and_image_interval`: a method over k seeds (seeds, then images).
3. `tailseg.metrics.paired.paired_bootstrap`: method against reference, k seed pairs.
4. (2) and (3) for an ADE20K-sized set: 2000 images, 150 classes.

Medians of repeats, in seconds. The counts are simulated (Poisson unions, binomial intersections): the cost
depends only on the shapes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from tailseg.metrics.bootstrap import iou_intervals
from tailseg.metrics.paired import paired_bootstrap, seed_and_image_interval


def counts(rng: np.random.Generator, images: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    union = rng.poisson(2000, size=(images, classes))
    return rng.binomial(union, rng.uniform(0.1, 0.9, classes)), union


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(images: int, classes: int, resamples: int, seeds: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    method = [counts(rng, images, classes) for _ in range(seeds)]
    reference = [counts(rng, images, classes) for _ in range(seeds)]
    return {
        "images": images,
        "classes": classes,
        "resamples": resamples,
        "seeds": seeds,
        "iou_intervals_s": median_seconds(lambda: iou_intervals(*method[0], resamples=resamples), repeats),
        "seed_and_image_interval_s": median_seconds(lambda: seed_and_image_interval(method, resamples, 0), repeats),
        "paired_bootstrap_s": median_seconds(lambda: paired_bootstrap(method, reference, resamples, 0), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=233)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = [
        bench(args.images, args.classes, args.resamples, args.seeds, args.repeats),
        bench(2000, 150, args.resamples, args.seeds, max(1, args.repeats // 3)),
    ]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
