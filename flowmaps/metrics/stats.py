"""Summaries of a figure measured over several noise seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mean_sd"]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of a figure over noise seeds.

    ``mean = sum_i v_i / n`` and ``sd = sqrt(sum_i (v_i - mean)^2 / (n - 1))`` (ddof 1; 0 for one
    value). A non-finite value anywhere (an infinite KL: an empty bin on some seed) gives
    ``(inf, nan)``: the mean of such a figure is not a number to report.

    Raises:
        ValueError: ``values`` is empty.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_sd needs at least one value")
    if not np.isfinite(arr).all():
        return math.inf, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
