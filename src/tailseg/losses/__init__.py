"""Losses, each an `nn.Module` called as `loss(logits[B, C, H, W], target[B, H, W]) -> scalar`.

- `CrossEntropy`: the papers' BASE / MCCE.
- `LossMaxPooling` (`lmp_weights`, `loss_max_pooling`): LMP paper, Theorems 1-2, Algorithm 1.
- `TiltedCrossEntropy`: TCE paper, eqs. 2-3 (image or class level).
- `Sum`: a weighted sum of any losses given by `class_path` (CE + Lovász, CE + Dice, LMP + Lovász as configs),
  each term logged.
- Baselines: `MedianFrequencyCrossEntropy` (Eigen & Fergus), `ClassBalancedCrossEntropy` (Cui et al.),
  `FocalLoss` (Lin et al.),
  `BootstrappedCrossEntropy` (Wu et al.), `OhemCrossEntropy`.
- Long-tail losses of 2021-2023: `LogitAdjustedCrossEntropy` (`logit_adjusted_cross_entropy`; Menon et al.,
  ICLR 2021), `BalancedLogitVariation` (`blv_perturbation`, `blv_scales`; Wang et al., CVPR 2023: noise on the
  logits in training only), `RecallCrossEntropy` (`recall_cross_entropy`; Tian et al., ICRA 2022: cross-entropy
  weighted per class by the batch's false-negative rate, optionally its moving average).

Losses that need class statistics define `set_class_statistics(counts)`; the model calls it
with the DataModule's cached (N, C) class pixel-count table (`Sum` passes it on to its terms).
"""

from tailseg.losses.blv import BalancedLogitVariation, blv_perturbation, blv_scales
from tailseg.losses.bootstrap import BootstrappedCrossEntropy
from tailseg.losses.ce import CrossEntropy
from tailseg.losses.class_balanced import ClassBalancedCrossEntropy, effective_number_weights
from tailseg.losses.compound import Sum
from tailseg.losses.focal import FocalLoss
from tailseg.losses.lmp import LossMaxPooling, lmp_weights, loss_max_pooling
from tailseg.losses.logit_adjust import LogitAdjustedCrossEntropy, logit_adjusted_cross_entropy
from tailseg.losses.ohem import OhemCrossEntropy
from tailseg.losses.recall import RecallCrossEntropy, recall_cross_entropy
from tailseg.losses.tilted import TiltedCrossEntropy
from tailseg.losses.weighted_ce import MedianFrequencyCrossEntropy

__all__ = [
    "BalancedLogitVariation",
    "BootstrappedCrossEntropy",
    "ClassBalancedCrossEntropy",
    "CrossEntropy",
    "FocalLoss",
    "LogitAdjustedCrossEntropy",
    "LossMaxPooling",
    "MedianFrequencyCrossEntropy",
    "OhemCrossEntropy",
    "RecallCrossEntropy",
    "Sum",
    "TiltedCrossEntropy",
    "blv_perturbation",
    "blv_scales",
    "effective_number_weights",
    "lmp_weights",
    "logit_adjusted_cross_entropy",
    "loss_max_pooling",
    "recall_cross_entropy",
]
