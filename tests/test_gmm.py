"""Tests of Gaussian mixtures with exact velocity and flow map (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from flowmaps.data.gmm import GMM_PRESETS, GaussianMixture, gmm_preset

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gauss_std(t, sigma: float, s: torch.Tensor) -> torch.Tensor:
    """Per-coordinate std of I_t for one Gaussian component: sqrt((1-t)^2 sigma^2 + t^2 s^2)."""
    return torch.sqrt((1 - t) ** 2 * sigma**2 + t**2 * s**2)


def test_presets_build() -> None:
    for name in GMM_PRESETS:
        g = gmm_preset(name)
        assert g.dim == 2 and g.sigma > 0
    assert gmm_preset("eight_gaussians").n_components == 8
    with pytest.raises(ValueError, match="unknown mixture preset"):
        gmm_preset("nine_gaussians")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"\(K, d\)"):
        GaussianMixture([0.5, 0.5], [[0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture([1.0], [[0.0, 0.0]], 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture([-1.0, 2.0], [[0.0], [1.0]], 1.0)
    g = GaussianMixture([1.0, 3.0], [[0.0, 1.0], [2.0, 0.0]], [0.5, 1.0])
    assert torch.allclose(g.weights, torch.tensor([0.25, 0.75], dtype=F64))
    assert abs(g.sigma - g.data_std()) < 1e-15  # default sigma is the data std


def test_log_prob_and_moments() -> None:
    g = gmm_preset("two_gaussians")
    x = torch.randn(50, 2, dtype=F64, generator=_gen(0))
    want = np.log(
        sum(
            float(w) * multivariate_normal(mu.numpy(), np.diag(s.numpy() ** 2)).pdf(x.numpy())
            for w, mu, s in zip(g.weights, g.means, g.stds, strict=True)
        )
    )
    assert np.allclose(g.log_prob(x).numpy(), want, rtol=1e-12)
    samples = g.sample(200_000, generator=_gen(1), dtype=F64)
    assert torch.allclose(samples.mean(0), g.mean(), atol=0.01)
    assert torch.allclose(torch.cov(samples.T), g.covariance(), atol=0.01)


def test_single_gaussian_velocity_closed_form() -> None:
    g = gmm_preset("gaussian")
    m, s, sig = g.means[0], g.stds[0], g.sigma
    x = torch.randn(7, 2, dtype=F64, generator=_gen(2))
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        # b_t(x) = m + (a_t' / a_t)(x - t m), a_t' by a central difference of a_t
        h = 1e-6
        ta, tb = max(t - h, 0.0), min(t + h, 1.0)
        da = (_gauss_std(tb, sig, s) - _gauss_std(ta, sig, s)) / (tb - ta)
        want = m + (da / _gauss_std(t, sig, s)) * (x - t * m)
        assert torch.allclose(g.velocity(x, t), want, atol=1e-5), t


def test_velocity_endpoints_mixture() -> None:
    g = gmm_preset("two_gaussians")
    x = 2 * torch.randn(9, 2, dtype=F64, generator=_gen(3))
    assert torch.allclose(g.velocity(x, 0.0), g.mean() - x, atol=1e-13)
    assert torch.allclose(g.velocity(x, 1.0), x, atol=1e-13)
    # far away from the data, still finite
    far = torch.tensor([[60.0, -40.0]], dtype=F64)
    for t in (0.0, 0.5, 1.0):
        assert torch.isfinite(g.velocity(far, t)).all()
        assert torch.isfinite(g.velocity(far.float(), t)).all()


def test_velocity_matches_score_identity() -> None:
    """For the linear interpolant, b_t(x) = (x + (1 - t) sigma^2 grad log p_t(x)) / t."""
    g = gmm_preset("two_gaussians")
    x = torch.randn(11, 2, dtype=F64, generator=_gen(4)).requires_grad_(True)
    for t in (0.2, 0.6, 0.97):
        (grad,) = torch.autograd.grad(g.marginal_log_prob(x, t).sum(), x)
        assert torch.allclose(g.score(x, t), grad, atol=1e-12)
        want = (x + (1 - t) * g.sigma**2 * grad) / t
        assert torch.allclose(g.velocity(x, t), want, atol=1e-10)


def test_continuity_equation() -> None:
    """d/dt log p_t + div b_t + b_t . grad log p_t = 0, all terms by autograd."""
    g = gmm_preset("two_gaussians")
    x = (0.8 * torch.randn(6, 2, dtype=F64, generator=_gen(5))).requires_grad_(True)
    for t0 in (0.05, 0.5, 0.95):
        t = torch.full((6,), t0, dtype=F64, requires_grad=True)
        logp = g.marginal_log_prob(x, t)
        dlogp_dx, dlogp_dt = torch.autograd.grad(logp.sum(), (x, t))
        b = g.velocity(x, t)
        div = sum(torch.autograd.grad(b[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(2))
        residual = dlogp_dt + div + (b * dlogp_dx).sum(1)
        assert residual.abs().max().item() < 1e-10, (t0, residual)
        assert dlogp_dt.abs().max().item() > 1e-2  # the test is not vacuous


@pytest.mark.parametrize(("s", "t"), [(0.0, 1.0), (0.3, 0.8), (0.9, 0.2), (0.0, 0.5)])
def test_single_gaussian_flow_map_closed_form(s: float, t: float) -> None:
    g = gmm_preset("gaussian")
    m, sd, sig = g.means[0], g.stds[0], g.sigma
    x = torch.randn(64, 2, dtype=F64, generator=_gen(6))
    want = t * m + (_gauss_std(t, sig, sd) / _gauss_std(s, sig, sd)) * (x - s * m)
    got = g.exact_flow_map(x, s, t)
    assert (got - want).abs().max().item() < 1e-6


def test_flow_map_per_sample_times_and_semigroup() -> None:
    g = gmm_preset("two_gaussians")
    x = torch.randn(40, 2, dtype=F64, generator=_gen(7))
    s = torch.rand(40, dtype=F64, generator=_gen(8))
    t = torch.rand(40, dtype=F64, generator=_gen(9))
    both = g.exact_flow_map(x, s, t)
    one = torch.stack([g.exact_flow_map(x[i : i + 1], float(s[i]), float(t[i]))[0] for i in (0, 5)])
    assert torch.allclose(both[[0, 5]], one, atol=1e-6)
    # X_{u,t}(X_{s,u}(x)) = X_{s,t}(x), and X_{s,s} = id
    u = 0.5 * (s + t)
    comp = g.exact_flow_map(g.exact_flow_map(x, s, u), u, t)
    assert torch.allclose(comp, both, atol=1e-6)
    assert torch.equal(g.exact_flow_map(x, 0.3, 0.3), x)
    # float32 in, float32 out
    assert g.exact_flow_map(x.float(), 0.0, 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        g.exact_flow_map(x, 0.0, 1.5)


def test_flow_map_pushes_noise_to_mixture() -> None:
    g = gmm_preset("two_gaussians")
    n = 4000
    x0 = g.sample_base(n, generator=_gen(10), dtype=F64)
    x1 = g.exact_flow_map(x0, 0.0, 1.0)
    # the sample mean and covariance agree with the mixture's within sampling error
    se = torch.sqrt(torch.diagonal(g.covariance()) / n)
    assert ((x1.mean(0) - g.mean()).abs() < 4 * se).all(), (x1.mean(0), g.mean())
    assert torch.allclose(torch.cov(x1.T), g.covariance(), atol=0.03)
    # and the mass of each component: points closer (in likelihood) to component 0
    logp0 = torch.distributions.Normal(g.means[0], g.stds[0]).log_prob(x1).sum(1)
    logp1 = torch.distributions.Normal(g.means[1], g.stds[1]).log_prob(x1).sum(1)
    post0 = torch.sigmoid(logp0 + math.log(0.3) - logp1 - math.log(0.7))
    assert abs(post0.mean().item() - 0.3) < 0.03
