"""Tilted class sampling: the sampling half of Stochastic TCE (TCE paper, Algorithm 1 and §2.1).

Every optimisation step draws one class c from Categorical(w) (line 3) and then a minibatch of
images that contain c (line 4), each as a key that names c. With `crop_on_class=False` (the paper's
form, set by the TCE configs) the key is (index, c, False): the crop is placed uniformly, as the base
recipe crops, and c only travels to `batch["class"]`; with `crop_on_class=True` (the default, tailseg's
form, as `PerformanceAwareSampler` and `RareClassSampler` do) the key is (index, c) and the crop is
placed on a pixel of c (`TransformedDataset`). After the step, `tailseg.callbacks.TiltedClassFeedback`
passes the batch loss L_B and `batch["class"]` to `update`, which applies lines 6-8:

    L̃_B = exp(t · L_B),    L̃_c ← (1 − γ) · L̃_c + γ · L̃_B,    w = L̃ / Σ_l L̃_l.

The state is kept in the log domain, log L̃ (C,) float64, so that t · L_B = 500 (exp overflows
float32 at 89 and float64 at 710) is harmless: log L̃_c ← logaddexp(log(1 − γ) + log L̃_c,
log γ + t · L_B) and w = softmax(log L̃).

Decisions:
- Initialisation. Algorithm 1 starts at w = L̃ = 0, where Categorical(w) is undefined (line 8 divides 0
  by 0), and a class whose L̃ is still 0 once others have been updated would get w = 0 and never be drawn.
  tailseg starts every class present in the training set at L̃_c = 1 = e^{t · 0} (log L̃_c = 0), the
  tilted value of a zero loss, the same for every class and every t: w is uniform over the present
  classes at step 0, classes fed equal losses have equal weights whenever they have been updated equally
  often, and a class at the start keeps a weight e^{-t L} of that of a class settled at loss L, never 0.
  The start is forgotten like any old value of the moving average: after k updates of class c,
  L̃_c = (1 − γ)^k · 1 + Σ_j γ (1 − γ)^(k − j) e^{t L_j}, so its share decays as (1 − γ)^k (a warm-up
  of about 1/γ updates of each class: 10 at γ = 0.1; below 1e-12 after about 260). With equal losses L
  the weights of classes updated k and k' times differ only through that share, by at most a factor
  e^{|t L|} (1.3 at t L = 0.3, 20 at t L = 3), and become uniform as every class is updated. The previous
  start (classes not yet updated at log L̃ = −inf, the paper's L̃ = 0, weighted as hard as the hardest
  updated class) made L̃_c = (1 − (1 − γ)^k) e^{t L} after k equal losses: a class updated once held a
  tenth (γ) of its eventual L̃ whatever t L, which left a 14-19x spread between ADE20K's 150 classes for
  thousands of steps that came from the start, not from the losses. The start changed together with the
  `crop_on_class` argument, which every resolved config that uses this sampler now holds, so runs with
  the old start have another run fingerprint (`tailseg.identity`).
- Classes with no pixel in the training set keep L̃_c = 0 (log L̃_c = −inf): they are never drawn (w_c = 0)
  and cannot be updated.
- Images are drawn uniformly, with replacement, among those that contain c (not in proportion to
  its pixels), as in `PerformanceAwareSampler`.
- Lazy drawing and the prefetch lag. w changes after every step, so the sampler draws step by step, and
  the class of step k of an epoch is drawn from w as it was after the epoch's first max(0, k − lag)
  updates. `lag` is how many batches the DataLoader requests ahead (`prefetch_factor · num_workers`, 4
  with 2 workers; 0 without workers, where step k sees all k updates before it); the DataModule sets
  it. It is a fixed rule, not a race: the sampler keeps w's last `lag` + 1 values of the epoch and picks
  the one the rule names, so the draws depend only on (seed, epoch, the updates) - also when a run is
  resumed in the middle of an epoch, whatever the workers had prefetched when it stopped. (Lightning adds no
  prefetch of its own to a training loader with a length: `tailseg.lightning_compat.training_prefetch_depth`.)
  A run resumed inside an epoch with a larger lag (more workers) than the run that wrote the checkpoint would
  need older values of w than the checkpoint holds: the sampler raises instead of drawing from another w.
- DDP. All ranks consume the same random stream, seeded by (seed, epoch): per step one uniform
  for the class (inverse CDF of w, so each step consumes a fixed amount of randomness whatever w
  is) and `num_replicas · batch_size` uniforms for a global draw of images, of which rank r takes
  the slice [r · batch_size, (r + 1) · batch_size). The feedback averages L_B over the ranks, so w
  and hence the class of every step are identical on all ranks, and the slices are disjoint
  positions of one global draw (with replacement, the same image can still appear twice).
- Resume. The state (seed, epoch, log L̃ and its last values in the epoch) goes into checkpoints with the
  DataModule's training stream (`tailseg.resume`). Every epoch starts a fresh stream from (seed, epoch); a run
  resumed after k steps of an epoch replays the stream's first k steps without drawing their classes
  (`iterate(skip=k)`: each step consumes a fixed amount of randomness) and continues with step k.
  A state holding log L̃ = −inf for a present class (in log L̃ or in its last values) was written with the
  previous start, whose rule for such classes is gone: `load_state_dict` refuses it with a message saying
  so, rather than continue the run under another rule. A state of the previous start in which every present
  class had been updated holds no such entry and continues exactly as it would have (the update rule is the
  same); the CLI still refuses it, as a checkpoint of another config (its run fingerprint lacks
  `crop_on_class`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from tailseg.losses.tilted import check_finite
from tailseg.sampling.base import ImagesByClass, Replicas, as_count_table


def check_gamma(gamma) -> float:
    """`gamma` as a float; ValueError unless 0 < gamma <= 1."""
    try:
        gamma = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}") from None
    if not 0.0 < gamma <= 1.0:  # also rejects NaN
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return gamma


def _check_log_l(log_l: torch.Tensor) -> torch.Tensor:
    log_l = torch.as_tensor(log_l, dtype=torch.float64)
    if log_l.ndim != 1 or len(log_l) < 1:
        raise ValueError(f"log L̃ must be a (C,) vector, got shape {tuple(log_l.shape)}")
    if torch.isnan(log_l).any() or (log_l == math.inf).any():
        raise ValueError(f"log L̃ must hold finite values or -inf (L̃ = 0), got {log_l.tolist()}")
    return log_l


def tilted_class_update(log_l: torch.Tensor, c: int, loss: float, t: float, gamma: float) -> torch.Tensor:
    """One update of the tilted class losses, in the log domain (TCE paper, Algorithm 1, lines 6-7).

    Line 6 tilts the batch loss, L̃_B = exp(t · L_B); line 7 mixes it into the drawn class's tilted
    loss, L̃_c ← (1 − γ) · L̃_c + γ · L̃_B. In logs:

        log L̃_c ← logaddexp(log(1 − γ) + log L̃_c, log γ + t · L_B),

    which never overflows (t · L_B = 500 is fine). With γ = 1 this is log L̃_c = t · L_B. From the
    sampler's start, log L̃_c = 0, the first update gives log((1 − γ) + γ · e^{t · L_B}).

    Args:
        log_l: (C,) log L̃ (−inf stands for L̃_c = 0).
        c: The class whose batch was trained on.
        loss: The batch loss L_B (a finite number).
        t: The tilt, a finite number.
        gamma: The rate γ, in (0, 1].

    Returns:
        A new (C,) float64 tensor; `log_l` is not modified.
    """
    log_l = _check_log_l(log_l)
    c = int(c)
    if not 0 <= c < len(log_l):
        raise ValueError(f"class {c} is out of range for {len(log_l)} classes")
    loss, t, gamma = check_finite("batch loss L_B", loss), check_finite("tilt t", t), check_gamma(gamma)
    tilted = check_finite("t · L_B", t * loss)  # log L̃_B (line 6)
    if gamma == 1.0:
        new = torch.tensor(tilted, dtype=torch.float64)
    else:
        old = torch.tensor(math.log1p(-gamma), dtype=torch.float64) + log_l[c]
        new = torch.logaddexp(old, torch.tensor(math.log(gamma) + tilted, dtype=torch.float64))
    out = log_l.clone()
    out[c] = new
    return out


def tilted_class_weights(log_l: torch.Tensor, present) -> torch.Tensor:
    """The class weights w of the tilted class losses (TCE paper, Algorithm 1, line 8).

    w_c = L̃_c / Σ_l L̃_l, evaluated as softmax(log L̃) over the present classes (exact, no overflow). A
    class at log L̃_c = −inf (L̃_c = 0) gets w_c = 0; the sampler keeps every present class finite (it
    starts them at log L̃ = 0, see the module docs), so that none is starved.

    Args:
        log_l: (C,) log L̃.
        present: (C,) bool, classes that occur in the training set (the others get w_c = 0).

    Returns:
        (C,) float64 weights, 0 for absent classes, summing to 1.

    Raises:
        ValueError: No present class has a finite log L̃ (Σ_l L̃_l = 0: w is undefined).
    """
    log_l = _check_log_l(log_l)
    present = torch.as_tensor(np.asarray(present, dtype=bool))
    if present.shape != log_l.shape or not present.any():
        raise ValueError(f"present must be a (C,) bool vector with a True entry, got {present.tolist()}")
    z = torch.where(present, log_l, -math.inf)
    if not torch.isfinite(z).any():
        raise ValueError("log L̃ is -inf (L̃ = 0) for every present class: the class weights are undefined")
    return torch.softmax(z, dim=0)


def sample_class(weights: torch.Tensor, u: float) -> int:
    """The class of Categorical(weights) at quantile `u` in [0, 1) (inverse CDF); never a zero-weight class."""
    cdf = torch.cumsum(weights, dim=0)
    c = int(torch.searchsorted(cdf, torch.tensor([float(u) * float(cdf[-1])], dtype=cdf.dtype), right=True))
    return min(c, int(torch.nonzero(weights > 0).max()))  # rounding at u -> 1


class TiltedClassSampler(Replicas, torch.utils.data.Sampler):
    """A batch sampler: per step one class c ~ Categorical(w), then `batch_size` keys of images that contain c.

    Built, like the other samplers, from the DataModule's (N, C) class pixel-count table; in YAML
    `data.train_sampler: {class_path: tailseg.sampling.TiltedClassSampler, init_args: {crop_on_class: false}}`
    with the table left out. Needs `tailseg.callbacks.TiltedClassFeedback` to update w (without it w stays
    uniform over the present classes). See the module docs for the initialisation, the lag of the class
    choice, DDP and resume.

    Args:
        class_pixel_counts: (N, C) class pixel counts per training image.
        batch_size: Images per batch and rank; None takes the DataModule's `batch_size`.
        num_batches: Steps per epoch (default N // (batch_size · num_replicas), at least 1).
        seed: Seed of the per-epoch stream; None takes the DataModule's seed (0 when used alone).
        num_replicas: DDP world size (default: torch.distributed's, or 1).
        rank: This process's rank (default: torch.distributed's, or 0).
        lag: Steps the DataLoader draws ahead (see the module docs); None takes the DataModule's (0 when
            used alone).
        crop_on_class: Where the crop of each drawn image goes. False: uniformly over the (scaled, padded)
            image, as the base recipe crops - the paper's form (Algorithm 1, line 4 samples the minibatch
            from D_c and says nothing more), set by the TCE configs; the keys are (index, c, False), the
            batch still records c in `batch["class"]` for the feedback, and a crop may hold no pixel of c.
            True (default, tailseg's earlier form): the keys are (index, c) and each crop contains a pixel
            of c, as for the class-driven draws of `PerformanceAwareSampler` and `RareClassSampler`.
    """

    yields_batches = True

    def __init__(
        self,
        class_pixel_counts,
        batch_size: int | None = None,
        num_batches: int | None = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        lag: int | None = None,
        crop_on_class: bool = True,
    ) -> None:
        self.counts = as_count_table(class_pixel_counts)
        self.num_images, self.num_classes = self.counts.shape
        self.present = torch.from_numpy(self.counts.sum(axis=0) > 0)
        if not self.present.any():
            raise ValueError("TiltedClassSampler: the class pixel counts hold no labelled pixel")
        for name, value in (("batch_size", batch_size), ("num_batches", num_batches)):
            if value is not None and int(value) < 1:
                raise ValueError(f"TiltedClassSampler: {name} must be >= 1, got {value}")
        if lag is not None and int(lag) < 0:
            raise ValueError(f"TiltedClassSampler: lag must be >= 0, got {lag}")
        self.lag = 0 if lag is None else int(lag)
        if not isinstance(crop_on_class, (bool, np.bool_)):
            raise ValueError(f"TiltedClassSampler: crop_on_class must be true or false, got {crop_on_class!r}")
        self.crop_on_class = bool(crop_on_class)
        self._set_replicas(num_replicas, rank, "TiltedClassSampler")
        self.batch_size = None if batch_size is None else int(batch_size)
        self._num_batches = None if num_batches is None else int(num_batches)
        self.seed, self.epoch = (None if seed is None else int(seed)), 0
        self._images = ImagesByClass(self.counts)
        # the start (module docs): L̃_c = 1 = e^{t · 0} for the present classes, L̃_c = 0 for the absent ones
        self.log_l = torch.where(self.present, 0.0, -math.inf).to(torch.float64)
        self._updates = 0  # updates since the epoch began
        self._recent: list[torch.Tensor] = []  # log L̃ before each of the last (up to lag) updates, oldest first
        self._saved_lag: int | str = self.lag  # the lag of the run whose state was loaded (for error messages)

    @property
    def weights(self) -> torch.Tensor:
        """(C,) float64 class weights w (Algorithm 1, line 8), 0 for absent classes; sums to 1."""
        return tilted_class_weights(self.log_l, self.present)

    def update(self, c: int, loss: float, t: float, gamma: float) -> None:
        """Algorithm 1, lines 6-8, after a step on a batch of class `c` with batch loss `loss` (L_B)."""
        if not 0 <= int(c) < self.num_classes or not self.present[int(c)]:
            raise ValueError(
                f"TiltedClassSampler.update: class {c} is not a class of the training set "
                f"(present: {torch.nonzero(self.present).flatten().tolist()}); it is never drawn"
            )
        previous, self.log_l = self.log_l, tilted_class_update(self.log_l, c, loss, t, gamma)
        self._updates += 1
        self._recent = [*self._recent, previous][-self.lag :] if self.lag else []

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch, self._updates, self._recent = int(epoch), 0, []

    def weights_for_step(self, k: int) -> torch.Tensor:
        """The class weights that step k of the epoch is drawn from: w after the epoch's first max(0, k − lag)
        updates (the latest known, if the DataLoader asks earlier than the rule expects).

        Raises:
            RuntimeError: The rule names a w older than the history kept: the state was restored from a checkpoint
                written with a smaller lag (fewer loader workers) or without the history; drawing from another w
                would silently change the run.
        """
        behind = self._updates - min(max(0, k - self.lag), self._updates)
        if behind > len(self._recent):
            raise RuntimeError(
                f"TiltedClassSampler: step {k} of epoch {self.epoch} is drawn from w as it was {behind} updates ago "
                f"(lag {self.lag}), but the sampler's state holds only the last {len(self._recent)} values: it was "
                f"restored from a checkpoint written with lag {self._saved_lag} (lag = 2 x data.num_workers). Resume "
                "with the data.num_workers of the run that wrote the checkpoint, or from a checkpoint at an epoch's end"
            )
        return tilted_class_weights(self._recent[-behind] if behind else self.log_l, self.present)

    def generator(self) -> torch.Generator:
        """The generator of this epoch's stream (identical on every rank)."""
        return torch.Generator().manual_seed((self.seed or 0) * 1_000_003 + self.epoch)

    def _batch_size(self) -> int:
        if self.batch_size is None:
            raise RuntimeError(
                "TiltedClassSampler: batch_size is not set; give it, or let SegmentationDataModule fill in its own"
            )
        return self.batch_size

    def __len__(self) -> int:
        if self._num_batches is not None:
            return self._num_batches
        return max(1, self.num_images // (self._batch_size() * self.num_replicas))

    def __iter__(self) -> Iterator[list[tuple]]:
        return self.iterate(0)

    def iterate(self, skip: int = 0) -> Iterator[list[tuple]]:
        """The epoch's batches from step `skip` on (the stream of the steps before is drawn and dropped).

        A batch is a list of keys (index, c), or (index, c, False) with `crop_on_class=False` (the crop is
        then not placed on c; `TransformedDataset`)."""
        size, replicas, rank = self._batch_size(), self.num_replicas, self.rank
        g = self.generator()
        for k in range(len(self)):
            u = float(torch.rand((), generator=g, dtype=torch.float64))
            pick = torch.rand(replicas * size, generator=g, dtype=torch.float64)[rank * size : (rank + 1) * size]
            if k < skip:
                continue
            c = sample_class(self.weights_for_step(k), u)  # line 3
            images = self._images.draw(torch.full_like(pick, c, dtype=torch.long), pick)  # line 4
            yield [(index, c) if self.crop_on_class else (index, c, False) for index in images.tolist()]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "log_l": self.log_l.tolist(), "updates": self._updates,
                "recent": [v.tolist() for v in self._recent], "lag": self.lag}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s state. A state with log L̃ = −inf for a present class (the previous start) is
        refused: see the module docs (Resume)."""
        log_l = self._checked_state(state["log_l"])
        recent = [self._checked_state(v) for v in state.get("recent", [])]
        self.seed = None if state["seed"] is None else int(state["seed"])
        self.epoch = int(state["epoch"])
        self.log_l = log_l
        self._updates = int(state.get("updates", 0))
        self._recent = recent
        self._saved_lag = state.get("lag", "unknown")

    def _checked_state(self, values) -> torch.Tensor:
        log_l = _check_log_l(torch.tensor(values, dtype=torch.float64))
        if log_l.shape != (self.num_classes,):
            raise ValueError(
                f"TiltedClassSampler.load_state_dict: log L̃ has {len(log_l)} classes, the table {self.num_classes}"
            )
        zero = torch.nonzero(self.present & (log_l == -math.inf)).flatten().tolist()
        if zero:
            raise ValueError(
                f"TiltedClassSampler.load_state_dict: log L̃ is -inf for the present class(es) {zero}: the state was "
                "written with the previous start (classes not yet updated at L̃ = 0, weighted as the hardest updated "
                "class). The sampler now starts every present class at log L̃ = 0 and has no rule for such entries, "
                "so the run cannot go on as it was; start a new run, or finish this one with the tailseg version "
                "that wrote it (tailseg.sampling.tilted, Resume)"
            )
        return log_l
