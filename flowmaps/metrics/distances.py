"""Distances between two point sets in d dimensions: sliced Wasserstein and energy distance.

Both compare the empirical measures of two sets of samples (e.g. generated points at t = 1, the
data end, against data; t = 0 is noise), of possibly different sizes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmaps.inputs import PointsLike, check_points

__all__ = ["energy_distance", "sliced_wasserstein"]


def _wasserstein_1d(a: Tensor, b: Tensor, p: float) -> Tensor:
    """Exact ``W_p^p`` between empirical 1-D measures, per column: ``a (n, P)``, ``b (m, P)``.

    ``W_p^p = int_0^1 |F_a^{-1}(u) - F_b^{-1}(u)|^p du`` with piecewise-constant quantile
    functions, integrated exactly over the merged breakpoints ``{i/n} u {j/m}``.
    """
    a, _ = torch.sort(a, dim=0)
    b, _ = torch.sort(b, dim=0)
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return (a - b).abs().pow(p).mean(dim=0)
    levels = torch.cat(
        [torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m]
    )
    levels = torch.unique(torch.cat([torch.zeros(1, dtype=torch.float64), levels]))
    width = levels[1:] - levels[:-1]
    mid = 0.5 * (levels[1:] + levels[:-1])
    ia = torch.clamp(torch.floor(mid * n).long(), max=n - 1)
    ib = torch.clamp(torch.floor(mid * m).long(), max=m - 1)
    return ((a[ia] - b[ib]).abs().pow(p) * width[:, None]).sum(dim=0)


def sliced_wasserstein(
    a: PointsLike,
    b: PointsLike,
    n_projections: int = 512,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein distance ``SW_p(a, b) = (E_theta W_p^p(theta.a, theta.b))^(1/p)``.

    ``a`` is ``(n, d)``, ``b`` is ``(m, d)`` (sizes may differ: the 1-D distances are exact for
    empirical measures), ``theta`` uniform on the unit sphere (``n_projections`` draws from
    ``generator``). For two sets differing by a shift ``m``, ``SW_2^2 = |m|^2 / d`` in
    expectation over directions.
    """
    x, y = check_points(a, "a"), check_points(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same dimension; got {x.shape[1]} and {y.shape[1]}")
    if not p >= 1:
        raise ValueError(f"p must be at least 1; got {p}")
    theta = torch.randn(x.shape[1], int(n_projections), generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    wpp = _wasserstein_1d(x @ theta, y @ theta, p)
    return float(wpp.mean() ** (1.0 / p))


def _mean_distance(x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    total = 0.0
    for i in range(0, x.shape[0], chunk):
        total += float(torch.cdist(x[i : i + chunk], y).sum())
    return total / (x.shape[0] * y.shape[0])


def energy_distance(
    a: PointsLike,
    b: PointsLike,
    max_points: int = 4096,
    generator: torch.Generator | None = None,
) -> float:
    """Energy distance ``sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|)`` between two point sets.

    Expectations are over the empirical measures (V-statistics, pairs ``(i, i)`` included), so
    the result is 0 for identical sets, positive otherwise, and equals
    ``scipy.stats.energy_distance`` in 1-D. Sets larger than ``max_points`` are subsampled
    without replacement (cost is quadratic). ``a`` ``(n, d)``, ``b`` ``(m, d)``.
    """
    x, y = check_points(a, "a"), check_points(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same dimension; got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    if y.shape[0] > max_points:
        y = y[torch.randperm(y.shape[0], generator=generator)[:max_points]]
    val = 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)
    return math.sqrt(max(val, 0.0))
