"""The 2-D network of the paper: an MLP on [s, t, x / sigma] with a hand-written tangent pass.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _act_and_grad(name: str, h: Tensor) -> tuple[Tensor, Tensor]:
    """Activation a(h) and its derivative a'(h), elementwise."""
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(h * _INV_SQRT2))
        pdf = _INV_SQRT2PI * torch.exp(-0.5 * h * h)
        return h * cdf, cdf + h * pdf
    if name == "silu":
        sig = torch.sigmoid(h)
        return h * sig, sig * (1.0 + h * (1.0 - sig))
    if name == "tanh":
        a = torch.tanh(h)
        return a, 1.0 - a * a
    raise ValueError(f"unknown activation {name!r}; choose gelu, silu or tanh")


_ACTS = {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


class MLP(nn.Module):
    """v_{s,t}(x) = sigma * F([s, t, x / sigma]) for points x of shape (B, dim).

    Args:
        dim: data dimension (2 for the toy sets).
        width: hidden width (the paper: 512).
        depth: number of hidden layers (the paper: 4).
        sigma: preconditioning scale, the base noise std.
        activation: "gelu" (the paper), "silu" or "tanh".

    Besides forward, `jvp(s, t, x, ds, dt, dx)` returns (v, dv), the output and its
    directional derivative along (ds, dt, dx), propagating the tangent through the
    layers by hand: one GEMM per layer for primal and tangent together.
    """

    def __init__(
        self, dim: int = 2, width: int = 512, depth: int = 4, sigma: float = 1.0, activation: str = "gelu"
    ) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be >= 1; got {dim}, {width}, {depth}")
        self.config = {
            "name": "mlp",
            "dim": dim,
            "width": width,
            "depth": depth,
            "sigma": float(sigma),
            "activation": activation,
        }
        self.dim, self.sigma, self.activation = dim, float(sigma), activation
        sizes = [dim + 2] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(width, dim)

    @classmethod
    def from_config(cls, config: dict) -> MLP:
        kw = {k: v for k, v in config.items() if k != "name"}
        return cls(**kw)

    def _inputs(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        return torch.cat([s[:, None], t[:, None], x / self.sigma], dim=1)

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """v of shape (B, dim) for s, t of shape (B,) and x of shape (B, dim)."""
        act = _ACTS[self.activation]
        h = self._inputs(s, t, x)
        for layer in self.hidden:
            h = act(layer(h))
        return self.sigma * self.out(h)

    def jvp(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """(v, dv): the output and its derivative along the tangent (ds, dt, dx), in one sweep."""
        b = x.shape[0]
        h = self._inputs(s, t, x)
        dh = self._inputs(ds, dt, dx)
        for layer in self.hidden:
            # One GEMM for primal and tangent stacked on the batch axis; the bias enters the primal only.
            z = torch.cat([h, dh], dim=0) @ layer.weight.T
            pre, dpre = z[:b] + layer.bias, z[b:]
            a, da = _act_and_grad(self.activation, pre)
            h, dh = a, da * dpre
        z = torch.cat([h, dh], dim=0) @ self.out.weight.T
        return self.sigma * (z[:b] + self.out.bias), self.sigma * z[b:]
