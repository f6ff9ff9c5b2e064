"""Recall loss: cross-entropy weighted per class by the false-negative rate of the batch (Tian et al., ICRA 2022).

J. Tian, N. C. Mithun, Z. Seymour, H.-P. Chiu and Z. Kira, "Striking the right balance: recall loss for semantic
segmentation", ICRA 2022, arXiv 2106.14917; the authors' code is github.com/PotatoTian/recall-semseg
(`ptsemseg/loss/recall_loss.py`).

The loss (the paper's recall loss, in its method section; the sum over the pixels divided by their number, as the
authors' code takes it):

    L = -(1 / N) sum_c sum_{n : y_n = c} (1 - R_c) log p_{n, c},      R_c = TP_c / (TP_c + FN_c) = TP_c / N_c

over the N valid pixels n of the batch, where p_{n, c} is the softmax probability of the label c = y_n,
TP_c the pixels of class c whose prediction (the argmax of the logits) is c, FN_c = N_c - TP_c those predicted
as another class, and N_c = TP_c + FN_c the pixels labelled c. So the weight of class c is its false-negative rate
1 - R_c = FN_c / N_c, and the loss is sum_c FN_c * (mean cross-entropy of the pixels of class c) / N: with the
same recall in every class the weights are equal (a multiple of the cross-entropy), with the same number of false
negatives in every class they are proportional to 1 / N_c (inverse frequency) - the paper's "changes gradually
between the standard cross entropy loss and the inverse frequency weighted loss". The recall is "instantaneous":
that of the batch the loss is computed on, under the current weights (`momentum=None`: the paper and its code).

Decisions (the public code differs in the points marked *):

- *Ignored pixels* (label `ignore_index`) count nowhere: not in N_c, TP_c, FN_c, nor in the loss or in N, whatever
  their argmax. (* The public code does not exclude them: it remaps the ignore label onto a class of its counts, so
  ignored pixels change that class's recall, and its per-pixel weights index the weight table by the label, which
  fails for an ignore label >= C instead of leaving those pixels out.)
- *Predictions* are the argmax of the logits the loss is given (of the batch, before the optimiser step); the
  predicted label of a pixel only matters for pixels labelled with a class, so a pixel labelled c and predicted d
  is a false negative of c; false positives do not enter the recall.
- *Normalisation*: the sum over the valid pixels divided by their number N, as the cross-entropy it reweights (and
  as the public code's `mean`, less the ignored pixels); with every weight 1 it is the mean cross-entropy. It is not
  normalised by the weights: a batch with every pixel right has weights 0 and loss 0. A batch with no valid pixel
  gives 0 with a zero gradient.
- *A class with no false negative* (recall 1) has weight 0: its pixels add nothing to the loss or the gradient.
  (* The public code starts its false-negative counter at one, so such a class gets 1 / N_c instead.)
- *A class absent from the batch* (N_c = 0) has no pixel in the loss, so its weight has no effect; it is reported
  as 0 (`recall_weights`), and with `momentum` its running recall is left as it was (the batch says nothing of it).
  (* The public code's counters give such a class weight 1, equally without effect.)
- *Gradient*: the weights are constants of the step (the argmax has no gradient; they are computed under no_grad):
  the gradient is that of the cross-entropy weighted by 1 - R_c.
- *Moving average* (`momentum`, an option that neither the paper's method nor its code has; default None): with
  few pixels of a class in a batch its recall jumps between batches (one crop of a rare class: 0 or 1). With
  `momentum = m` the recall that weighs the loss is a per-class exponential moving average over the training
  batches, R̄_c <- m R̄_c + (1 - m) R_c for each class present in the batch (R̄_c = R_c at the class's first batch;
  classes absent keep R̄_c), updated before it weighs the batch, so `momentum=0` is the per-batch loss. The state
  (`running_recall`, and `recall_batches`, the number of training batches that held each class) is a pair of
  buffers: it moves with the module, is saved in the model's checkpoints and restored on resume, so a resumed run
  continues it exactly. It is updated only in training mode; in eval mode (the model's validation loss) the loss is
  the one the state would give on that batch, without changing the state.
- *Distributed training (DDP)*: in training mode the per-class counts N_c and TP_c are summed over the ranks (one
  all-reduce of 2C integers a step), so the recall is that of the global batch, as in a single-process run of the
  same batch, and the moving average is the same on every rank (rank 0's checkpoint then holds every rank's state).
  Each rank's loss is still the mean over its own pixels, as for every other loss. In eval mode the counts are the
  rank's own (the ranks may evaluate different numbers of batches, so no collective is run there).

Computed in float32 at least (bf16 / fp16 logits are upcast; `float32_forward`), on the logits' device.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy
from tailseg.losses.weighted_ce import check_class_pixel_counts


def recall_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class true positives and pixel counts of the batch, (TP_c, N_c), over its valid pixels.

    N_c = pixels labelled c; TP_c = pixels labelled c whose argmax over the logits is c (FN_c = N_c - TP_c).
    Pixels labelled `ignore_index` count in neither, whatever their argmax.

    Args:
        logits: Class scores.
        target: Class labels, or `ignore_index`.
        ignore_index: Label of pixels that are left out.

    Returns:
        (TP, N), two (C,) int64 tensors on the logits' device.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> (C,), (C,).
    """
    num_classes = logits.shape[1]
    with torch.no_grad():
        valid = target != ignore_index
        labels = target.masked_fill(~valid, 0).flatten()
        hit = (logits.argmax(1) == target) & valid
        n = torch.zeros(num_classes, dtype=torch.int64, device=logits.device)
        tp = torch.zeros_like(n)
        n.scatter_add_(0, labels, valid.flatten().long())
        tp.scatter_add_(0, labels, hit.flatten().long())
    return tp, n


def recall_weights(tp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The recall loss's class weights 1 - R_c = FN_c / N_c of counts (TP_c, N_c); 0 for a class with N_c = 0.

    Returns:
        (C,) float32 weights in [0, 1], on the counts' device.
    """
    present = n > 0
    recall = tp.float() / n.clamp_min(1).float()
    return torch.where(present, 1.0 - recall, 0.0)


def recall_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Recall loss L = -(1/N) sum_n (1 - R_{y_n}) log p_{n, y_n} over the N valid pixels of the batch.

    R_c is the recall of class c in this batch (`recall_counts`, `recall_weights`) unless `weights` gives the
    (C,) weights 1 - R_c (e.g. from a moving average); either way they are constants for the gradient. A batch
    with no valid pixel gives 0 with a zero gradient. See the module docs for the paper's definition and choices.

    Args:
        logits: Class scores; bf16/fp16 are computed in float32.
        target: Class labels, or `ignore_index`.
        ignore_index: Label of pixels that are left out.
        weights: Per-class weights (C,), or None for the false-negative rates of this batch.

    Returns:
        The scalar loss (float32, or float64 for float64 logits).

    Shape:
        logits (B, C, H, W), target (B, H, W), weights (C,) -> scalar.
    """
    losses, valid = pixel_cross_entropy(logits, target, ignore_index)
    if weights is None:
        weights = recall_weights(*recall_counts(logits, target, ignore_index))
    weights = weights.detach().to(device=losses.device, dtype=losses.dtype)
    pixel_weights = weights[target.masked_fill(~valid, 0)] * valid
    return (pixel_weights * losses).sum() / valid.sum().clamp_min(1)


class RecallCrossEntropy(nn.Module):
    """Recall loss (Tian et al., ICRA 2022): cross-entropy weighted per class by the batch's false-negative rate.

    loss = -(1/N) sum_n (1 - R_{y_n}) log p_{n, y_n} over the N valid pixels, R_c the recall of class c among the
    batch's valid pixels under the argmax of the logits (`recall_cross_entropy`; the module docs give the paper's
    definition and how ignored pixels, absent classes, DDP and the moving average are handled).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        ignore_index: Label of pixels that are left out (of the recall and of the loss).
        momentum: None (the paper): the recall of each batch. A number m in [0, 1): the recall is an exponential
            moving average over the training batches, R̄_c <- m R̄_c + (1 - m) R_c for the classes in the batch,
            kept in buffers that checkpoints save (0 gives the per-batch loss, with the state kept).

    Raises:
        ValueError: If `momentum` is not None or a number in [0, 1), or `ignore_index` is not an integer.

    Reference:
        J. Tian, N. C. Mithun, Z. Seymour, H.-P. Chiu, Z. Kira, "Striking the right balance: recall loss for
        semantic segmentation", ICRA 2022, arXiv 2106.14917, section III.
    """

    running_recall: torch.Tensor | None
    recall_batches: torch.Tensor | None

    def __init__(self, ignore_index: int = 255, momentum: float | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"{name}: ignore_index must be an integer, got {ignore_index!r}")
        if momentum is not None and (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not math.isfinite(momentum)
            or not 0 <= momentum < 1
        ):
            raise ValueError(f"{name}: momentum must be None or a number in [0, 1), got {momentum!r}")
        self.ignore_index = ignore_index
        self.momentum = None if momentum is None else float(momentum)
        # The moving average's state, (C,) each; None until the number of classes is known (set_class_statistics or
        # the first batch), and always None without momentum (nothing then goes into checkpoints).
        self.register_buffer("running_recall", None)
        self.register_buffer("recall_batches", None)

    def set_class_statistics(self, class_pixel_counts: torch.Tensor) -> None:
        """Receive the training set's (N, C) class pixel-count table (the model calls it at the start of fitting).

        The loss uses no statistics of the training set; the table's number of classes creates the moving average's
        state before the first step (so that it is in every checkpoint, also one written inside the first step).

        Raises:
            ValueError: If the table is invalid, or its number of classes differs from the state's.
        """
        counts = check_class_pixel_counts(class_pixel_counts, type(self).__name__)
        if self.momentum is not None:
            self._ensure_state(counts.shape[1], self.running_recall.device if self.running_recall is not None else None)

    def _ensure_state(self, num_classes: int, device: torch.device | None) -> None:
        if self.running_recall is None:
            self.running_recall = torch.zeros(num_classes, dtype=torch.float32, device=device)
            self.recall_batches = torch.zeros(num_classes, dtype=torch.int64, device=device)
        elif self.running_recall.numel() != num_classes:
            raise ValueError(
                f"{type(self).__name__}: the running recall has {self.running_recall.numel()} classes but the logits "
                f"have C={num_classes}"
            )
        if device is not None and self.running_recall.device != torch.device(device):
            self.running_recall = self.running_recall.to(device)
            self.recall_batches = self.recall_batches.to(device)

    def _weights(self, tp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """1 - R_c with R_c the batch's recall, or its moving average (updated in training mode)."""
        if self.momentum is None:
            return recall_weights(tp, n)
        self._ensure_state(tp.numel(), tp.device)
        assert self.running_recall is not None and self.recall_batches is not None
        present = n > 0
        batch_recall = tp.float() / n.clamp_min(1).float()
        seen = self.recall_batches > 0
        blended = self.momentum * self.running_recall + (1.0 - self.momentum) * batch_recall
        recall = torch.where(present, torch.where(seen, blended, batch_recall), self.running_recall)
        if self.training:
            self.running_recall = recall
            self.recall_batches = self.recall_batches + present.long()
        return torch.where(present, 1.0 - recall, 0.0)

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        tp, n = recall_counts(logits, target, self.ignore_index)
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            counts = torch.stack([tp, n])
            dist.all_reduce(counts)  # the recall of the global batch, the same on every rank
            tp, n = counts[0], counts[1]
        with torch.no_grad():
            weights = self._weights(tp, n)
        return recall_cross_entropy(logits, target, self.ignore_index, weights)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A None buffer is skipped by nn.Module's loader; give the moving average's state a tensor to load into.
        for name in ("running_recall", "recall_batches"):
            key = prefix + name
            if getattr(self, name) is None and key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device="cpu"))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, momentum={self.momentum}"
