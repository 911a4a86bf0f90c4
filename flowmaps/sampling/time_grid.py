"""Time grids for the flow-map sampler and the fixed-step ODE solvers.

Time convention (everywhere in flowmaps): **t = 0 is noise, t = 1 is data.**

A grid of ``N`` steps is a float64 1-D tensor of ``N + 1`` times ``0 = t_0 < t_1 < ... < t_N = 1``.
The builders (:func:`uniform`, the paper's grid; :func:`edm`; :func:`cosine`) make one by name
through :func:`make_grid`; :func:`parse_grid` reads one a user typed and :func:`validate_grid`
checks one, saying what to change when it is wrong.

Example::

    >>> make_grid("uniform", 4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "GRID_KINDS",
    "MAX_STEPS",
    "GridLike",
    "check_steps",
    "cosine",
    "edm",
    "make_grid",
    "parse_grid",
    "uniform",
    "validate_grid",
]

#: Default cap on the number of steps of a user grid (a grid has steps + 1 points).
MAX_STEPS = 1024

#: Names accepted by :func:`make_grid`.
GRID_KINDS = ("uniform", "edm", "cosine")

#: A grid as a tensor, a list of times or the text of one (``"0, 0.5, 1"``).
GridLike = Tensor | Sequence[float] | str


def check_steps(n: int, max_steps: int = MAX_STEPS) -> int:
    """Check a number of steps: an integer (not a bool) in ``[1, max_steps]``; returns it as an int.

    Raises:
        ValueError: naming the number and the bound it breaks.
    """
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

    Returns a float64 tensor of shape ``(n + 1,)``. This is the paper's sampling grid (Boffi et
    al. 2025, arXiv 2505.18825: N-step sampling with equal steps, one model for every N).

    Raises:
        ValueError: ``n`` is not an integer in ``[1, MAX_STEPS]``.
    """
    n = check_steps(n)
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

    Raises:
        ValueError: ``n`` is not an integer in ``[1, MAX_STEPS]``, ``rho`` is not a positive
            number, or not ``0 < kappa_min < kappa_max < inf``.
    """
    n = check_steps(n)
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

    Raises:
        ValueError: ``n`` is not an integer in ``[1, MAX_STEPS]``.
    """
    n = check_steps(n)
    i = torch.arange(n + 1, dtype=torch.float64)
    grid = 0.5 * (1.0 - torch.cos(math.pi * i / n))
    grid[0], grid[-1] = 0.0, 1.0
    return grid


_GRID_BUILDERS: dict[str, Callable[..., Tensor]] = {"uniform": uniform, "edm": edm, "cosine": cosine}


def make_grid(kind: str, n: int, **kw: Any) -> Tensor:
    """Build a grid of ``n`` steps by name: ``"uniform"``, ``"edm"`` or ``"cosine"``.

    Extra keywords go to the builder (``rho`` for ``"edm"``). Times: t = 0 noise, t = 1 data.
    Returns a float64 tensor of shape ``(n + 1,)``.

    Raises:
        ValueError: an unknown ``kind`` (the message lists :data:`GRID_KINDS`), or what the
            builder raises.
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
                    f"time grid has more than {max_steps} steps (the cap); use at most {max_steps + 1} times"
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
        raise ValueError(
            f"time grid has {g.numel() - 1} steps, above the cap of {max_steps}; use at most {max_steps + 1} times"
        )
    bad = ~torch.isfinite(g)
    if bad.any():
        pos = int(bad.nonzero()[0])
        raise ValueError(f"time grid entry {pos + 1} is {g[pos].item()}; every time must be finite")
    outside = (g < 0) | (g > 1)
    if outside.any():
        pos = int(outside.nonzero()[0])
        raise ValueError(
            f"time grid entry {pos + 1} is {g[pos].item():.10g}, outside [0, 1]; times run from 0 (noise) to 1 (data)"
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
