"""Logit-adjusted cross-entropy (Menon et al., ICLR 2021): cross-entropy of the logits shifted by tau * log pi.

Also holds the class prior both long-tail losses of this package derive from the (N, C) class pixel-count table
(`class_shares`, `log_class_prior`): the logit adjustment and Balanced Logit Variation (`tailseg.losses.blv`).
"""

from __future__ import annotations

import torch

from tailseg.losses.common import check_logits_target, check_nonnegative, float32_forward, mean_cross_entropy
from tailseg.losses.weighted_ce import ClassWeightedLoss, check_class_pixel_counts


def class_shares(class_pixel_counts: torch.Tensor, name: str = "class_shares") -> torch.Tensor:
    """The training set's class pixel shares pi_c, with classes that never occur floored to the rarest one's.

    pi_c = (pixels of class c) / (all labelled pixels), from the column sums of the table. A class with no pixel
    in the table (pi_c = 0) gets the smallest positive share instead: it counts as rare as the rarest class that
    occurs. Why this floor and not a tiny epsilon: log pi_c must be finite (a class absent from the training set
    can still be labelled in the validation set, where the logit-adjusted loss would otherwise be infinite), and
    the floor keeps it within the range the data shows. An epsilon such as 1e-12 gives log pi_c = -27.6: the
    adjusted logit z_c - 27.6 has a softmax share of ~0 in training, so z_c gets no gradient at all and is left
    where initialisation put it, while the plain z_c is what inference compares; and a validation pixel of that
    class costs ~27.6. With the floor, z_c is pushed down in training like the rarest class's negatives are.

    The floored shares no longer sum exactly to 1 when a class is absent; nothing depends on it (the softmax is
    unchanged by adding one constant to every logit, so only ratios of shares matter).

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.
        name: Name of the caller, for the error messages.

    Returns:
        The (C,) float64 shares, all > 0.

    Shape:
        (N, C) -> (C,).

    Raises:
        ValueError: If the table is not a valid (N, C) table with at least one labelled pixel.
    """
    counts = check_class_pixel_counts(class_pixel_counts, name)
    pixels = counts.sum(0)
    shares = pixels / pixels.sum()
    return shares.clamp_min(shares[shares > 0].min())


def log_class_prior(class_pixel_counts: torch.Tensor) -> torch.Tensor:
    """log pi_c of the training set's class pixel shares (`class_shares`: absent classes take the rarest share).

    Args:
        class_pixel_counts: counts[i, c] = pixels of class c in training image i.

    Returns:
        The (C,) float32 log prior, all entries finite and <= 0.

    Shape:
        (N, C) -> (C,).
    """
    return class_shares(class_pixel_counts, "log_class_prior").log().float()


def logit_adjusted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    log_prior: torch.Tensor,
    tau: float = 1.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Logit-adjusted softmax cross-entropy, averaged over the valid pixels.

        l_i = -log( exp(z_{i,y_i} + tau log pi_{y_i}) / sum_c exp(z_{i,c} + tau log pi_c) )
            = log( 1 + sum_{c != y_i} (pi_c / pi_{y_i})^tau exp(z_{i,c} - z_{i,y_i}) )

    The second form shows what it does: a pixel of class y must beat a class c by the margin tau log(pi_c / pi_y),
    large when y is rare and c frequent, small or negative the other way round. Minimising it makes the plain
    logits z estimate the class-balanced posterior (p(y | x) / pi_y up to a constant per pixel, for tau = 1), so
    argmax_c z_c, what inference takes, is the classifier of the balanced error rather than of the pixel error.

    Normalisation: the sum over the valid pixels of the batch divided by their number; a batch with no valid pixel
    gives 0 with a zero gradient. tau = 0 is the plain mean cross-entropy. Computed in float32 at least (bf16 / fp16
    logits are upcast before the shift).

    Args:
        logits: Class scores z.
        target: Class labels, or `ignore_index`.
        log_prior: The (C,) log pi, finite (`log_class_prior`).
        tau: Scale of the adjustment, finite and >= 0.
        ignore_index: Label of pixels that are left out.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W), log_prior (C,) -> scalar.

    Raises:
        ValueError: If tau is negative or not finite, or log_prior is not a finite (C,) vector.

    Reference:
        A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit and S. Kumar, "Long-tail learning via logit
        adjustment", ICLR 2021, section 5 (the logit adjusted loss).
    """
    name = "logit_adjusted_cross_entropy"
    tau = check_nonnegative(tau, "tau", name)
    if log_prior.ndim != 1 or log_prior.numel() != logits.shape[1]:
        raise ValueError(f"{name}: log_prior must have shape (C,) = ({logits.shape[1]},), got {tuple(log_prior.shape)}")
    if not torch.isfinite(log_prior).all():
        raise ValueError(f"{name}: log_prior must be finite (floor the shares of absent classes: class_shares)")
    compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    shift = tau * log_prior.to(device=compute.device, dtype=compute.dtype)
    return mean_cross_entropy(compute + shift.view(1, -1, 1, 1), target, ignore_index)


class LogitAdjustedCrossEntropy(ClassWeightedLoss):
    """Logit-adjusted cross-entropy (Menon et al.): cross-entropy of z_c + tau log pi_c (`logit_adjusted_cross_entropy`).

    pi is the training set's class pixel share, from the (N, C) class pixel-count table that reaches the loss
    through `set_class_statistics` at the start of fitting (`class_shares`: a class that never occurs takes the
    share of the rarest class that does). log pi is kept in the `class_weights` buffer of `ClassWeightedLoss`
    (readable as `log_prior`), so it is saved in checkpoints and restored without the training set. Calling the
    loss before it is set raises a RuntimeError.

    Inference is unchanged: the adjustment lives only in the loss, and the model predicts argmax_c z_c of the plain
    logits (which the adjusted loss trains to favour rare classes by log(pi_frequent / pi_rare)); no post-hoc shift.

    What `val/loss` means: the model calls the loss in validation too, and this loss is the same in both modes, so
    `val/loss` is the logit-adjusted loss on the validation pixels, with the training set's pi: the training
    objective on held-out data, comparable with `train/loss`. It is not the cross-entropy of the predictions (those
    use the plain logits), and is lower than that on frequent classes and higher on rare ones.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        tau: Scale of the adjustment, finite and >= 0; 1 is the paper's default (tau = 0: plain cross-entropy).
        ignore_index: Label of pixels that are left out.

    Reference:
        A. K. Menon et al., "Long-tail learning via logit adjustment", ICLR 2021, section 5.
    """

    vector_name = "log class priors"
    takes_fixed = False

    def __init__(self, tau: float = 1.0, ignore_index: int = 255) -> None:
        tau = check_nonnegative(tau, "tau", type(self).__name__)
        super().__init__(None, log_class_prior, field="log_prior")
        self.tau, self.ignore_index = tau, ignore_index

    @property
    def log_prior(self) -> torch.Tensor | None:
        """The (C,) log pi of the training set (None until `set_class_statistics` or a checkpoint sets it)."""
        return self.class_weights

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        log_prior = self.weights_for(logits)
        assert log_prior is not None
        return logit_adjusted_cross_entropy(logits, target, log_prior, self.tau, self.ignore_index)
