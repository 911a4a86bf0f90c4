"""The part every objective shares: the batch split, the diagonal term, weighting, reduction, fusion.

Time convention: t = 0 is noise, t = 1 is data. x0 ~ N(0, sigma^2 I) is noise, x1 is data,
I_t = alpha_t x0 + beta_t x1 the interpolant.

A batch of B samples splits into n_diag = round(eta B) rows on the diagonal (flow matching,
t ~ U[0, 1], r = v_{t,t}(I_t) - dI_t/dt) and n_off = B - n_diag rows off it ((s, t), s < t, all
starting at I_s), whose residual each family defines (``off_diagonal_residual``). Each
per-sample term is exp(-w_{s,t}) sum(r^2) + w_{s,t} with a learned log-variance w (the paper's
adaptive weighting), else sum(r^2). Reduction "mean" averages every sample of the batch (the
released code); "sum_of_means" adds each branch's mean (the paper's Algorithm 1).

Branch fusion: on a network whose tangent pass takes a tangent for its last rows only
(``net.partial_tangent``: the MLP and the UNet), the diagonal rows and the off-diagonal rows that
carry gradients run in one network call; the loss and gradients are those of separate calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from flowmaps.flowmap import FlowMap, map_tangent
from flowmaps.interpolants import InterpolantSample
from flowmaps.timesampling import OFF_DIAGONAL_KINDS, diagonal_times, off_diagonal_times, split_batch

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
        times: off-diagonal time sampler, "uniform" (triangle s < t), "square" (s, t independent:
            forward and backward jumps), "dyadic", "gap_uniform" or "late" (flowmaps.timesampling.off_diagonal_times).
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
            captured in a CUDA graph (see flowmaps.training.cuda_graphs).
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
        if times not in OFF_DIAGONAL_KINDS:
            raise ValueError(f"unknown time sampler {times!r}; choose one of {OFF_DIAGONAL_KINDS}")
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
        return model.velocity(it.x_t, t) - self._diagonal_target(model, it, t)

    def _diagonal_target(self, model: FlowMap, it: InterpolantSample, t: Tensor) -> Tensor:
        """dI_t/dt, or the frozen teacher's velocity at I_t (under no_grad)."""
        if self.diagonal_target != "teacher":
            return it.dx_t
        with torch.no_grad():
            return self.teacher_velocity(model, it.x_t, t)

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
        branches are present, no dropout is active (the branches differ there) and, for a JVP,
        the net takes a tangent on its last rows only and the derivative is exact (tangent pass).
        A teacher's diagonal target keeps its own no-grad call."""
        if not (self.fuse_branches and n_diag and n_off):
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
        velocity_space: bool = False,
    ) -> tuple[Tensor, InterpolantSample, Tensor, Tensor]:
        """One call of net.jvp on rows [diagonal; off-diagonal] with the tangent (ds, dt, dx) on
        the off-diagonal rows only. Returns the diagonal residual, the interpolant sample at s
        (x_s = I_s and dI_s/ds), and X_{s,t}(x_s) with its derivative along the tangent (or, with
        velocity_space, v_{s,t}(x_s) with its derivative)."""
        diag = model.interpolant.sample(x0[:n_diag], x1[:n_diag], t_diag)
        it = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s)
        x_s = it.x_t
        ds_, dt_ = torch.full_like(s, ds), torch.full_like(s, dt)
        dx_ = torch.zeros_like(x_s) if dx is None else dx
        v, dv = model.net.jvp(torch.cat([t_diag, s]), torch.cat([t_diag, t]), torch.cat([diag.x_t, x_s]), ds_, dt_, dx_)
        r_diag = v[:n_diag] - self._diagonal_target(model, diag, t_diag)
        if velocity_space:
            return r_diag, it, v[n_diag:], dv
        X, dX = map_tangent(x_s, s, t, v[n_diag:], dv, ds_, dt_, dx_)
        return r_diag, it, X, dX

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
