"""Forward + backward time of every loss against cross-entropy, side by side in one run.

    python benchmarks/bench_losses.py [--shapes 2x19x512x512 8x19x512x1024] [--repeats 5] [--device cpu|cuda]

For each logits shape, every loss is timed on the same random logits and targets (5% ignored
pixels), interleaved round-robin over `--repeats` rounds so that machine noise hits all of them
alike; the report gives medians and the ratio to CrossEntropy's median. It also times a
straightforward sequential implementation of the LMP paper's Algorithm 1 - the losses moved to
the CPU, one sort, a Python loop over the sorted pixels, as published implementations do - to
show what the vectorised `tailseg.losses.lmp` buys. That reference lives here only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from tailseg.losses import (
    BootstrappedCrossEntropy,
    CrossEntropy,
    FocalLoss,
    LossMaxPooling,
    MedianFrequencyCrossEntropy,
    OhemCrossEntropy,
    TiltedCrossEntropy,
)


def sequential_lmp_weights(losses: np.ndarray, p: float, m: float) -> np.ndarray:
    """Algorithm 1 of the LMP paper, literally: sort, then walk the sorted losses one by one."""
    n = losses.size
    order = np.argsort(losses, kind="stable")
    sorted_losses = losses[order]
    w = np.zeros(n)
    gamma = n ** (-(p - 1) / p) if p > 1 else 1.0
    tau = gamma * m ** (-1.0 / p)
    if p == 1:
        k = int(math.floor(m))
        w[order[n - k :]] = tau
        if n - k - 1 >= 0:
            w[order[n - k - 1]] = tau * (m - k)
        return w
    q = p / (p - 1)
    scale = sorted_losses[-1] if sorted_losses[-1] > 0 else 1.0
    c, a, i = m - n, 0.0, 0
    eta = 0.0
    while True:
        i += 1
        c += 1
        lq = (sorted_losses[i - 1] / scale) ** q
        a += lq
        eta = c * lq - a
        if eta > 0 or i == n:
            break
    if eta <= 0:
        i += 1
        alpha = (a / c) ** (1 / q)
    else:
        alpha = ((a - lq) / (c - 1)) ** (1 / q)
    for j in range(n):
        u = order[j]
        if j >= i - 1:
            w[u] = tau
        elif alpha > 0:
            w[u] = tau * ((sorted_losses[j] / scale) / alpha) ** (q - 1)
    return w


class SequentialLMP(torch.nn.Module):
    """LMP with the weights from `sequential_lmp_weights` on the CPU, per image (benchmark reference only)."""

    def __init__(self, p: float = 1.3, ratio: float = 0.25, ignore_index: int = 255) -> None:
        super().__init__()
        self.p, self.ratio, self.ignore_index = p, ratio, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        total = 0.0
        for b in range(len(losses)):
            row = losses[b][valid[b]]
            values = row.detach().cpu().double().numpy()
            w = sequential_lmp_weights(values, self.p, max(1.0, self.ratio * values.size))
            total = total + (torch.from_numpy(w).to(row) * row).sum()
        return total / len(losses)


def make_losses(num_classes: int) -> dict[str, torch.nn.Module]:
    counts = torch.randint(1, 1000, (100, num_classes))
    median = MedianFrequencyCrossEntropy()
    median.set_class_statistics(counts)
    focal = FocalLoss()
    focal.set_class_statistics(counts)
    return {
        "CrossEntropy": CrossEntropy(),
        "LossMaxPooling(p=1.3)": LossMaxPooling(1.3, 0.25),
        "LossMaxPooling(p=1)": LossMaxPooling(1.0, 0.25),
        "TiltedCE(image, t=0.1)": TiltedCrossEntropy(0.1, "image"),
        "TiltedCE(class, t=1)": TiltedCrossEntropy(1.0, "class"),
        "MedianFrequencyCE": median,
        "FocalLoss": focal,
        "BootstrappedCE(25%)": BootstrappedCrossEntropy(ratio=0.25),
        "OhemCE": OhemCrossEntropy(0.7, 100_000),
        "Algorithm 1, sequential (reference)": SequentialLMP(1.3, 0.25),
    }


def time_once(loss, logits, target, device, bf16: bool = False) -> float:
    x = logits.detach().requires_grad_(True)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        value = loss(x, target)
    value.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(shape: tuple[int, ...], repeats: int, device: str, skip: set[str], bf16: bool = False) -> list[dict]:
    """Every loss on the same logits, round-robin; `bf16`: bf16 logits under bf16 autocast, as in bf16-mixed."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g).to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.05] = 255
    target = target.to(device)
    losses = {k: v.to(device) for k, v in make_losses(shape[1]).items() if k not in skip}
    times: dict[str, list[float]] = {k: [] for k in losses}
    for loss in losses.values():  # warm-up
        time_once(loss, logits, target, device, bf16)
    for _ in range(repeats):
        for name, loss in losses.items():
            times[name].append(time_once(loss, logits, target, device, bf16))
    ce = statistics.median(times["CrossEntropy"])
    return [
        {"shape": "x".join(map(str, shape)), "logits": str(logits.dtype).replace("torch.", ""), "loss": name,
         "median_s": round(statistics.median(t), 4),
         "ratio_to_ce": round(statistics.median(t) / ce, 3), "repeats": len(t)}
        for name, t in times.items()
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["2x19x512x512", "8x19x512x1024"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-sequential", action="store_true", help="leave out the slow sequential reference")
    args = parser.parse_args()
    skip = {"Algorithm 1, sequential (reference)"} if args.skip_sequential else set()
    print(
        f"# device: {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, threads {torch.get_num_threads()}"
    )
    for text in args.shapes:
        for row in bench(tuple(int(v) for v in text.split("x")), args.repeats, args.device, skip):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
