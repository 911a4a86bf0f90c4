"""Self-distillation objectives for flow maps (Boffi, Albergo, Vanden-Eijnden, 2025).

Time convention: t = 0 is noise, t = 1 is data. x0 ~ N(0, sigma^2 I) is noise, x1 is data,
I_t = alpha_t x0 + beta_t x1 the interpolant (linear by default: I_t = (1 - t) x0 + t x1).

Every objective is the sum of two branches, each computed only on its own part of the batch:

- diagonal (flow matching), a fraction eta of the batch, t ~ U[0, 1]:
      r = v_{t,t}(I_t) - dI_t/dt
- off-diagonal (distillation), the rest, (s, t) uniform on s < t, all starting at I_s:
      Lagrangian (LSD):  r = d/dt X_{s,t}(I_s) - sg(v_{t,t}(sg(X_{s,t}(I_s))))
      Eulerian (ESD):    r = d/ds X_{s,t}(I_s) + grad_x X_{s,t}(I_s) . sg(v_{s,s}(I_s))
                         (the gradient flows through both terms; only the velocity is the teacher.
                         The semigradient with the whole transport term under sg is an option,
                         Eulerian(stopgrad="teacher"): it diverges on the paper's 2-D recipe)
      Progressive (PSD): u = gamma s + (1 - gamma) t,
                         r = v_{s,t}(I_s) - sg((1 - gamma) v_{s,u}(I_s) + gamma v_{u,t}(X_{s,u}(I_s)))

sg is stop-gradient; the teacher is the current weights under sg (self-distillation), or a
frozen pre-trained model (the distillation variants LMD, EMD, progressive distillation).

Each per-sample term is exp(-w_{s,t}) * sum(r^2) + w_{s,t} when the flow map has a learned
log-variance w, else sum(r^2); sum(r^2) sums over dimensions. Reduction "mean" averages all
samples of the batch (the released code: a 3:1 weight between the branches at eta = 0.75);
"sum_of_means" adds the mean of each branch (the paper's Algorithm 1).

Known methods as presets of the same classes (see make_objective):
  MeanFlow              = Eulerian, velocity "sample" (dI_s/ds = x1 - x0), residual in v-space
  consistency training  = Eulerian, velocity "sample", residual in v-space, each term weighted
                          by t - s (the paper's appendix C.2)
  consistency distill.  = Eulerian, velocity "teacher" (a frozen velocity), residual in v-space,
                          weighted by t - s (appendix C.1; also Align Your Flow)
  Eulerian map distill. = Eulerian, velocity "teacher", residual in X-space (gradient through
                          d/ds X): a different update from consistency distillation
  shortcut models       = Progressive, gamma = 1/2 on the dyadic grid of step sizes 1 ... 1/64,
                          the finest level's half-steps (1/128) taken with the diagonal velocity
                          (the shortcut paper's 128-step setting, flow matching at its finest step)
The weight t - s of CT and CD is what makes their gradient the limit of a discrete step: for
L_D = |X_{s,t}(x_s) - sg(X_{s+D,t}(x_s + D b))|^2 (b = x1 - x0, or the teacher's velocity),
grad L_D / D -> (t - s) grad sum(r^2) with r the v-space residual, as D -> 0
(tests/test_presets.py checks this against discrete steps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from flowmaps.flowmap import FlowMap, map_tangent
from flowmaps.interpolants import InterpolantSample, _expand
from flowmaps.timesampling import DYADIC_MIN_STEP, diagonal_times, off_diagonal_times, split_batch

REDUCTIONS = ("mean", "sum_of_means")


@dataclass
class LossOutput:
    """The scalar loss to minimise and float logs per term (mean squared residual per branch)."""

    loss: Tensor
    logs: dict[str, float | Tensor] = field(default_factory=dict)


def _sq(r: Tensor) -> Tensor:
    """Per-sample sum of squares over all non-batch dimensions, shape (B,)."""
    return r.reshape(r.shape[0], -1).pow(2).sum(dim=1)


def _active_dropouts(model: nn.Module) -> list[nn.Dropout]:
    """The dropout layers that would drop something now (train mode, p > 0)."""
    return [m for m in model.modules() if isinstance(m, nn.Dropout) and m.training and m.p > 0]


@contextlib.contextmanager
def _dropout_off(model: nn.Module):
    """Disable dropout layers only (dropout belongs to the diagonal branch alone)."""
    drops = _active_dropouts(model)
    for m in drops:
        m.eval()
    try:
        yield
    finally:
        for m in drops:
            m.train()


class Objective(nn.Module):
    """Base class: the batch split, the diagonal term, weighting and reduction.

    Args:
        eta: fraction of the batch on the diagonal (flow matching); the paper uses 0.75.
        reduction: "mean" (average over every sample) or "sum_of_means".
        backend: derivative backend for JVPs: "auto", "jvp", "tangent" or "fd".
        fd_step: step of the central difference when backend="fd" (time units); None (default)
            takes the network's own step (FlowMap.resolve_fd_step: 1e-4 for the UNet, 5e-3 else).
        times: off-diagonal time sampler, "uniform" (triangle s < t) or "dyadic".
        teacher: None for self-distillation, else a frozen model (a FlowMap, or for the
            Lagrangian/Eulerian families any callable velocity(x, t)). It is not a submodule:
            it is neither trained nor saved with the objective.
        diagonal_target: "interpolant" (dI_t/dt, flow matching on data) or "teacher"
            (the teacher's velocity; the default when a teacher is given).
        fuse_branches: where a subclass can, run the diagonal rows and the off-diagonal rows
            that need gradients in one network call (same loss and gradients, fewer and larger
            kernels); it never fuses while dropout is active (dropout belongs to the diagonal).
        return_logs: True: per-term logs as floats; "tensor": as detached 0-d tensors; False:
            none. The last two never synchronise with the host, so a whole training step can be
            captured in a CUDA graph (see flowmaps.graphs).
    """

    name = "objective"
    has_off_diagonal = True
    supports_tensor_logs = True
    uses_jvp = False  # whether the loss differentiates the network in forward mode

    def __init__(
        self,
        *,
        eta: float = 0.75,
        reduction: str = "mean",
        backend: str = "auto",
        fd_step: float | None = None,
        times: str = "uniform",
        teacher: nn.Module | Callable | None = None,
        diagonal_target: str | None = None,
        fuse_branches: bool = True,
        return_logs: bool | str = True,
    ) -> None:
        super().__init__()
        split_batch(2, eta)  # validates eta
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
        if fd_step is not None and not (isinstance(fd_step, (int, float)) and fd_step > 0):
            raise ValueError(f"fd_step (the finite-difference step) must be a number > 0 or None; got {fd_step!r}")
        if times not in ("uniform", "dyadic"):
            raise ValueError(f"unknown time sampler {times!r}; choose 'uniform' or 'dyadic'")
        self.eta, self.reduction, self.backend, self.fd_step, self.times = eta, reduction, backend, fd_step, times
        self._teacher = [teacher] if teacher is not None else []
        if diagonal_target is None:
            diagonal_target = "teacher" if teacher is not None else "interpolant"
        if diagonal_target not in ("interpolant", "teacher"):
            raise ValueError(f"diagonal_target must be 'interpolant' or 'teacher'; got {diagonal_target!r}")
        if diagonal_target == "teacher" and teacher is None:
            raise ValueError("diagonal_target='teacher' needs a teacher model")
        self.diagonal_target = diagonal_target
        if return_logs not in (True, False, "tensor"):
            raise ValueError(f"return_logs must be True, False or 'tensor'; got {return_logs!r}")
        self.fuse_branches, self.return_logs = bool(fuse_branches), return_logs

    @property
    def teacher(self):
        return self._teacher[0] if self._teacher else None

    def teacher_velocity(self, model: FlowMap, x: Tensor, t: Tensor) -> Tensor:
        """The teacher's velocity at (x, t): the frozen teacher's, or the model's own diagonal."""
        teacher = self.teacher
        if teacher is None:
            return model.velocity(x, t)
        if isinstance(teacher, FlowMap):
            return teacher.velocity(x, t)
        return teacher(x, t)

    # ---------------------------------------------------------------- branches
    def diagonal_residual(self, model: FlowMap, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """r = v_{t,t}(I_t) - target, target dI_t/dt (or the teacher's velocity)."""
        it = model.interpolant.sample(x0, x1, t)
        if self.diagonal_target == "teacher":
            with torch.no_grad():
                target = self.teacher_velocity(model, it.x_t, t)
        else:
            target = it.dx_t
        return model.velocity(it.x_t, t) - target

    def off_diagonal_residual(
        self, model: FlowMap, x0: Tensor, x1: Tensor, s: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The distillation residual r of shape (B, *D) for pairs starting at I_s, s < t."""
        raise NotImplementedError

    def residuals(
        self,
        model: FlowMap,
        x0: Tensor,
        x1: Tensor,
        n_diag: int,
        t_diag: Tensor | None,
        s_off: Tensor | None,
        t_off: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Both branches' residuals: the first n_diag rows on the diagonal at t_diag, the rest
        off it at (s_off, t_off) (None for an empty branch). Subclasses may compute both in one
        network call, with the same result."""
        r_diag = self.diagonal_residual(model, x0[:n_diag], x1[:n_diag], t_diag) if t_diag is not None else None
        r_off = None
        if s_off is not None:
            with _dropout_off(model):
                r_off = self.off_diagonal_residual(model, x0[n_diag:], x1[n_diag:], s_off, t_off, generator)
        return r_diag, r_off

    def _can_fuse(self, model: FlowMap, n_diag: int, n_off: int, tangent: bool) -> bool:
        """Whether one network call may serve the diagonal rows and the off-diagonal rows: both
        branches are present, the diagonal target needs no call of its own, no dropout is active
        (the branches differ there) and, for a JVP, the net takes a tangent on its last rows only
        and the derivative is exact (tangent pass)."""
        if not (self.fuse_branches and n_diag and n_off and self.diagonal_target == "interpolant"):
            return False
        if tangent:
            if model.resolve_backend(self.backend) != "tangent" or not getattr(model.net, "partial_tangent", False):
                return False
        return not _active_dropouts(model)

    def _fused_tangent(
        self,
        model: FlowMap,
        x0: Tensor,
        x1: Tensor,
        n_diag: int,
        t_diag: Tensor,
        s: Tensor,
        t: Tensor,
        ds: float,
        dt: float,
        dx: Tensor | None = None,
    ) -> tuple[Tensor, InterpolantSample, Tensor, Tensor]:
        """One call of net.jvp on rows [diagonal; off-diagonal] with the tangent (ds, dt) on the
        off-diagonal rows only. Returns the diagonal residual, the interpolant sample at s (x_s =
        I_s and dI_s/ds), X_{s,t}(x_s) and its derivative along (ds, dt)."""
        diag = model.interpolant.sample(x0[:n_diag], x1[:n_diag], t_diag)
        it = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s)
        x_s = it.x_t
        ds_, dt_ = torch.full_like(s, ds), torch.full_like(s, dt)
        dx_ = torch.zeros_like(x_s) if dx is None else dx
        v, dv = model.net.jvp(torch.cat([t_diag, s]), torch.cat([t_diag, t]), torch.cat([diag.x_t, x_s]), ds_, dt_, dx_)
        X, dX = map_tangent(x_s, s, t, v[n_diag:], dv, ds_, dt_, dx_)
        return v[:n_diag] - diag.dx_t, it, X, dX

    def _log(self, value: Tensor) -> float | Tensor:
        value = value.detach()
        return value if self.return_logs == "tensor" else value.item()

    def _weighted(self, model: FlowMap, s: Tensor, t: Tensor, sq: Tensor) -> Tensor:
        w = model.log_weight(s, t)
        if w is None:
            return sq
        return torch.exp(-w) * sq + w

    def min_batch_size(self) -> int:
        """The smallest batch (per rank) that gives every branch with a positive share a sample:
        2 when 0 < eta < 1 and the objective has an off-diagonal branch, else 1."""
        eta = self.eta if self.has_off_diagonal else 1.0
        return 2 if 0.0 < eta < 1.0 else 1

    def check_batch_size(self, batch_size: int, world_size: int = 1) -> None:
        """Refuse a per-rank batch that would leave a branch of this objective empty.

        split_batch rounds eta * B: a batch of one at 0 < eta < 1 has no off-diagonal sample, and
        the step would train flow matching alone under this method's name.

        Raises:
            ValueError: naming the batch per rank and the global batch size that is needed.
        """
        need = self.min_batch_size()
        if batch_size >= need:
            return
        method = getattr(self, "method", self.name)
        ranks = f" over {world_size} ranks" if world_size > 1 else ""
        samples = "sample" if batch_size == 1 else "samples"
        raise ValueError(
            f"batch size {batch_size * world_size}{ranks} gives {batch_size} {samples} per rank, but method {method!r} "
            f"at eta={self.eta:g} needs at least {need} per rank (one on the diagonal, one off it): "
            f"use a batch size of at least {need * world_size}"
        )

    def forward(
        self,
        model: FlowMap,
        x1: Tensor,
        x0: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """The loss on a batch of data x1 (B, *D); x0 noise of the same shape (drawn if None).

        Raises ValueError when the batch would leave a branch empty (see check_batch_size)."""
        self.check_batch_size(x1.shape[0])
        if x0 is None:
            x0 = model.sigma * torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape; got {tuple(x0.shape)} and {tuple(x1.shape)}")
        batch = x1.shape[0]
        eta = self.eta if self.has_off_diagonal else 1.0
        n_diag, n_off = split_batch(batch, eta)
        kw = {"generator": generator, "device": x1.device, "dtype": x1.dtype}
        branch_sums, branch_counts = [], []
        logs: dict[str, float] = {}
        t_diag = diagonal_times(n_diag, **kw) if n_diag else None
        s_off, t_off = off_diagonal_times(n_off, kind=self.times, **kw) if n_off else (None, None)
        r_diag, r_off = self.residuals(model, x0, x1, n_diag, t_diag, s_off, t_off, generator)
        if n_diag:
            sq = _sq(r_diag)
            branch_sums.append(self._weighted(model, t_diag, t_diag, sq).sum())
            branch_counts.append(n_diag)
            if self.return_logs:
                logs["diagonal"] = self._log(sq.mean())
        if n_off:
            sq = _sq(r_off)
            branch_sums.append(self._weighted(model, s_off, t_off, sq).sum())
            branch_counts.append(n_off)
            if self.return_logs:
                logs[self.name] = self._log(sq.mean())
        if self.reduction == "mean":
            loss = sum(branch_sums) / batch
        else:
            loss = sum(total / n for total, n in zip(branch_sums, branch_counts))
        if self.return_logs:
            logs["loss"] = self._log(loss)
        return LossOutput(loss=loss, logs=logs)


class FlowMatching(Objective):
    """Flow matching alone: the whole batch on the diagonal, r = v_{t,t}(I_t) - dI_t/dt."""

    name = "fm"
    has_off_diagonal = False


class Lagrangian(Objective):
    """Lagrangian self-distillation (LSD): d/dt X_{s,t}(x) = v_{t,t}(X_{s,t}(x)).

    r = d/dt X_{s,t}(I_s) - sg(v_{t,t}(sg(X_{s,t}(I_s)))); X and its t-derivative come from
    one forward-mode pass, and the gradient flows only through the t-derivative.

    stopgrad: "teacher" (the paper), "input" (sg only on X fed to the teacher; the gradient
    also flows through the teacher's weights) or "none" (full gradient).
    With a teacher (a frozen velocity) this is Lagrangian map distillation (LMD).

    With fuse_branches (the default) and a network that takes a partial tangent (the UNet),
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
        target = b + _expand(t - s, x_s) * dv
        if self.stopgrad == "teacher":
            target = target.detach()
        return v - target

    def residuals(self, model, x0, x1, n_diag, t_diag, s_off, t_off, generator=None):
        # Fused X-space residual: the diagonal rows and the JVP rows that carry gradients in one
        # call; b (and, for stopgrad="teacher", the transport term) in their own no-grad calls.
        n_off = 0 if s_off is None else s_off.shape[0]
        if self.space != "map" or not self._can_fuse(model, n_diag, n_off, tangent=True):
            return super().residuals(model, x0, x1, n_diag, t_diag, s_off, t_off, generator)
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
        return v[:n_diag] - diag.dx_t, v[n_diag:] - target


# --------------------------------------------------------------------------- presets
PRESETS: dict[str, tuple[type[Objective], dict]] = {
    "fm": (FlowMatching, {}),
    "lsd": (Lagrangian, {}),
    "esd": (Eulerian, {"stopgrad": "none"}),
    "psd-u": (Progressive, {"gamma": "uniform"}),
    "psd-m": (Progressive, {"gamma": 0.5}),
    "meanflow": (Eulerian, {"velocity": "sample", "space": "velocity"}),
    "ct": (Eulerian, {"velocity": "sample", "space": "velocity", "interval_weight": True}),
    "shortcut": (Progressive, {"gamma": 0.5, "times": "dyadic", "min_step": DYADIC_MIN_STEP}),
    # teacher distillation: pass teacher=<frozen FlowMap or velocity(x, t)>
    "lmd": (Lagrangian, {}),
    "emd": (Eulerian, {"velocity": "teacher"}),
    "cd": (Eulerian, {"velocity": "teacher", "space": "velocity", "interval_weight": True}),
    "pd": (Progressive, {"gamma": 0.5}),
}
SELF_DISTILLATION = ("fm", "lsd", "esd", "psd-u", "psd-m", "meanflow", "ct", "shortcut")
DISTILLATION = ("lmd", "emd", "cd", "pd")

DESCRIPTIONS = {
    "fm": "flow matching only (the diagonal); sample it with an ODE solver",
    "lsd": "Lagrangian self-distillation: d/dt X_{s,t} = v_{t,t}(X_{s,t})",
    "esd": "Eulerian self-distillation: d/ds X_{s,t} + grad X . v_{s,s} = 0",
    "psd-u": "progressive self-distillation, gamma ~ U[0, 1]",
    "psd-m": "progressive self-distillation, gamma = 1/2",
    "meanflow": "MeanFlow: Eulerian with the sample velocity x1 - x0, v-space residual",
    "ct": "consistency training (continuous time): MeanFlow's v-space residual weighted by t - s",
    "shortcut": "shortcut model: PSD-M on the dyadic steps 1 ... 1/64, the finest from the diagonal velocity",
    "lmd": "Lagrangian map distillation from a frozen velocity",
    "emd": "Eulerian map distillation from a frozen velocity (X-space residual)",
    "cd": "consistency distillation / Align Your Flow: v-space residual from a frozen velocity, weighted by t - s",
    "pd": "progressive distillation from a frozen flow map",
}


def make_objective(name: str, **kwargs) -> Objective:
    """Build an objective by name (see PRESETS); keyword arguments override the preset's.

    The distillation presets ("lmd", "emd", "cd", "pd") need teacher=...
    """
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(PRESETS)}")
    cls, preset = PRESETS[key]
    if key in DISTILLATION and kwargs.get("teacher") is None:
        raise ValueError(f"method {key!r} distils a frozen model: pass teacher=<model>")
    obj = cls(**{**preset, **kwargs})
    obj.method = key
    return obj
