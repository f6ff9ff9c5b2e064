"""Loss max-pooling (LMP): the pixel losses of an image pooled by the worst-case weighting of a norm ball.

Rota Bulò, Neuhold and Kontschieder, "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017.
For the losses ``ℓ`` of the ``n`` valid pixels of an image, LMP replaces the mean ``ℓ.mean()`` (eq. 2) by

    L_W = max{w · ℓ : w ∈ W},   W = {w : ‖w‖_p ≤ γ, ‖w‖_∞ ≤ τ}   (eq. 4, 5)

with ``γ = n^(-1/q)``, ``q = p / (p - 1)`` and ``τ = γ m^(-1/p)``, where ``m ∈ [1, n]`` is the minimum number of
pixels the optimal weights support. The uniform weighting ``1/n`` lies in ``W``, so ``L_W ≥ ℓ.mean()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tailseg.losses.common import check_logits_target, float32_forward, pixel_cross_entropy


def _check_p(p: float) -> float:
    """Return ``p`` as a float, or raise a ValueError if it is not a number in ``[1, ∞]``."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number >= 1 (math.inf allowed), got {p!r}") from None
    if not p >= 1:  # also catches NaN
        raise ValueError(f"p must be a number >= 1 (math.inf allowed), got {p}")
    return p


def _prepare(
    losses: torch.Tensor, m: float | torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the inputs; return the detached losses (compute dtype, 0 where invalid), the mask, n and m.

    ``n`` (valid count) and ``m`` (clamped to ``[.., n]``) are returned in the compute dtype with a trailing
    singleton dimension, ready to broadcast against the rows.
    """
    if not isinstance(losses, torch.Tensor) or not losses.is_floating_point() or losses.ndim < 1:
        raise ValueError("losses must be a floating-point tensor of shape (..., n)")
    dtype = losses.dtype if losses.dtype in (torch.float32, torch.float64) else torch.float32
    if valid is None:
        valid = torch.ones_like(losses, dtype=torch.bool)
    elif valid.shape != losses.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must have the shape of losses {tuple(losses.shape)}")
    valid = valid.to(device=losses.device, dtype=torch.bool)
    x = losses.detach().to(dtype)
    bad = valid & ~(torch.isfinite(x) & (x >= 0))
    if bad.any():
        raise ValueError(f"losses must be finite and non-negative at valid pixels, got {x[bad][0].item()}")
    m = torch.as_tensor(m, device=losses.device, dtype=None if isinstance(m, torch.Tensor) else torch.float64)
    bad_m = ~(m >= 1)
    if bad_m.any():
        raise ValueError(f"m (minimum number of supported pixels) must be >= 1, got {m[bad_m].flatten()[0].item()}")
    n = valid.sum(-1, keepdim=True).to(dtype)
    m = torch.broadcast_to(m.to(dtype), losses.shape[:-1]).unsqueeze(-1)
    return torch.where(valid, x, 0), valid, n, torch.minimum(m, n)


def _weights_p1(x: torch.Tensor, valid: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Theorem 2 (§3.2): ``τ = 1/m`` on the ⌊m⌋ largest losses, ``τ(m - ⌊m⌋)`` on the next one.

    Pixels tied with the boundary loss ``b`` (the ⌈m⌉-th largest) share the mass left for them evenly, which is
    one of the optimal choices Theorem 2 allows, and makes the weights independent of the sort order.
    """
    mc = m.clamp_min(1)  # only empty rows have m < 1 here; their weights are zeroed by the mask
    last = (mc.ceil().long() - 1).clamp_max(x.shape[-1] - 1)  # 0-based rank of the last supported pixel
    ranked = torch.where(valid, x, -1.0).topk(int(last.max()) + 1, -1).values  # the largest, descending
    b = ranked.gather(-1, last)
    above = valid & (x > b)
    tied = valid & (x == b)
    share = (mc - above.sum(-1, keepdim=True)) / tied.sum(-1, keepdim=True).clamp_min(1)  # <= 1 by construction
    return (above + tied * share) / mc


def _weights_p(x: torch.Tensor, valid: torch.Tensor, n: torch.Tensor, m: torch.Tensor, p: float) -> torch.Tensor:
    """Theorem 1 via Algorithm 1 for ``1 < p < ∞``, loop-free and in the log domain, for ``x`` in ``[0, 1]``.

    With the losses sorted ascending, ``c_i = m - n + i`` and ``a_i = Σ_{j≤i} ℓ_(j)^q``, the first ``i`` with
    ``η_i = c_i ℓ_(i)^q - a_i > 0`` starts ``J*`` and ``α* = (a_{i-1} / c_{i-1})^(1/q)`` (``a_n / m`` if none).
    ``η_i > 0`` is tested as ``log c_i + q log ℓ_(i) > log a_i`` with ``log a`` from ``logcumsumexp``, so
    ``ℓ^q`` never under- or overflows, even for ``q = 101`` (``p = 1.01``).

    Pixels with zero loss, and invalid pixels (sorted among them at the bottom as ``log 0 = -inf``), add nothing
    to ``a`` and never enter ``J*``; ranks are counted from the top (``c`` at sorted position ``k`` is
    ``m - (#positions above k)``), so the invalid pixels do not count in ``n`` either.

    Since ``J* = {ℓ > α*}`` (proof of Theorem 1), its weights are ``w = τ min(1, (ℓ / α*)^(q-1))``: ``τ`` on
    ``J*``, ``τ (ℓ / α*)^(q-1)`` off it, and ``τ`` on every positive loss when ``α* = 0``; zero losses get 0.
    """
    q = p / (p - 1)
    size = x.shape[-1]
    logx = torch.where(valid, x, 0).log()  # -inf at zero losses and invalid pixels
    mc = m.clamp_min(1)
    # Only the top ⌈m⌉ sorted positions can start J* (c_i > 0 there alone), so one partial sort (topk) of
    # those suffices; the rest enters through its sum of ℓ^q, taken exactly in the log domain.
    k = min(size, int(mc.max().ceil()))
    top, where_top = logx.topk(k, -1)  # descending
    ranked = top.flip(-1)  # ascending: sorted positions size-k .. size-1
    in_top = torch.zeros_like(valid).scatter_(-1, where_top, True)
    log_rest = torch.where(in_top, -math.inf, q * logx).logsumexp(-1, keepdim=True)  # log Σ ℓ^q below the top
    lq = q * ranked  # log ℓ^q
    log_a = torch.logaddexp(torch.logcumsumexp(lq, -1), log_rest)
    pos = torch.arange(size - k, size, device=x.device)
    c = mc - (size - 1 - pos).to(x.dtype)  # m - #(sorted positions above)
    eta_pos = (c > 0) & (c.clamp_min(1e-30).log() + lq > log_a)
    first = torch.where(eta_pos, pos, size).amin(-1, keepdim=True)  # sorted position where J* starts, or size
    # η_i > 0 implies c_i > 1 exactly and in floating point (log a_i >= q log ℓ_(i)), so c* = m - |J*| > 0,
    # and |J*| < m <= k puts first - 1 inside the top.
    c_star = (mc - (size - first)).clamp_min(1e-30)
    # α*^q = a_{first-1} / c*, recomputed relative to u = the largest loss outside J* for accuracy: log a is
    # of order q log ℓ, whose rounding error would otherwise be multiplied by q - 1 in the weights.
    log_u = ranked.gather(-1, (first - 1 - (size - k)).clamp_min(0))  # -inf when α* = 0
    shift = torch.where(log_u.isfinite(), log_u, 0)
    log_sum = torch.where(pos < first, q * (ranked - shift), -math.inf).logsumexp(-1, keepdim=True)
    log_sum = torch.logaddexp(log_sum, log_rest - q * shift)
    log_alpha = log_u + (log_sum - c_star.log()) / q  # -inf when α* = 0
    log_tau = -n.clamp_min(1).log() / q - mc.log() / p
    ratio = ((q - 1) * (logx - log_alpha).clamp_max(0)).exp()  # min(1, (ℓ/α*)^(q-1)); 1 if α* = 0 < ℓ
    return torch.where(valid & (x > 0), log_tau.exp() * ratio, 0)


def lmp_weights(
    losses: torch.Tensor, p: float, m: float | torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Optimal weights ``w*`` of loss max-pooling, one independent problem per leading index (eq. 4, 5).

    ``w*`` maximises ``w · ℓ`` over ``W = {‖w‖_p ≤ γ, ‖w‖_∞ ≤ τ}`` with ``γ = n^(-1/q)``, ``q = p/(p-1)``,
    ``τ = γ m^(-1/p)`` and ``n`` the row's number of valid pixels. Exact: ``1 < p < ∞`` follows Theorem 1 through
    a loop-free Algorithm 1 (one partial sort per row and a cumulative sum), ``p = 1`` Theorem 2 (§3.2), and ``p = ∞``
    is the uniform ``1/n``. As in the implementation notes, each row is divided by its largest valid loss
    first (``w*`` does not change). Up to rounding: for ``p > 1`` the weights are computed in the log domain,
    and ``(ℓ/α*)^(q-1)`` carries a relative error of about ``q`` times the machine epsilon of the compute dtype
    (about ``1e-4`` in float32 at ``p = 1.001``, ``1e-5`` at ``p = 1.01``). Runs on the device of ``losses``;
    the input checks synchronise with it once.

    Cost: one partial sort (``topk``) of the ``⌈m⌉`` largest losses per row, not a full sort: only those
    positions can start ``J*``. Its width is the batch's largest ``⌈m⌉``, so a row's result does not depend on
    the other rows except through rounding (a few ulps for ``1 < p < ∞``; bit for bit at ``p = 1`` and ``∞``).

    Conventions: a row without valid pixels gets weight 0; a row whose valid losses are all 0 gets the uniform
    ``1/n`` (every feasible ``w`` is optimal there, with ``L_W = 0``). At ``p = 1``, pixels tied with the
    boundary loss share their weight evenly; for ``p > 1`` the optimum is unique up to zero-loss pixels
    (which get 0 unless the whole row is 0). ``w*`` carries no gradient.

    Args:
        losses: Non-negative, finite pixel losses (at the valid pixels); any values elsewhere are ignored.
        p: Norm exponent, ``p >= 1``; ``math.inf`` allowed.
        m: Minimum number of supported pixels, ``>= 1``: a number or a tensor broadcastable to the leading
            dimensions. Values above a row's valid count are clamped to it.
        valid: Bool mask of the pixels that count; ``None`` means all. Invalid pixels get weight 0.

    Returns:
        ``w*``, float32 for float32/half/bfloat16 inputs and float64 for float64 ones.

    Shape:
        losses, valid ``(..., n)``; m broadcastable to ``(...)``; returns ``(..., n)``.

    Raises:
        ValueError: ``p < 1`` or NaN, ``m < 1`` or NaN, or a negative or non-finite loss at a valid pixel.

    Reference:
        Rota Bulò et al., CVPR 2017: eq. 4, 5, Theorem 1 (eq. 9, 10), §3.2, Algorithm 1.
    """
    p = _check_p(p)
    x, valid, n, m = _prepare(losses, m, valid)
    if x.shape[-1] == 0:
        return x.clone()
    top = x.amax(-1, keepdim=True)
    x = x / torch.where(top > 0, top, 1)  # max-loss normalisation: losses in [0, 1]
    if p == math.inf:
        w = valid / n.clamp_min(1)
    elif p == 1:
        w = _weights_p1(x, valid, m)
    else:
        w = _weights_p(x, valid, n, m, p)
    return torch.where(top > 0, w, valid / n.clamp_min(1)).to(x.dtype)


def loss_max_pooling(
    losses: torch.Tensor, p: float, m: float | torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss max-pooling ``L_W = w* · ℓ`` over the last dimension (eq. 4, 10).

    The weights come from :func:`lmp_weights` and are constants for autograd, so ``dL_W/dℓ = w*`` exactly
    (the paper's gradient, Appendix B); invalid pixels get zero gradient whatever they hold.

    Args:
        losses: Non-negative, finite pixel losses at the valid pixels.
        p: Norm exponent, ``p >= 1``; ``math.inf`` gives the mean.
        m: Minimum number of supported pixels, ``>= 1``, a number or a tensor broadcastable to the leading
            dimensions; clamped to each row's valid count.
        valid: Bool mask of the pixels that count; ``None`` means all.

    Returns:
        ``L_W`` per row, float32 for float32/half/bfloat16 inputs and float64 for float64; 0 for rows without a
        valid pixel. ``L_W`` is at least the mean valid loss, with equality for ``m = n`` or ``p = ∞``.

    Shape:
        losses, valid ``(..., n)``; m broadcastable to ``(...)``; returns ``(...)``.

    Raises:
        ValueError: As :func:`lmp_weights`.

    Reference:
        Rota Bulò et al., CVPR 2017: eq. 4, 10, Appendix B.
    """
    w = lmp_weights(losses, p, m, valid)
    keep = w > 0  # also zero at invalid pixels, whose values may be anything
    return (w * torch.where(keep, losses.to(w.dtype), 0)).sum(-1)


class LossMaxPooling(nn.Module):
    """Per-image loss max-pooling of the pixel cross-entropy, averaged over the images (eq. 4, 5, 10, 11).

    Per image (crop), the cross-entropy of its ``n`` valid pixels is max-pooled with ``m = ratio · n`` (at least
    1), as in the paper's experiments ("m fixed to 25% of valid pixels per crop", p = 1.3). The batch loss is
    the mean of the per-image ``L_W`` over the images with at least one valid pixel (0 if there is none).

    Per image, ``L_W`` upper-bounds the mean cross-entropy of that image since the uniform ``1/n`` lies in ``W``
    (eq. 4), with equality when ``ratio = 1`` or ``p = ∞``. Smaller ``p`` and ``ratio`` put more weight on the
    pixels with the highest losses. The weights (Theorem 1 / Algorithm 1, eq. 11 for the gradient) are
    constants for autograd, so the gradient is ``w*`` times the gradient of the pixel losses.

    Shape:
        logits (B, C, H, W), target (B, H, W) -> scalar, float32 (float64 for float64 logits).

    Args:
        p: Norm exponent, ``p >= 1`` (``math.inf`` gives the per-image mean cross-entropy).
        ratio: Share of each image's valid pixels that ``m`` stands for, ``0 < ratio <= 1``.
        ignore_index: Label of pixels that are left out.

    Reference:
        Rota Bulò et al., "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017: eq. 4, 5, 10, 11,
        Algorithm 1, §5.2.
    """

    def __init__(self, p: float = 1.3, ratio: float = 0.25, ignore_index: int = 255) -> None:
        super().__init__()
        self.p = _check_p(p)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)
        self.ignore_index = ignore_index

    @float32_forward
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target, type(self).__name__)
        losses, valid = pixel_cross_entropy(logits, target, self.ignore_index)
        losses, valid = losses.flatten(1), valid.flatten(1)
        n = valid.sum(-1)
        m = (self.ratio * n.to(losses.dtype)).clamp_min(1)
        pooled = loss_max_pooling(losses, self.p, m, valid)
        return pooled.sum() / (n > 0).sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"p={self.p}, ratio={self.ratio}, ignore_index={self.ignore_index}"
