"""Progressive self-distillation (PSD), progressive distillation and shortcut models.

Time convention: t = 0 is noise, t = 1 is data. The flow map obeys the semigroup property
X_{u,t} o X_{s,u} = X_{s,t} for s <= u <= t (Boffi, Albergo, Vanden-Eijnden 2025, Proposition
2.6): a long jump is trained to match two shorter ones of the teacher.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from flowmaps.flowmap import FlowMap
from flowmaps.interpolants import _expand
from flowmaps.objectives.base import Objective


class Progressive(Objective):
    """Progressive self-distillation (PSD): the semigroup X_{u,t} o X_{s,u} = X_{s,t}.

    u = gamma s + (1 - gamma) t and, in v-space (the (t - s)^2 factor of the X-space
    residual is dropped on purpose),
        r = v_{s,t}(I_s) - sg((1 - gamma) v_{s,u}(I_s) + gamma v_{u,t}(X_{s,u}(I_s))).
    gamma: "uniform" (PSD-U, gamma ~ U[0, 1]) or a number in [0, 1] (PSD-M: 0.5).
    min_step: the finest step the off-diagonal branch trains (0, the default: no limit). A
        half-step shorter than it (u - s or t - u < min_step) is taken with the diagonal
        velocity instead of the map: v_{s,u} -> v_{s,s}, v_{u,t} -> v_{u,u} (an Euler step of the
        flow-matching velocity), so the target never rests on a step size that is not trained.
    With a frozen teacher flow map this is progressive distillation; with gamma = 1/2 on the
    dyadic time grid (steps 1 ... 1/64) and min_step = 1/64 it is the shortcut model of Frans
    et al. in its 128-step setting: the finest level, 1/64, bootstraps from two 1/128 steps of
    the flow-matching velocity, every coarser level from two steps of the level below.
    """

    name = "progressive"

    def __init__(
        self, *, gamma: float | str = "uniform", stopgrad: str = "teacher", min_step: float = 0.0, **kw
    ) -> None:
        super().__init__(**kw)
        if gamma != "uniform" and not (isinstance(gamma, (int, float)) and 0.0 <= float(gamma) <= 1.0):
            raise ValueError(f"gamma must be 'uniform' or a number in [0, 1]; got {gamma!r}")
        if stopgrad not in ("teacher", "none"):
            raise ValueError(f"stopgrad must be 'teacher' or 'none'; got {stopgrad!r}")
        if self.teacher is not None and not isinstance(self.teacher, FlowMap):
            raise ValueError("progressive distillation needs a FlowMap teacher (it takes jumps)")
        if not (isinstance(min_step, (int, float)) and 0.0 <= float(min_step) <= 1.0):
            raise ValueError(f"min_step must be a number in [0, 1]; got {min_step!r}")
        self.gamma, self.stopgrad, self.min_step = gamma, stopgrad, float(min_step)

    def off_diagonal_residual(self, model, x0, x1, s, t, generator=None):
        x_s = model.interpolant.sample(x0, x1, s).x_t
        return model(s, t, x_s) - self._teacher_target(model, x_s, s, t, generator)

    def _teacher_target(self, model: FlowMap, x_s: Tensor, s: Tensor, t: Tensor, generator=None) -> Tensor:
        """(1 - gamma) v_{s,u}(x_s) + gamma v_{u,t}(X_{s,u}(x_s)), u = gamma s + (1 - gamma) t;
        a half-step shorter than min_step uses the diagonal: v_{s,s}(x_s), v_{u,u}(x_u)."""
        if self.gamma == "uniform":
            gamma = torch.rand(s.shape, generator=generator, device=s.device, dtype=s.dtype)
        else:
            gamma = torch.full_like(s, float(self.gamma))
        u = gamma * s + (1.0 - gamma) * t
        teacher = self.teacher if self.teacher is not None else model
        ctx = torch.no_grad() if self.stopgrad == "teacher" else contextlib.nullcontext()
        end_su, end_ut = u, t
        if self.min_step > 0.0:
            end_su = torch.where(u - s < self.min_step, s, u)
            end_ut = torch.where(t - u < self.min_step, u, t)
        with ctx:
            v_su = teacher(s, end_su, x_s)
            x_u = x_s + _expand(u - s, x_s) * v_su
            v_ut = teacher(u, end_ut, x_u)
            g = _expand(gamma, x_s)
            return (1.0 - g) * v_su + g * v_ut

    def residuals(self, model, x0, x1, n_diag, t_diag, s_off, t_off, generator=None):
        # Fused: the diagonal rows and the student rows v_{s,t}(I_s) in one call; the two
        # teacher calls (no grad, one after the other) stay separate.
        n_off = 0 if s_off is None else s_off.shape[0]
        if self.stopgrad != "teacher" or not self._can_fuse(model, n_diag, n_off, tangent=False):
            return super().residuals(model, x0, x1, n_diag, t_diag, s_off, t_off, generator)
        diag = model.interpolant.sample(x0[:n_diag], x1[:n_diag], t_diag)
        x_s = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s_off).x_t
        target = self._teacher_target(model, x_s, s_off, t_off, generator)
        v = model(torch.cat([t_diag, s_off]), torch.cat([t_diag, t_off]), torch.cat([diag.x_t, x_s]))
        return v[:n_diag] - self._diagonal_target(model, diag, t_diag), v[n_diag:] - target
