"""Time grids, the N-step flow-map sampler and ODE solvers.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data.**

- Grid builders (:func:`uniform`, :func:`edm`, :func:`cosine`, :func:`make_grid`,
  :func:`parse_grid`) return a float64 1-D tensor ``0 = t_0 < t_1 < ... < t_N = 1``; a grid of
  ``N`` steps has ``N + 1`` points. :func:`validate_grid` checks a user's grid and says what to
  change when it is wrong.
- :func:`flowmap_sample` (alias :func:`sample`) applies a flow map along a grid:
  ``x <- X_{t_i, t_{i+1}}(x)``, one network evaluation per step.
- :func:`ode_solve` integrates ``dx/dt = b_t(x)`` with Euler, Heun, RK4 or an adaptive
  Dormand-Prince 5(4) method, counting velocity evaluations exactly.

Example::

    >>> import torch
    >>> grid = make_grid("uniform", 4)
    >>> grid.tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> res = ode_solve(lambda x, t: -x, torch.ones(3, 2, dtype=torch.float64), method="rk4",
    ...                 n_steps=20)
    >>> res.nfe
    80
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from flowmaps.inputs import check_state

__all__ = [
    "SampleResult",
    "uniform",
    "edm",
    "cosine",
    "make_grid",
    "parse_grid",
    "validate_grid",
    "flowmap_sample",
    "sample",
    "ode_solve",
    "GRID_KINDS",
    "ODE_METHODS",
    "MAX_STEPS",
]

#: Default cap on the number of steps of a user grid (a grid has steps + 1 points).
MAX_STEPS = 1024

GRID_KINDS = ("uniform", "edm", "cosine")
ODE_METHODS = ("euler", "heun", "rk4", "dopri5")

GridLike = Tensor | Sequence[float] | str


class JumpModel(Protocol):
    """Anything with ``jump(x, s, t) -> X_{s,t}(x)`` (t = 0 noise, t = 1 data)."""

    def jump(self, x: Tensor, s: Any, t: Any) -> Tensor: ...


Velocity = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SampleResult:
    """Result of a sampler or an ODE solve.

    Attributes:
        x: final state, shape ``(B, *D)``.
        trajectory: ``None`` unless asked for; else a tensor ``(len(grid), B, *D)`` holding the
            state at every time of ``grid`` (the first entry is the initial state).
        nfe: number of network evaluations (``jump`` calls for the flow-map sampler, velocity
            calls for an ODE solve; counted, not estimated).
        grid: float64 tensor of the times the solver visited, ``grid[0]`` the start time and
            ``grid[-1]`` the end time (t = 0 noise, t = 1 data). For an adaptive solve without a
            requested grid these are the accepted step times.
        stats: extra counters (``accepted``, ``rejected`` for the adaptive solver).
    """

    x: Tensor
    trajectory: Tensor | None
    nfe: int
    grid: Tensor
    stats: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


def _check_n(n: int, max_steps: int = MAX_STEPS) -> int:
    if isinstance(n, bool):
        raise ValueError(f"number of steps must be an integer; got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"number of steps must be an integer; got {n!r}") from None
    if n < 1:
        raise ValueError(f"number of steps must be at least 1; got {n}")
    if n > max_steps:
        raise ValueError(f"number of steps {n} is above the cap of {max_steps}; use fewer steps")
    return n


def uniform(n: int) -> Tensor:
    """Uniform grid of ``n`` steps: ``t_i = i / n`` (t = 0 noise, t = 1 data).

    Returns a float64 tensor of shape ``(n + 1,)``. This is the paper's sampling grid.
    """
    n = _check_n(n)
    grid = torch.arange(n + 1, dtype=torch.float64) / n
    grid[-1] = 1.0
    return grid


def edm(n: int, rho: float = 7.0, kappa_min: float = 0.004, kappa_max: float = 160.0) -> Tensor:
    """EDM (Karras et al. 2022) rho-spaced grid, mapped onto our time (t = 0 noise, t = 1 data).

    EDM spaces noise levels as
    ``kappa_i = (kappa_max^(1/rho) + i/n (kappa_min^(1/rho) - kappa_max^(1/rho)))^rho``.
    For the linear interpolant ``x_t = (1 - t) x0 + t x1`` with noise std equal to the data std
    (the paper's choice, ``sigma = std(x1)``), ``x_t / t = x1 + ((1 - t) / t) x0``: the EDM noise
    level relative to the data scale is ``kappa = (1 - t) / t``, so ``t = 1 / (1 + kappa)``.
    The defaults are EDM's ``sigma_min = 0.002``, ``sigma_max = 80`` divided by its
    ``sigma_data = 0.5``. The end points are snapped to ``t_0 = 0`` (pure noise, kappa = inf)
    and ``t_n = 1`` (data, kappa = 0), as EDM's sampler ends at sigma = 0.

    In t the grid is dense at both ends and densest near t = 1 for ``rho > 1``: with ``n = 10``
    the last step is about 0.03 long and the first about 0.01, against 0.1 for :func:`uniform`.

    Returns a float64 tensor of shape ``(n + 1,)``.
    """
    n = _check_n(n)
    if not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a positive number; got {rho}")
    if not (0 < kappa_min < kappa_max < math.inf):
        raise ValueError(f"need 0 < kappa_min < kappa_max < inf; got kappa_min={kappa_min}, kappa_max={kappa_max}")
    i = torch.arange(n + 1, dtype=torch.float64) / n
    a, b = kappa_max ** (1.0 / rho), kappa_min ** (1.0 / rho)
    kappa = (a + i * (b - a)) ** rho
    grid = 1.0 / (1.0 + kappa)
    grid[0], grid[-1] = 0.0, 1.0
    return grid


def cosine(n: int) -> Tensor:
    """Cosine (Chebyshev-like) grid: ``t_i = (1 - cos(pi i / n)) / 2`` (t = 0 noise, t = 1 data).

    Symmetric, with short steps near both ends (where the flow bends most for data with sharp
    features) and the longest steps around t = 1/2. Float64 tensor of shape ``(n + 1,)``.
    """
    n = _check_n(n)
    i = torch.arange(n + 1, dtype=torch.float64)
    grid = 0.5 * (1.0 - torch.cos(math.pi * i / n))
    grid[0], grid[-1] = 0.0, 1.0
    return grid


_GRID_BUILDERS: dict[str, Callable[..., Tensor]] = {"uniform": uniform, "edm": edm, "cosine": cosine}


def make_grid(kind: str, n: int, **kw: Any) -> Tensor:
    """Build a grid of ``n`` steps by name: ``"uniform"``, ``"edm"`` or ``"cosine"``.

    Extra keywords go to the builder (``rho`` for ``"edm"``). Times: t = 0 noise, t = 1 data.
    Returns a float64 tensor of shape ``(n + 1,)``.
    """
    key = str(kind).strip().lower()
    if key not in _GRID_BUILDERS:
        raise ValueError(f"unknown grid kind {kind!r}; choose one of {', '.join(GRID_KINDS)}")
    return _GRID_BUILDERS[key](n, **kw)


_NUMBER_TOKEN = re.compile(r"[^,;\s]+")


def parse_grid(text: GridLike, *, max_steps: int = MAX_STEPS, partial: bool = False) -> Tensor:
    """Parse a user's grid, e.g. ``"0, 0.4, 0.75, 1"`` or ``[0, 0.5, 1]``, and validate it.

    Numbers may be separated by commas, semicolons or white space; surrounding brackets are
    ignored. Times: t = 0 noise, t = 1 data. See :func:`validate_grid` for the rules.
    Returns a float64 tensor of shape ``(N + 1,)``.
    """
    if isinstance(text, str):
        body = text.strip().strip("[]()").strip()
        if not body:
            raise ValueError("time grid is empty; write times such as '0, 0.5, 1'")
        values = []
        for pos, match in enumerate(_NUMBER_TOKEN.finditer(body)):
            token = match.group()
            if pos > max_steps:  # stop reading early: a million typed times would cost time and memory
                raise ValueError(
                    f"time grid has more than {max_steps} steps, above the cap of {max_steps}; use fewer times"
                )
            try:
                values.append(float(token))
            except ValueError:
                raise ValueError(
                    f"time grid entry {pos + 1} is {token!r}, which is not a number; "
                    "write numbers separated by commas, such as '0, 0.5, 1'"
                ) from None
        return validate_grid(values, max_steps=max_steps, partial=partial)
    return validate_grid(text, max_steps=max_steps, partial=partial)


def validate_grid(grid: Tensor | Sequence[float], max_steps: int = MAX_STEPS, *, partial: bool = False) -> Tensor:
    """Check a time grid and return it as a float64 CPU tensor of shape ``(N + 1,)``.

    Rules (t = 0 noise, t = 1 data): one dimension, at least two times, every time finite and
    inside ``[0, 1]``, strictly increasing, at most ``max_steps`` steps. A full sampling grid
    must start at exactly 0 and end at exactly 1 (values within 1e-9 of the ends are snapped);
    ``partial=True`` allows any sub-interval of ``[0, 1]`` (e.g. to continue from a state at
    t = 0.5).

    Raises:
        ValueError: with a message that says what is wrong and what to change (positions
            count from 1: "got 0.5 after 0.7 at position 3").
    """
    if isinstance(grid, str):
        return parse_grid(grid, max_steps=max_steps, partial=partial)
    complex_array = getattr(getattr(grid, "dtype", None), "kind", "") == "c"  # a numpy complex array
    if (isinstance(grid, Tensor) and grid.is_complex()) or complex_array:
        raise ValueError("time grid must hold real numbers; got complex values")
    try:
        g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(f"time grid must be a list of numbers; could not read it ({err})") from None
    if g.ndim != 1:
        raise ValueError(f"time grid must be a flat list of times; got shape {tuple(g.shape)}")
    if g.numel() < 2:
        raise ValueError(
            f"time grid needs at least two times (start and end); got {g.numel()}: use e.g. '0, 1' for one step"
        )
    if g.numel() - 1 > max_steps:
        raise ValueError(f"time grid has {g.numel() - 1} steps, above the cap of {max_steps}; use fewer times")
    bad = ~torch.isfinite(g)
    if bad.any():
        pos = int(bad.nonzero()[0])
        raise ValueError(f"time grid entry {pos + 1} is {g[pos].item()}; every time must be finite")
    outside = (g < 0) | (g > 1)
    if outside.any():
        pos = int(outside.nonzero()[0])
        raise ValueError(
            f"time grid entry {pos + 1} is {g[pos].item():g}, outside [0, 1]; times run from 0 (noise) to 1 (data)"
        )
    diffs = g[1:] - g[:-1]
    nonpos = diffs <= 0
    if nonpos.any():
        pos = int(nonpos.nonzero()[0]) + 1
        raise ValueError(
            f"time grid must be strictly increasing; got {g[pos].item():g} after "
            f"{g[pos - 1].item():g} at position {pos + 1}"
        )
    if not partial:
        if abs(g[0].item()) > 1e-9:
            raise ValueError(
                f"time grid must start at 0 (noise); it starts at {g[0].item():g}: "
                "put 0 first, or pass partial=True to sample from an intermediate time"
            )
        if abs(g[-1].item() - 1.0) > 1e-9:
            raise ValueError(
                f"time grid must end at 1 (data); it ends at {g[-1].item():g}: "
                "put 1 last, or pass partial=True to stop at an intermediate time"
            )
        g[0], g[-1] = 0.0, 1.0
    return g


# --------------------------------------------------------------------------------------------
# Flow-map sampler
# --------------------------------------------------------------------------------------------


def _entry_state(owner: object, x0: object, name: str = "x0") -> Tensor:
    """x0 checked once at a sampler's entry: finite, floating, with a batch dimension; checked
    against the model's state shape and cast to its dtype when ``owner`` can say them (a
    :class:`flowmaps.flowmap.FlowMap`, or a bound method of one such as ``model.velocity``)."""
    owner = getattr(owner, "__self__", owner)  # model.velocity -> model
    check = getattr(owner, "check_state", None)
    if callable(check):
        return check(x0, name, finite=True)
    return check_state(x0, name, finite=True)


def _full_time(value: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)


def flowmap_sample(
    model: JumpModel,
    x0: Tensor,
    grid: GridLike,
    return_trajectory: bool = False,
    *,
    partial: bool = False,
    max_steps: int = MAX_STEPS,
) -> SampleResult:
    """N-step flow-map sampling along ``grid``: ``x <- X_{t_i, t_{i+1}}(x)``.

    Args:
        model: anything with ``jump(x, s, t)``; it receives ``s`` and ``t`` as ``(B,)`` tensors of
            ``x0``'s dtype and device. Runs under ``torch.no_grad``; the model's train/eval mode
            is left as it is (sample from the EMA copy in eval mode).
        x0: state at ``grid[0]``, shape ``(B, *D)``; for a full grid this is noise
            ``N(0, sigma^2 I)`` at t = 0. Cast to the model's dtype (its parameters').
        grid: times ``0 = t_0 < ... < t_N = 1`` (t = 0 noise, t = 1 data) as a tensor, list or
            string; checked by :func:`validate_grid` (``partial=True`` allows a sub-interval).
        return_trajectory: also return the states at every grid time, ``(N + 1, B, *D)``.

    Returns:
        :class:`SampleResult` with ``nfe = N`` (one jump per step).

    Raises:
        ValueError: for a bad grid, or an ``x0`` that is not a finite floating tensor of the
            model's state shape (a floating ``x0`` of another dtype is cast to the model's).
    """
    g = validate_grid(grid, max_steps=max_steps, partial=partial)
    x0 = _entry_state(model, x0)
    x = x0
    states = [x0] if return_trajectory else None
    times = g.tolist()
    with torch.no_grad():
        for s, t in zip(times[:-1], times[1:], strict=True):
            x = model.jump(x, _full_time(s, x), _full_time(t, x))
            if states is not None:
                states.append(x)
    traj = torch.stack(states) if states is not None else None
    return SampleResult(x=x, trajectory=traj, nfe=len(times) - 1, grid=g)


#: Short name used by the architecture contract: ``sample(model, x0, grid)``.
sample = flowmap_sample


# --------------------------------------------------------------------------------------------
# ODE solvers
# --------------------------------------------------------------------------------------------


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


# Dormand-Prince 5(4) tableau (Dormand & Prince 1980): nodes c, stage matrix A, 5th-order
# weights B5 (also the last row of A: first-same-as-last) and the difference B5 - B4 that
# estimates the local error.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (
    5179 / 57600,
    0.0,
    7571 / 16695,
    393 / 640,
    -92097 / 339200,
    187 / 2100,
    1 / 40,
)
_DP_E = tuple(b5 - b4 for b5, b4 in zip(_DP_B5, _DP_B4, strict=True))


def _norm_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision states, else the state's own dtype: error norms never in fp16."""
    return torch.promote_types(x.dtype, torch.float32)


def _rms(z: Tensor) -> float:
    """Root mean square of z without overflow: max|z| * rms(z / max|z|) (one device sync)."""
    m = z.abs().amax()
    return float(m * torch.sqrt(torch.mean((z / m.clamp_min(torch.finfo(z.dtype).tiny)) ** 2)))


def _scale(y: Tensor, y_new: Tensor | None, rtol: float, atol: float) -> Tensor:
    """atol + rtol max(|y|, |y_new|) in float32 or better, kept above zero (atol = 0 and y = 0)."""
    dt = _norm_dtype(y)
    size = y.to(dt).abs() if y_new is None else torch.maximum(y.to(dt).abs(), y_new.to(dt).abs())
    return (atol + rtol * size).clamp_min(torch.finfo(dt).tiny)


def _err_norm(e: Tensor, y: Tensor, y_new: Tensor, rtol: float, atol: float) -> float:
    """rms(e / (atol + rtol max(|y|, |y_new|))), computed in float32 or better."""
    return _rms(e.to(_norm_dtype(e)) / _scale(y, y_new, rtol, atol))


def _initial_step(f: _Counted, t0: float, y0: Tensor, f0: Tensor, direction: float, rtol: float, atol: float) -> float:
    """Starting step size from the size of the state and of its derivatives (one evaluation).

    The norms are taken in float32 or better; f0 must be finite (checked by the caller)."""
    scale = _scale(y0, None, rtol, atol)
    d0 = _rms(y0.to(scale.dtype) / scale)
    d1 = _rms(f0.to(scale.dtype) / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else max(0.01 * d0 / d1, 1e-12)
    y1 = y0 + direction * h0 * f0
    f1 = f(y1, t0 + direction * h0)
    d2 = _rms((f1.to(scale.dtype) - f0.to(scale.dtype)) / scale) / h0
    if not math.isfinite(d2):  # the velocity blows up just after the start: try the small step
        return h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    return min(100.0 * h0, h1)


def _dopri5(
    f: _Counted,
    x: Tensor,
    t_start: float,
    t_end: float,
    out_times: list[float] | None,
    rtol: float,
    atol: float,
    max_steps: int,
    states: list[Tensor] | None,
    times_out: list[float],
) -> tuple[Tensor, dict[str, int]]:
    """Adaptive Dormand-Prince 5(4) with first-same-as-last and local extrapolation.

    Steps are clipped to land exactly on each time of ``out_times`` (if given); otherwise every
    accepted step is recorded. Error control: ``err = rms(e / (atol + rtol max(|y|, |y_new|)))``
    with ``e = h sum_i (b5_i - b4_i) k_i``, computed in float32 or better (a float16 state's
    squared error would overflow); a step is accepted when ``err <= 1``, and the next
    step is ``h * clip(0.9 err^(-1/5), 0.2, 10)`` (at most ``h`` after a rejection).
    """
    direction = 1.0 if t_end > t_start else -1.0
    span = abs(t_end - t_start)
    targets = out_times[1:] if out_times is not None else [t_end]
    t = t_start
    k1 = f(x, t)
    bad = ~torch.isfinite(k1)
    if bool(bad.any()):
        raise ValueError(
            f"the velocity at the start time t={t:g} has {int(bad.sum())} non-finite entries (inf or NaN) "
            f"for a finite state; dopri5 cannot choose its first step: start where the velocity is finite"
        )
    h = min(_initial_step(f, t, x, k1, direction, rtol, atol), span)
    accepted = rejected = 0
    for target in targets:
        while direction * (target - t) > 1e-14 * max(1.0, span):
            if accepted + rejected >= max_steps:
                raise RuntimeError(
                    f"dopri5 took more than max_steps={max_steps} steps before reaching "
                    f"t={t_end} (now at t={t:.6g}); raise max_steps or loosen rtol/atol"
                )
            remaining = abs(target - t)
            last = h >= remaining
            h_step = remaining if last else h
            hs = direction * h_step
            ks = [k1]
            for i in range(1, 7):
                acc = x
                for a, k in zip(_DP_A[i], ks, strict=True):
                    if a != 0.0:
                        acc = acc + (hs * a) * k
                ks.append(f(acc, target if (last and _DP_C[i] == 1.0) else t + _DP_C[i] * hs))
                if i == 6:
                    y_new = acc
            err_vec = torch.zeros_like(x)
            for e, k in zip(_DP_E, ks, strict=True):
                if e != 0.0:
                    err_vec = err_vec + (hs * e) * k
            err = _err_norm(err_vec, x, y_new, rtol, atol)
            if not math.isfinite(err):
                raise RuntimeError(f"dopri5 produced a non-finite state near t={t:.6g}; the velocity may blow up there")
            if err <= 1.0:
                accepted += 1
                t = target if last else t + hs
                x = y_new
                k1 = ks[6]
                if out_times is None:
                    times_out.append(t)
                    if states is not None:
                        states.append(x)
                factor = 10.0 if err == 0.0 else min(10.0, max(0.2, 0.9 * err ** (-0.2)))
                # a clipped final step says nothing about the natural step size: keep h
                h = max(h, h_step * factor) if last else h_step * factor
            else:
                rejected += 1
                h = h_step * min(1.0, max(0.2, 0.9 * err ** (-0.2)))
            if h < 1e-12 * max(1.0, span):
                raise RuntimeError(
                    f"dopri5 step size underflow near t={t:.6g}; the problem is too stiff for these tolerances"
                )
        if out_times is not None:
            times_out.append(target)
            if states is not None:
                states.append(x)
    return x, {"accepted": accepted, "rejected": rejected}


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
    x0 = _entry_state(velocity, x0)
    f = _Counted(velocity, x0)
    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    if grid is not None:
        g = _monotone_grid(grid, max_steps)
    else:
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
            raise ValueError(f"need finite t0 != t1; got t0={t0}, t1={t1}")
        g = None
    with ctx:
        if m == "dopri5":
            if rtol <= 0 or atol < 0:
                raise ValueError(f"need rtol > 0 and atol >= 0; got rtol={rtol}, atol={atol}")
            out_times = g.tolist() if g is not None else None
            start, end = (out_times[0], out_times[-1]) if out_times else (float(t0), float(t1))
            states = [x0] if return_trajectory else None
            times_out = [start]
            x, stats = _dopri5(f, x0, start, end, out_times, rtol, atol, max_steps, states, times_out)
            grid_out = torch.tensor(times_out, dtype=torch.float64)
        else:
            if g is None:
                n = _check_n(100 if n_steps is None else n_steps, max_steps)
                g = torch.linspace(float(t0), float(t1), n + 1, dtype=torch.float64)
            states = [x0] if return_trajectory else None
            x = _fixed_step(f, x0, g.tolist(), m, states)
            grid_out, stats = g, {}
    traj = torch.stack(states) if states is not None else None
    return SampleResult(x=x, trajectory=traj, nfe=f.n, grid=grid_out, stats=stats)
