"""ODE solvers for the probability flow ``dx/dt = b_t(x)``, counting velocity evaluations exactly.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data.**

Fixed-step methods on a time grid ``t_0, ..., t_N`` with steps ``h = t_{i+1} - t_i``:

- ``"euler"`` (order 1, 1 evaluation a step): ``x <- x + h b_t(x)``;
- ``"heun"`` (order 2, 2 evaluations): ``k1 = b_t(x)``, ``k2 = b_{t+h}(x + h k1)``,
  ``x <- x + h (k1 + k2) / 2``;
- ``"rk4"`` (order 4, 4 evaluations): the classical Runge-Kutta method.

``"dopri5"`` is the adaptive Dormand-Prince 5(4) method of :mod:`flowmaps.sampling.dopri5`, the
reference against which the flow-map sampler is measured (the paper's baseline: integrate the
learned velocity ``b_t(x) = v_{t,t}(x)``, the tangent condition of arXiv 2505.18825, with an ODE solver).

Example::

    >>> import torch
    >>> res = ode_solve(lambda x, t: -x, torch.ones(3, 2, dtype=torch.float64), method="rk4", n_steps=20)
    >>> res.nfe
    80
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flowmaps.inputs import check_entry_state
from flowmaps.sampling.dopri5 import solve_dopri5
from flowmaps.sampling.flowmap_sampler import SampleResult
from flowmaps.sampling.time_grid import check_steps

__all__ = ["ODE_METHODS", "Velocity", "ode_solve"]

#: Methods accepted by :func:`ode_solve`.
ODE_METHODS = ("euler", "heun", "rk4", "dopri5")

#: ``f(x, t) -> dx/dt``: ``x`` ``(B, *D)``, ``t`` a ``(B,)`` tensor of ``x``'s dtype and device.
Velocity = Callable[[Tensor, Tensor], Tensor]


class _Counted:
    """Wrap a velocity ``f(x, t)`` so that every call is counted; ``t`` becomes ``(B,)``."""

    def __init__(self, f: Velocity, like: Tensor) -> None:
        self.f = f
        self.n = 0
        self.batch = like.shape[0]
        self.dtype = like.dtype
        self.device = like.device

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.n += 1
        tt = torch.full((self.batch,), t, dtype=self.dtype, device=self.device)
        out = self.f(x, tt)
        if out.shape != x.shape:
            raise ValueError(
                f"velocity returned shape {tuple(out.shape)} for a state of shape "
                f"{tuple(x.shape)}; it must return the shape of x"
            )
        return out


def _monotone_grid(grid: Tensor | Sequence[float], max_steps: int) -> Tensor:
    g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().clone()
    if g.ndim != 1 or g.numel() < 2:
        raise ValueError(f"ODE grid needs at least two times in a flat list; got {g.tolist()}")
    if not torch.isfinite(g).all():
        raise ValueError("ODE grid times must be finite")
    if g.numel() - 1 > max_steps:
        raise ValueError(f"ODE grid has {g.numel() - 1} steps, above the cap of {max_steps}")
    d = g[1:] - g[:-1]
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError(
            "ODE grid must be strictly monotone (increasing to integrate towards data, "
            f"decreasing to integrate towards noise); got {g.tolist()}"
        )
    return g


def _fixed_step(f: _Counted, x: Tensor, times: list[float], method: str, states: list[Tensor] | None) -> Tensor:
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        h = t_next - t
        if method == "euler":
            x = x + h * f(x, t)
        elif method == "heun":
            k1 = f(x, t)
            k2 = f(x + h * k1, t_next)
            x = x + 0.5 * h * (k1 + k2)
        else:  # rk4
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t_next)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if states is not None:
            states.append(x)
    return x


def _solve_adaptive(
    f: _Counted,
    x0: Tensor,
    g: Tensor | None,
    t0: float,
    t1: float,
    rtol: float,
    atol: float,
    max_steps: int,
    states: list[Tensor] | None,
) -> tuple[Tensor, Tensor, dict[str, int]]:
    """dopri5 from ``g[0]`` to ``g[-1]`` landing on every time of ``g``, or from t0 to t1 recording every step."""
    out_times = g.tolist() if g is not None else None
    start, end = (out_times[0], out_times[-1]) if out_times else (float(t0), float(t1))
    times_out = [start]
    x, stats = solve_dopri5(f, x0, start, end, out_times, rtol, atol, max_steps, states, times_out)
    return x, torch.tensor(times_out, dtype=torch.float64), stats


def ode_solve(
    velocity: Velocity,
    x0: Tensor,
    method: str = "euler",
    grid: Tensor | Sequence[float] | None = None,
    n_steps: int | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    max_steps: int = 100_000,
    return_trajectory: bool = False,
    *,
    no_grad: bool = True,
) -> SampleResult:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t0`` to ``t1`` (t = 0 noise, t = 1 data).

    Args:
        velocity: ``f(x, t) -> dx/dt`` with ``x`` of shape ``(B, *D)`` and ``t`` a ``(B,)`` tensor
            of ``x``'s dtype and device; e.g. ``model.velocity`` or ``gmm.velocity``.
        x0: state at ``t0``, shape ``(B, *D)``, finite. When ``velocity`` is a bound method of
            a model that checks states (``model.velocity``), x0 is checked against the model's
            state shape and cast to its dtype.
        method: ``"euler"`` (order 1), ``"heun"`` (2), ``"rk4"`` (4) or ``"dopri5"`` (adaptive
            Dormand-Prince 5(4)).
        grid: explicit times, strictly increasing (towards data) or decreasing (towards noise).
            For the fixed-step methods these are the steps; for ``"dopri5"`` they are output
            times the solver lands on exactly. Overrides ``t0``, ``t1`` and ``n_steps``.
        n_steps: number of uniform steps from ``t0`` to ``t1`` for the fixed-step methods
            (default 100); ignored by ``"dopri5"``.
        t0, t1: start and end times when no grid is given; ``t0 > t1`` integrates backwards.
        rtol, atol: tolerances of ``"dopri5"``.
        max_steps: cap on steps (accepted + rejected for ``"dopri5"``).
        return_trajectory: also return the states at the grid times (for ``"dopri5"`` without a
            grid, at every accepted step; ``result.grid`` then holds those times).
        no_grad: run under ``torch.no_grad`` (default).

    Returns:
        :class:`SampleResult`; ``nfe`` is the exact number of velocity calls (for ``"dopri5"``:
        one for the first stage, one for the starting-step estimate, six per attempted step).

    Raises:
        ValueError: for a bad method, grid or tolerances, an ``x0`` that is not a finite floating
            tensor (of the model's state shape, where known), or (``"dopri5"``) a non-finite
            velocity at the start time.
        RuntimeError: ``"dopri5"`` ran past ``max_steps``, its step size underflowed, or the
            state became non-finite on the way.
    """
    m = str(method).strip().lower()
    if m not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {', '.join(ODE_METHODS)}")
    x0 = check_entry_state(velocity, x0)
    f = _Counted(velocity, x0)
    g = _monotone_grid(grid, max_steps) if grid is not None else None
    if g is None and (not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1):
        raise ValueError(f"need finite t0 != t1; got t0={t0}, t1={t1}")
    if m == "dopri5" and (rtol <= 0 or atol < 0):
        raise ValueError(f"need rtol > 0 and atol >= 0; got rtol={rtol}, atol={atol}")
    states = [x0] if return_trajectory else None
    with torch.no_grad() if no_grad else torch.enable_grad():
        if m == "dopri5":
            x, grid_out, stats = _solve_adaptive(f, x0, g, t0, t1, rtol, atol, max_steps, states)
        else:
            if g is None:
                n = check_steps(100 if n_steps is None else n_steps, max_steps)
                g = torch.linspace(float(t0), float(t1), n + 1, dtype=torch.float64)
            x = _fixed_step(f, x0, g.tolist(), m, states)
            grid_out, stats = g, {}
    traj = torch.stack(states) if states is not None else None
    return SampleResult(x=x, trajectory=traj, nfe=f.n, grid=grid_out, stats=stats)
