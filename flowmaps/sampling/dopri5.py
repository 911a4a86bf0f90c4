"""Adaptive Dormand-Prince 5(4) integration of ``dx/dt = f(x, t)``, the reference ODE solver.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data**; the solver runs in
either direction (``t_end < t_start`` integrates towards noise).

Method (Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae"): seven stages per
step with first-same-as-last (the seventh stage of an accepted step is the first of the next),
local extrapolation (the 5th-order solution is kept, the embedded 4th-order one only measures the
error). With ``e = h sum_i (b5_i - b4_i) k_i`` the scaled error is
``err = rms(e / (atol + rtol max(|y|, |y_new|)))``, computed in float32 or better (a float16
state's squared error would overflow); a step is accepted when ``err <= 1`` and the next step is
``h clip(0.9 err^(-1/5), 0.2, 10)`` (at most ``h`` after a rejection). The first step comes from
the sizes of the state and its first two derivatives (Hairer, Norsett & Wanner, Solving ODEs I,
section II.4). Users call it through :func:`flowmaps.sampling.ode_solve` with ``method="dopri5"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DP_A", "DP_B4", "DP_B5", "DP_C", "DP_E", "solve_dopri5"]

#: ``f(x, t) -> dx/dt`` with ``t`` a Python float (the solver's clock).
StepVelocity = Callable[[Tensor, float], Tensor]

# Dormand-Prince 5(4) tableau: nodes C, stage matrix A, 5th-order weights B5 (also the last row
# of A: first-same-as-last) and the embedded 4th-order weights B4; E = B5 - B4 estimates the
# local error.
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DP_E = tuple(b5 - b4 for b5, b4 in zip(DP_B5, DP_B4, strict=True))


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


def _initial_step(
    f: StepVelocity, t0: float, y0: Tensor, f0: Tensor, direction: float, rtol: float, atol: float
) -> float:
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


def _first_velocity(f: StepVelocity, x: Tensor, t: float) -> Tensor:
    """The first stage at the start time; refused when not finite (no first step can be chosen)."""
    k1 = f(x, t)
    bad = ~torch.isfinite(k1)
    if bool(bad.any()):
        raise ValueError(
            f"the velocity at the start time t={t:g} has {int(bad.sum())} non-finite entries (inf or NaN) "
            f"for a finite state; dopri5 cannot choose its first step: start where the velocity is finite"
        )
    return k1


def _stages(f: StepVelocity, x: Tensor, k1: Tensor, t: float, hs: float, t_next: float) -> tuple[Tensor, list[Tensor]]:
    """Stages 2..7 of a step of signed size ``hs`` from ``(t, x)``; returns ``(y_new, [k1..k7])``.

    ``y_new`` is the 5th-order solution (the input of stage 7, first-same-as-last). Stages at node
    ``c = 1`` are evaluated at ``t_next`` exactly, so that a step clipped onto an output time lands
    on it without rounding.
    """
    ks = [k1]
    acc = x
    for i in range(1, 7):
        acc = x
        for a, k in zip(DP_A[i], ks, strict=True):
            if a != 0.0:
                acc = acc + (hs * a) * k
        ks.append(f(acc, t_next if DP_C[i] == 1.0 else t + DP_C[i] * hs))
    return acc, ks


def _scaled_error(ks: list[Tensor], x: Tensor, y_new: Tensor, hs: float, rtol: float, atol: float) -> float:
    """``rms(e / (atol + rtol max(|x|, |y_new|)))`` with ``e = hs sum_i (b5_i - b4_i) k_i``."""
    err_vec = torch.zeros_like(x)
    for e, k in zip(DP_E, ks, strict=True):
        if e != 0.0:
            err_vec = err_vec + (hs * e) * k
    return _err_norm(err_vec, x, y_new, rtol, atol)


def solve_dopri5(
    f: StepVelocity,
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
    """Integrate ``dx/dt = f(x, t)`` from ``t_start`` to ``t_end`` (t = 0 noise, t = 1 data).

    Steps are clipped to land exactly on each time of ``out_times`` (if given; its first entry is
    ``t_start``); otherwise every accepted step is recorded. Recorded times are appended to
    ``times_out`` and, when ``states`` is a list, the states to it. The step control is described
    in the module docstring.

    Returns:
        ``(x at t_end, {"accepted": ..., "rejected": ...})``; ``f`` is called once for the first
        stage, once for the starting-step estimate and six times per attempted step.

    Raises:
        ValueError: the velocity is not finite at the start.
        RuntimeError: more than ``max_steps`` attempted steps, a step size underflow, or a
            non-finite error estimate (the state blew up).
    """
    direction = 1.0 if t_end > t_start else -1.0
    span = abs(t_end - t_start)
    targets = out_times[1:] if out_times is not None else [t_end]
    t = t_start
    k1 = _first_velocity(f, x, t)
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
            t_next = target if last else t + hs
            y_new, ks = _stages(f, x, k1, t, hs, t_next)
            err = _scaled_error(ks, x, y_new, hs, rtol, atol)
            if not math.isfinite(err):
                raise RuntimeError(f"dopri5 produced a non-finite state near t={t:.6g}; the velocity may blow up there")
            if err <= 1.0:
                accepted += 1
                t, x, k1 = t_next, y_new, ks[6]
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
