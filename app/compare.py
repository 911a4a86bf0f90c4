"""The "flow map against ODE" view: learned and exact ODE paths, N flow-map jumps, error map;
their arrays (:class:`TrajectoryData`) and their figures.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import torch

from app.datasets import DataSource
from app.plots import DATA_COLOR, FONT, as_finite, axis_range
from flowmaps.flowmap import FlowMap
from flowmaps.metrics import flowmap_error_grid
from flowmaps.sampling import flowmap_sample, ode_solve

#: Output times of the ODE paths (every 1/40; the slider uses every second one).
ODE_TIMES = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
SLIDER_EVERY = 2
#: Settings of the adaptive Dormand-Prince solve of the learned velocity (drawn and counted).
ODE_SETTINGS = {"method": "dopri5", "rtol": 1e-4, "atol": 1e-5, "max_steps": 2000}


@dataclass
class TrajectoryData:
    """Everything the flow-map-against-ODE figure shows, as arrays.

    Attributes:
        data: ``(n, 2)`` data points (background).
        ode_times: ``(T,)`` times of ``ode`` (t = 0 noise, t = 1 data).
        ode: ``(T, B, 2)`` learned-velocity ODE states from the B start points.
        exact: ``(T, B, 2)`` exact-velocity ODE states (Gaussian mixtures) or None.
        grid: ``(N + 1,)`` the flow-map time grid.
        jumps: ``(N + 1, B, 2)`` flow-map states along the grid.
        slider_times: ``(K,)`` slider times.
        direct: ``(K, B, 2)`` one-jump flow map X_{0,tau}(x0) at each slider time.
        ode_at: ``(K, B, 2)`` learned ODE state at each slider time.
        nfe_ode: velocity evaluations of one adaptive solve over [0, 1] without output times.
    """

    data: np.ndarray
    ode_times: np.ndarray
    ode: np.ndarray
    exact: np.ndarray | None
    grid: np.ndarray
    jumps: np.ndarray
    slider_times: np.ndarray
    direct: np.ndarray
    ode_at: np.ndarray
    nfe_ode: int = 0
    extra: dict = field(default_factory=dict)


def _paths(traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, B, 2) paths -> x, y arrays with None breaks between paths (one trace for all)."""
    t, b, _ = traj.shape
    xs = np.full((b, t + 1), np.nan)
    ys = np.full((b, t + 1), np.nan)
    xs[:, :t] = traj[:, :, 0].T
    ys[:, :t] = traj[:, :, 1].T
    return xs.reshape(-1), ys.reshape(-1)


def _path_trace(traj: np.ndarray, name: str, line: dict, **kwargs) -> go.Scatter:
    """One trace of every path of ``traj`` (T, B, 2), broken between paths."""
    x, y = _paths(as_finite(traj))
    return go.Scatter(x=x, y=y, mode=kwargs.pop("mode", "lines"), name=name, line=line, connectgaps=False, **kwargs)


def _points_trace(p: np.ndarray, name: str, marker: dict) -> go.Scatter:
    """The points ``p`` (B, 2) as markers."""
    return go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=name, marker=marker)


def _time_slider(d: TrajectoryData, traces: list[int]) -> dict:
    """A slider over ``d.slider_times`` that moves the two marker traces ``traces`` (the ODE state
    and the one-jump map at tau), starting at the last time."""
    oa, da = as_finite(d.ode_at), as_finite(d.direct)
    steps = []
    for k, tau in enumerate(d.slider_times):
        xs = [oa[k, :, 0].tolist(), da[k, :, 0].tolist()]
        ys = [oa[k, :, 1].tolist(), da[k, :, 1].tolist()]
        steps.append({"method": "restyle", "label": f"{tau:.2f}", "args": [{"x": xs, "y": ys}, traces]})
    last = len(d.slider_times) - 1
    return {
        "active": last,
        "steps": steps,
        "currentvalue": {"prefix": "tau = "},
        "pad": {"t": 30},
        "len": 0.9,
        "x": 0.05,
    }


def _view(d: TrajectoryData) -> tuple[float, float]:
    """The square range of the trajectories plot: the data and the end points (central 99.5 %),
    widened to hold every drawn path from its start point (noise can start outside the data), by
    at most the data's own span on each side (a diverged path is not allowed to shrink the board)."""
    lo, hi = axis_range(np.concatenate([d.data, d.ode[-1], d.jumps[-1]]))
    paths = [d.ode, d.jumps] + ([] if d.exact is None else [d.exact])
    p = np.concatenate([np.asarray(a, dtype=float).reshape(-1, 2) for a in paths])
    p = p[np.isfinite(p).all(axis=1)]
    if p.size:
        span = hi - lo
        lo = max(min(lo, float(p.min()) - 0.05 * span), lo - span)
        hi = min(max(hi, float(p.max()) + 0.05 * span), hi + span)
    return lo, hi


def trajectories_figure(d: TrajectoryData, rng: tuple[float, float] | None = None) -> go.Figure:
    """ODE paths, exact paths, the N-step flow-map jumps, and a time slider.

    The slider moves two marker sets: the ODE state at time tau and the one-jump flow map
    X_{0,tau}(x0). They coincide when the map is right: one jump lands where the ODE arrives.
    """
    rng = rng or _view(d)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=d.data[:, 0],
            y=d.data[:, 1],
            mode="markers",
            name="data",
            marker={"size": 2.5, "color": DATA_COLOR},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        _path_trace(d.ode, f"ODE of learned velocity (dopri5, {d.nfe_ode} NFE)", {"color": "#1f77b4", "width": 1.5})
    )
    if d.exact is not None:
        fig.add_trace(_path_trace(d.exact, "ODE of exact velocity", {"color": "#111", "width": 1.2, "dash": "dash"}))
    fig.add_trace(
        _path_trace(
            d.jumps,
            f"flow map, {len(d.grid) - 1} jump" + ("" if len(d.grid) == 2 else "s"),
            {"color": "#ff7f0e", "width": 1.2},
            mode="lines+markers",
            marker={"size": 6, "symbol": "circle"},
        )
    )
    start_marker = {"size": 7, "color": "#2ca02c", "symbol": "diamond"}
    fig.add_trace(_points_trace(as_finite(d.ode[0]), "start points (t = 0, noise)", start_marker))
    last = len(d.slider_times) - 1
    ode_marker = {"size": 9, "color": "rgba(31,119,180,0.6)", "line": {"width": 1, "color": "#1f77b4"}}
    fig.add_trace(_points_trace(as_finite(d.ode_at)[last], "ODE state at slider time", ode_marker))
    fig.add_trace(
        _points_trace(as_finite(d.direct)[last], "one jump X(0, tau)", {"size": 9, "color": "#d62728", "symbol": "x"})
    )
    fig.update_layout(
        sliders=[_time_slider(d, [len(fig.data) - 2, len(fig.data) - 1])],
        height=690,
        template="plotly_white",
        font=FONT,
        margin={"l": 40, "r": 10, "t": 100, "b": 10},  # the legend's rows stay below plotly's toolbar
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
    )
    fig.update_xaxes(range=list(rng), zeroline=False)
    fig.update_yaxes(range=list(rng), zeroline=False, scaleanchor="x", scaleratio=1)
    return fig


def error_heatmap(s_values: Sequence[float], t_values: Sequence[float], err: np.ndarray) -> go.Figure:
    """Heat map of the flow-map error E[i, j] at (s_i, t_j), log10 colour scale; NaN where s >= t."""
    e = as_finite(err)
    z = np.where(e > 0, np.log10(np.maximum(e, 1e-12)), np.nan)
    text = [[("" if not math.isfinite(v) else f"{v:.2e}") for v in row] for row in e]
    fig = go.Figure(
        go.Heatmap(
            x=list(map(float, t_values)),
            y=list(map(float, s_values)),
            z=z.tolist(),
            text=text,
            hovertemplate="s = %{y:.2f}, t = %{x:.2f}<br>error %{text}<extra></extra>",
            colorscale="Viridis",
            colorbar={"title": "log10 MSE"},
        )
    )
    fig.update_xaxes(title="t (end time; 1 = data)")
    fig.update_yaxes(title="s (start time; 0 = noise)")
    fig.update_layout(
        height=420,
        template="plotly_white",
        font=FONT,
        margin={"l": 60, "r": 10, "t": 40, "b": 50},
        title="flow-map error E|X̂(s,t) − X(s,t)|², x ~ p_s",
    )
    return fig


def ode_cost(model: FlowMap, x0: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(NFE, end state at t = 1) of one adaptive solve of dx/dt = v_{t,t}(x) over the whole of [0, 1].

    The drawn paths land on :data:`ODE_TIMES`, which forces the solver to stop 40 times and
    costs extra evaluations; the count a user compares with N flow-map jumps is that of a solve
    free to choose its own steps, so it is made here separately, with the same tolerances
    (:data:`ODE_SETTINGS`). Time convention: t = 0 noise, t = 1 data.
    """
    with torch.no_grad():
        out = ode_solve(model.velocity, x0, **ODE_SETTINGS)
    return int(out.nfe), out.x


def trajectory_data(
    model: FlowMap,
    data: DataSource | None,
    grid: torch.Tensor,
    n_points: int = 24,
    seed: int = 0,
    n_background: int = 1500,
) -> TrajectoryData:
    """Compute every array of :func:`trajectories_figure` for ``model``.

    Start points x0 ~ N(0, sigma^2 I) at t = 0 (seeded). The learned velocity v_{t,t} is
    integrated with the adaptive Dormand-Prince solver (rtol 1e-4), landing on :data:`ODE_TIMES`
    (its NFE is that of a separate solve over [0, 1] without output times, :func:`ode_cost`);
    for a Gaussian mixture the exact velocity too (float64, rtol 1e-7). The flow map takes the
    N jumps of ``grid``, and the slider shows the one-jump map X_{0,tau}(x0) against the ODE
    state at tau.
    """
    g = torch.Generator().manual_seed(seed)
    x0 = model.sigma * torch.randn(n_points, 2, generator=g)
    with torch.no_grad():
        ode = ode_solve(model.velocity, x0, grid=ODE_TIMES.tolist(), return_trajectory=True, **ODE_SETTINGS)
        nfe, _ = ode_cost(model, x0)
        exact = None
        if data is not None and data.gmm is not None and abs(data.gmm.sigma - model.sigma) < 1e-3 * model.sigma:
            ex = ode_solve(
                data.gmm.velocity,
                x0.double(),
                method="dopri5",
                grid=ODE_TIMES.tolist(),
                rtol=1e-7,
                atol=1e-9,
                max_steps=20_000,
                return_trajectory=True,
            )
            exact = ex.trajectory.numpy()
        jumps = flowmap_sample(model, x0, grid, return_trajectory=True).trajectory.numpy()
        slider = ODE_TIMES[::SLIDER_EVERY]
        direct = np.stack([model.jump(x0, 0.0, float(tau)).numpy() for tau in slider.tolist()])
    traj = ode.trajectory.numpy()
    if data is not None:
        background = data.sample(n_background, generator=torch.Generator().manual_seed(seed + 1)).numpy()
    else:
        background = flowmap_sample(model, model.sigma * torch.randn(n_background, 2, generator=g), [0.0, 0.5, 1.0]).x
        background = background.numpy()
    return TrajectoryData(
        data=background,
        ode_times=ODE_TIMES.numpy(),
        ode=traj,
        exact=exact,
        grid=grid.numpy(),
        jumps=jumps,
        slider_times=slider.numpy(),
        direct=direct,
        ode_at=traj[::SLIDER_EVERY],
        nfe_ode=nfe,
        extra={"nfe_drawn": int(ode.nfe)},
    )


def error_grid(
    model: FlowMap, data: DataSource, n_times: int = 9, n: int = 256, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow-map squared error over (s, t), s < t, against the mixture's exact map.

    Returns (s_values, t_values, E) with E[i, j] = E_{x ~ p_s} |X̂_{s_i,t_j}(x) - X_{s_i,t_j}(x)|^2
    and NaN where s >= t (t = 0 noise, t = 1 data).
    """
    if data.gmm is None:
        raise ValueError("the exact flow map is known only for Gaussian-mixture data")
    s_vals = np.linspace(0.0, 1.0, n_times + 1)[:-1]
    t_vals = np.linspace(0.0, 1.0, n_times + 1)[1:]
    err = flowmap_error_grid(model, data.gmm, s_vals, t_vals, n=n, generator=torch.Generator().manual_seed(seed))
    return s_vals, t_vals, err.numpy()


def summary(d: TrajectoryData) -> str:
    """One paragraph on how far the N-step flow map lands from the adaptive ODE solve."""
    end_gap = float(np.sqrt(((d.jumps[-1] - d.ode[-1]) ** 2).sum(axis=1)).mean())
    one_gap = float(np.sqrt(((d.direct[-1] - d.ode[-1]) ** 2).sum(axis=1)).mean())
    n = len(d.grid) - 1
    text = (
        f"The adaptive ODE solve (Dormand-Prince, rtol 1e-4) of the learned velocity over [0, 1] took "
        f"**{d.nfe_ode} network evaluations**; the flow map took **{n}**. "
        + (
            f"Mean distance between where they end: {end_gap:.3f} with one jump."
            if n == 1
            else f"Mean distance between where they end: {end_gap:.3f} with {n} jumps, {one_gap:.3f} with one jump."
        )
    )
    if d.exact is not None:
        gap = float(np.sqrt(((d.ode[-1] - d.exact[-1]) ** 2).sum(axis=1)).mean())
        text += f" The learned ODE ends {gap:.3f} from the exact one (dashed)."
    return text
