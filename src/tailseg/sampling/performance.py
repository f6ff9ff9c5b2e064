"""Performance-aware sampling (LMP paper, §4 "Complimentary sampling strategy" and §5.1).

Minibatches are compiled from two kinds of draws: with probability 1 − `mix` a uniform draw
over the training images; otherwise a class-driven draw that picks a class c with probability
`class_probabilities[c]` ∝ (1 − IoU_c)^power, where IoU_c is the model's per-class IoU measured on
the training crops (`update`, fed by `tailseg.callbacks.ClassIoUFeedback`), and then an image
that contains c, uniformly among those images. The crop of a class-driven draw is placed on a
random pixel of c (the draw is the pair (image, c)), so the model actually sees the class.

Decisions:
- Classes with no pixel in the training set are never chosen; before the first `update`, and
  for classes whose IoU is NaN (not measured), the score is the most under-performing one
  (IoU 0, score 1).
- `power` (default 1, the paper's inverse sampling (1 − IoU)) sharpens (> 1) or flattens (< 1)
  the preference; 0 gives uniform class sampling. If every present class has IoU 1 the class
  choice is uniform over the present classes.
- Images are chosen uniformly among those containing the class (not in proportion to its pixels),
  so that small instances of a class are shown as often as large ones.
- An epoch's sequence is drawn from the IoU known when that epoch was first drawn; updates during the
  epoch (`ClassIoUFeedback(every_n_steps=...)`) take effect from the next epoch. The sampler remembers
  the IoU of its current epoch (`state_dict`), so a run resumed in the middle of an epoch draws that
  epoch's sequence again, whatever was fed in between.
"""

from __future__ import annotations

import numpy as np
import torch

from tailseg.sampling.base import EpochSampler, ImagesByClass


def inverse_iou_probabilities(iou: np.ndarray, present: np.ndarray, power: float = 1.0) -> np.ndarray:
    """P(class c | class-driven draw) ∝ (1 − IoU_c)^power over the present classes; NaN IoU counts as 0.

    Args:
        iou: (C,) per-class IoU in [0, 1], NaN for classes not measured.
        present: (C,) bool, classes that occur in the training set.
        power: Exponent of the score.

    Returns:
        (C,) float64 probabilities, 0 for absent classes, summing to 1.
    """
    score = 1.0 - np.where(np.isnan(iou), 0.0, iou)
    score = np.where(present, np.clip(score, 0.0, 1.0) ** power, 0.0)
    if score.sum() <= 0:
        score = present.astype(np.float64)
    return score / score.sum()


class PerformanceAwareSampler(EpochSampler):
    """Draws (image index, class id) pairs, class id −1 for a uniform draw (see the module docs).

    Args:
        class_pixel_counts: (N, C) class pixel counts per training image (the DataModule's table).
        mix: Probability that a draw is class-driven (1 − mix: uniform over images), in [0, 1].
        num_samples: Draws per epoch over all replicas (default N).
        seed: Seed of the per-epoch sequence (None: the DataModule's seed).
        num_replicas: DDP world size (default: torch.distributed's, or 1).
        rank: This process's rank (default: torch.distributed's, or 0).
        power: Exponent of the (1 − IoU) score.
    """

    def __init__(
        self,
        class_pixel_counts,
        mix: float = 0.5,
        num_samples: int | None = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        power: float = 1.0,
    ) -> None:
        super().__init__(class_pixel_counts, num_samples, seed, num_replicas, rank)
        if not 0.0 <= float(mix) <= 1.0:
            raise ValueError(f"PerformanceAwareSampler: mix must be in [0, 1], got {mix}")
        if not np.isfinite(power) or power < 0:
            raise ValueError(f"PerformanceAwareSampler: power must be a finite number >= 0, got {power}")
        self.mix, self.power = float(mix), float(power)
        self.num_classes = self.counts.shape[1]
        self.present = self.counts.sum(axis=0) > 0
        if not self.present.any():
            raise ValueError("PerformanceAwareSampler: the class pixel counts hold no labelled pixel")
        self._images = ImagesByClass(self.counts)
        self.iou = np.full(self.num_classes, np.nan)
        self._drawn: tuple[int, np.ndarray] | None = None  # (epoch, the IoU its sequence was drawn from)

    @property
    def class_probabilities(self) -> torch.Tensor:
        """(C,) P(class c | a class-driven draw); sums to 1."""
        return torch.from_numpy(inverse_iou_probabilities(self.iou, self.present, self.power))

    def update(self, iou) -> None:
        """Set the per-class training IoU, (C,) in [0, 1] with NaN for classes not measured."""
        values = np.asarray(iou.detach().cpu() if isinstance(iou, torch.Tensor) else iou, dtype=np.float64)
        if values.shape != (self.num_classes,):
            raise ValueError(
                f"PerformanceAwareSampler.update: expected {self.num_classes} per-class IoU values, got shape {values.shape}"
            )
        bad = ~np.isnan(values) & ((values < 0) | (values > 1))
        if bad.any():
            raise ValueError(
                f"PerformanceAwareSampler.update: IoU must be in [0, 1] (or NaN), got {values[bad].tolist()}"
            )
        self.iou = values.copy()

    def draw_epoch(self) -> torch.Tensor:
        if self._drawn is None or self._drawn[0] != self.epoch:
            self._drawn = (self.epoch, self.iou.copy())
        probabilities = torch.from_numpy(inverse_iou_probabilities(self._drawn[1], self.present, self.power))
        g = self.generator()
        n = self.num_samples
        class_driven = torch.rand(n, generator=g) < self.mix
        uniform = torch.randint(self.num_images, (n,), generator=g)
        classes = torch.multinomial(probabilities, n, replacement=True, generator=g)
        driven = self._images.draw(classes, torch.rand(n, generator=g, dtype=torch.float64))
        index = torch.where(class_driven, driven, uniform)
        return torch.stack([index, torch.where(class_driven, classes, torch.full_like(classes, -1))], dim=1)

    def state_dict(self) -> dict:
        drawn = None if self._drawn is None else {"epoch": self._drawn[0], "iou": self._drawn[1].tolist()}
        return {**super().state_dict(), "iou": self.iou.tolist(), "drawn": drawn}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.update(np.asarray(state["iou"], dtype=np.float64))
        drawn = state.get("drawn")
        self._drawn = None if drawn is None else (int(drawn["epoch"]), np.asarray(drawn["iou"], dtype=np.float64))
