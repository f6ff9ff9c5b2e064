"""Losses, each an `nn.Module` called as `loss(logits[B, C, H, W], target[B, H, W]) -> scalar`.

- `CrossEntropy`: the papers' BASE / MCCE.
- `LossMaxPooling` (`lmp_weights`, `loss_max_pooling`): LMP paper, Theorems 1-2, Algorithm 1.
- `TiltedCrossEntropy`: TCE paper, eqs. 2-3 (image or class level).
- `Sum`: a weighted sum of any losses given by `class_path` (CE + Lovász, CE + Dice, LMP + Lovász as configs),
  each term logged.
- Baselines: `MedianFrequencyCrossEntropy` (Eigen & Fergus), `ClassBalancedCrossEntropy` (Cui et al.),
  `FocalLoss` (Lin et al.),
  `BootstrappedCrossEntropy` (Wu et al.), `OhemCrossEntropy`.

Losses that need class statistics define `set_class_statistics(counts)`; the model calls it
with the DataModule's cached (N, C) class pixel-count table (`Sum` passes it on to its terms).
"""

from tailseg.losses.bootstrap import BootstrappedCrossEntropy
from tailseg.losses.ce import CrossEntropy
from tailseg.losses.class_balanced import ClassBalancedCrossEntropy, effective_number_weights
from tailseg.losses.compound import Sum
from tailseg.losses.focal import FocalLoss
from tailseg.losses.lmp import LossMaxPooling, lmp_weights, loss_max_pooling
from tailseg.losses.ohem import OhemCrossEntropy
from tailseg.losses.tilted import TiltedCrossEntropy
from tailseg.losses.weighted_ce import MedianFrequencyCrossEntropy

__all__ = [
    "BootstrappedCrossEntropy",
    "ClassBalancedCrossEntropy",
    "CrossEntropy",
    "FocalLoss",
    "LossMaxPooling",
    "MedianFrequencyCrossEntropy",
    "OhemCrossEntropy",
    "Sum",
    "TiltedCrossEntropy",
    "effective_number_weights",
    "lmp_weights",
    "loss_max_pooling",
]
