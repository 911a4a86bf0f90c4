"""The N-step flow-map sampler: ``x <- X_{t_i, t_{i+1}}(x)`` along a time grid.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data.**

A flow map ``X_{s,t}`` sends the state at time ``s`` to the state at time ``t`` of the probability
flow ``dx/dt = b_t(x)`` (Boffi et al. 2025, arXiv 2505.18825, the flow map: ``X_{s,t}(x_s) = x_t``).
Composing jumps along a grid ``0 = t_0 < ... < t_N = 1`` samples the data distribution from noise
with ``N`` network evaluations; ``N = 1`` is a one-step (consistency) sampler. The same result
class, :class:`SampleResult`, is returned by the ODE solvers of :mod:`flowmaps.sampling.ode`.

Example::

    >>> import torch
    >>> class Exact:  # the flow map of x_t = (1 - t) x0 + t x1 with x1 = 0: X_{s,t}(x) = x (1-t)/(1-s)
    ...     def jump(self, x, s, t):
    ...         return x * ((1 - t) / (1 - s))[:, None]
    >>> res = flowmap_sample(Exact(), torch.ones(2, 1), "0, 0.5, 1")
    >>> res.nfe, res.x.tolist()
    (2, [[0.0], [0.0]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from flowmaps.inputs import check_entry_state
from flowmaps.sampling.time_grid import MAX_STEPS, GridLike, validate_grid

__all__ = ["JumpModel", "SampleResult", "flowmap_sample", "sample"]


class JumpModel(Protocol):
    """Anything with ``jump(x, s, t) -> X_{s,t}(x)`` (t = 0 noise, t = 1 data)."""

    def jump(self, x: Tensor, s: Any, t: Any) -> Tensor: ...


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
    x0 = check_entry_state(model, x0)
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
