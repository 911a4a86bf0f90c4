"""The flow map module: X_{s,t}(x) = x + (t - s) v_{s,t}(x).

Time convention: t = 0 is noise, t = 1 is data. A flow map sends the state of the
probability-flow ODE dx/dt = b_t(x) at time s to its state at time t, for any s and t.

With this parameterization X_{s,s} = id holds exactly, and the tangent condition
lim_{s -> t} d/dt X_{s,t} = b_t gives v_{t,t} = b_t: the diagonal of the network is an
ordinary flow-matching velocity, usable by any ODE solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowmaps.inputs import check_state
from flowmaps.interpolants import Interpolant, _expand, make_interpolant

TimeLike = float | Tensor

BACKENDS = ("auto", "jvp", "dual", "tangent", "fd")

DEFAULT_FD_STEP = 5e-3
"""Central-difference step in time units when the network states no time scale."""

FD_PHASE = 0.1
"""The default step moves the network's fastest time feature by this many radians: the step is
FD_PHASE / net.time_scale (capped at DEFAULT_FD_STEP), e.g. 1e-4 for the UNet's 1000 s embedding.
Its truncation error (about FD_PHASE^2 / 6 on a sinusoid) stays near float32's round-off there."""


def as_time(t: TimeLike, x: Tensor) -> Tensor:
    """A time (python float, 0-d tensor or (B,) tensor) as a (B,) tensor of x's dtype/device."""
    if isinstance(t, (int, float)):  # a fill on the device: no host-to-device copy (CUDA graphs)
        return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"times must be a scalar or of shape ({x.shape[0]},); got {tuple(t.shape)}")
    return t


class FlowMap(nn.Module):
    """A flow map X_{s,t}(x) = x + (t - s) v_{s,t}(x) around a network v = net(s, t, x).

    Args:
        net: callable module, net(s, t, x) -> v with s, t of shape (B,) (t = 0 noise,
            t = 1 data) and x of shape (B, *D). It may offer net.jvp(s, t, x, ds, dt, dx)
            returning (v, dv) in one sweep (used by backend="tangent"), and state
            ``partial_tangent = True`` when that jvp accepts a tangent for its last rows only
            (the MLP, the UNet): the objectives then run both branches in one call.
        sigma: standard deviation of the Gaussian base x0 ~ N(0, sigma^2 I).
        interpolant: "linear" (I_t = (1 - t) x0 + t x1) or "trig".
        loss_weight: optional module w(s, t) -> (B,), the learned log-variance of the loss.

    The net may state ``net.time_scale``: the fastest angular frequency (radians per unit of s
    or t) of its time conditioning, e.g. the UNet's embedding scale 1000. The finite-difference
    backend then defaults its step to it (see :meth:`resolve_fd_step`).
    """

    def __init__(
        self,
        net: nn.Module,
        sigma: float = 1.0,
        interpolant: str = "linear",
        loss_weight: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.sigma = float(sigma)
        self.interpolant_name = interpolant
        self.interpolant: Interpolant = make_interpolant(interpolant)
        self.loss_weight = loss_weight

    # ------------------------------------------------------------------ inputs
    @property
    def state_shape(self) -> tuple[int | None, ...] | None:
        """D, the shape of one state that the network takes (states are (B, *D)); None entries
        accept any size (the UNet's height and width); None if the network does not say."""
        shape = getattr(self.net, "state_shape", None)
        return None if shape is None else tuple(shape)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype the network computes in (its first floating parameter's), None without one."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def check_state(self, x: Tensor, name: str = "x", finite: bool = False) -> Tensor:
        """x checked against the network's state shape and cast to its dtype; see
        :func:`flowmaps.inputs.check_state` (ValueError naming what was given and what is needed).
        finite=True also refuses inf and NaN (a device sync: the samplers do it once per call)."""
        return check_state(x, name, dtype=self.dtype, state_shape=self.state_shape, finite=finite)

    # ------------------------------------------------------------------ evaluation
    def forward(self, s: TimeLike, t: TimeLike, x: Tensor) -> Tensor:
        """v_{s,t}(x) of the shape of x (B, *D), s and t scalars or (B,) (t = 0 noise, t = 1 data).

        x is cast to the network's dtype; a wrong shape or type raises ValueError.
        """
        x = self.check_state(x)
        return self.net(as_time(s, x), as_time(t, x), x)

    def jump(self, x: Tensor, s: TimeLike, t: TimeLike) -> Tensor:
        """X_{s,t}(x) = x + (t - s) v_{s,t}(x): one network call from time s to time t.

        x: states at time s, (B, *D), cast to the network's dtype (t = 0 noise, t = 1 data);
        s, t: scalars or (B,). Raises ValueError for a wrong shape or type of x or of the times.
        """
        x = self.check_state(x)
        s_, t_ = as_time(s, x), as_time(t, x)
        return x + _expand(t_ - s_, x) * self.net(s_, t_, x)

    def velocity(self, x: Tensor, t: TimeLike) -> Tensor:
        """The flow-matching velocity b_t(x) = v_{t,t}(x) (t = 0 noise, t = 1 data).

        x: (B, *D), cast to the network's dtype; t: a scalar or (B,). ValueError on a wrong shape.
        """
        x = self.check_state(x)
        t_ = as_time(t, x)
        return self.net(t_, t_, x)

    def noise(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw base samples x0 ~ N(0, sigma^2 I) of the given shape."""
        p = next(self.parameters(), None)
        device = device if device is not None else (p.device if p is not None else "cpu")
        dtype = dtype if dtype is not None else (p.dtype if p is not None else torch.float32)
        return self.sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def log_weight(self, s: Tensor, t: Tensor) -> Tensor | None:
        """The learned per-sample log-variance w_{s,t} of shape (B,), or None if constant."""
        if self.loss_weight is None:
            return None
        return self.loss_weight(s, t).reshape(-1)

    # ------------------------------------------------------------------ derivatives
    def resolve_backend(self, backend: str) -> str:
        """The derivative backend that "auto" stands for: the net's own tangent pass if it has one."""
        if backend == "auto":
            return "tangent" if hasattr(self.net, "jvp") else "jvp"
        return backend

    def resolve_fd_step(self, fd_step: float | None = None) -> float:
        """The central-difference step (time units) of backend "fd": fd_step when given, else
        FD_PHASE / net.time_scale capped at DEFAULT_FD_STEP (1e-4 for the UNet, whose sinusoidal
        embedding of 1000 s turns a step of 5e-3 into 5 radians), else DEFAULT_FD_STEP (5e-3).

        Raises:
            ValueError: fd_step is not a finite number > 0.
        """
        if fd_step is not None:
            if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float)) or not 0 < fd_step < math.inf:
                raise ValueError(f"fd_step (the finite-difference step) must be a number > 0; got {fd_step!r}")
            return float(fd_step)
        scale = getattr(self.net, "time_scale", None)
        if scale is None or not 0 < float(scale) < math.inf:
            return DEFAULT_FD_STEP
        return min(DEFAULT_FD_STEP, FD_PHASE / float(scale))

    def jvp_velocity(
        self,
        x: Tensor,
        s: TimeLike,
        t: TimeLike,
        dx: Tensor | None = None,
        ds: TimeLike = 0.0,
        dt: TimeLike = 0.0,
        backend: str = "auto",
        fd_step: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """v_{s,t}(x) and its directional derivative along the tangent (ds, dt, dx).

        Backends: "jvp" (torch.func forward mode), "dual" (torch.autograd.forward_ad dual
        tensors, the same maths without functorch's wrapping), "tangent" (the net's own tangent pass),
        "fd" (central difference with step fd_step, bias O(fd_step^2); None takes the network's
        own step, see resolve_fd_step), "auto" (tangent if the network provides one, else jvp).
        Gradients flow through both outputs.
        x and dx: (B, *D), cast to the network's dtype (ValueError on a wrong shape or type).
        """
        x = self.check_state(x)
        if dx is not None:
            dx = self.check_state(dx, "dx")
            if dx.shape != x.shape:
                raise ValueError(f"dx has shape {tuple(dx.shape)}; it must have the shape of x, {tuple(x.shape)}")
        s_, t_ = as_time(s, x), as_time(t, x)
        ds_, dt_ = as_time(ds, x), as_time(dt, x)
        dx_ = torch.zeros_like(x) if dx is None else dx
        backend = self.resolve_backend(backend)
        if backend == "tangent":
            if not hasattr(self.net, "jvp"):
                raise ValueError(f"{type(self.net).__name__} has no tangent pass; use backend='jvp' or 'fd'")
            return self.net.jvp(s_, t_, x, ds_, dt_, dx_)
        if backend == "jvp":
            return torch.func.jvp(self.net, (s_, t_, x), (ds_, dt_, dx_))
        if backend == "dual":
            import torch.autograd.forward_ad as fwAD

            with fwAD.dual_level():
                out = self.net(fwAD.make_dual(s_, ds_), fwAD.make_dual(t_, dt_), fwAD.make_dual(x, dx_))
                v, dv = fwAD.unpack_dual(out)
            if dv is None:  # the output does not depend on the tangent's inputs
                dv = torch.zeros_like(v)
            return v, dv
        if backend == "fd":
            h = self.resolve_fd_step(fd_step)
            v_plus = self.net(s_ + h * ds_, t_ + h * dt_, x + h * dx_)
            v_minus = self.net(s_ - h * ds_, t_ - h * dt_, x - h * dx_)
            v = self.net(s_, t_, x)
            return v, (v_plus - v_minus) / (2.0 * h)
        raise ValueError(f"unknown derivative backend {backend!r}; choose one of {BACKENDS}")

    def jvp(
        self,
        x: Tensor,
        s: TimeLike,
        t: TimeLike,
        dx: Tensor | None = None,
        ds: TimeLike = 0.0,
        dt: TimeLike = 0.0,
        backend: str = "auto",
        fd_step: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """X_{s,t}(x) and its directional derivative along (ds, dt, dx).

        With X = x + (t - s) v: dX = dx + (dt - ds) v + (t - s) dv.
        For example jvp(x, s, t, dt=1) gives (X, d/dt X) for the Lagrangian loss and
        jvp(x, s, t, ds=1) gives (X, d/ds X) for the Eulerian one.
        x and dx: (B, *D), cast to the network's dtype (ValueError on a wrong shape or type).
        """
        x = self.check_state(x)
        if dx is not None:
            dx = self.check_state(dx, "dx")
        s_, t_ = as_time(s, x), as_time(t, x)
        ds_, dt_ = as_time(ds, x), as_time(dt, x)
        v, dv = self.jvp_velocity(x, s_, t_, dx, ds_, dt_, backend=backend, fd_step=fd_step)
        return map_tangent(x, s_, t_, v, dv, ds_, dt_, dx)


def map_tangent(
    x: Tensor, s: Tensor, t: Tensor, v: Tensor, dv: Tensor, ds: Tensor, dt: Tensor, dx: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """X = x + (t - s) v and its derivative dX = dx + (dt - ds) v + (t - s) dv, from the velocity
    v and its derivative dv along the tangent (ds, dt, dx); times of shape (B,) or broadcastable."""
    X = x + _expand(t - s, x) * v
    dX = _expand(dt - ds, x) * v + _expand(t - s, x) * dv
    return X, (dX if dx is None else dX + dx)


VelocityFn = Callable[[Tensor, Tensor], Tensor]
