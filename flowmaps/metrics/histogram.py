"""The paper's checkerboard KL: a histogram of samples against the analytic density.

Time convention: t = 0 is noise, t = 1 is data; the samples scored here are the data end (t = 1).

The estimator (Boffi et al. 2025, arXiv 2505.18825, checkerboard experiment: a 50 x 50 histogram of 64,000
samples on ``[-1, 1]^2`` against the checkerboard density at the bin centres) is

    ``KL(p_target || p_hist) = sum_b q_b log(q_b / p_b)``  over the bins where ``q_b > 0``,

with

- ``q_b`` the analytic density at the exact bin centre (cells half-open: a centre on an edge
  belongs to the cell to its right / above), normalised to sum to 1 over the bins;
- ``p_b`` the fraction of *all* samples in bin ``b``: samples outside ``range`` count in the
  total, so mass thrown off the board raises the KL; the fraction outside is reported;
- an empty bin where ``q_b > 0`` makes the KL infinite (reported, with the count of such bins),
  unless ``eps`` is given: an empty bin then counts as holding ``eps`` samples.

Why this direction: with 50 bins of width 0.04 the centres of bins 12 and 37 (on each axis) fall
exactly on the inner cell edges ``x = +-0.5``, so a bin half filled by exact samples can have a
target density of 0 at its centre; ``KL(p_hist || p_target)`` is then infinite even for exact
samples, while ``KL(p_target || p_hist)`` is finite and has a floor, the score of exact samples
(:func:`checkerboard_kl_floor`), to report beside every figure. The measured floors and the
alternatives that were rejected are in docs/metrics.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowmaps.inputs import PointsLike, check_points

__all__ = [
    "CheckerboardKL",
    "checkerboard_kl",
    "checkerboard_kl_floor",
    "checkerboard_kl_parts",
    "checkerboard_target",
    "histogram2d",
]


@dataclass
class CheckerboardKL:
    """Histogram KL of checkerboard samples, with what is needed to read it.

    Attributes:
        kl: ``KL(p_target || p_hist)`` in nats (``inf`` if a target bin is empty and ``eps`` is
            not set).
        n: number of samples.
        outside: fraction of samples outside the histogram range.
        empty_bins: bins where the target is positive and no sample fell.
        floor: KL of ``n`` exact samples on the same estimator (``None`` unless asked for).
    """

    kl: float
    n: int
    outside: float
    empty_bins: int
    floor: float | None = None

    def __float__(self) -> float:
        return self.kl

    def __str__(self) -> str:
        text = f"KL {self.kl:.4f}"
        if self.floor is not None:
            text += f" (floor {self.floor:.4f} at n={self.n})"
        return text


def bin_index(samples: PointsLike, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """The bin of each 2-D sample on a ``bins x bins`` grid over ``range^2``, as one index
    ``x-bin * bins + y-bin`` (int64, shape (N,)); -1 for a sample off the grid or not finite.

    Bins are ``[lo + k w, lo + (k + 1) w)`` with ``w = (hi - lo) / bins``; a sample exactly on the
    upper edge ``hi`` goes to the last bin. Raises ValueError for a bad range, bins or samples.
    """
    x = check_points(samples, dim=2)
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo:
        raise ValueError(f"range must be (lo, hi) with lo < hi; got {range}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    inside = torch.isfinite(x).all(dim=1) & ((x >= lo) & (x <= hi)).all(dim=1)
    # clamped first, so that a sample off the grid (or inf, NaN) converts to a defined index before it is masked
    xc = x.nan_to_num(nan=lo).clamp(lo, hi)
    idx = torch.floor((xc - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
    return torch.where(inside, idx[:, 0] * bins + idx[:, 1], torch.full_like(idx[:, 0], -1))


def histogram2d(samples: PointsLike, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, int]:
    """Counts of 2-D samples on a ``bins x bins`` grid over ``range^2`` (the bins of :func:`bin_index`).

    Returns ``(counts (bins, bins) float64 indexed [x-bin, y-bin], number of samples outside)``.
    """
    flat = bin_index(samples, bins, range)
    inside = flat >= 0
    counts = torch.bincount(flat[inside], minlength=bins * bins).to(torch.float64).reshape(bins, bins)
    return counts, int((~inside).sum())


def checkerboard_target(bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Target distribution over bins: checkerboard density at the bin centres, normalised.

    Centres are computed exactly, ``(lo (2 bins - 2k - 1) + hi (2k + 1)) / (2 bins)``, so that a
    centre on a cell edge is exactly on it and the half-open convention of
    :func:`flowmaps.data.toy.checkerboard_density` decides its side. Returns ``(bins, bins)``
    float64 indexed ``[x-bin, y-bin]``, summing to 1.
    """
    from flowmaps.data.toy import checkerboard_density

    lo, hi = float(range[0]), float(range[1])
    k = torch.arange(bins, dtype=torch.float64)
    centres = (lo * (2 * bins - 2 * k - 1) + hi * (2 * k + 1)) / (2 * bins)
    cx, cy = torch.meshgrid(centres, centres, indexing="ij")
    dens = checkerboard_density(torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1))
    total = dens.sum()
    if total <= 0:
        raise ValueError(f"no bin centre of range {range} lies on the checkerboard")
    return (dens / total).reshape(bins, bins)


def checkerboard_kl(
    samples: PointsLike,
    bins: int = 50,
    range: tuple[float, float] = (-1.0, 1.0),
    eps: float | None = None,
    *,
    floor: bool = False,
    floor_seed: int = 0,
) -> CheckerboardKL:
    """The paper's checkerboard KL: ``KL(p_target || p_hist)`` on a ``bins x bins`` histogram.

    Args:
        samples: ``(N, 2)`` generated points (the data end, t = 1).
        bins, range: histogram grid (the paper: 50 bins on ``[-1, 1]``).
        eps: count given to an empty bin, ``p_b = max(c_b, eps) / N`` (e.g. 0.5, a continuity
            correction); bins that hold samples are unchanged, so a histogram without empty
            bins scores the same with or without it. ``None`` (default): an empty target bin
            gives ``inf``. Exact or good samples at 64k have about 50 per target bin.
        floor: also compute the floor, the KL of ``N`` exact samples (seed ``floor_seed``).

    Returns:
        :class:`CheckerboardKL`; ``str(result)`` reads ``"KL 0.0712 (floor 0.0646 at n=64000)"``.
        See the module docstring for why this direction and what the floor is.
    """
    x = check_points(samples, dim=2)
    counts, n_out = histogram2d(x, bins, range)
    n = x.shape[0]
    q = checkerboard_target(bins, range)
    if eps is not None:
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive count for empty bins; got {eps}")
        p = torch.clamp(counts, min=eps) / n
    else:
        p = counts / n
    support = q > 0
    empty = int((support & (p == 0)).sum())
    if empty:
        kl = math.inf
    else:
        kl = float((q[support] * torch.log(q[support] / p[support])).sum())
    fl = checkerboard_kl_floor(n, floor_seed, bins, tuple(range), eps) if floor else None
    return CheckerboardKL(kl=kl, n=n, outside=n_out / n, empty_bins=empty, floor=fl)


@functools.lru_cache(maxsize=32)
def checkerboard_kl_floor(
    n: int = 64_000,
    seed: int = 0,
    bins: int = 50,
    range: tuple[float, float] = (-1.0, 1.0),
    eps: float | None = None,
) -> float:
    """KL of ``n`` exact checkerboard samples on the same estimator: the best score possible.

    Args:
        n: number of exact samples (drawn with :func:`flowmaps.data.toy.sample_toy`, seed ``seed``).
        bins, range, eps: as in :func:`checkerboard_kl`.

    Report it beside every checkerboard KL, computed with the same ``n`` and ``eps``: with few
    samples exact samples leave target bins empty, so without ``eps`` the floor itself can be
    infinite. Its measured values are in docs/metrics.md. Cached per arguments.

    Raises:
        ValueError: as :func:`checkerboard_kl`.
    """
    from flowmaps.data.toy import sample_toy

    x = sample_toy("checkerboard", n, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return checkerboard_kl(x, bins, range, eps).kl


def checkerboard_kl_parts(
    samples: PointsLike, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0), eps: float = 0.5
) -> dict[str, float]:
    """Where a checkerboard KL comes from: mass off the target, and the shape on it, edge and interior.

    With ``S`` the target's bins (``q_b > 0``), ``P_S = sum_{b in S} p_b`` and ``p'_b = p_b / P_S``,
    the KL of :func:`checkerboard_kl` (with ``eps``) splits exactly as

        ``KL = -log P_S + sum_{b in E} q_b log(q_b / p'_b) + sum_{b in S - E} q_b log(q_b / p'_b)``

    where ``E`` are the edge bins: target bins with one of their four neighbours off the target or
    off the grid. The first term is the mass that fell off the squares; the other two compare the
    shape on the squares, and sum to ``KL(q || p')`` >= 0. A map that blurs or rounds the squares
    puts too little mass in the edge bins (a positive edge part) and too much inside (a negative
    interior part). Exact samples score about 0.039 / 0.047 / -0.022 at 64,000 samples (docs/benchmarks.md).

    Args:
        samples: ``(N, 2)`` points (the data end, t = 1).
        bins, range: as in :func:`checkerboard_kl`.
        eps: count given to an empty bin (must be positive here, so that every part is finite).

    Returns:
        ``{"kl", "off_target", "edge", "interior", "mass_off_target", "edge_bins", "target_bins"}``:
        the first four in nats (``kl`` equals ``checkerboard_kl(samples, bins, range, eps).kl`` up
        to rounding), ``mass_off_target`` the fraction of samples in no target bin (those outside
        ``range`` included; ``P_S`` also holds the ``eps`` of empty target bins, so where many are
        empty ``-log P_S`` can dip below 0), and the bin counts of ``E`` and ``S``.

    Raises:
        ValueError: ``eps`` not a positive finite count, or as :func:`checkerboard_kl`.
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive count for empty bins; got {eps}")
    x = check_points(samples, dim=2)
    counts, _ = histogram2d(x, bins, range)
    q = checkerboard_target(bins, range)
    target = q > 0
    p = torch.clamp(counts, min=eps) / x.shape[0]
    p_target = float(p[target].sum())
    padded = torch.nn.functional.pad(target.to(torch.float64)[None, None], (1, 1, 1, 1))[0, 0]
    neighbours = torch.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    edge = target & (neighbours.min(dim=0).values < 1)
    terms = torch.zeros_like(q)
    terms[target] = q[target] * torch.log(q[target] * p_target / p[target])
    off = -math.log(p_target)
    edge_part, interior_part = float(terms[edge].sum()), float(terms[target & ~edge].sum())
    return {
        "kl": off + edge_part + interior_part,
        "off_target": off,
        "edge": edge_part,
        "interior": interior_part,
        "mass_off_target": 1.0 - float(counts[target].sum()) / x.shape[0],
        "edge_bins": int(edge.sum()),
        "target_bins": int(target.sum()),
    }
