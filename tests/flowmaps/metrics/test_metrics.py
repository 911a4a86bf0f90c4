"""Tests of the metrics: checkerboard KL, sliced Wasserstein, energy distance, flow-map error.

Time convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy
from scipy.stats import norm, wasserstein_distance

from flowmaps.data.gmm import gmm_preset
from flowmaps.data.toy import checkerboard_density, sample_toy
from flowmaps.metrics import (
    CheckerboardKL,
    checkerboard_kl,
    checkerboard_kl_floor,
    checkerboard_kl_parts,
    checkerboard_target,
    energy_distance,
    flowmap_error,
    flowmap_error_grid,
    histogram2d,
    sliced_wasserstein,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _board(n: int, seed: int) -> torch.Tensor:
    return sample_toy("checkerboard", n, _gen(seed), dtype=F64)


# ---------------------------------------------------------------------------- checkerboard KL


def test_bin_index_names_each_samples_bin_as_numpy_counts_it() -> None:
    """Each sample's bin, counted, gives numpy's 2-D histogram; off the grid, inf and NaN are -1; a
    sample on the upper edge is in the last bin."""
    from flowmaps.metrics import bin_index

    x = torch.rand(5000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2.4 - 1.2
    x[:3] = torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [float("inf"), 0.5]], dtype=torch.float64)
    idx = bin_index(x, bins=50)
    want, _, _ = np.histogram2d(x[3:, 0].numpy(), x[3:, 1].numpy(), bins=50, range=[[-1, 1], [-1, 1]])
    inside = idx[3:] >= 0
    got = torch.bincount(idx[3:][inside], minlength=2500).reshape(50, 50).numpy()
    assert np.array_equal(got, want.astype(np.int64))
    assert idx[0].item() == 2499 and idx[1].item() == -1 and idx[2].item() == -1
    assert int((~inside).sum()) == int(((x[3:].abs() > 1).any(dim=1)).sum())


def test_histogram_matches_numpy() -> None:
    x = 1.2 * torch.rand(5000, 2, dtype=F64, generator=_gen(0)) * 2 - 1.2
    x[0] = torch.tensor([1.0, -1.0], dtype=F64)  # on the outer edges: inside, last / first bin
    counts, outside = histogram2d(x, 50, (-1.0, 1.0))
    ref, _, _ = np.histogram2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=50, range=[[-1, 1], [-1, 1]])
    assert np.array_equal(counts.numpy(), ref)
    assert outside == 5000 - int(ref.sum())


def test_target_counts_and_edge_centres() -> None:
    q = checkerboard_target(50)
    assert abs(q.sum().item() - 1) < 1e-12
    # columns of bin centres per cell: 12, 13, 12, 13 (centres at +-0.5 go right / up)
    assert int((q > 0).sum()) == 4 * 12 * 12 + 4 * 13 * 13 == 1252
    # the estimator's structural problem: bins 12 and 37 straddle the edges x, y = +-0.5
    x = _board(64_000, 1)
    counts, _ = histogram2d(x)
    assert int(((counts > 0) & (q == 0)).sum()) == 96  # KL(hist || target) would be infinite


def test_exact_samples_hit_the_floor() -> None:
    x = _board(64_000, 2)
    res = checkerboard_kl(x, floor=True)
    assert isinstance(res, CheckerboardKL) and res.empty_bins == 0 and res.outside == 0
    assert 0.058 < res.kl < 0.072  # about 0.064 +- 0.001 over seeds
    assert 0.058 < res.floor < 0.072
    assert abs(res.kl - res.floor) < 0.005
    assert float(res) == res.kl
    assert str(res).startswith("KL 0.06") and "floor 0.06" in str(res) and "n=64000" in str(res)
    # the floor is deterministic per seed and drops with the sample size (sampling noise ~ 1/N)
    assert checkerboard_kl_floor(64_000, 0) == checkerboard_kl(_board(64_000, 0)).kl
    big = checkerboard_kl_floor(256_000, 0)
    assert 0.052 < big < checkerboard_kl_floor(64_000, 0)
    # small samples: the floor uses the same eps, so it stays finite when the KL is
    small = checkerboard_kl(_board(2_000, 7), eps=0.5, floor=True)
    assert math.isfinite(small.kl) and math.isfinite(small.floor)
    assert checkerboard_kl_floor(2_000, 0) == math.inf


def test_uniform_samples_score_log_of_mass_ratio() -> None:
    # uniform on the square: p_b = 1/2500, q_b = 1/1252 on 1252 bins -> KL = log(2500/1252)
    x = 2 * torch.rand(200_000, 2, dtype=F64, generator=_gen(3)) - 1
    res = checkerboard_kl(x)
    assert abs(res.kl - math.log(2500 / 1252)) < 0.01


def test_outside_samples_count_in_the_total() -> None:
    x = _board(20_000, 4)
    far = torch.full((2_000, 2), 5.0, dtype=F64)
    base = checkerboard_kl(x)
    more = checkerboard_kl(torch.cat([x, far]))
    assert abs(more.outside - 2_000 / 22_000) < 1e-12
    assert abs((more.kl - base.kl) - math.log(22_000 / 20_000)) < 1e-10


def test_empty_bins_infinite_or_smoothed() -> None:
    # all mass in one kept cell: target bins elsewhere are empty
    x = -1 + 0.5 * torch.rand(10_000, 2, dtype=F64, generator=_gen(5))
    assert (checkerboard_density(x) == 0.5).all()
    res = checkerboard_kl(x)
    # 144 target bins have centres in that cell, plus bin (12, 12) whose centre (-0.5, -0.5)
    # belongs to the kept cell (1, 1) and which the samples reach from below
    assert res.kl == math.inf and res.empty_bins == 1252 - 145
    smooth = checkerboard_kl(x, eps=0.5)
    assert math.isfinite(smooth.kl) and smooth.kl > 1.0 and smooth.empty_bins == 0
    # an empty bin counts as eps samples: KL = sum over the cell's 145 bins + the empty ones
    counts, _ = histogram2d(x)
    q = checkerboard_target()
    p = torch.clamp(counts, min=0.5) / 10_000
    want = float((q[q > 0] * torch.log(q[q > 0] / p[q > 0])).sum())
    assert abs(smooth.kl - want) < 1e-12
    # a histogram without empty bins is unchanged
    good = _board(64_000, 6)
    assert checkerboard_kl(good, eps=0.5).kl == checkerboard_kl(good).kl
    with pytest.raises(ValueError, match="eps"):
        checkerboard_kl(good, eps=0.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        checkerboard_kl(torch.zeros(10, 3))


# --------------------------------------------------------------------------- set distances


def test_sliced_wasserstein_shift_closed_form() -> None:
    a = torch.randn(1000, 2, dtype=F64, generator=_gen(7))
    m = torch.tensor([1.0, -0.5], dtype=F64)
    # an exact shift: each projection's W2 is |theta . m|, so SW2^2 -> |m|^2 / d
    sw = sliced_wasserstein(a, a + m, n_projections=2000, generator=_gen(8))
    assert abs(sw - math.sqrt(m.dot(m).item() / 2)) < 0.03 * sw
    a3 = torch.randn(1000, 3, dtype=F64, generator=_gen(9))
    m3 = torch.tensor([0.0, 2.0, 0.0], dtype=F64)
    sw3 = sliced_wasserstein(a3, a3 + m3, n_projections=2000, generator=_gen(10))
    assert abs(sw3 - 2 / math.sqrt(3)) < 0.03 * sw3
    assert sliced_wasserstein(a, a, generator=_gen(11)) == 0.0
    # two independent Gaussian samples shifted by m: close to the same closed form
    b = torch.randn(1500, 2, dtype=F64, generator=_gen(12)) + m
    sw_g = sliced_wasserstein(a, b, n_projections=500, generator=_gen(13))
    assert abs(sw_g - math.sqrt(1.25 / 2)) < 0.06


def test_sliced_wasserstein_unequal_sizes_exact_1d() -> None:
    a = torch.tensor([[0.0], [1.0]], dtype=F64)
    b = torch.tensor([[0.0], [0.5], [1.0]], dtype=F64)
    # quantile functions differ by 1/2 on [1/3, 2/3): W1 = 1/6, W2 = sqrt(1/12)
    assert abs(sliced_wasserstein(a, b, n_projections=3, p=1) - 1 / 6) < 1e-12
    assert abs(sliced_wasserstein(a, b, n_projections=3, p=2) - math.sqrt(1 / 12)) < 1e-12
    u = torch.randn(137, 1, dtype=F64, generator=_gen(14))
    v = 0.5 * torch.randn(58, 1, dtype=F64, generator=_gen(15)) + 0.3
    want = wasserstein_distance(u[:, 0].numpy(), v[:, 0].numpy())
    assert abs(sliced_wasserstein(u, v, n_projections=2, p=1) - want) < 1e-12
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(u, torch.zeros(5, 2))


def test_energy_distance() -> None:
    a = torch.randn(500, 2, dtype=F64, generator=_gen(16))
    assert energy_distance(a, a) == 0.0
    shifted = [energy_distance(a, a + d) for d in (0.1, 0.5, 1.0)]
    assert 0 < shifted[0] < shifted[1] < shifted[2]
    # point masses at 0 and delta: sqrt(2 |delta|)
    assert abs(energy_distance([[0.0, 0.0]], [[3.0, 4.0]]) - math.sqrt(10.0)) < 1e-12
    # equals scipy's in 1-D, unequal sizes
    u, v = np.random.default_rng(0).normal(size=300), np.random.default_rng(1).normal(size=200)
    assert abs(energy_distance(u[:, None], v[:, None] + 0.3) - scipy_energy(u, v + 0.3)) < 1e-12
    # large samples of N(0, 1) and N(delta, 1): closed form of 2E|X-Y| - E|X-X'| - E|Y-Y'|
    delta = 1.0
    e_xy = 2 / math.sqrt(math.pi) * math.exp(-(delta**2) / 4) + delta * (1 - 2 * norm.cdf(-delta / math.sqrt(2)))
    want = math.sqrt(2 * e_xy - 2 * 2 / math.sqrt(math.pi))
    x = torch.randn(4000, 1, dtype=F64, generator=_gen(17))
    y = torch.randn(4000, 1, dtype=F64, generator=_gen(18)) + delta
    assert abs(energy_distance(x, y) - want) < 0.05
    # subsampling keeps it close
    sub = energy_distance(x, y, max_points=1000, generator=_gen(19))
    assert abs(sub - want) < 0.1


# ------------------------------------------------------------------------------ flow-map error


class ExactGaussianJump:
    """Closed-form flow map of noise N(0, sigma^2) to one diagonal Gaussian N(m, diag s^2)."""

    def __init__(self, gmm) -> None:
        self.m, self.s, self.sigma = gmm.means[0], gmm.stds[0], gmm.sigma

    def a(self, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None]
        return torch.sqrt((1 - t) ** 2 * self.sigma**2 + t**2 * self.s**2)

    def jump(self, x, s, t):
        assert isinstance(s, torch.Tensor) and s.shape == (x.shape[0],)
        return t[:, None] * self.m + (self.a(t) / self.a(s)) * (x - s[:, None] * self.m)


class Identity:
    def jump(self, x, s, t):
        return x


class Float32Jump(torch.nn.Module):
    """A module whose parameters are float32: the metric must call it in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def jump(self, x, s, t):
        assert x.dtype == s.dtype == t.dtype == torch.float32
        return self.scale * x


def _identity_error(gmm, s: float, t: float) -> float:
    # x ~ N(s m, a_s^2): |x - X_{s,t}(x)|^2 has mean sum_j (s - t)^2 m_j^2 + (a_s - a_t)^2
    m, sd, sig = gmm.means[0], gmm.stds[0], gmm.sigma

    def a(u: float) -> torch.Tensor:
        return torch.sqrt((1 - u) ** 2 * sig**2 + u**2 * sd**2)

    return float(((s - t) ** 2 * m**2 + (a(s) - a(t)) ** 2).sum())


def test_flowmap_error_exact_model_is_zero() -> None:
    gmm = gmm_preset("gaussian")
    err = flowmap_error(ExactGaussianJump(gmm), gmm, n=512, generator=_gen(20))
    assert err < 1e-10
    err_mid = flowmap_error(ExactGaussianJump(gmm), gmm, s=0.3, t=0.7, n=512, generator=_gen(21))
    assert err_mid < 1e-10


def test_flowmap_error_identity_closed_form() -> None:
    gmm = gmm_preset("gaussian")
    for s, t in ((0.0, 1.0), (0.25, 0.75)):
        got = flowmap_error(Identity(), gmm, s=s, t=t, n=20_000, generator=_gen(22))
        want = _identity_error(gmm, s, t)
        assert abs(got - want) < 0.05 * want, (s, t, got, want)
    assert flowmap_error(Float32Jump(), gmm, n=64) > 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flowmap_error(Identity(), gmm, s=-0.1)


def test_flowmap_error_grid() -> None:
    gmm = gmm_preset("gaussian")
    s_vals, t_vals = [0.0, 0.5, 0.9], [0.25, 0.5, 1.0]
    grid = flowmap_error_grid(Identity(), gmm, s_vals, t_vals, n=4000, generator=_gen(23))
    assert grid.shape == (3, 3) and grid.dtype == F64
    for i, s in enumerate(s_vals):
        for j, t in enumerate(t_vals):
            if s < t:
                want = _identity_error(gmm, s, t)
                assert abs(grid[i, j].item() - want) < 0.1 * want + 1e-12, (s, t)
            else:
                assert math.isnan(grid[i, j].item())
    exact = flowmap_error_grid(ExactGaussianJump(gmm), gmm, s_vals, t_vals, n=64)
    assert torch.nanmean(exact).item() < 1e-10
    # the mixture case runs through the same batched solve
    mix = gmm_preset("two_gaussians")
    assert flowmap_error_grid(Identity(), mix, [0.0], [1.0], n=64)[0, 0] > 0.1


def test_flowmap_error_callable_exact_map() -> None:
    """A callable exact map scores as the mixture does: the closed-form map of one Gaussian, given
    as a plain function, against the mixture's own ODE solve, on the same points."""
    gmm = gmm_preset("gaussian")
    closed = ExactGaussianJump(gmm).jump
    pts = gmm.sample_marginal(3000, 0.25, generator=_gen(24), dtype=F64)
    by_fn = flowmap_error(Identity(), closed, s=0.25, t=0.75, points=pts)
    by_gmm = flowmap_error(Identity(), gmm, s=0.25, t=0.75, points=pts)
    assert abs(by_fn - by_gmm) < 1e-7 * by_gmm  # the solve's tolerance
    direct = (pts - closed(pts, torch.full((3000,), 0.25, dtype=F64), torch.full((3000,), 0.75, dtype=F64))) ** 2
    assert abs(by_fn - direct.sum(1).mean().item()) < 1e-12
    # a model equal to the callable scores 0; the grid takes callables too
    assert flowmap_error(ExactGaussianJump(gmm), closed, s=0.0, t=1.0, points=pts) < 1e-20
    grid = flowmap_error_grid(Identity(), closed, [0.0, 0.5], [0.5, 1.0], points=pts)
    assert grid.shape == (2, 2) and math.isnan(grid[1, 0].item()) and grid[0, 1].item() > 0.1
    with pytest.raises(ValueError, match="marginal"):
        flowmap_error(Identity(), closed)  # a function cannot sample p_s
    with pytest.raises(ValueError, match="sigma"):
        flowmap_error(Identity(), closed, points="base")
    with pytest.raises(ValueError, match="callable"):
        flowmap_error(Identity(), 3.0, points=pts)
    with pytest.raises(ValueError, match="shape"):
        flowmap_error(Identity(), lambda x, s, t: x[:, :1], points=pts)
    with pytest.raises(ValueError, match="'marginal', 'base'"):
        flowmap_error(Identity(), gmm, points="data")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        flowmap_error(Identity(), closed, points=torch.zeros(5, 3), dim=2)


def test_flowmap_error_on_base_points_closed_form() -> None:
    """On base points x ~ N(0, sigma^2 I) (the law at s = 0) the identity's error against the map of
    one Gaussian from any s is, per coordinate, (1 - r)^2 sigma^2 + (t - r s)^2 m^2, r = a_t / a_s."""
    gmm = gmm_preset("gaussian")
    m, sd, sig = gmm.means[0], gmm.stds[0], gmm.sigma

    def a(u: float) -> torch.Tensor:
        return torch.sqrt((1 - u) ** 2 * sig**2 + u**2 * sd**2)

    for s, t in ((0.0, 1.0), (0.5, 0.9)):
        r = a(t) / a(s)
        want = float(((1 - r) ** 2 * sig**2 + (t - r * s) ** 2 * m**2).sum())
        got = flowmap_error(Identity(), gmm, s=s, t=t, n=20_000, generator=_gen(25), points="base")
        assert abs(got - want) < 0.05 * want, (s, t, got, want)
        fn = flowmap_error(
            Identity(),
            ExactGaussianJump(gmm).jump,
            s=s,
            t=t,
            n=20_000,
            generator=_gen(25),
            points="base",
            sigma=sig,
            dim=2,
        )
        assert abs(fn - got) < 1e-6 * got  # the same points (same generator), the same map
    # at s = 0 the base points and the time-0 marginal have the same law
    base = flowmap_error(Identity(), gmm, n=20_000, generator=_gen(26), points="base")
    marg = flowmap_error(Identity(), gmm, n=20_000, generator=_gen(27))
    assert abs(base - marg) < 0.05 * marg


def test_flowmap_error_full_covariance_mixture() -> None:
    g = gmm_preset("tilted_mixture")

    class ExactOfMixture:
        def jump(self, x, s, t):
            return g.exact_flow_map(x, s, t)

    assert flowmap_error(ExactOfMixture(), g, s=0.2, t=0.9, n=256, generator=_gen(28)) < 1e-20
    assert flowmap_error(Identity(), g, n=256, generator=_gen(29)) > 0.05
    grid = flowmap_error_grid(Identity(), g, [0.0, 0.5], [0.5, 1.0], n=128, points="base")
    assert torch.isfinite(grid[0]).all() and (grid[0] > 0.01).all() and grid[1, 1] > 0.01


def test_mean_sd_over_seeds():
    from flowmaps.metrics import mean_sd

    assert mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, (7 / 3) ** 0.5))  # sum of squares 42/9, over n - 1 = 2
    assert mean_sd([0.3]) == (0.3, 0.0)
    m, sd = mean_sd([0.1, float("inf")])
    assert m == float("inf") and sd != sd  # an empty bin on one seed: no mean to report
    with pytest.raises(ValueError):
        mean_sd([])


# ------------------------------------------------------------------------- KL parts
def _edge_bins_by_loops(bins: int = 50) -> set[tuple[int, int]]:
    """Target bins with a 4-neighbour off the target or off the grid, from the density at each centre."""
    w = 2.0 / bins
    centre = [-1.0 + (k + 0.5) * w for k in range(bins)]

    def on(i: int, j: int) -> bool:
        if not (0 <= i < bins and 0 <= j < bins):
            return False
        pt = torch.tensor([[centre[i], centre[j]]], dtype=F64)
        return bool(checkerboard_density(pt)[0] > 0)

    return {
        (i, j)
        for i in range(bins)
        for j in range(bins)
        if on(i, j) and not all(on(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))
    }


def test_kl_parts_add_up_to_the_kl_and_name_the_edge_bins():
    g = torch.Generator().manual_seed(3)
    exact = sample_toy("checkerboard", 20_000, g, dtype=F64)
    noisy = torch.cat(
        [
            exact[:15_000] + 0.05 * torch.randn(15_000, 2, generator=g, dtype=F64),
            1.5 * torch.randn(500, 2, generator=g, dtype=F64),
        ]
    )
    for x in (exact, noisy):
        parts = checkerboard_kl_parts(x)
        assert parts["kl"] == pytest.approx(checkerboard_kl(x, eps=0.5).kl, rel=1e-10, abs=1e-12)
        assert parts["off_target"] + parts["edge"] + parts["interior"] == pytest.approx(parts["kl"], abs=1e-12)
        assert parts["edge"] + parts["interior"] >= 0.0  # KL(q || p') of the shape on the squares
    assert parts["target_bins"] == int((checkerboard_target() > 0).sum())
    assert parts["edge_bins"] == len(_edge_bins_by_loops())


def test_kl_parts_tell_a_shrunken_board_from_mass_thrown_off_it():
    g = torch.Generator().manual_seed(0)
    exact = sample_toy("checkerboard", 64_000, g, dtype=F64)
    # each point pulled 10 % of the way to its square's centre (0.025 < a bin): nothing leaves, edge bins thin out
    centre = (torch.floor(exact * 2.0) + 0.5) / 2.0
    shrunk = centre + 0.9 * (exact - centre)
    # a tenth of the points thrown far off the board, the rest exact
    thrown = exact.clone()
    thrown[:6_400] = 5.0
    base, s, t = checkerboard_kl_parts(exact), checkerboard_kl_parts(shrunk), checkerboard_kl_parts(thrown)
    assert s["mass_off_target"] == 0.0 and -0.01 < s["off_target"] <= 0.0  # only the eps of empty bins
    assert s["edge"] > base["edge"] + 0.3 and s["interior"] < base["interior"] - 0.05
    assert t["off_target"] == pytest.approx(base["off_target"] - math.log(0.9), abs=0.01)
    assert abs(t["edge"] - base["edge"]) < 0.01 and abs(t["interior"] - base["interior"]) < 0.01


def test_kl_parts_refuse_an_eps_that_is_not_a_positive_count():
    x = sample_toy("checkerboard", 1000, torch.Generator().manual_seed(0), dtype=F64)
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a positive count"):
            checkerboard_kl_parts(x, eps=eps)
