"""Lagrangian self-distillation (LSD) and Lagrangian map distillation (LMD).

Time convention: t = 0 is noise, t = 1 is data. The flow map solves the Lagrangian equation
d/dt X_{s,t}(x) = b_t(X_{s,t}(x)) (Boffi, Albergo, Vanden-Eijnden 2025, Proposition 2.4); the
residual at I_s is r = d/dt X_{s,t}(I_s) - sg(v_{t,t}(sg(X_{s,t}(I_s)))), the teacher the
model's own diagonal (LSD) or a frozen velocity (LMD).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmaps.flowmap import FlowMap
from flowmaps.objectives.base import Objective


class Lagrangian(Objective):
    """Lagrangian self-distillation (LSD): d/dt X_{s,t}(x) = v_{t,t}(X_{s,t}(x)).

    r = d/dt X_{s,t}(I_s) - sg(v_{t,t}(sg(X_{s,t}(I_s)))); X and its t-derivative come from
    one forward-mode pass, and the gradient flows only through the t-derivative.

    stopgrad: "teacher" (the paper), "input" (sg only on X fed to the teacher; the gradient
    also flows through the teacher's weights) or "none" (full gradient).
    With a teacher (a frozen velocity) this is Lagrangian map distillation (LMD).

    With fuse_branches (the default) and a network that takes a partial tangent (MLP, UNet),
    the diagonal rows and the off-diagonal JVP rows run in one call (same loss and gradients,
    fewer and larger kernels); the teacher's no-grad call stays separate.
    """

    name = "lagrangian"
    uses_jvp = True

    def __init__(self, *, stopgrad: str = "teacher", **kw) -> None:
        super().__init__(**kw)
        if stopgrad not in ("teacher", "input", "none"):
            raise ValueError(f"stopgrad must be 'teacher', 'input' or 'none'; got {stopgrad!r}")
        self.stopgrad = stopgrad

    def off_diagonal_residual(self, model, x0, x1, s, t, generator=None):
        x_s = model.interpolant.sample(x0, x1, s).x_t
        X, dX_dt = model.jvp(x_s, s, t, dt=1.0, backend=self.backend, fd_step=self.fd_step)
        return self._lagrangian_residual(model, X, dX_dt, t)

    def residuals(self, model, x0, x1, n_diag, t_diag, s_off, t_off, generator=None):
        n_off = 0 if s_off is None else s_off.shape[0]
        if not self._can_fuse(model, n_diag, n_off, tangent=True):
            return super().residuals(model, x0, x1, n_diag, t_diag, s_off, t_off, generator)
        r_diag, _, X, dX_dt = self._fused_tangent(model, x0, x1, n_diag, t_diag, s_off, t_off, ds=0.0, dt=1.0)
        return r_diag, self._lagrangian_residual(model, X, dX_dt, t_off)

    def _lagrangian_residual(self, model: FlowMap, X: Tensor, dX_dt: Tensor, t: Tensor) -> Tensor:
        if self.stopgrad == "teacher":
            with torch.no_grad():
                target = self.teacher_velocity(model, X.detach(), t)
        elif self.stopgrad == "input":
            target = self.teacher_velocity(model, X.detach(), t)
        else:
            target = self.teacher_velocity(model, X, t)
        return dX_dt - target
