"""Data pipeline throughput on Cityscapes-sized images, and validation time per tiling mode.

    python benchmarks/bench_data.py [--images 8] [--workers 2] [--encoder resnet18]

1. Training samples/s for 2048x1024 PNGs (decode, random scale 0.5-1.5, 550x550 crop, flip,
   normalise) with one worker process and with `--workers`, through the real DataModule and
   DataLoader, on a Cityscapes-layout fixture written to a temporary folder (random-texture PNGs
   of the real size, so decoding costs what it costs on the real images).
2. Validation seconds per 1024x2048 image for each tiling mode (whole, efficient, optimized,
   slide 512 stride 341) with the configured encoder, median of repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tailseg.data import Cityscapes, SegmentationDataModule
from tailseg.inference import Tiling
from tailseg.model import SegmentationModel


def write_fixture(root: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder_img = root / "leftImg8bit" / split / "bench"
        folder_gt = root / "gtFine" / split / "bench"
        folder_img.mkdir(parents=True)
        folder_gt.mkdir(parents=True)
        for i in range(images):
            noise = rng.integers(0, 255, (256, 512, 3), dtype=np.uint8)  # upscaled: compresses like a photo
            image = Image.fromarray(noise).resize((2048, 1024), Image.BILINEAR)
            image.save(folder_img / f"bench_{i:06d}_000019_leftImg8bit.png")
            labels = np.repeat(np.repeat(rng.choice([7, 8, 11, 21, 23, 24, 26], (32, 64)), 32, 0), 32, 1)
            Image.fromarray(labels.astype(np.uint8)).save(folder_gt / f"bench_{i:06d}_000019_gtFine_labelIds.png")


def bench_pipeline(
    root: Path, workers: int, batches: int, crop_size: tuple[int, int] = (550, 550), batch_size: int = 2
) -> dict:
    dm = SegmentationDataModule(
        Cityscapes(str(root), "train"),
        crop_size=crop_size,
        batch_size=batch_size,
        num_workers=workers,
        stats_cache_dir="",
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    samples, start = 0, None
    for k, batch in enumerate(_cycle(loader, batches + 2)):
        if k == 2:  # the first batches pay for starting the workers
            start = time.perf_counter()
        elif k > 2:
            samples += len(batch["image"])
    elapsed = time.perf_counter() - start
    crop = "x".join(map(str, crop_size))
    return {"part": f"training pipeline 2048x1024 PNG -> {crop} crop", "workers": workers,
            "samples_per_s": round(samples / elapsed, 2)}  # fmt: skip


def _cycle(loader, n):
    k = 0
    while True:
        for batch in loader:
            yield batch
            k += 1
            if k >= n:
                return


def bench_tiling(
    encoder: str, repeats: int, model: SegmentationModel | None = None, device: str = "cpu", bf16: bool = False
) -> list[dict]:
    """Validation seconds per 1024x2048 image per tiling mode (`model`, if given, replaces a plain `encoder` model;
    `bf16`: under bf16 autocast, as `--trainer.precision bf16-mixed` validates)."""
    model = (model if model is not None else SegmentationModel(19, encoder_name=encoder)).to(device).eval()
    image = torch.randn(1, 3, 1024, 2048, device=device)
    pad_to = model.tiling.pad_to
    modes = {
        "whole": Tiling("whole"),
        "efficient (5 tiles)": Tiling("efficient", tiles=5),
        "optimized (5 tiles, 200 px overlap)": Tiling("optimized", tiles=5, overlap=200),
        "slide (512, stride 341)": Tiling("slide", crop_size=(512, 512), stride=(341, 341), batch_size=2),
    }
    rows = []
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        for name, tiling in modes.items():
            model.tiling = tiling
            tiling.pad_to = pad_to
            model.predict_logits(image)  # warm-up
            times = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                model.predict_logits(image)
                _sync(device)
                times.append(time.perf_counter() - start)
            rows.append({"part": "validation per 1024x2048 image", "mode": name, "encoder": encoder,
                         "precision": "bf16-mixed" if bf16 else "32", "median_s": round(statistics.median(times), 3)})  # fmt: skip
    return rows


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fixture(root, args.images)
        for workers in sorted({1, args.workers}):
            print(json.dumps(bench_pipeline(root, workers, args.batches)), flush=True)
    for row in bench_tiling(args.encoder, args.repeats):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
