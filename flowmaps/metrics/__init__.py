"""Sample-quality and flow-map metrics.

Time convention: **t = 0 is noise, t = 1 is data.**

- :mod:`~flowmaps.metrics.histogram`: :func:`checkerboard_kl`, the paper's histogram KL for the
  checkerboard, with :func:`checkerboard_kl_floor` (the score of exact samples) to report beside it
  and :func:`checkerboard_kl_parts` (how much of it is mass off the squares, and the shape at their
  edges and inside).
- :mod:`~flowmaps.metrics.distances`: :func:`sliced_wasserstein` and :func:`energy_distance`
  between any two point sets in d dimensions.
- :mod:`~flowmaps.metrics.flowmap_error`: :func:`flowmap_error` and :func:`flowmap_error_grid`,
  the mean squared error between a model's ``jump(x, s, t)`` and an exact flow map (a Gaussian
  mixture's, or any callable), on the time-s marginal, on base noise points, or on given points.
- :mod:`~flowmaps.metrics.stats`: :func:`mean_sd`, a figure's mean and spread over noise seeds.

Example::

    >>> import torch
    >>> a = torch.zeros(100, 2, dtype=torch.float64)
    >>> sliced_wasserstein(a, a + torch.tensor([3.0, 4.0], dtype=torch.float64), n_projections=4000) > 3.0
    True
"""

from flowmaps.metrics.distances import energy_distance, sliced_wasserstein
from flowmaps.metrics.flowmap_error import ExactMap, flowmap_error, flowmap_error_grid
from flowmaps.metrics.histogram import (
    CheckerboardKL,
    bin_index,
    checkerboard_kl,
    checkerboard_kl_floor,
    checkerboard_kl_parts,
    checkerboard_target,
    histogram2d,
)
from flowmaps.metrics.stats import mean_sd

__all__ = [
    "CheckerboardKL",
    "ExactMap",
    "checkerboard_kl",
    "checkerboard_kl_floor",
    "checkerboard_kl_parts",
    "checkerboard_target",
    "bin_index",
    "histogram2d",
    "sliced_wasserstein",
    "energy_distance",
    "flowmap_error",
    "flowmap_error_grid",
    "mean_sd",
]
