"""The Eulerian family: ESD, Eulerian map distillation, MeanFlow, consistency training and distillation.

Time convention: t = 0 is noise, t = 1 is data. The flow map solves the Eulerian (transport)
equation d/ds X_{s,t}(x) + grad_x X_{s,t}(x) . b_s(x) = 0 (Boffi, Albergo, Vanden-Eijnden 2025,
Proposition 2.5); the presets differ in which b_s enters, whether the residual is written for X
or for v, where the gradient stops and whether each term is weighted by t - s (appendix C).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmaps.flowmap import FlowMap
from flowmaps.interpolants import InterpolantSample, _expand
from flowmaps.objectives.base import Objective


class Eulerian(Objective):
    """Eulerian self-distillation (ESD): d/ds X_{s,t}(x) + grad_x X_{s,t}(x) . b_s(x) = 0.

    velocity: which b_s enters the transport term:
        "model"   v_{s,s}(I_s), the model's own diagonal under sg (ESD, the paper);
        "sample"  the one-sample estimate dI_s/ds = x1 - x0 (consistency training, MeanFlow);
        "teacher" a frozen velocity (Eulerian map distillation, consistency distillation).
    space: "map" gives the X-space residual r = d/ds X_{s,t}(I_s) + grad_x X_{s,t}(I_s) . b_s;
        "velocity" gives the v-space residual of MeanFlow,
        r = v_{s,t}(I_s) - sg(b_s + (t - s)(d/ds v + grad_x v . b_s)).
    stopgrad: where the gradient is stopped. b_s itself is always under stop-gradient (it is the
        teacher, or data). In X-space: "none" lets the gradient flow through both d/ds X and
        grad_x X . b_s (one JVP along (ds, dx) = (1, b_s)): the squared residual of a linear
        transport equation, a least-squares problem for fixed b; this is the "esd" preset.
        "teacher" puts the whole transport term under stop-gradient (the gradient flows through
        d/ds X only), a semigradient: on the paper's 2-D recipe it drifts and diverges
        (docs/esd_stability.md has the evidence); it is kept for Eulerian map distillation
        ("emd"). In v-space, "teacher" detaches the target (MeanFlow) and "none" does not.
    interval_weight: False (default) or True: the per-sample squared residual is multiplied by
        t - s, i.e. the term becomes (t - s) sum(r^2) (inside exp(-w) when the flow map learns a
        log-variance w). It is applied as a factor sqrt(t - s) on the residual, so every
        reduction, the learned weight and the branch's log all see the weighted term. With the
        v-space residual this is the continuous-time limit of a discrete consistency step
        (the paper's appendix C): for L_D = |X_{s,t}(x_s) - sg(X_{s+D,t}(x_s + D b_s))|^2,
        grad L_D / D -> (t - s) grad sum(r^2) as D -> 0, with b_s = x1 - x0 for consistency
        training and b_s a frozen velocity for consistency distillation.
    """

    name = "eulerian"
    uses_jvp = True

    def __init__(
        self,
        *,
        velocity: str = "model",
        space: str = "map",
        stopgrad: str = "teacher",
        interval_weight: bool = False,
        **kw,
    ) -> None:
        super().__init__(**kw)
        if velocity not in ("model", "sample", "teacher"):
            raise ValueError(f"velocity must be 'model', 'sample' or 'teacher'; got {velocity!r}")
        if velocity == "teacher" and self.teacher is None:
            raise ValueError("velocity='teacher' needs a teacher model")
        if space not in ("map", "velocity"):
            raise ValueError(f"space must be 'map' or 'velocity'; got {space!r}")
        if stopgrad not in ("teacher", "none"):
            raise ValueError(f"stopgrad must be 'teacher' or 'none'; got {stopgrad!r}")
        if not isinstance(interval_weight, bool):
            raise ValueError(f"interval_weight must be True or False; got {interval_weight!r}")
        self.velocity, self.space, self.stopgrad = velocity, space, stopgrad
        self.interval_weight = interval_weight

    def off_diagonal_residual(self, model, x0, x1, s, t, generator=None):
        return self._interval_weighted(self._eulerian_residual(model, x0, x1, s, t), s, t)

    def _interval_weighted(self, r: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """r * sqrt(t - s) with interval_weight (so that sum(r^2) carries the factor t - s), else r."""
        if not self.interval_weight:
            return r
        return _expand(torch.sqrt((t - s).clamp_min(0.0)), r) * r

    def _eulerian_residual(self, model, x0, x1, s, t):
        it = model.interpolant.sample(x0, x1, s)
        x_s, b = it.x_t, self._transport_velocity(model, it, s)
        jkw = {"backend": self.backend, "fd_step": self.fd_step}
        if self.space == "map":
            if self.stopgrad == "none":
                _, total = model.jvp(x_s, s, t, dx=b, ds=1.0, **jkw)
                return total
            _, dX_ds = model.jvp(x_s, s, t, ds=1.0, **jkw)
            with torch.no_grad():
                _, transport = model.jvp(x_s, s, t, dx=b, **jkw)
            return dX_ds + transport
        v, dv = model.jvp_velocity(x_s, s, t, dx=b, ds=1.0, **jkw)
        return self._velocity_residual(v, dv, b, s, t)

    def _velocity_residual(self, v: Tensor, dv: Tensor, b: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """MeanFlow's r = v - sg(b + (t - s) dv), dv = d/ds v + grad_x v . b (no sg with stopgrad="none")."""
        target = b + _expand(t - s, v) * dv
        if self.stopgrad == "teacher":
            target = target.detach()
        return v - target

    def residuals(self, model, x0, x1, n_diag, t_diag, s_off, t_off, generator=None):
        # Fused: the diagonal rows and the JVP rows that carry gradients in one call; b (and, for
        # stopgrad="teacher" in X-space, the transport term) in their own no-grad calls.
        n_off = 0 if s_off is None else s_off.shape[0]
        if not self._can_fuse(model, n_diag, n_off, tangent=True):
            return super().residuals(model, x0, x1, n_diag, t_diag, s_off, t_off, generator)
        if self.space == "velocity":  # one call along (ds, dx) = (1, b) for v and dv
            it = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s_off)
            b = self._transport_velocity(model, it, s_off)
            r_diag, _, v, dv = self._fused_tangent(
                model, x0, x1, n_diag, t_diag, s_off, t_off, ds=1.0, dt=0.0, dx=b, velocity_space=True
            )
            return r_diag, self._interval_weighted(self._velocity_residual(v, dv, b, s_off, t_off), s_off, t_off)
        if self.stopgrad == "none":
            # b first (no grad), then one call along (ds, dx) = (1, b): d/ds X + grad_x X . b.
            it = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s_off)
            b = self._transport_velocity(model, it, s_off)
            r_diag, _, _, total = self._fused_tangent(model, x0, x1, n_diag, t_diag, s_off, t_off, ds=1.0, dt=0.0, dx=b)
            return r_diag, self._interval_weighted(total, s_off, t_off)
        r_diag, it, _, dX_ds = self._fused_tangent(model, x0, x1, n_diag, t_diag, s_off, t_off, ds=1.0, dt=0.0)
        b = self._transport_velocity(model, it, s_off)
        with torch.no_grad():
            _, transport = model.jvp(it.x_t, s_off, t_off, dx=b, backend=self.backend, fd_step=self.fd_step)
        return r_diag, self._interval_weighted(dX_ds + transport, s_off, t_off)

    def _transport_velocity(self, model: FlowMap, it: InterpolantSample, s: Tensor) -> Tensor:
        """b_s at x_s = it.x_t: the sample velocity dI_s/ds, or the teacher's / model's own
        velocity under stop-gradient."""
        if self.velocity == "sample":
            return it.dx_t
        with torch.no_grad():
            return self.teacher_velocity(model, it.x_t, s)
