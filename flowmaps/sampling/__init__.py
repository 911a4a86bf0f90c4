"""Sampling: time grids, the N-step flow-map sampler and ODE solvers.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data.**

- :mod:`~flowmaps.sampling.time_grid`: grid builders (:func:`uniform`, :func:`edm`, :func:`cosine`,
  :func:`make_grid`, :func:`parse_grid`) return a float64 1-D tensor ``0 = t_0 < t_1 < ... < t_N = 1``;
  a grid of ``N`` steps has ``N + 1`` points. :func:`validate_grid` checks a user's grid and says
  what to change when it is wrong.
- :mod:`~flowmaps.sampling.flowmap_sampler`: :func:`flowmap_sample` (alias :func:`sample`) applies
  a flow map along a grid, ``x <- X_{t_i, t_{i+1}}(x)``, one network evaluation per step.
- :mod:`~flowmaps.sampling.ode`: :func:`ode_solve` integrates ``dx/dt = b_t(x)`` with Euler, Heun,
  RK4 or the adaptive Dormand-Prince 5(4) method of :mod:`~flowmaps.sampling.dopri5`, counting
  velocity evaluations exactly.

Example::

    >>> import torch
    >>> grid = make_grid("uniform", 4)
    >>> grid.tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> res = ode_solve(lambda x, t: -x, torch.ones(3, 2, dtype=torch.float64), method="rk4", n_steps=20)
    >>> res.nfe
    80
"""

from flowmaps.sampling.flowmap_sampler import JumpModel, SampleResult, flowmap_sample, sample
from flowmaps.sampling.ode import ODE_METHODS, Velocity, ode_solve
from flowmaps.sampling.time_grid import (
    GRID_KINDS,
    MAX_STEPS,
    GridLike,
    cosine,
    edm,
    make_grid,
    parse_grid,
    uniform,
    validate_grid,
)

__all__ = [
    "SampleResult",
    "JumpModel",
    "Velocity",
    "GridLike",
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
