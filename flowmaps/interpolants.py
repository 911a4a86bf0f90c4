"""Stochastic interpolants between noise and data.

Time convention (everywhere in flowmaps): t = 0 is noise x0, t = 1 is data x1.

An interpolant is I_t = alpha(t) x0 + beta(t) x1 with alpha(0) = beta(1) = 1 and
alpha(1) = beta(0) = 0. Its time derivative dI_t/dt = alpha'(t) x0 + beta'(t) x1 is the
conditional velocity whose conditional mean E[dI_t/dt | I_t = x] is the flow-matching
velocity b_t(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class InterpolantSample:
    """A point on the interpolant and its time derivative, both of the shape of x0."""

    x_t: Tensor
    dx_t: Tensor


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """Reshape times of shape (B,) to (B, 1, ..., 1) so they broadcast against `like`."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


class Interpolant:
    """Base class: subclasses define alpha, beta and their derivatives.

    All methods take t (t = 0 noise, t = 1 data) as a tensor of any shape.
    """

    name = "base"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dbeta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> InterpolantSample:
        """I_t and dI_t/dt for noise x0 (B, *D), data x1 (B, *D) and times t (B,)."""
        tt = _expand(t, x0)
        x_t = self.alpha(tt) * x0 + self.beta(tt) * x1
        dx_t = self.dalpha(tt) * x0 + self.dbeta(tt) * x1
        return InterpolantSample(x_t=x_t, dx_t=dx_t)


class LinearInterpolant(Interpolant):
    """I_t = (1 - t) x0 + t x1, so dI_t/dt = x1 - x0 (the paper's choice)."""

    name = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def beta(self, t: Tensor) -> Tensor:
        return t

    def dalpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(torch.as_tensor(t))

    def dbeta(self, t: Tensor) -> Tensor:
        return torch.ones_like(torch.as_tensor(t))


class TrigInterpolant(Interpolant):
    """I_t = cos(pi t / 2) x0 + sin(pi t / 2) x1 (variance preserving for unit-variance data)."""

    name = "trig"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def beta(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def dbeta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)


INTERPOLANTS = {"linear": LinearInterpolant, "trig": TrigInterpolant}


def make_interpolant(name: str = "linear") -> Interpolant:
    """Build an interpolant by name: "linear" or "trig"."""
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; choose one of {sorted(INTERPOLANTS)}")
    return INTERPOLANTS[name]()
