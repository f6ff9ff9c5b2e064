"""`Sum`: a weighted sum of losses, each given by `class_path`, so that compound losses are configs, not classes.

    loss:
      class_path: tailseg.losses.Sum
      init_args:
        terms:
        - {class_path: tailseg.losses.CrossEntropy}
        - {class_path: segmentation_models_pytorch.losses.LovaszLoss, init_args: {mode: multiclass, ignore_index: 255}}
        weights: [1.0, 1.0]

Any loss called as `loss(logits, target) -> scalar` can be a term: tailseg's own, segmentation-models-pytorch's
(Lovász, Dice, ...), another library's. What the model does with a single loss it does with the sum and, through
it, with every term: the class statistics reach each term that takes them, the ignore label is checked on all,
every term computes in float32, and the terms' buffers (class weights) travel in checkpoints.

Term names (`Sum.names`, the keys of `Sum.term_values` and of the logged `train/loss/<name>`): the term's class
name in snake case (`CrossEntropy` -> `cross_entropy`, `LossMaxPooling` -> `loss_max_pooling`), with a trailing
`_loss` dropped (`LovaszLoss` -> `lovasz`, `DiceLoss` -> `dice`, `FocalLoss` -> `focal`). A name that more than one
term would get is numbered on every one of them in the order of the terms (`dice_1`, `dice_2`); should a name
still clash with an earlier term's (class names such as `Dice_1`), `_2`, `_3`, ... is appended until it does not.
So the names depend only on the classes of the terms and their order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from tailseg.losses.common import check_nonnegative, float32_forward, in_float32


def term_name(module: nn.Module) -> str:
    """The readable name of a loss term: its class name in snake case, without a trailing `_loss`.

    `CrossEntropy` -> `cross_entropy`, `LovaszLoss` -> `lovasz`, `BCEWithLogitsLoss` -> `bce_with_logits`,
    `Loss` -> `loss`.
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", type(module).__name__).lower()
    return words[: -len("_loss")] if words.endswith("_loss") and len(words) > len("_loss") else words


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` made unique: a name that occurs more than once gets `_1`, `_2`, ... on each occurrence, in order;
    a result that still clashes with an earlier one gets `_` and the next free number."""
    counts, seen, taken, out = Counter(names), Counter(), set(), []
    for name in names:
        seen[name] += 1
        candidate = f"{name}_{seen[name]}" if counts[name] > 1 else name
        suffix = 1
        while candidate in taken:
            suffix += 1
            candidate = f"{name}_{seen[name]}_{suffix}" if counts[name] > 1 else f"{name}_{suffix}"
        taken.add(candidate)
        out.append(candidate)
    return out


class Sum(nn.Module):
    """Weighted sum of losses: `loss = sum_k weights[k] * terms[k](logits, target)`.

    Each term is called through `in_float32` (float32 whatever the autocast state, float64 logits stay float64),
    so the sum and its gradient are the weighted sums of the terms' values and gradients.

    What the model sees of it:

    - `set_class_statistics(counts)` passes the (N, C) class pixel-count table on to every term that defines
      `set_class_statistics` (a no-op for the others); the terms' buffers (e.g. `FocalLoss`'s class weights) are
      the sum's (`terms.<k>.<buffer>`) and so are saved and loaded with the model.
    - `ignore_index`: the one value that every term having an `ignore_index` attribute holds (smp's losses have one,
      None unless set); the constructor raises a ValueError naming the terms if they disagree. A sum none of
      whose terms has one has no `ignore_index` attribute.
    - `term_values`: {name: the term's unweighted value at the last call, detached} (None before the first
      call), with a key per term from construction on (`names`, see the module docs); the model logs each as
      `train/loss/<name>` (and `val/loss/<name>`, `test/loss/<name>` as the mean over the images, as `val/loss`).

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar.

    Args:
        terms: The losses, at least one; each an `nn.Module` called as `term(logits, target) -> scalar`.
        weights: One finite, non-negative weight per term, not all 0; None weighs every term 1. A term of
            weight 0 is computed (without gradient) and logged but left out of the loss: it adds nothing to the
            loss or its gradient, even when its value is infinite or NaN.

    Raises:
        ValueError: No term, a term that is not an `nn.Module`, a `weights` list of another length than `terms`,
            a weight that is negative, non-finite or not a number, all weights 0, or terms that disagree on
            `ignore_index`.
    """

    def __init__(self, terms: list[nn.Module], weights: list[float] | None = None) -> None:
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("Sum: terms must hold at least one loss, got none")
        for k, term in enumerate(terms):
            if not isinstance(term, nn.Module):
                raise ValueError(f"Sum: terms[{k}] must be an nn.Module (a loss given by class_path), got {term!r}")
        if weights is None:
            weights = [1.0] * len(terms)
        weights = list(weights)
        if len(weights) != len(terms):
            raise ValueError(f"Sum: weights has {len(weights)} entries but terms has {len(terms)}: one weight per term")
        checked = [check_nonnegative(weight, f"weights[{k}]", "Sum") for k, weight in enumerate(weights)]
        if not any(weight > 0 for weight in checked):
            raise ValueError(f"Sum: weights must not all be 0, got {weights!r}")
        self.terms = nn.ModuleList(terms)
        self.weights = checked
        self.names = unique_names([term_name(term) for term in terms])
        self.term_values: dict[str, torch.Tensor | None] = dict.fromkeys(self.names)
        self._agreed_ignore_index()  # raises if the terms disagree

    def _agreed_ignore_index(self) -> tuple[bool, int | None]:
        """(whether any term has an `ignore_index`, the value they share); ValueError if they disagree."""
        held = {
            name: term.ignore_index
            for name, term in zip(self.names, self.terms, strict=True)
            if hasattr(term, "ignore_index")
        }
        values = list(held.values())
        if any(value != values[0] for value in values[1:]):
            listed = ", ".join(f"{name} ({value!r})" for name, value in held.items())
            raise ValueError(
                f"Sum: the terms disagree on ignore_index: {listed}; give every term the data's ignore_index "
                "(model.loss.init_args.terms[k].init_args.ignore_index)"
            )
        return bool(held), next(iter(held.values()), None)

    @property
    def ignore_index(self) -> int | None:
        """The `ignore_index` that all terms having one share (AttributeError if no term has one)."""
        has_one, value = self._agreed_ignore_index()
        if not has_one:
            raise AttributeError("Sum: no term has an ignore_index")
        return value

    def set_class_statistics(self, class_pixel_counts: torch.Tensor) -> None:
        """Pass the training set's (N, C) class pixel-count table to every term that defines `set_class_statistics`."""
        for term in self.terms:
            setter = getattr(term, "set_class_statistics", None)
            if callable(setter):
                setter(class_pixel_counts)

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        values: dict[str, torch.Tensor] = {}
        for name, term, weight in zip(self.names, self.terms, self.weights, strict=True):
            with torch.set_grad_enabled(torch.is_grad_enabled() and weight != 0):
                value = in_float32(term, logits, target)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"Sum: term {name} ({type(term).__name__}) must return a scalar, got {shape}")
            value = value.reshape(())
            values[name] = value.detach()
            if weight == 0:  # left out, not multiplied by 0: an infinite or NaN term would make 0 * value NaN
                continue
            total = weight * value if total is None else total + weight * value
        self.term_values = values
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(
            f"{name}: {weight:g}" for name, weight in zip(self.names, self.weights, strict=True)
        )
