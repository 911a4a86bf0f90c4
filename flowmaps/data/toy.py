"""Two-dimensional toy data sets.

Every set is a cloud of points in the plane, scaled to lie roughly in ``[-1, 1]^2`` (the
checkerboard exactly so; the noisy sets may leave it by a few hundredths). They are the data
end (t = 1) of the flow; noise is t = 0.

- :func:`sample_toy` ``(name, n, generator) -> (n, 2)`` tensor; names in :data:`TOY_SETS`.
- :func:`data_std` the std used as the noise scale sigma (the paper's choice; ``1/sqrt(3)`` for
  the checkerboard).
- :func:`checkerboard_density` the analytic checkerboard density.

A user's own points are in :mod:`flowmaps.data.point_cloud`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from flowmaps.inputs import check_count

__all__ = [
    "TOY_SETS",
    "sample_toy",
    "data_std",
    "checkerboard_density",
    "CHECKERBOARD_CELLS",
]

#: Kept cells ``(i, j)`` of the 4x4 checkerboard on ``[-1, 1]^2``: column ``i`` counts from the
#: left (x), row ``j`` from the bottom (y); a cell is kept when ``i + j`` is even, so the
#: bottom-left cell ``[-1, -0.5)^2`` is kept. 8 cells of area 1/4: density 1/2 on them.
CHECKERBOARD_CELLS = tuple((i, j) for j in range(4) for i in range(4) if (i + j) % 2 == 0)


def _randn(n: int, d: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator | None) -> Tensor:
    cells = torch.tensor(CHECKERBOARD_CELLS, dtype=torch.float64)  # (8, 2)
    pick = torch.randint(0, len(CHECKERBOARD_CELLS), (n,), generator=g)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return -1.0 + 0.5 * (cells[pick] + u)


def _eight_gaussians(n: int, g: torch.Generator | None) -> Tensor:
    from flowmaps.data.gmm import gmm_preset

    return gmm_preset("eight_gaussians").sample(n, generator=g, dtype=torch.float64)


def _two_moons(n: int, g: torch.Generator | None) -> Tensor:
    upper = torch.rand(n, generator=g) < 0.5
    theta = math.pi * _rand(n, g)
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x, y], dim=1)
    # raw extent x in [-1, 2], y in [-0.5, 1]: centre it and scale by 2/3
    pts = (pts - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.5
    return pts + 0.04 * _randn(n, 2, g)


def _spirals(n: int, g: torch.Generator | None) -> Tensor:
    u = torch.sqrt(_rand(n, g))  # more points on the longer outer turns
    theta = 3.0 * math.pi * u
    r = 0.95 * u
    arm = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0).to(torch.float64)
    pts = arm[:, None] * torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return pts + 0.025 * _randn(n, 2, g)


def _rings(n: int, g: torch.Generator | None) -> Tensor:
    radii = torch.tensor([1 / 3, 2 / 3, 1.0], dtype=torch.float64) * 0.95
    ring = torch.multinomial(radii, n, replacement=True, generator=g)  # mass ∝ circumference
    theta = 2 * math.pi * _rand(n, g)
    r = radii[ring]
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return pts + 0.02 * _randn(n, 2, g)


def _swiss_roll(n: int, g: torch.Generator | None) -> Tensor:
    theta = 1.5 * math.pi * (1.0 + 2.0 * _rand(n, g))
    r = theta / (4.5 * math.pi)
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return 0.95 * pts + 0.02 * _randn(n, 2, g)


def _pinwheel(n: int, g: torch.Generator | None, arms: int = 5) -> Tensor:
    arm = torch.randint(0, arms, (n,), generator=g).to(torch.float64)
    radial = 1.0 + 0.3 * _randn(n, 1, g)[:, 0]
    tangential = 0.05 * _randn(n, 1, g)[:, 0]
    angle = 2 * math.pi * arm / arms + 0.25 * torch.exp(radial)
    c, s = torch.cos(angle), torch.sin(angle)
    pts = torch.stack([c * radial - s * tangential, s * radial + c * tangential], dim=1)
    return 0.55 * pts


_SAMPLERS: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "checkerboard": _checkerboard,
    "eight_gaussians": _eight_gaussians,
    "two_moons": _two_moons,
    "spirals": _spirals,
    "rings": _rings,
    "swiss_roll": _swiss_roll,
    "pinwheel": _pinwheel,
}

#: Name -> one-line description of each toy set.
TOY_SETS: dict[str, str] = {
    "checkerboard": "4x4 board on [-1,1]^2, cells with i+j even kept, uniform density 1/2 (paper)",
    "eight_gaussians": "8 Gaussians (std 0.08) on a circle of radius 0.8 (gmm_preset)",
    "two_moons": "two interleaved half circles, width 2, noise std 0.04",
    "spirals": "two interleaved spiral arms of 1.5 turns, radius 0.95, noise std 0.025",
    "rings": "3 concentric circles of radii 0.32, 0.63, 0.95, mass by length, noise std 0.02",
    "swiss_roll": "2-D swiss roll, 1.5 turns out to radius 0.95, noise std 0.02",
    "pinwheel": "5 curved arms of a pinwheel, radius about 1",
}


def sample_toy(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` points of a toy set (the data end, t = 1); returns ``(n, 2)`` of ``dtype``.

    Names: see :data:`TOY_SETS`. Every set lies roughly in ``[-1, 1]^2``.
    """
    key = str(name).strip().lower()
    if key not in _SAMPLERS:
        raise ValueError(f"unknown toy set {name!r}; choose one of {', '.join(_SAMPLERS)}")
    return _SAMPLERS[key](check_count(n), generator).to(dtype)


@functools.cache
def data_std(name: str) -> float:
    """Std of a toy set, ``sqrt(mean_j Var[x_j])``, used as the noise scale sigma.

    Exact for the checkerboard (each coordinate is uniform on ``[-1, 1]``: ``1/sqrt(3)``) and for
    the eight Gaussians; else estimated from 200,000 samples with a fixed seed (about 3 digits).
    """
    key = str(name).strip().lower()
    if key == "checkerboard":
        return 1.0 / math.sqrt(3.0)
    if key == "eight_gaussians":
        from flowmaps.data.gmm import gmm_preset

        return gmm_preset("eight_gaussians").data_std()
    x = sample_toy(key, 200_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    return float(torch.sqrt(x.var(dim=0).mean()))


def checkerboard_density(x: Tensor) -> Tensor:
    """Analytic checkerboard density at points ``x`` of shape ``(B, 2)``; returns ``(B,)``.

    ``1/2`` on the kept cells, 0 elsewhere. Cells are half-open, ``[a, a + 1/2)`` in each
    coordinate with cell index ``floor(2 (x + 1))``: a point on an inner edge belongs to the cell
    to its right (or above). Points with a coordinate equal to 1 count as outside.
    """
    idx = torch.floor(2.0 * (x.to(torch.float64) + 1.0))
    inside = ((idx >= 0) & (idx <= 3)).all(dim=-1)
    even = (idx.sum(dim=-1) % 2) == 0
    return torch.where(inside & even, 0.5, 0.0).to(torch.float64)
