"""Flow matching: the diagonal branch alone.

Time convention: t = 0 is noise, t = 1 is data. With I_t the interpolant and t ~ U[0, 1],
r = v_{t,t}(I_t) - dI_t/dt: the regression whose minimiser is the velocity b_t(x) =
E[dI_t/dt | I_t = x] of the probability-flow ODE (Lipman et al. 2023; Albergo and
Vanden-Eijnden 2023). Its network is a velocity field; sample it with an ODE solver.
"""

from __future__ import annotations

from flowmaps.objectives.base import Objective


class FlowMatching(Objective):
    """Flow matching alone: the whole batch on the diagonal, r = v_{t,t}(I_t) - dI_t/dt."""

    name = "fm"
    has_off_diagonal = False
