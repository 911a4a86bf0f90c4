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


# ------------------------------------------------------------------------------ full covariances


def _random_spd(d: int, gen: torch.Generator, low: float = 0.02) -> torch.Tensor:
    a = torch.randn(d, d, dtype=F64, generator=gen)
    c = 0.1 * a @ a.T + low * torch.eye(d, dtype=F64)
    return 0.5 * (c + c.T)


def _brute_force_velocity(g: GaussianMixture, x: np.ndarray, t: float) -> np.ndarray:
    """E[x1 - x0 | I_t = x] from the joint law of (x0, x1) given each component, written without the
    module's formulas: (x1 - x0, I_t) = A (x0, x1) with A = [[-I, I], [(1-t) I, t I]], Gaussian
    conditioning with numpy solves, component weights from scipy densities."""
    d = g.dim
    eye = np.eye(d)
    a = np.block([[-eye, eye], [(1 - t) * eye, t * eye]])
    out = np.zeros_like(x)
    dens = []
    conds = []
    for w, mu, cov in zip(g.weights.numpy(), g.means.numpy(), g.covs.numpy(), strict=True):
        joint_cov = a @ np.block([[g.sigma**2 * eye, np.zeros((d, d))], [np.zeros((d, d)), cov]]) @ a.T
        joint_mean = a @ np.concatenate([np.zeros(d), mu])
        m_v, m_i = joint_mean[:d], joint_mean[d:]
        c_vi, c_ii = joint_cov[:d, d:], joint_cov[d:, d:]
        conds.append(m_v + np.linalg.solve(c_ii, (x - m_i).T).T @ c_vi.T)
        dens.append(w * multivariate_normal(m_i, c_ii).pdf(x))
    dens = np.stack(dens)  # (K, B)
    post = dens / dens.sum(0, keepdims=True)
    for k in range(len(conds)):
        out += post[k][:, None] * conds[k]
    return out


def test_full_covariance_validation() -> None:
    mu = [[0.0, 0.0], [1.0, 0.0]]
    good = torch.stack([torch.eye(2, dtype=F64), 0.5 * torch.eye(2, dtype=F64)])
    with pytest.raises(ValueError, match="not symmetric"):
        GaussianMixture([1.0, 1.0], mu, covs=torch.stack([torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.eye(2)]))
    with pytest.raises(ValueError, match=r"covs\[1\] is not positive definite"):
        GaussianMixture([1.0, 1.0], mu, covs=torch.stack([torch.eye(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])]))
    with pytest.raises(ValueError, match="not positive definite"):
        GaussianMixture([1.0, 1.0], mu, covs=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match=r"\(K, d, d\)"):
        GaussianMixture([1.0, 1.0], mu, covs=torch.eye(3))
    with pytest.raises(ValueError, match="finite"):
        GaussianMixture([1.0, 1.0], mu, covs=torch.full((2, 2, 2), math.nan))
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture([1.0, 1.0], mu, 0.5, covs=good)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture([1.0, 1.0], mu)
    # one shared (d, d) covariance is broadcast to every component
    shared = GaussianMixture([1.0, 1.0], mu, covs=[[0.2, 0.05], [0.05, 0.1]])
    assert shared.covs.shape == (2, 2, 2) and shared.full_covariance
    assert torch.allclose(shared.stds, torch.tensor([[0.2, 0.1], [0.2, 0.1]], dtype=F64).sqrt())


def test_diagonal_covs_agree_with_stds_path() -> None:
    """The full-covariance path (Cholesky solves) against the per-coordinate path on the same mixture."""
    stds = torch.tensor([[0.2, 0.5], [0.35, 0.1], [0.6, 0.3]], dtype=F64)
    args = ([0.2, 0.5, 0.3], [[-0.5, 0.2], [0.4, -0.3], [0.0, 0.8]])
    diag = GaussianMixture(*args, stds, sigma=0.7)
    full = GaussianMixture(*args, sigma=0.7, covs=torch.diag_embed(stds**2))
    assert full.full_covariance and not diag.full_covariance
    x = 1.5 * torch.randn(64, 2, dtype=F64, generator=_gen(30))
    t = torch.rand(64, dtype=F64, generator=_gen(31))
    t[:2] = torch.tensor([0.0, 1.0], dtype=F64)
    for fn in ("velocity", "score", "marginal_log_prob"):
        a, b = getattr(diag, fn)(x, t), getattr(full, fn)(x, t)
        assert (a - b).abs().max().item() < 1e-12, fn
    assert torch.allclose(diag.covariance(), full.covariance(), atol=1e-15)
    assert (diag.exact_flow_map(x[:16], 0.1, 0.9) - full.exact_flow_map(x[:16], 0.1, 0.9)).abs().max() < 1e-12
    # float32 in, float32 out, same numbers to float32 precision
    assert full.velocity(x.float(), t.float()).dtype == torch.float32
    assert torch.allclose(full.velocity(x.float(), t.float()).double(), diag.velocity(x, t), atol=1e-5)


@pytest.mark.parametrize("d", [2, 3])
def test_full_covariance_velocity_brute_force(d: int) -> None:
    gen = _gen(40 + d)
    k = 3
    covs = torch.stack([_random_spd(d, gen) for _ in range(k)])
    means = torch.randn(k, d, dtype=F64, generator=gen)
    g = GaussianMixture([0.5, 0.3, 0.2], means, covs=covs)
    assert (covs[0] - torch.diag(covs[0].diag())).abs().max() > 0.01  # not diagonal
    x = torch.randn(20, d, dtype=F64, generator=gen)
    for t in (0.0, 0.15, 0.5, 0.85, 1.0):
        want = _brute_force_velocity(g, x.numpy(), t)
        got = g.velocity(x, t).numpy()
        assert np.abs(got - want).max() < 1e-10, (t, np.abs(got - want).max())
    # log p_t against scipy: p_t = sum_k pi_k N(t mu_k, (1 - t)^2 sigma^2 I + t^2 Sigma_k)
    t = 0.4
    want = np.log(
        sum(
            float(w)
            * multivariate_normal(t * m.numpy(), (1 - t) ** 2 * g.sigma**2 * np.eye(d) + t**2 * c.numpy()).pdf(
                x.numpy()
            )
            for w, m, c in zip(g.weights, g.means, g.covs, strict=True)
        )
    )
    assert np.allclose(g.marginal_log_prob(x, t).numpy(), want, rtol=1e-12)


def test_full_covariance_velocity_monte_carlo() -> None:
    """b_t(x) = E[x1 - x0 | I_t = x] by self-normalised importance sampling over data samples:
    given I_t = x and x1, x0 = (x - t x1) / (1 - t), and p(x1 | I_t = x) ∝ p(x1) N(x; t x1, (1 - t)^2 sigma^2 I)."""
    g = gmm_preset("tilted_mixture")
    t = 0.6
    x1 = g.sample(400_000, generator=_gen(50), dtype=F64)
    x = g.sample_marginal(6, t, generator=_gen(51), dtype=F64)
    sd = (1 - t) * g.sigma
    log_w = -0.5 * ((x[:, None, :] - t * x1[None]) ** 2).sum(-1) / sd**2  # (6, N)
    w = torch.softmax(log_w, dim=1)
    target = x1[None] - (x[:, None, :] - t * x1[None]) / (1 - t)  # x1 - x0, (6, N, 2)
    mc = (w[..., None] * target).sum(1)
    # standard error of a self-normalised estimate: sqrt(sum_i w_i^2 (f_i - mean)^2)
    se = torch.sqrt((w[..., None] ** 2 * (target - mc[:, None]) ** 2).sum(1))
    err = (g.velocity(x, t) - mc).abs()
    assert (err < 5 * se + 1e-4).all(), (err, se)
    assert (se < 0.02).all()  # the estimate is sharp enough to fail a wrong velocity


def test_full_covariance_single_gaussian_flow_map_closed_form() -> None:
    """One Gaussian N(m, S): with S = U diag(l) U^T, X_{s,t}(x) = t m + A_t A_s^{-1} (x - s m),
    A_u = U diag(sqrt((1 - u)^2 sigma^2 + u^2 l)) U^T (every V_u is a function of S)."""
    cov = torch.tensor([[0.3, 0.12], [0.12, 0.08]], dtype=F64)
    m = torch.tensor([0.4, -0.6], dtype=F64)
    g = GaussianMixture([1.0], m[None], sigma=0.8, covs=cov[None])
    lam, u = torch.linalg.eigh(cov)

    def a(v: float) -> torch.Tensor:
        return u @ torch.diag(torch.sqrt((1 - v) ** 2 * g.sigma**2 + v**2 * lam)) @ u.T

    x = torch.randn(50, 2, dtype=F64, generator=_gen(60))
    for s, t in ((0.0, 1.0), (0.2, 0.7), (0.9, 0.1)):
        want = t * m + (x - s * m) @ (a(t) @ torch.linalg.inv(a(s))).T
        assert (g.exact_flow_map(x, s, t) - want).abs().max().item() < 1e-6, (s, t)
    # the velocity is the time derivative of the closed-form map: b_t(X_{s,t}(x)) = d/dt X_{s,t}(x)
    s, h = 0.2, 1e-5
    for t in (0.1, 0.5, 0.9):
        moved = t * m + (x - s * m) @ (a(t) @ torch.linalg.inv(a(s))).T
        dx = ((a(t + h) - a(t - h)) @ torch.linalg.inv(a(s)) / (2 * h) @ (x - s * m).T).T + m
        assert (g.velocity(moved, t) - dx).abs().max().item() < 1e-8, t


@pytest.mark.parametrize(("s", "t"), [(0.0, 1.0), (0.3, 0.8), (1.0, 0.4)])
def test_full_covariance_flow_map_transports_marginals(s: float, t: float) -> None:
    g = gmm_preset("tilted_mixture")
    n = 3000
    xs = g.sample_marginal(n, s, generator=_gen(70), dtype=F64)
    xt = g.exact_flow_map(xs, s, t)
    # p_t has mean t m and covariance (1 - t)^2 sigma^2 I + t^2 Cov[x1]
    mean_t = t * g.mean()
    cov_t = (1 - t) ** 2 * g.sigma**2 * torch.eye(2, dtype=F64) + t**2 * g.covariance()
    se = torch.sqrt(torch.diagonal(cov_t) / n)
    assert ((xt.mean(0) - mean_t).abs() < 4 * se).all(), (xt.mean(0), mean_t)
    assert torch.allclose(torch.cov(xt.T), cov_t, atol=0.02), (torch.cov(xt.T), cov_t)
    # and the law itself: mean log-density under p_t matches that of fresh p_t samples
    fresh = g.sample_marginal(n, t, generator=_gen(71), dtype=F64)
    lp_moved, lp_fresh = g.marginal_log_prob(xt, t), g.marginal_log_prob(fresh, t)
    spread = lp_fresh.std() * math.sqrt(2.0 / n)
    assert abs(lp_moved.mean() - lp_fresh.mean()) < 4 * spread, (lp_moved.mean(), lp_fresh.mean())


def test_full_covariance_score_and_continuity() -> None:
    g = gmm_preset("tilted_mixture")
    x = (0.8 * torch.randn(6, 2, dtype=F64, generator=_gen(80))).requires_grad_(True)
    for t0 in (0.05, 0.5, 0.95):
        t = torch.full((6,), t0, dtype=F64, requires_grad=True)
        logp = g.marginal_log_prob(x, t)
        dlogp_dx, dlogp_dt = torch.autograd.grad(logp.sum(), (x, t))
        assert torch.allclose(g.score(x, t), dlogp_dx, atol=1e-12)
        b = g.velocity(x, t)
        assert torch.allclose(b, (x + (1 - t0) * g.sigma**2 * dlogp_dx) / t0, atol=1e-10)
        div = sum(torch.autograd.grad(b[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(2))
        residual = dlogp_dt + div + (b * dlogp_dx).sum(1)
        assert residual.abs().max().item() < 1e-10, (t0, residual)
    far = torch.tensor([[60.0, -40.0]], dtype=F64)
    assert torch.allclose(g.velocity(far, 0.0), g.mean() - far, atol=1e-12)
    assert torch.allclose(g.velocity(far, 1.0), far, atol=1e-12)
    assert torch.isfinite(g.velocity(far.float(), 0.5)).all()


def test_full_covariance_sample_and_log_prob() -> None:
    g = gmm_preset("tilted_mixture")
    x = torch.randn(40, 2, dtype=F64, generator=_gen(90))
    want = np.log(
        sum(
            float(w) * multivariate_normal(mu.numpy(), c.numpy()).pdf(x.numpy())
            for w, mu, c in zip(g.weights, g.means, g.covs, strict=True)
        )
    )
    assert np.allclose(g.log_prob(x).numpy(), want, rtol=1e-12)
    samples = g.sample(200_000, generator=_gen(91), dtype=F64)
    assert torch.allclose(samples.mean(0), g.mean(), atol=0.005)
    assert torch.allclose(torch.cov(samples.T), g.covariance(), atol=0.005)
    # the covariance is the mixture's: sum_k pi_k (Sigma_k + mu_k mu_k^T) - m m^T, with tilted parts
    cov = g.covariance()
    assert abs(cov[0, 1].item()) > 0.01
    # each component's own samples have its covariance (the Cholesky factor is applied, not its transpose)
    one = GaussianMixture([1.0], g.means[:1], covs=g.covs[:1])
    s1 = one.sample(100_000, generator=_gen(92), dtype=F64)
    assert torch.allclose(torch.cov(s1.T), g.covs[0], atol=0.003)
