"""Uniform sampling: each epoch a fresh random permutation of the images (the papers' BASE)."""

from __future__ import annotations

import torch

from tailseg.sampling.base import EpochSampler


class UniformSampler(EpochSampler):
    """Every image once per epoch in random order (a permutation; with `num_samples` > N the
    permutation repeats, each round freshly shuffled).

    Args: see `EpochSampler`.
    """

    def draw_epoch(self) -> torch.Tensor:
        g = self.generator()
        rounds = -(-self.num_samples // self.num_images)
        return torch.cat([torch.randperm(self.num_images, generator=g) for _ in range(rounds)])[: self.num_samples]
