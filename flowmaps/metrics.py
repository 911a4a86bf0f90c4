"""Sample-quality and flow-map metrics.

Time convention: **t = 0 is noise, t = 1 is data.**

- :func:`checkerboard_kl` the paper's histogram KL for the checkerboard, with
  :func:`checkerboard_kl_floor` (the score of exact samples) to report beside it.
- :func:`sliced_wasserstein` and :func:`energy_distance` between any two point sets in d dims.
- :func:`flowmap_error` and :func:`flowmap_error_grid`: mean squared error between a model's
  ``jump(x, s, t)`` and an exact flow map (a Gaussian mixture's, or any callable), on the
  time-s marginal, on base noise points, or on given points.

Checkerboard KL: what the estimator is, and why
------------------------------------------------
The paper computes a KL between a 50x50 histogram of 64,000 samples on ``[-1, 1]^2`` and the
analytic checkerboard density at the bin centres. With 50 bins of width 0.04, the centres of
bins 12 and 37 (on each axis) fall exactly on the inner edges ``x = +-0.5`` of the board's cells,
so the "density at the centre" of such a bin is 1/2 on one side of the edge and 0 on the other,
while exact samples fill half of it. Consequences, measured with exact samples:

- ``KL(hist || target)`` is infinite: 96 bins hold samples where the centre density is 0
  (whichever side the edge is given to).
- ``KL(target || hist)`` is finite and lands on our calibration: 0.065 at 64k samples and
  0.055 at 640k (0.066 / 0.057 if the target is left as density x bin area, total mass 1.0016,
  instead of being normalised). The floor comes from the 100 edge bins where the target is
  twice the true bin mass, plus the sampling noise of the histogram (about
  ``(#bins) / (2 N)``, 0.01 at 64k).

So :func:`checkerboard_kl` computes ``KL(p_target || p_hist) = sum_b q_b log(q_b / p_b)`` over the
bins where the target ``q`` is positive, with

- ``q_b`` the analytic density at the exact bin centre (cells half-open: a centre on an edge
  belongs to the cell to its right / above), normalised to sum to 1 over the bins;
- ``p_b`` the fraction of *all* samples in bin ``b``: samples outside ``range`` count in the
  total, so mass thrown off the board raises the KL (exact samples never leave it, so the floor
  is unaffected); the fraction outside is reported;
- an empty bin where ``q_b > 0`` makes the KL infinite (reported, with the count of such bins),
  unless ``eps`` is given: an empty bin then counts as holding ``eps`` samples. Pseudo-counts
  added to every bin would be worse: 0.5 per bin moves 2% of the mass at 64k samples and adds
  about 0.009 to the floor.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowmaps.inputs import describe_shape

__all__ = [
    "CheckerboardKL",
    "checkerboard_kl",
    "checkerboard_kl_floor",
    "checkerboard_target",
    "histogram2d",
    "sliced_wasserstein",
    "energy_distance",
    "flowmap_error",
    "flowmap_error_grid",
    "mean_sd",
]

ArrayLike = Tensor | np.ndarray | Sequence[Sequence[float]]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of a figure over noise seeds.

    A non-finite value anywhere (an infinite KL: an empty bin on some seed) gives ``(inf, nan)``:
    the mean of such a figure is not a number to report."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_sd needs at least one value")
    if not np.isfinite(arr).all():
        return math.inf, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _points(x: ArrayLike, name: str = "samples", dim: int | None = None) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach().to("cpu", torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2 or (dim is not None and t.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, d)"
        raise ValueError(f"{name} must have shape {want}; got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    return t


# ------------------------------------------------------------------------ checkerboard KL


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


def histogram2d(samples: ArrayLike, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, int]:
    """Counts of 2-D samples on a ``bins x bins`` grid over ``range^2``.

    Bins are ``[lo + k w, lo + (k + 1) w)`` with ``w = (hi - lo) / bins``; a sample exactly on the
    upper edge ``hi`` goes to the last bin. Returns ``(counts (bins, bins) float64 indexed
    [x-bin, y-bin], number of samples outside)``.
    """
    x = _points(samples, dim=2)
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo:
        raise ValueError(f"range must be (lo, hi) with lo < hi; got {range}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    finite = torch.isfinite(x).all(dim=1)
    inside = finite & ((x >= lo) & (x <= hi)).all(dim=1)
    xi = x[inside]
    idx = torch.floor((xi - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
    flat = idx[:, 0] * bins + idx[:, 1]
    counts = torch.bincount(flat, minlength=bins * bins).to(torch.float64).reshape(bins, bins)
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
    samples: ArrayLike,
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
    x = _points(samples, dim=2)
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

    About 0.064 at 64,000 samples and 0.055 at 640,000 (spread over seeds about 0.001 at 64k).
    Report it beside every checkerboard KL, computed with the same ``n`` and ``eps``: below
    about 20,000 samples exact samples leave target bins empty, so without ``eps`` the floor
    itself is infinite. Cached per arguments.
    """
    from flowmaps.data.toy import sample_toy

    x = sample_toy("checkerboard", n, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return checkerboard_kl(x, bins, range, eps).kl


# ------------------------------------------------------------------- distances between sets


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
    a: ArrayLike,
    b: ArrayLike,
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
    x, y = _points(a, "a"), _points(b, "b")
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
    a: ArrayLike,
    b: ArrayLike,
    max_points: int = 4096,
    generator: torch.Generator | None = None,
) -> float:
    """Energy distance ``sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|)`` between two point sets.

    Expectations are over the empirical measures (V-statistics, pairs ``(i, i)`` included), so
    the result is 0 for identical sets, positive otherwise, and equals
    ``scipy.stats.energy_distance`` in 1-D. Sets larger than ``max_points`` are subsampled
    without replacement (cost is quadratic). ``a`` ``(n, d)``, ``b`` ``(m, d)``.
    """
    x, y = _points(a, "a"), _points(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same dimension; got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    if y.shape[0] > max_points:
        y = y[torch.randperm(y.shape[0], generator=generator)[:max_points]]
    val = 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)
    return math.sqrt(max(val, 0.0))


# -------------------------------------------------------------------------- flow-map error


def _model_place(model: object) -> tuple[torch.dtype, torch.device]:
    params = getattr(model, "parameters", None)
    if callable(params):
        for prm in params():
            return prm.dtype, prm.device
    return torch.float64, torch.device("cpu")


def _jump_batched(model: object, x: Tensor, s: Tensor, t: Tensor, chunk: int) -> Tensor:
    dtype, device = _model_place(model)
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            xi = x[i : i + chunk].to(device, dtype)
            si = s[i : i + chunk].to(device, dtype)
            ti = t[i : i + chunk].to(device, dtype)
            outs.append(model.jump(xi, si, ti).to("cpu", torch.float64))
    return torch.cat(outs)


ExactMap = Callable[[Tensor, Tensor, Tensor], Tensor]
"""exact(x, s, t) -> X_{s,t}(x): ``x`` ``(B, d)`` float64, ``s`` and ``t`` ``(B,)`` float64 tensors (t = 0
noise, t = 1 data); returns ``(B, d)``."""


def _exact_map(exact: object) -> ExactMap:
    """The exact flow map of ``exact``: a mixture's ``exact_flow_map``, or ``exact`` itself if callable."""
    fn = getattr(exact, "exact_flow_map", None)
    if callable(fn):
        return fn
    if callable(exact):
        return exact
    raise ValueError(
        f"exact must be a GaussianMixture (or any object with exact_flow_map) or a callable exact(x, s, t); "
        f"got {type(exact).__name__}"
    )


def _start_points(
    exact: object,
    points: str | Tensor,
    s: float,
    n: int,
    generator: torch.Generator | None,
    sigma: float | None,
    dim: int | None,
) -> Tensor:
    """The ``(n, d)`` float64 points the jump from time s is scored on (see :func:`flowmap_error`)."""
    if isinstance(points, Tensor) or not isinstance(points, str):
        x = _points(points, "points")
        if dim is not None and x.shape[1] != dim:
            raise ValueError(f"points must have shape (N, {dim}); got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("points must be finite")
        return x
    where = points.strip().lower()
    if where == "marginal":
        sample = getattr(exact, "sample_marginal", None)
        if not callable(sample):
            raise ValueError(
                "points='marginal' samples the time-s marginal, which needs a GaussianMixture (an object with "
                "sample_marginal); with a callable exact map pass points='base' with sigma and dim, or a (N, d) "
                "tensor of points"
            )
        return sample(n, s, generator=generator, dtype=torch.float64)
    if where == "base":
        sig = sigma if sigma is not None else getattr(exact, "sigma", None)
        d = dim if dim is not None else getattr(exact, "dim", None)
        if sig is None or d is None:
            raise ValueError(
                "points='base' draws x0 ~ N(0, sigma^2 I): pass sigma=... and dim=... with a callable exact map"
            )
        if not (float(sig) > 0 and math.isfinite(float(sig))) or int(d) < 1:
            raise ValueError(f"sigma must be a positive number and dim a positive integer; got {sig} and {d}")
        return float(sig) * torch.randn(n, int(d), generator=generator, dtype=torch.float64)
    raise ValueError(f"points must be 'marginal', 'base' or a (N, d) tensor; got {points!r}")


def _pair_errors(
    model: object,
    exact: object,
    pairs: list[tuple[float, float]],
    n: int,
    generator: torch.Generator | None,
    chunk: int,
    points: str | Tensor = "marginal",
    sigma: float | None = None,
    dim: int | None = None,
) -> Tensor:
    """Mean squared error ``E|jump(x, s, t) - X_{s,t}(x)|^2`` per (s, t) pair, over the chosen points."""
    exact_fn = _exact_map(exact)
    shape, target_dim = getattr(model, "state_shape", None), dim if dim is not None else getattr(exact, "dim", None)
    if shape is not None and target_dim is not None and tuple(shape) != (target_dim,):
        raise ValueError(
            f"the model takes states of shape {describe_shape(shape)} but the target has dimension {target_dim}: "
            "evaluate the model against a target of its own dimension"
        )
    xs, ss, ts = [], [], []
    for s, t in pairs:
        x = _start_points(exact, points, s, n, generator, sigma, dim)
        xs.append(x)
        ss.append(torch.full((x.shape[0],), float(s), dtype=torch.float64))
        ts.append(torch.full((x.shape[0],), float(t), dtype=torch.float64))
    x, s_all, t_all = torch.cat(xs), torch.cat(ss), torch.cat(ts)
    want = exact_fn(x, s_all, t_all)
    if not isinstance(want, Tensor) or want.shape != x.shape:
        got = tuple(want.shape) if isinstance(want, Tensor) else type(want).__name__
        raise ValueError(f"the exact map must return a tensor of the points' shape {tuple(x.shape)}; got {got}")
    approx = _jump_batched(model, x, s_all, t_all, chunk)
    sq = ((approx - want.to("cpu", torch.float64)) ** 2).sum(dim=1)
    return sq.reshape(len(pairs), -1).mean(dim=1)


def flowmap_error(
    model: object,
    exact: object,
    s: float = 0.0,
    t: float = 1.0,
    n: int = 2048,
    generator: torch.Generator | None = None,
    chunk: int = 65_536,
    *,
    points: str | Tensor = "marginal",
    sigma: float | None = None,
    dim: int | None = None,
) -> float:
    """Mean squared error of one jump: ``E_x |model.jump(x, s, t) - X_{s,t}(x)|^2``.

    Args:
        model: anything with ``jump(x, s, t)`` (``x`` ``(B, d)``, ``s``, ``t`` ``(B,)``); it runs in
            the dtype and on the device of its parameters (float64 on the CPU without parameters).
        exact: the exact flow map ``X``: a :class:`~flowmaps.data.gmm.GaussianMixture` (its
            ``exact_flow_map``), or any callable ``exact(x, s, t)`` with ``x`` ``(B, d)`` float64 and
            ``s``, ``t`` ``(B,)`` float64 tensors, returning ``(B, d)``.
        s, t: start and end times in [0, 1] (t = 0 noise, t = 1 data). The default ``s = 0,
            t = 1`` is the one-step sampling error.
        n: number of points drawn (ignored when ``points`` is a tensor).
        points: where the error is averaged:
            ``"marginal"`` (default): ``x ~ p_s``, the exact time-s marginal, sampled as the
            interpolant ``I_s = (1 - s) x0 + s x1`` (it has the law of the ODE state at time s);
            needs a mixture.
            ``"base"``: base points ``x0 ~ N(0, sigma^2 I)``, the law at s = 0 (noise); ``sigma``
            and ``dim`` default to the mixture's. At s = 0 this equals ``"marginal"`` in law.
            A ``(N, d)`` tensor: these points, as given.
        sigma, dim: the base noise's std and dimension for ``points="base"`` with a callable map.

    ``|.|^2`` is the squared Euclidean norm summed over coordinates.

    Raises:
        ValueError: times outside [0, 1], an ``exact`` that is neither a mixture nor callable,
            ``points="marginal"`` without a mixture, ``points="base"`` without sigma and dim,
            points of the wrong shape or not finite, an exact map returning the wrong shape.
    """
    if not (0.0 <= s <= 1.0 and 0.0 <= t <= 1.0):
        raise ValueError(f"s and t must lie in [0, 1]; got s={s}, t={t}")
    return float(_pair_errors(model, exact, [(s, t)], n, generator, chunk, points, sigma, dim)[0])


def flowmap_error_grid(
    model: object,
    exact: object,
    s_values: Sequence[float] | Tensor,
    t_values: Sequence[float] | Tensor,
    n: int = 512,
    generator: torch.Generator | None = None,
    chunk: int = 65_536,
    *,
    points: str | Tensor = "marginal",
    sigma: float | None = None,
    dim: int | None = None,
) -> Tensor:
    """Flow-map mean squared error over a grid of start and end times, for a heat map.

    Returns a float64 tensor ``E`` of shape ``(len(s_values), len(t_values))`` with
    ``E[i, j] = E_x |model.jump(x, s_i, t_j) - X_{s_i, t_j}(x)|^2`` where ``s_i < t_j``
    and NaN elsewhere (t = 0 noise, t = 1 data). ``exact``, ``points``, ``sigma`` and ``dim``
    as in :func:`flowmap_error` (by default ``x ~ p_{s_i}``, fresh points for every pair). All
    pairs share one call of the exact map (one adaptive solve for a mixture).
    """
    sv = [float(v) for v in torch.as_tensor(s_values, dtype=torch.float64).reshape(-1)]
    tv = [float(v) for v in torch.as_tensor(t_values, dtype=torch.float64).reshape(-1)]
    if any(not 0.0 <= v <= 1.0 for v in sv + tv):
        raise ValueError("s_values and t_values must lie in [0, 1] (t = 0 noise, t = 1 data)")
    out = torch.full((len(sv), len(tv)), math.nan, dtype=torch.float64)
    index = [(i, j) for i, s in enumerate(sv) for j, t in enumerate(tv) if s < t]
    if not index:
        return out
    pairs = [(sv[i], tv[j]) for i, j in index]
    errs = _pair_errors(model, exact, pairs, n, generator, chunk, points, sigma, dim)
    for (i, j), e in zip(index, errs.tolist(), strict=True):
        out[i, j] = e
    return out
