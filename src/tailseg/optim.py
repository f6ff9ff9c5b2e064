"""The papers' "poly" learning-rate schedule."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class PolyLR(LRScheduler):
    """lr_k = lr_0 * (1 - k / total_steps) ** power, stepped once per optimisation step.

    The "poly" decay of DeepLab (Chen et al.), used by both papers with power 0.9. After
    `total_steps` the rate stays at 0.

    Args:
        optimizer: The wrapped optimizer.
        total_steps: Number of optimisation steps of the whole run (the model passes
            `trainer.estimated_stepping_batches`).
        power: The decay exponent.
        last_epoch: The index of the last step, -1 to start afresh (PyTorch's convention).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, power: float = 0.9, last_epoch: int = -1) -> None:
        if total_steps < 1:
            raise ValueError(f"PolyLR: total_steps must be >= 1, got {total_steps}")
        if power < 0:
            raise ValueError(f"PolyLR: power must be >= 0, got {power}")
        self.total_steps, self.power = int(total_steps), float(power)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = (1.0 - min(self.last_epoch, self.total_steps) / self.total_steps) ** self.power
        return [base_lr * factor for base_lr in self.base_lrs]
