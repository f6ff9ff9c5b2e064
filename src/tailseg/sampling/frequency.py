"""Frequency-driven samplers, the static peers of performance-aware sampling.

Both read only the training set's (N, C) class pixel-count table, so they are fixed for the whole run
(no feedback callback), and keep the `EpochSampler` contract: one global sequence per (seed, epoch),
sharded by rank, with (seed, epoch) as the whole checkpointed state.

- `RareClassSampler`: rare-class sampling (RCS) of DAFormer (Hoyer et al., CVPR 2022, §3.3): a class c is
  drawn with P(c) = softmax((1 − f_c) / T) over the classes' pixel shares f_c, then an image that holds at
  least `min_pixels` pixels of c, and the crop is placed on c.
- `RepeatFactorSampler`: repeat-factor sampling (RFS) of LVIS (Gupta et al., CVPR 2019, §4.2) at image
  level: image i is repeated r_i = max over its classes c of max(1, sqrt(t / f_c)) times per epoch, f_c the
  share of the training images that contain c.
"""

from __future__ import annotations

import numpy as np
import torch

from tailseg.sampling.base import EpochSampler, ImagesByClass


def rare_class_probabilities(class_pixels: np.ndarray, eligible: np.ndarray, temperature: float) -> np.ndarray:
    """DAFormer's rare-class sampling distribution, P(c) = exp((1 − f_c) / T) / Σ_c' exp((1 − f_c') / T).

    f_c = n_c / Σ_c' n_c' is class c's share of the labelled training pixels (Hoyer et al., eq. 6). The
    softmax runs over the `eligible` classes only (those with at least one image to draw); the others get 0.

    Args:
        class_pixels: (C,) labelled training pixels per class.
        eligible: (C,) bool, classes that can be drawn.
        temperature: T > 0; smaller T concentrates the draws on the rarest classes.

    Returns:
        (C,) float64 probabilities summing to 1.
    """
    share = class_pixels / class_pixels.sum()
    logits = np.where(eligible, (1.0 - share) / temperature, -np.inf)
    logits = logits - logits[eligible].max()  # exact: softmax is shift-invariant; keeps exp finite for small T
    weights = np.exp(logits)
    return weights / weights.sum()


def repeat_factors(counts: np.ndarray, threshold: float) -> np.ndarray:
    """LVIS repeat factors per image, r_i = max_{c ∈ i} max(1, sqrt(t / f_c)) (Gupta et al., §4.2).

    f_c is the share of training images that contain class c (at least one pixel); an image without any
    labelled pixel has r_i = 1.

    Args:
        counts: (N, C) class pixel counts per image.
        threshold: t > 0; classes in fewer than a share t of the images are repeated.

    Returns:
        (N,) float64 factors >= 1.
    """
    contains = counts > 0
    image_share = contains.mean(axis=0)
    class_factor = np.maximum(1.0, np.sqrt(threshold / np.maximum(image_share, np.finfo(np.float64).tiny)))
    return np.where(contains, class_factor[None, :], 1.0).max(axis=1)


class RareClassSampler(EpochSampler):
    """Rare-class sampling (DAFormer): draws (image index, class id) pairs, the crop placed on the class.

    Each draw picks a class c from `rare_class_probabilities` and then, uniformly, one of the images holding
    at least `min_pixels` pixels of c (DAFormer: "images containing class c"; the threshold keeps images in
    which c is a handful of boundary pixels out). The pair's class tells `TransformedDataset` to centre the
    crop on a pixel of c, as for `PerformanceAwareSampler`'s class-driven draws. Every draw is class-driven
    (DAFormer mixes in no uniform draws).

    Decisions:
    - A class with no image above `min_pixels` falls back to the images that contain it at all, so that no
      present class becomes undrawable because of the threshold; classes absent from the training set are
      never drawn.
    - `min_pixels` counts pixels of the stored image (before scaling and cropping). DAFormer's 3000 counts pixels
      of GTA's 1914 x 1052 labels (its class statistics are taken from the full-size labels); the configs scale
      it by image area: 3000 · 480·360 / (1914·1052) ≈ 257 for CamVid, ≈ 110 for the synthetic 384 x 192.

    Args:
        class_pixel_counts: (N, C) class pixel counts per training image (the DataModule's table).
        temperature: T of the softmax over (1 − f_c); DAFormer uses 0.01.
        min_pixels: Pixels of c an image needs to be drawn for c.
        num_samples, seed, num_replicas, rank: see `EpochSampler`.

    Reference:
        L. Hoyer, D. Dai, L. Van Gool, "DAFormer: Improving Network Architectures and Training Strategies for
        Domain-Adaptive Semantic Segmentation", CVPR 2022, §3.3 (rare class sampling).
    """

    def __init__(
        self,
        class_pixel_counts,
        temperature: float = 0.01,
        min_pixels: int = 1,
        num_samples: int | None = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(class_pixel_counts, num_samples, seed, num_replicas, rank)
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"RareClassSampler: temperature must be a finite number > 0, got {temperature}")
        if int(min_pixels) < 1:
            raise ValueError(f"RareClassSampler: min_pixels must be >= 1, got {min_pixels}")
        self.temperature, self.min_pixels = float(temperature), int(min_pixels)
        class_pixels = self.counts.sum(axis=0).astype(np.float64)
        present = class_pixels > 0
        if not present.any():
            raise ValueError("RareClassSampler: the class pixel counts hold no labelled pixel")
        enough = self.counts >= self.min_pixels
        eligible = np.where(enough.any(axis=0, keepdims=True), enough, self.counts > 0)
        self._images = ImagesByClass(eligible.astype(np.int64))
        self.probabilities = rare_class_probabilities(class_pixels, present, self.temperature)

    @property
    def class_probabilities(self) -> torch.Tensor:
        """(C,) P(class c) of a draw; sums to 1."""
        return torch.from_numpy(self.probabilities)

    def draw_epoch(self) -> torch.Tensor:
        g = self.generator()
        classes = torch.multinomial(self.class_probabilities, self.num_samples, replacement=True, generator=g)
        images = self._images.draw(classes, torch.rand(self.num_samples, generator=g, dtype=torch.float64))
        return torch.stack([images, classes], dim=1)


class RepeatFactorSampler(EpochSampler):
    """Repeat-factor sampling (LVIS) at image level: image i is shown r_i times per epoch in expectation.

    Each epoch image i appears ⌊r_i⌋ times plus once more with probability r_i − ⌊r_i⌋ (LVIS's stochastic
    rounding), the list is shuffled, and its first `num_samples` entries are the epoch (repeated, freshly
    shuffled, if the rounding came out shorter). The default `num_samples` is round(Σ r_i), the expected
    length, so an epoch is longer than one pass over the images. Crops are placed as for uniform sampling.

    Args:
        class_pixel_counts: (N, C) class pixel counts per training image (the DataModule's table).
        threshold: t of `repeat_factors`; LVIS uses 0.001 for its 1,230 categories. At 0.1 (the default) classes
            in fewer than 10% of the images are oversampled (a class in 2.5% of them, twice). Where every class
            is in many images, image-level repeat factors can do little whatever t: one image is shown at most
            sqrt(f_max / f_min) times as often as another (f: the share of images holding a class). CamVid's
            rarest class by images is in 47% of them: t = 0.1 leaves every image at 1, and the CamVid configs
            use t = 1 (factors 1.00-1.46).
        num_samples, seed, num_replicas, rank: see `EpochSampler`.

    Reference:
        A. Gupta, P. Dollár, R. Girshick, "LVIS: A Dataset for Large Vocabulary Instance Segmentation",
        CVPR 2019, §4.2 (repeat factor sampling).
    """

    def __init__(
        self,
        class_pixel_counts,
        threshold: float = 0.1,
        num_samples: int | None = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if not np.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"RepeatFactorSampler: threshold must be a finite number > 0, got {threshold}")
        super().__init__(class_pixel_counts, num_samples, seed, num_replicas, rank)
        self.threshold = float(threshold)
        self.factors = repeat_factors(self.counts, self.threshold)
        if num_samples is None:
            self.num_samples = max(1, int(round(self.factors.sum())))

    def draw_epoch(self) -> torch.Tensor:
        g = self.generator()
        factors = torch.from_numpy(self.factors)
        whole = factors.floor()
        repeats = (whole + (torch.rand(self.num_images, generator=g, dtype=torch.float64) < factors - whole)).long()
        pool = torch.repeat_interleave(torch.arange(self.num_images), repeats)
        rounds = -(-self.num_samples // len(pool))
        return torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(rounds)])[: self.num_samples]
