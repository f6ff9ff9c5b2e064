"""Balanced Logit Variation (BLV; Wang et al., CVPR 2023): cross-entropy of logits perturbed, in training only, by
non-negative noise scaled per class by the normalised log inverse pixel frequency (rare classes vary most).

What was followed, and where the paper and the public code differ. Sources: the paper's Eq. 3, its supplementary
Algorithm 1 and Table 7, read from a transcription of arXiv 2306.02061v1 rather than from the PDF itself (check
those three against the PDF before relying on the exact forms), and the public code, grantword8/BLV,
fully_sup/mmseg/models/losses/blv_loss.py at commit 494d428.

- Eq. 3: z^_{i,k} = z_{i,k} + (c_k / max_j c_j) |delta(sigma)|, delta(sigma) ~ N(0, sigma^2), a fresh draw per
  pixel i and class k; c_k = log(sum_j q_j / q_k), q_k = the number of training pixels of class k.
- Clipping. The paper's pseudo-code (Algorithm 1) clips the Gaussian draw to [0, 1] and then takes its absolute
  value: v = |clamp(delta, 0, 1)| = min(max(delta, 0), 1). The public code clips to [-1, 1] and then takes the
  absolute value: v = |clamp(delta, -1, 1)| = min(|delta|, 1). They are different distributions: in the paper's
  form every negative draw gives v = 0, so v = 0 with probability 1/2, v = 1 with probability 1 - Phi(1/sigma),
  and otherwise v is in (0, 1); in the code's, v is 0 with probability 0 and 1 with probability 2 (1 - Phi(1/sigma)),
  i.e. v = min(|delta|, 1) with mean twice the paper's. At sigma = 6: paper P(v = 0) = 0.5, P(v = 1) = 0.434,
  E[v] = 0.467; code P(v = 0) = 0, P(v = 1) = 0.868, E[v] = 0.934 (nearly a constant offset of c_k / max c).
  **This module follows the paper's pseudo-code**: v = min(max(delta, 0), 1) (`blv_perturbation`).
- c_k. The paper (Eq. 3 and Algorithm 1) uses c_k = log(sum_j q_j / q_k) = -log pi_k, so the most frequent class
  still varies (c / max c = 0.19 for road on CamVid). The public code at that commit uses
  c_k = log(max_j q_j) - log q_k, which gives the most frequent class no variation. Followed: the paper's.
- sigma. The paper uses sigma = 6 for every task except UDA SYNTHIA -> Cityscapes (sigma = 4), and its ablation
  (Table 7, UDA) finds every sigma in 3..7 better than the baseline, 6 best on GTA5 -> Cityscapes; the public
  code's fully supervised Cityscapes configs pass sigma = 4. Default here: 6, the paper's. With the clip at 1,
  sigma mostly sets how often v reaches 1 (0.401 at sigma = 4, 0.434 at 6), so the two differ little.
- The code samples the noise on the CPU (torch.distributions.Normal) and moves it to the device; here it is drawn
  on the logits' device (below).

Frequencies are pixel counts, as in the paper (Cityscapes pixel numbers in the public configs): the column sums
of the (N, C) class pixel-count table, which reaches the loss through `set_class_statistics` at the start of
fitting. A class with no training pixel (q_k = 0, c_k infinite) counts as rare as the rarest class that occurs
(`tailseg.losses.logit_adjust.class_shares`, the same floor as the logit adjustment): it gets scale 1, the largest
variation. It is never a target in training, so its variation only inflates its logit as a negative, which the
loss then pushes down; the scale stays finite and the others keep theirs (normalising by an infinite c would set
every other class's scale to 0).

Exact resume: the noise is drawn from torch's global random stream on the logits' device (`torch.randn` without
a generator of its own), whose state, CPU and CUDA, a tailseg checkpoint holds (`tailseg.resume`, the stream's
`rng`); a run resumed from any step therefore draws the same noise as the uninterrupted run. In eval mode nothing
is drawn, so validation does not move the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tailseg.losses.common import check_logits_target, check_nonnegative, float32_forward, mean_cross_entropy
from tailseg.losses.logit_adjust import class_shares
from tailseg.losses.weighted_ce import ClassWeightedLoss


def blv_scales(class_pixel_counts: torch.Tensor) -> torch.Tensor:
    """Per-class variation scales s_k = c_k / max_j c_j, c_k = log(sum_j q_j / q_k) = -log pi_k (BLV, Eq. 3).

    q_k is the class's pixel count (column sum of the table); classes with no pixel take the share of the rarest
    class that occurs (`class_shares`), so they get s_k = 1 like it. The rarest class gets 1, the others less,
    in log scale; all classes of equal share get 1. When max c = 0 (a single class holds every pixel) every s_k is 0:
    no class is rarer than another, and nothing is perturbed.

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.

    Returns:
        The (C,) float32 scales, in [0, 1].

    Shape:
        (N, C) -> (C,).

    Raises:
        ValueError: If the table is not a valid (N, C) table with at least one labelled pixel.
    """
    c = -class_shares(class_pixel_counts, "blv_scales").log()
    top = c.max()
    return (c / top if top > 0 else torch.zeros_like(c)).float()


def blv_perturbation(
    shape: Sequence[int],
    scale: torch.Tensor,
    sigma: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The BLV offsets s_k * min(max(delta, 0), 1), delta ~ N(0, sigma^2) independently per entry (paper's clip).

    Drawn from torch's global random stream on `device` (torch.manual_seed before the call reproduces it). Every
    entry is in [0, s_k]; per entry P(0) = 1/2, P(s_k) = 1 - Phi(1/sigma), and
    E = s_k * (sigma / sqrt(2 pi) * (1 - exp(-1 / (2 sigma^2))) + 1 - Phi(1/sigma)). sigma = 0 gives zeros.

    Args:
        shape: (B, C, ...), the shape of the logits; C must equal the length of `scale`.
        scale: The (C,) per-class scales s (`blv_scales`).
        sigma: Standard deviation of delta, finite and >= 0.
        device: Where to draw (the logits' device).
        dtype: Floating dtype of the draw and of the result.

    Returns:
        The offsets, of `shape`.

    Raises:
        ValueError: If sigma is negative or not finite, or `scale` does not have shape (shape[1],).
    """
    sigma = check_nonnegative(sigma, "sigma", "blv_perturbation")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or scale.shape != (shape[1],):
        raise ValueError(
            f"blv_perturbation: scale must have shape (C,) for shape (B, C, ...) = {shape}, got {tuple(scale.shape)}"
        )
    delta = torch.randn(shape, device=device, dtype=dtype) * sigma
    scale = scale.to(device=delta.device, dtype=dtype).view(1, -1, *([1] * (len(shape) - 2)))
    return delta.clamp_(0.0, 1.0) * scale


def balanced_logit_variation(
    logits: torch.Tensor,
    target: torch.Tensor,
    scale: torch.Tensor,
    sigma: float = 6.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """BLV training loss: mean cross-entropy of z + `blv_perturbation` over the valid pixels.

        l_i = -log softmax(z_i + v_i)_{y_i},  v_{i,k} = s_k * min(max(delta_{i,k}, 0), 1),  delta ~ N(0, sigma^2)

    The offsets are constants (no gradient flows into them); the gradient reaching z is
    softmax(z + v) - onehot(y). A batch with no valid pixel gives 0 with a zero gradient. The noise is drawn for
    every pixel, ignored ones included, from torch's global stream on the logits' device, in the dtype of the
    computation (float32 at least; bf16 / fp16 logits are upcast first).

    Args:
        logits: Class scores z.
        target: Class labels, or `ignore_index`.
        scale: The (C,) per-class scales s (`blv_scales`).
        sigma: Standard deviation of delta, finite and >= 0 (0: plain cross-entropy).
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W), scale (C,) -> scalar.

    Reference:
        Y. Wang, J. Fei, H. Wang, W. Li, T. Bao, L. Wu, R. Zhao and Y. Shen, "Balancing Logit Variation for
        Long-tailed Semantic Segmentation", CVPR 2023, Eq. 3 and supplementary Algorithm 1.
    """
    compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    offsets = blv_perturbation(compute.shape, scale, sigma, device=compute.device, dtype=compute.dtype)
    return mean_cross_entropy(compute + offsets, target, ignore_index)


class BalancedLogitVariation(ClassWeightedLoss):
    """Balanced Logit Variation (Wang et al., CVPR 2023): in training, cross-entropy of logits perturbed per class.

    Training mode (`self.training`, set by the model's `train()`): `balanced_logit_variation`, the mean
    cross-entropy of z_k + s_k min(max(delta, 0), 1), delta ~ N(0, sigma^2) drawn per pixel and class from torch's
    global stream. Eval mode: the plain mean cross-entropy of z, exactly `CrossEntropy`; the variation is
    discarded at inference, as in the paper. So `val/loss` (the model calls the loss in validation, in eval mode) is
    the plain cross-entropy of the unperturbed logits, not comparable with `train/loss`, which includes the noise.

    The scales s_k = c_k / max c, c_k = -log pi_k (`blv_scales`), come from the training set's class pixel-count
    table through `set_class_statistics` and are kept in the `class_weights` buffer of `ClassWeightedLoss`
    (readable as `scale`), saved in checkpoints. Calling the loss in training mode before they are set raises a
    RuntimeError; eval mode does not need them.

    The module docstring says what was followed where the paper and the public code differ (the clip of the noise,
    c_k, sigma) and why resuming a run reproduces the noise.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        sigma: Standard deviation of the Gaussian draw, finite and >= 0; 6 is the paper's (0: plain cross-entropy).
        ignore_index: Label of pixels that are left out.

    Reference:
        Y. Wang et al., "Balancing Logit Variation for Long-tailed Semantic Segmentation", CVPR 2023.
    """

    vector_name = "variation scales"
    takes_fixed = False

    def __init__(self, sigma: float = 6.0, ignore_index: int = 255) -> None:
        sigma = check_nonnegative(sigma, "sigma", type(self).__name__)
        super().__init__(None, blv_scales, field="scale")
        self.sigma, self.ignore_index = sigma, ignore_index

    @property
    def scale(self) -> torch.Tensor | None:
        """The (C,) variation scales s (None until `set_class_statistics` or a checkpoint sets them)."""
        return self.class_weights

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        if not self.training:
            return mean_cross_entropy(logits, target, self.ignore_index)
        scale = self.weights_for(logits)
        assert scale is not None
        return balanced_logit_variation(logits, target, scale, self.sigma, self.ignore_index)
