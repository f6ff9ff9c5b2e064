"""Loss max-pooling against references that do not use Algorithm 1: KKT bisection, CVaR and scipy optimisers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tailseg.losses.lmp import LossMaxPooling, lmp_weights, loss_max_pooling

INF = math.inf
P_VALUES = [1.0, 1.01, 1.3, 2.0, 5.0, 50.0, INF]


def norms(p: float, n: int, m: float) -> tuple[float, float]:
    """(γ, τ) of eq. 5 for n valid pixels: γ = n^(-1/q), τ = γ m^(-1/p)."""
    inv_q = 1.0 - 1.0 / p  # 1/q, 0 for p = 1 and 1 for p = ∞
    gamma = n**-inv_q
    return gamma, gamma * m ** (-1.0 / p)


def ref_weights(losses: np.ndarray, p: float, m: float) -> np.ndarray:
    """Optimal weights of max{w·ℓ : ‖w‖_p ≤ γ, ‖w‖_∞ ≤ τ} for the valid losses of one row, without sorting.

    p > 1: the KKT conditions give w = τ min(1, (ℓ/α)^(q-1)), and ‖w‖_p = γ means Σ min(1, (ℓ/α)^q) = (γ/τ)^p = m,
    solved for α by bisection (α = 0, w = τ on the positive losses, when at most m losses are positive).
    p = 1: solved as the LP in scipy. p = ∞: uniform. All-zero rows: uniform (the documented choice).
    """
    ell = np.asarray(losses, dtype=np.float64)
    n = ell.size
    m = min(m, n)
    gamma, tau = norms(p, n, m)
    if p == INF or not ell.any():
        return np.full(n, 1.0 / n)
    if p == 1:
        return lp_weights(ell, m)
    q = p / (p - 1)
    positive = ell > 0
    if positive.sum() <= m:
        return tau * positive
    lo, hi = 0.0, ell.max() * (n / m) ** (1 / q) * 1.01  # f(lo) = #positive > m >= f(hi)
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if (np.minimum(1.0, ell / mid) ** q).sum() > m:
            lo = mid
        else:
            hi = mid
    return tau * np.minimum(1.0, ell / hi) ** (q - 1)


def lp_weights(ell: np.ndarray, m: float) -> np.ndarray:
    """p = 1 as a linear program: max ℓ·w s.t. Σ w ≤ 1, 0 ≤ w ≤ 1/m (γ = 1, τ = 1/m)."""
    from scipy.optimize import linprog

    res = linprog(-ell, A_ub=np.ones((1, ell.size)), b_ub=[1.0], bounds=[(0, 1 / m)] * ell.size, method="highs")
    assert res.success
    return res.x


def cvar_p1(ell: np.ndarray, m: float) -> float:
    """p = 1 value, sort-free: τ · min_t (m t + Σ (ℓ - t)_+), the minimum taken at a breakpoint t ∈ {0} ∪ ℓ."""
    m = min(m, ell.size)
    return min(m * t + np.clip(ell - t, 0, None).sum() for t in [0.0, *ell]) / m


def ref_rows(losses: torch.Tensor, p: float, m, valid: torch.Tensor | None = None):
    """Reference (w, L) for a (B, n) batch, row by row, over the valid entries only."""
    x = losses.double().numpy()
    v = np.ones_like(x, dtype=bool) if valid is None else valid.numpy()
    ms = np.broadcast_to(np.asarray(m, dtype=np.float64), x.shape[:1])
    w = np.zeros_like(x)
    for b in range(x.shape[0]):
        if v[b].any():
            w[b, v[b]] = ref_weights(x[b, v[b]], p, float(ms[b]))
    return w, (w * np.where(v, x, 0)).sum(-1)


def assert_feasible(w: np.ndarray, p: float, n: int, m: float, rtol: float = 1e-9) -> None:
    gamma, tau = norms(p, n, min(m, n))
    assert (w >= 0).all()
    assert w.max() <= tau * (1 + rtol)
    norm_p = w.max() if p == INF else (w**p).sum() ** (1 / p)
    assert norm_p <= gamma * (1 + rtol)


# --------------------------------------------------------------------------------------------- hand-worked cases


def test_hand_worked_p1():
    # n = 4, p = 1: γ = 1, τ = 1/m = 0.4; τ on 4 and 3, 0.5 τ on 2 -> L = 0.4 (4 + 3 + 1) = 3.2
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 1.0, 4.0, 2.0]])
    w = lmp_weights(losses, 1, 2.5)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.2, 0.4, 0.4], [0.4, 0.0, 0.4, 0.2]]))
    torch.testing.assert_close(loss_max_pooling(losses, 1, 2.5), torch.tensor([3.2, 3.2]))


def test_hand_worked_p2():
    # m = 1 makes τ = γ: only the 2-norm ball is active, L = γ ‖ℓ‖_2 = 5 / √2 and w = γ ℓ / ‖ℓ‖_2.
    losses = torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(lmp_weights(losses, 2, 1), torch.tensor([0.6, 0.8], dtype=torch.float64) / 2**0.5)
    torch.testing.assert_close(loss_max_pooling(losses, 2, 1), torch.tensor(5 / 2**0.5, dtype=torch.float64))
    # One positive loss for m = 2: α* = 0, the positive pixel takes τ = 4^(-1/2) 2^(-1/2) and the zeros take 0.
    losses = torch.tensor([0.0, 0.0, 10.0, 0.0])
    torch.testing.assert_close(lmp_weights(losses, 2, 2), torch.tensor([0.0, 0.0, 8**-0.5, 0.0]))
    torch.testing.assert_close(loss_max_pooling(losses, 2, 2), torch.tensor(10 * 8**-0.5))


# ------------------------------------------------------------------------------------- independent references


@pytest.mark.parametrize("p", [1.01, 1.3, 2.0, 5.0, 50.0])
def test_matches_kkt_bisection_reference(p):
    g = torch.Generator().manual_seed(int(p * 100))
    losses = torch.rand(6, 40, generator=g, dtype=torch.float64) * 5
    losses[1, ::3] = 0.0  # zero losses
    losses[2] = losses[2].round()  # many ties
    valid = torch.rand(6, 40, generator=g) > 0.2
    valid[3] = True
    m = torch.tensor([1.0, 2.5, 7.0, 10.3, 31.9, 80.0])  # the last one is clamped to the valid count
    w_ref, l_ref = ref_rows(losses, p, m, valid)
    w = lmp_weights(losses, p, m, valid)
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss_max_pooling(losses, p, m, valid).numpy(), l_ref, rtol=1e-9)


def test_p1_matches_sort_free_reference_with_ties():
    g = torch.Generator().manual_seed(1)
    losses = torch.randint(0, 4, (8, 15), generator=g).double()  # heavy ties
    valid = torch.rand(8, 15, generator=g) > 0.25
    valid[:, 0] = True
    for m in (1.0, 1.5, 3.0, 4.7, 12.0):
        out = loss_max_pooling(losses, 1, m, valid)
        w = lmp_weights(losses, 1, m, valid).numpy()
        for b in range(8):
            ell = losses[b][valid[b]].numpy()
            assert out[b].item() == pytest.approx(cvar_p1(ell, m), rel=1e-12)
            assert_feasible(w[b], 1, ell.size, m)
            tied = ell[:, None] == ell[None, :]  # equal losses get equal weights
            wv = w[b][valid[b].numpy()]
            np.testing.assert_allclose(np.where(tied, wv[:, None] - wv[None, :], 0), 0, atol=1e-15)


def slsqp_weights(ell: np.ndarray, p: float, m: float) -> np.ndarray:
    """p > 1 by a generic constrained optimiser: max ℓ·w s.t. Σ w^p <= γ^p, 0 <= w <= τ."""
    from scipy.optimize import minimize

    n = ell.size
    gamma, tau = norms(p, n, m)
    res = minimize(
        lambda w: -ell @ w,
        np.full(n, 1 / n),
        jac=lambda w: -ell,
        bounds=[(0, tau)] * n,
        constraints=[{"type": "ineq", "fun": lambda w: gamma**p - (np.abs(w) ** p).sum()}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    w = np.clip(res.x, 0, None)
    assert_feasible(w, p, n, m, rtol=1e-7)  # a point of W, optimal up to the tolerance
    return w


@pytest.mark.parametrize("p", [1.0, 1.3, 2.0, 3.0])
def test_matches_scipy_optimiser_small_n(p):
    rng = np.random.default_rng(int(p * 10))
    for _ in range(4):
        n = int(rng.integers(2, 7))
        ell = rng.uniform(0, 3, n)
        m = float(rng.uniform(1, n))
        ours = loss_max_pooling(torch.from_numpy(ell), p, m).item()
        best = float(ell @ (lp_weights(ell, m) if p == 1 else slsqp_weights(ell, p, m)))
        assert ours >= best * (1 - 1e-7)  # no feasible point beats the optimum ...
        assert ours == pytest.approx(best, rel=1e-6)  # ... and the optimiser finds ours


@pytest.mark.parametrize("p", [1.01, 1.001])
def test_large_q_wide_dynamic_range_in_float32(p):
    # q = 101 / 1001: ℓ^q of the small losses underflows float32 (and float64 for 1e-4^1001); α* must not.
    row = [1.0, 0.9, *([1e-2] * 30), *([3e-3] * 30), 1e-4, 0.0]
    losses = torch.tensor([row, [x * 1e-30 for x in row]])
    for m in (1.0, 2.0, 16.0, 40.0):
        w = lmp_weights(losses, p, m).double().numpy()
        np.testing.assert_allclose(w[0], ref_weights(np.array(row), p, m), rtol=5e-4, atol=1e-9)
        np.testing.assert_allclose(w[1], w[0], rtol=1e-5, atol=1e-12)  # same after the max normalisation
        assert np.isfinite(w).all() and w[:, -1].max() == 0.0
        assert_feasible(w[0], p, len(row), m, rtol=5e-4)  # float32: (ℓ/α)^(q-1) is accurate to about q·eps
    assert loss_max_pooling(losses, p, 40.0)[0].item() >= losses[0].mean().item() * (1 - 1e-6)


# ------------------------------------------------------------------------------------------------- properties

finite_losses = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.sampled_from([1.0, 2.0])), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(ell=finite_losses, p=st.sampled_from(P_VALUES), frac=st.floats(0, 1))
def test_property_optimal_and_feasible(ell, p, frac):
    n = len(ell)
    m = 1 + frac * (n - 1)
    x = torch.tensor(ell, dtype=torch.float64)
    w = lmp_weights(x, p, m).numpy()
    value = loss_max_pooling(x, p, m).item()
    assert_feasible(w, p, n, m)
    assert value == pytest.approx(float(w @ np.array(ell)), rel=1e-12, abs=1e-300)
    assert value >= np.mean(ell) * (1 - 1e-12)  # the uniform 1/n lies in W
    ref = cvar_p1(np.array(ell), m) if p == 1 else float(ref_weights(np.array(ell), p, m) @ np.array(ell))
    assert value == pytest.approx(ref, rel=1e-9, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(ell=finite_losses, p=st.sampled_from(P_VALUES), a=st.floats(0, 1), b=st.floats(0, 1))
def test_property_non_increasing_in_m(ell, p, a, b):
    n = len(ell)
    m1, m2 = sorted((1 + a * (n - 1), 1 + b * (n - 1)))
    x = torch.tensor(ell, dtype=torch.float64)
    assert loss_max_pooling(x, p, m1).item() >= loss_max_pooling(x, p, m2).item() * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(ell=finite_losses, p=st.sampled_from(P_VALUES), c=st.sampled_from([1e-3, 0.5, 3.0, 1e4]))
def test_property_scale_invariant(ell, p, c):
    m = max(1.0, len(ell) / 3)
    x = torch.tensor(ell, dtype=torch.float64)
    torch.testing.assert_close(lmp_weights(c * x, p, m), lmp_weights(x, p, m), rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(loss_max_pooling(c * x, p, m), c * loss_max_pooling(x, p, m), rtol=1e-9, atol=0)


@settings(max_examples=40, deadline=None)
@given(ell=finite_losses, p=st.sampled_from(P_VALUES), seed=st.integers(0, 2**16))
def test_property_permutation_equivariant(ell, p, seed):
    x = torch.tensor(ell, dtype=torch.float64)
    perm = torch.randperm(len(ell), generator=torch.Generator().manual_seed(seed))
    m = max(1.0, 0.4 * len(ell))
    torch.testing.assert_close(lmp_weights(x[perm], p, m), lmp_weights(x, p, m)[perm], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", P_VALUES)
def test_mean_when_m_is_n_or_p_infinite(p):
    g = torch.Generator().manual_seed(3)
    losses = torch.rand(4, 9, generator=g, dtype=torch.float64)
    valid = torch.rand(4, 9, generator=g) > 0.3
    valid[:, 0] = True
    mean = (losses * valid).sum(-1) / valid.sum(-1)
    n = valid.sum(-1).double()
    torch.testing.assert_close(loss_max_pooling(losses, p, n, valid), mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss_max_pooling(losses, INF, 2.0, valid), mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(lmp_weights(losses, p, n, valid), valid / n[:, None], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", P_VALUES)
def test_all_equal_losses_give_uniform_weights_and_one_pixel(p):
    losses = torch.full((2, 5), 2.5, dtype=torch.float64)
    torch.testing.assert_close(lmp_weights(losses, p, 2.2), torch.full((2, 5), 0.2, dtype=torch.float64))
    torch.testing.assert_close(loss_max_pooling(losses, p, 2.2), torch.full((2,), 2.5, dtype=torch.float64))
    one = torch.tensor([[1.75]])
    assert lmp_weights(one, p, 1).item() == pytest.approx(1.0)
    assert loss_max_pooling(one, p, 5.0).item() == pytest.approx(1.75)  # m clamped to n = 1


def test_m_above_n_is_clamped_and_m_broadcasts():
    g = torch.Generator().manual_seed(4)
    losses = torch.rand(2, 3, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(loss_max_pooling(losses, 1.3, 1000.0), loss_max_pooling(losses, 1.3, 10.0))
    m = torch.tensor([1.0, 2.5, 6.0])  # broadcast over the leading (2, 3)
    out = loss_max_pooling(losses, 1.3, m)
    assert out.shape == (2, 3)
    _, ref = ref_rows(losses.reshape(6, 10), 1.3, m.repeat(2))
    np.testing.assert_allclose(out.reshape(6).numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("p", [1.0, 1.3, INF])
def test_rows_are_independent(p):
    g = torch.Generator().manual_seed(5)
    losses = torch.rand(5, 12, generator=g) * torch.tensor([1.0, 1e3, 1e-3, 0.0, 7.0])[:, None]
    valid = torch.rand(5, 12, generator=g) > 0.3
    valid[4] = False
    m = torch.tensor([1.0, 3.0, 2.5, 4.0, 2.0])
    w, out = lmp_weights(losses, p, m, valid), loss_max_pooling(losses, p, m, valid)
    # p = 1 and p = inf: bit for bit. 1 < p < inf: the partial sort's width is the batch's largest ceil(m), which
    # changes how the sums of l^q are split and so the rounding (a few float32 ulps), not the value.
    tol = {"rtol": 0, "atol": 0} if p in (1.0, INF) else {"rtol": 2e-6, "atol": 1e-12}
    for b in range(5):
        torch.testing.assert_close(lmp_weights(losses[b], p, m[b], valid[b]), w[b], **tol)
        torch.testing.assert_close(loss_max_pooling(losses[b], p, m[b], valid[b]), out[b], **tol)
    _, l_ref = ref_rows(losses, p, m, valid)
    np.testing.assert_allclose(out.double().numpy(), l_ref, rtol=1e-5)


# ------------------------------------------------------------------------------------------ masks, edge rows


@pytest.mark.parametrize("p", P_VALUES)
def test_ignored_pixels_are_excluded(p):
    g = torch.Generator().manual_seed(6)
    losses = torch.rand(3, 10, generator=g, dtype=torch.float64)
    valid = torch.rand(3, 10, generator=g) > 0.4
    valid[:, :2] = True
    valid[:, -3:] = False
    losses[:, -3:] = torch.tensor([math.nan, math.inf, -5.0], dtype=torch.float64)  # anything, it is ignored
    losses.requires_grad_(True)
    w = lmp_weights(losses, p, 2.0, valid)
    out = loss_max_pooling(losses, p, 2.0, valid)
    out.sum().backward()
    assert (w[~valid] == 0).all() and (losses.grad[~valid] == 0).all()
    for b in range(3):  # same as the row with the ignored pixels dropped (n counts valid pixels only)
        kept = losses[b].detach()[valid[b]]
        assert out[b].item() == pytest.approx(loss_max_pooling(kept, p, 2.0).item(), rel=1e-12)
        torch.testing.assert_close(w[b][valid[b]], lmp_weights(kept, p, 2.0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", P_VALUES)
def test_all_ignored_and_all_zero_rows(p):
    losses = torch.tensor([[0.3, 1.0, 2.0], [0.0, 0.0, 0.0], [5.0, 0.0, 1.0]], requires_grad=True)
    valid = torch.tensor([[False, False, False], [True, True, True], [True, True, True]])
    w = lmp_weights(losses, p, 2.0, valid)
    out = loss_max_pooling(losses, p, 2.0, valid)
    out.sum().backward()
    assert torch.isfinite(w).all() and torch.isfinite(out).all() and torch.isfinite(losses.grad).all()
    assert out[0].item() == 0 and (w[0] == 0).all() and (losses.grad[0] == 0).all()  # no valid pixel
    assert out[1].item() == 0  # all-zero row: documented choice, uniform weights
    torch.testing.assert_close(w[1], torch.full((3,), 1 / 3))
    assert out[2].item() > 0


def test_empty_last_dimension():
    assert loss_max_pooling(torch.zeros(2, 0), 1.3, 1.0).tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------------ autograd and dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p-{p:g}")
def test_gradient_is_the_weights_exactly(p, dtype):
    g = torch.Generator().manual_seed(7)
    losses = (torch.rand(3, 11, generator=g) * 4).to(dtype).requires_grad_(True)
    valid = torch.rand(3, 11, generator=g) > 0.2
    loss_max_pooling(losses, p, 3.5, valid).sum().backward()
    w = lmp_weights(losses.detach(), p, 3.5, valid)
    assert torch.equal(losses.grad, w)
    assert not lmp_weights(losses, p, 3.5, valid).requires_grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_inputs_compute_in_float32(dtype):
    g = torch.Generator().manual_seed(8)
    full = torch.rand(2, 20, generator=g) * 3
    low = full.to(dtype).requires_grad_(True)
    out = loss_max_pooling(low, 1.3, 5.0)
    assert out.dtype == torch.float32 and lmp_weights(low, 1.3, 5.0).dtype == torch.float32
    torch.testing.assert_close(out, loss_max_pooling(low.detach().float(), 1.3, 5.0))
    out.sum().backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()
    assert loss_max_pooling(full.double(), 1.3, 5.0).dtype == torch.float64


# ----------------------------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        pytest.param({"p": 0.5}, "0.5", id="p-below-one"),
        pytest.param({"p": math.nan}, "nan", id="p-nan"),
        pytest.param({"m": 0.5}, "0.5", id="m-below-one"),
        pytest.param({"m": torch.tensor([2.0, 0.25])}, "0.25", id="m-row-below-one"),
        pytest.param({"m": math.nan}, "nan", id="m-nan"),
        pytest.param({"losses": torch.tensor([[1.0, -1.5, 2.0], [1.0, 1.0, 1.0]])}, "-1.5", id="loss-negative"),
        pytest.param({"losses": torch.tensor([[1.0, math.inf, 2.0], [1.0, 1.0, 1.0]])}, "inf", id="loss-infinite"),
        pytest.param({"losses": torch.tensor([[1.0, math.nan, 2.0], [1.0, 1.0, 1.0]])}, "nan", id="loss-nan"),
    ],
)
def test_invalid_inputs_raise(kwargs, shown):
    args = {"losses": torch.ones(2, 3), "p": 1.3, "m": 2.0, **kwargs}
    for fn in (lmp_weights, loss_max_pooling):
        with pytest.raises(ValueError, match=shown):
            fn(**args)


def test_invalid_module_arguments_and_shapes_raise():
    for kwargs, shown in [({"p": 0.9}, "0.9"), ({"ratio": 0.0}, "0.0"), ({"ratio": 1.5}, "1.5")]:
        with pytest.raises(ValueError, match=shown):
            LossMaxPooling(**kwargs)
    with pytest.raises(ValueError, match="LossMaxPooling"):
        LossMaxPooling()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))


# --------------------------------------------------------------------------------------------- LossMaxPooling


def make_batch(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 5, 6, 7, generator=g) * 2).to(dtype)
    target = torch.randint(0, 5, (3, 6, 7), generator=g)
    target[torch.rand(3, 6, 7, generator=g) < 0.2] = 255
    target[2] = 255  # an image without valid pixels is left out of the mean
    return logits, target


def per_image_ce(logits: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    """Valid-pixel cross-entropy of each image in float64, from log-softmax directly."""
    out = []
    for b in range(logits.shape[0]):
        logp = torch.log_softmax(logits[b].double(), 0)
        keep = target[b] != 255
        out.append(-logp.permute(1, 2, 0)[keep].gather(-1, target[b][keep][:, None]).squeeze(-1).numpy())
    return out


@pytest.mark.parametrize(("p", "ratio"), [(1.3, 0.25), (1.0, 0.1), (2.0, 0.5), (1.3, 1.0), (INF, 0.25)])
def test_module_matches_per_image_reference(p, ratio):
    logits, target = make_batch(9)
    ces = per_image_ce(logits, target)
    pooled = [
        (cvar_p1(ce, max(1, ratio * ce.size)) if p == 1 else float(ref_weights(ce, p, max(1, ratio * ce.size)) @ ce))
        for ce in ces
        if ce.size
    ]
    means = [ce.mean() for ce in ces if ce.size]
    out = LossMaxPooling(p=p, ratio=ratio)(logits, target)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(np.mean(pooled), rel=1e-5)
    assert all(lw >= mean * (1 - 1e-9) for lw, mean in zip(pooled, means, strict=True))
    assert out.item() >= np.mean(means) * (1 - 1e-6)
    if ratio == 1 or p == INF:  # the per-image mean CE
        assert out.item() == pytest.approx(np.mean(means), rel=1e-5)
    else:
        assert out.item() > np.mean(means) * 1.05


def test_module_default_upper_bounds_cross_entropy_and_float64():
    logits, target = make_batch(10, torch.float64)
    out = LossMaxPooling()(logits, target)
    mean_ce = np.mean([ce.mean() for ce in per_image_ce(logits, target) if ce.size])
    assert out.dtype == torch.float64 and out.item() > mean_ce
    same = F.cross_entropy(logits[:1], target[:1], ignore_index=255)
    torch.testing.assert_close(LossMaxPooling(ratio=1.0)(logits[:1], target[:1]), same)


def test_module_all_ignored_batch_is_zero_with_zero_gradient():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = LossMaxPooling()(logits, torch.full((2, 3, 3), 255))
    out.backward()
    assert out.item() == 0 and torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_module_bf16_logits_close_to_float32():
    logits, target = make_batch(11)
    low = logits.bfloat16().requires_grad_(True)
    out = LossMaxPooling()(low, target)
    ref = LossMaxPooling()(low.detach().float(), target)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, ref)  # same bf16 values, upcast before the softmax
    assert (out - LossMaxPooling()(logits, target)).abs().item() < 0.05 * ref.item()
    out.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad).all()
    assert (low.grad[2] == 0).all()  # the image without valid pixels
