"""Flow-map error: how far a model's jump is from an exact flow map.

Time convention: **t = 0 is noise, t = 1 is data.**

For a model with ``jump(x, s, t)`` and an exact flow map ``X_{s,t}`` (Boffi et al. 2025, arXiv
2505.18825: ``X_{s,t}(x_s) = x_t`` along the probability flow), :func:`flowmap_error`
is ``E_x |jump(x, s, t) - X_{s,t}(x)|^2`` for one pair of times and :func:`flowmap_error_grid`
the same over a grid of pairs ``s < t``, for a heat map. The exact map is a Gaussian mixture's
(:meth:`flowmaps.data.gmm.GaussianMixture.exact_flow_map`) or any callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flowmaps.inputs import check_points, describe_shape

__all__ = ["ExactMap", "flowmap_error", "flowmap_error_grid"]


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
        x = check_points(points, "points")
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
