"""An exact flow map for tests: Gaussian noise N(0, sigma^2 I) to Gaussian data N(m, c^2 I).

Time convention: t = 0 noise, t = 1 data. With the linear interpolant,
I_t ~ N(t m, a_t^2 I) with a_t^2 = (1 - t)^2 sigma^2 + t^2 c^2, and the flow map is affine:
    X_{s,t}(x) = t m + (a_t / a_s)(x - s m),
so v_{s,t}(x) = m + ((a_t / a_s - 1) / (t - s)) (x - s m), whose diagonal is
b_t(x) = m + (a_t' / a_t)(x - t m).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GaussianFlowNet(nn.Module):
    """v_{s,t}(x) of the exact Gaussian flow, plus eps * perturbation (eps = 0: exact)."""

    def __init__(self, mean: Tensor, c: float, sigma: float, eps: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.c, self.sigma = c, sigma
        # A learnable perturbation: eps * tanh(W x + u s + w t); eps is a parameter so gradients exist.
        d = mean.numel()
        g = torch.Generator().manual_seed(0)
        self.eps = nn.Parameter(torch.tensor(eps, dtype=mean.dtype))
        self.W = nn.Parameter(torch.randn(d, d, generator=g, dtype=mean.dtype))
        self.u = nn.Parameter(torch.randn(d, generator=g, dtype=mean.dtype))
        self.w = nn.Parameter(torch.randn(d, generator=g, dtype=mean.dtype))

    def a(self, t: Tensor) -> Tensor:
        return torch.sqrt((1 - t) ** 2 * self.sigma**2 + t**2 * self.c**2)

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        a_s, a_t = self.a(s), self.a(t)
        da_t = (-(1 - t) * self.sigma**2 + t * self.c**2) / a_t
        gap = t - s
        safe = torch.where(gap.abs() < 1e-9, torch.ones_like(gap), gap)
        ratio = torch.where(gap.abs() < 1e-9, da_t / a_t, (a_t / a_s - 1) / safe)
        exact = self.mean + ratio[:, None] * (x - s[:, None] * self.mean)
        pert = torch.tanh(x @ self.W.T + s[:, None] * self.u + t[:, None] * self.w)
        return exact + self.eps * pert


def exact_map(mean: Tensor, c: float, sigma: float, x: Tensor, s: float, t: float) -> Tensor:
    a = lambda u: ((1 - u) ** 2 * sigma**2 + u**2 * c**2) ** 0.5  # noqa: E731
    return t * mean + (a(t) / a(s)) * (x - s * mean)
