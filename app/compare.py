"""The "flow map against ODE" view: learned and exact ODE paths, N flow-map jumps, error map.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import numpy as np
import torch

from app.datasets import DataSource
from app.plots import TrajectoryData
from flowmaps.flowmap import FlowMap
from flowmaps.metrics import flowmap_error_grid
from flowmaps.sampling import flowmap_sample, ode_solve

#: Output times of the ODE paths (every 1/40; the slider uses every second one).
ODE_TIMES = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
SLIDER_EVERY = 2
#: Settings of the adaptive Dormand-Prince solve of the learned velocity (drawn and counted).
ODE_SETTINGS = {"method": "dopri5", "rtol": 1e-4, "atol": 1e-5, "max_steps": 2000}


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
    """Compute every array of :func:`app.plots.trajectories_figure` for ``model``.

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
        f"Mean distance between where they end: {end_gap:.3f} with {n} jump(s), "
        f"{one_gap:.3f} with one jump."
    )
    if d.exact is not None:
        gap = float(np.sqrt(((d.ode[-1] - d.exact[-1]) ** 2).sum(axis=1)).mean())
        text += f" The learned ODE ends {gap:.3f} from the exact one (dashed)."
    return text
