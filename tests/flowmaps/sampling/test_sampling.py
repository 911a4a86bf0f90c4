"""Tests of time grids, the flow-map sampler and the ODE solvers (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import math

import pytest
import torch

from flowmaps.sampling import (
    SampleResult,
    cosine,
    edm,
    flowmap_sample,
    make_grid,
    ode_solve,
    parse_grid,
    uniform,
    validate_grid,
)
from flowmaps.sampling.dopri5 import DP_A, DP_B4, DP_B5, DP_C

F64 = torch.float64


# ----------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("kind", ["uniform", "edm", "cosine"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 40])
def test_grid_builders_are_valid(kind: str, n: int) -> None:
    g = make_grid(kind, n)
    assert g.dtype == F64 and g.shape == (n + 1,)
    assert g[0].item() == 0.0 and g[-1].item() == 1.0
    assert (g[1:] > g[:-1]).all()
    assert torch.equal(validate_grid(g), g)


def test_uniform_and_cosine_values() -> None:
    assert uniform(4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    c = cosine(4)
    expected = [0.0, (1 - math.sqrt(0.5)) / 2, 0.5, (1 + math.sqrt(0.5)) / 2, 1.0]
    assert torch.allclose(c, torch.tensor(expected, dtype=F64), atol=1e-15)


def test_edm_matches_noise_to_signal_mapping() -> None:
    # interior points: t = 1 / (1 + kappa) with EDM's rho-spaced kappa
    n, rho = 10, 7.0
    g = edm(n, rho=rho)
    i = torch.arange(1, n, dtype=F64) / n
    a, b = 160.0 ** (1 / rho), 0.004 ** (1 / rho)
    kappa = (a + i * (b - a)) ** rho
    assert torch.allclose(g[1:-1], 1 / (1 + kappa), rtol=1e-12)
    # denser than uniform at the data end: the last step is shorter than 1/n
    assert (g[-1] - g[-2]).item() < 0.5 / n
    # rho = 1 spaces kappa linearly; larger rho makes the data end denser
    assert (edm(n, rho=3.0)[-2] < g[-2]).item()


def test_parse_grid_text_and_list() -> None:
    assert parse_grid("0, 0.4, 0.75, 1").tolist() == [0.0, 0.4, 0.75, 1.0]
    assert parse_grid("[0 0.5; 1]").tolist() == [0.0, 0.5, 1.0]
    assert parse_grid([0, 0.5, 1]).tolist() == [0.0, 0.5, 1.0]
    assert parse_grid("0.25, 0.5", partial=True).tolist() == [0.25, 0.5]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([0.0, 0.7, 0.5, 1.0], "strictly increasing; got 0.5 after 0.7 at position 3"),
        ([0.0, 0.5, 0.5, 1.0], "strictly increasing; got 0.5 after 0.5 at position 3"),
        ([0.1, 0.5, 1.0], "must start at 0"),
        ([0.0, 0.5, 0.9], "must end at 1"),
        ([0.0, float("nan"), 1.0], "entry 2 is nan; every time must be finite"),
        ([0.0, float("inf"), 1.0], "must be finite"),
        ([0.0, 1.5], "entry 2 is 1.5, outside [0, 1]"),
        ([-0.2, 1.0], "outside [0, 1]"),
        ([0.0], "at least two times"),
        ([], "at least two times"),
        ([[0.0, 1.0]], "flat list"),
    ],
)
def test_validate_grid_rejects_with_message(grid: list, message: str) -> None:
    with pytest.raises(ValueError, match="time grid") as info:
        validate_grid(grid)
    assert message in str(info.value)


def test_validate_grid_step_cap_and_partial() -> None:
    with pytest.raises(ValueError, match="cap of 16"):
        validate_grid(torch.linspace(0, 1, 18), max_steps=16)
    assert validate_grid(torch.linspace(0, 1, 17), max_steps=16).shape == (17,)
    with pytest.raises(ValueError, match="cap of 1024"):
        make_grid("uniform", 2000)
    # partial grids must still be increasing and inside [0, 1]
    assert validate_grid([0.3, 0.6], partial=True).tolist() == [0.3, 0.6]
    with pytest.raises(ValueError, match="strictly increasing"):
        validate_grid([0.6, 0.3], partial=True)


def test_parse_grid_rejects_text() -> None:
    with pytest.raises(ValueError, match="entry 2 is 'half', which is not a number"):
        parse_grid("0, half, 1")
    with pytest.raises(ValueError, match="empty"):
        parse_grid("  ")
    with pytest.raises(ValueError, match="unknown grid kind"):
        make_grid("karras", 4)


# ------------------------------------------------------------------------------ ODE solvers


def _linear_velocity(a: float):
    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        return a * x

    return f


def _time_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # dx/dt = 2 t x  ->  x(t) = x(s) exp(t^2 - s^2)
    return 2.0 * t[:, None] * x


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("heun", 2), ("rk4", 4)])
@pytest.mark.parametrize("which", ["constant", "time"])
def test_fixed_step_convergence_order(method: str, order: int, which: str) -> None:
    x0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    if which == "constant":
        a = 1.5
        f, exact = _linear_velocity(a), x0 * math.exp(a)
    else:
        f, exact = _time_velocity, x0 * math.exp(1.0)
    errors = []
    for n in (16, 32, 64):
        res = ode_solve(f, x0, method=method, n_steps=n)
        errors.append((res.x - exact).abs().max().item())
        assert res.nfe == n * {"euler": 1, "heun": 2, "rk4": 4}[method]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    for r in rates:
        assert abs(r - order) < 0.15, (rates, errors)


def test_dormand_prince_tableau_is_consistent() -> None:
    for c, row in zip(DP_C, DP_A, strict=True):
        assert abs(sum(row) - c) < 1e-14
    assert abs(sum(DP_B5) - 1) < 1e-14 and abs(sum(DP_B4) - 1) < 1e-14
    # order conditions up to 4 for both weight sets: sum b c^(k-1) = 1/k
    for b in (DP_B5, DP_B4):
        for k in range(1, 5):
            assert abs(sum(bi * ci ** (k - 1) for bi, ci in zip(b, DP_C, strict=True)) - 1 / k) < 1e-14


def test_dopri5_tolerance_and_exact_nfe() -> None:
    calls = {"n": 0}

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.cos(4 * t)[:, None] * x  # x(t) = x0 exp(sin(4t) / 4)

    x0 = torch.tensor([[1.0], [2.0], [-3.0]], dtype=F64)
    res = ode_solve(f, x0, method="dopri5", rtol=1e-8, atol=1e-10)
    exact = x0 * math.exp(math.sin(4.0) / 4)
    assert (res.x - exact).abs().max().item() < 1e-6
    assert res.nfe == calls["n"]
    st = res.stats
    assert res.nfe == 2 + 6 * (st["accepted"] + st["rejected"])
    assert 5 < res.nfe < 1000
    # a looser tolerance needs fewer evaluations and is less accurate
    loose = ode_solve(f, x0, method="dopri5", rtol=1e-3, atol=1e-5)
    assert loose.nfe < res.nfe
    assert (loose.x - exact).abs().max().item() > (res.x - exact).abs().max().item()


def test_dopri5_trajectory_between_times_and_backwards() -> None:
    x0 = torch.tensor([[1.0, 2.0]], dtype=F64)
    res = ode_solve(_time_velocity, x0, method="dopri5", t0=0.2, t1=0.9, rtol=1e-9, atol=1e-12, return_trajectory=True)
    g = res.grid
    assert g[0].item() == 0.2 and g[-1].item() == 0.9 and (g[1:] > g[:-1]).all()
    assert res.trajectory.shape == (g.numel(), 1, 2)
    want = x0[None] * torch.exp(g**2 - 0.04)[:, None, None]
    assert torch.allclose(res.trajectory, want, rtol=1e-7)
    # backwards, with requested output times
    grid = [0.9, 0.5, 0.1]
    back = ode_solve(_time_velocity, res.x, method="dopri5", grid=grid, rtol=1e-9, atol=1e-12, return_trajectory=True)
    assert back.grid.tolist() == grid and back.trajectory.shape == (3, 1, 2)
    assert torch.allclose(back.x, x0 * math.exp(0.01 - 0.04), rtol=1e-7)
    rk = ode_solve(_time_velocity, res.x, method="rk4", grid=grid, return_trajectory=True)
    assert rk.trajectory.shape == (3, 1, 2) and rk.nfe == 8


def test_ode_solve_errors() -> None:
    x0 = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="unknown ODE method"):
        ode_solve(_time_velocity, x0, method="rk45")
    with pytest.raises(ValueError, match="strictly monotone"):
        ode_solve(_time_velocity, x0, grid=[0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="shape"):
        ode_solve(lambda x, t: x[:, :1], x0)
    with pytest.raises(RuntimeError, match="max_steps"):
        ode_solve(
            lambda x, t: 50 * torch.cos(50 * t)[:, None] * x, x0, method="dopri5", rtol=1e-10, atol=1e-12, max_steps=5
        )


# ------------------------------------------------------------------------- flow-map sampler


class RotatingExpFlow:
    """Exact flow map of dx/dt = A x + 2 t x with A = omega * rotation generator (2-D)."""

    def __init__(self, omega: float) -> None:
        self.omega = omega
        self.calls = 0

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rot = torch.stack([-x[:, 1], x[:, 0]], dim=1)
        return self.omega * rot + 2 * t[:, None] * x

    def jump(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert isinstance(s, torch.Tensor) and s.shape == (x.shape[0],)
        assert s.dtype == x.dtype and t.dtype == x.dtype and s.device == x.device
        self.calls += 1
        ang = self.omega * (t - s)
        c, sn = torch.cos(ang), torch.sin(ang)
        y = torch.stack([c * x[:, 0] - sn * x[:, 1], sn * x[:, 0] + c * x[:, 1]], dim=1)
        return y * torch.exp(t**2 - s**2)[:, None]


@pytest.mark.parametrize(
    "grid",
    [uniform(1), uniform(5), edm(6), cosine(7), [0.0, 0.1, 0.75, 1.0], "0, 0.4, 0.75, 1"],
)
def test_flowmap_sampler_reproduces_ode(grid) -> None:
    flow = RotatingExpFlow(omega=2.0)
    x0 = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = ode_solve(flow.velocity, x0, method="dopri5", rtol=1e-10, atol=1e-12)
    res = flowmap_sample(flow, x0, grid, return_trajectory=True)
    g = validate_grid(grid)
    assert isinstance(res, SampleResult)
    assert res.nfe == flow.calls == g.numel() - 1
    assert torch.equal(res.grid, g)
    assert res.trajectory.shape == (g.numel(), 5, 2)
    assert torch.equal(res.trajectory[0], x0) and torch.equal(res.trajectory[-1], res.x)
    assert torch.allclose(res.x, ref.x, atol=1e-8)
    # every intermediate state is the ODE solution at that grid time
    mid = ode_solve(flow.velocity, x0, method="dopri5", grid=g, rtol=1e-10, atol=1e-12, return_trajectory=True)
    assert torch.allclose(res.trajectory, mid.trajectory, atol=1e-8)


def test_flowmap_sampler_no_trajectory_and_float32() -> None:
    flow = RotatingExpFlow(omega=1.0)
    x0 = torch.randn(3, 2)
    res = flowmap_sample(flow, x0, uniform(4))
    assert res.trajectory is None and res.x.dtype == torch.float32 and res.nfe == 4
    with pytest.raises(ValueError, match="must start at 0"):
        flowmap_sample(flow, x0, [0.5, 1.0])
    part = flowmap_sample(flow, x0, [0.5, 1.0], partial=True)
    assert part.nfe == 1
