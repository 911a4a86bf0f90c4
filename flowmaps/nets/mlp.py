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
        fourier: number of random Fourier features of x (0, the default: none). With m > 0 the
            input row becomes ``[s, t, y, sin(y B), cos(y B)]`` with ``y = x / sigma`` and a fixed
            (not trained) frequency matrix ``B`` of shape (dim, m), entries drawn once from
            ``N(0, fourier_scale^2)`` by a generator seeded with ``fourier_seed``; ``B`` is also a
            buffer of the state dict, so a checkpoint carries it. Sharp features in x (the edges
            of the checkerboard's squares) are then a few units away instead of many.
        fourier_scale: standard deviation of the frequencies (per unit of x / sigma).
        fourier_time_scale: standard deviation of the features' frequencies along s and t
            (0, the default: the features depend on x only). With it the features are
            ``sin(z B)``, ``cos(z B)`` of the whole row ``z = [s, t, y]``, ``B`` of shape (dim + 2, m).
        fourier_seed: seed of the frequencies' generator.
        init: "default" (PyTorch's ``nn.Linear`` initialisation, uniform with variance
            ``1 / (3 fan_in)``) or "he": hidden weights normal with variance ``2 / fan_in`` and
            zero hidden biases (the output layer keeps the default). Only the starting point;
            a checkpoint's weights replace it.

    Besides forward, `jvp(s, t, x, ds, dt, dx)` returns (v, dv), the output and its
    directional derivative along (ds, dt, dx), propagating the tangent through the
    layers by hand: one GEMM per layer for primal and tangent together.
    """

    def __init__(
        self,
        dim: int = 2,
        width: int = 512,
        depth: int = 4,
        sigma: float = 1.0,
        activation: str = "gelu",
        fourier: int = 0,
        fourier_scale: float = 1.0,
        fourier_time_scale: float = 0.0,
        fourier_seed: int = 0,
        init: str = "default",
    ) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be >= 1; got {dim}, {width}, {depth}")
        if init not in ("default", "he"):
            raise ValueError(f"unknown init {init!r}; choose 'default' or 'he'")
        if fourier < 0:
            raise ValueError(f"fourier (number of Fourier features) must be >= 0; got {fourier}")
        if fourier and not (math.isfinite(fourier_scale) and fourier_scale > 0):
            raise ValueError(f"fourier_scale must be a positive number; got {fourier_scale}")
        if fourier and not (math.isfinite(fourier_time_scale) and fourier_time_scale >= 0):
            raise ValueError(f"fourier_time_scale must be a number >= 0; got {fourier_time_scale}")
        self.config = {
            "name": "mlp",
            "dim": dim,
            "width": width,
            "depth": depth,
            "sigma": float(sigma),
            "activation": activation,
        }
        if fourier:  # only then, so that configs (and checkpoints) without features stay as they were
            self.config.update(fourier=int(fourier), fourier_scale=float(fourier_scale), fourier_seed=int(fourier_seed))
            if fourier_time_scale:
                self.config["fourier_time_scale"] = float(fourier_time_scale)
        if init != "default":
            self.config["init"] = init
        self.dim, self.sigma, self.activation = dim, float(sigma), activation
        self.fourier = int(fourier)
        self.time_features = bool(fourier and fourier_time_scale)
        self.freqs: Tensor | None
        if fourier:
            g = torch.Generator().manual_seed(int(fourier_seed))
            freqs = torch.randn(dim, fourier, generator=g, dtype=torch.float64) * float(fourier_scale)
            if self.time_features:  # rows for s and t on top of those for x
                times = torch.randn(2, fourier, generator=g, dtype=torch.float64) * float(fourier_time_scale)
                freqs = torch.cat([times, freqs])
            self.register_buffer("freqs", freqs.to(torch.get_default_dtype()))
        else:
            self.freqs = None
        sizes = [self.in_features] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(width, dim)
        if init == "he":
            for layer in self.hidden:
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.weight.shape[1]))
                nn.init.zeros_(layer.bias)

    @property
    def state_shape(self) -> tuple[int]:
        """The shape of one state x: (dim,) (a batch is (B, dim))."""
        return (self.dim,)

    @property
    def in_features(self) -> int:
        """Width of an input row: s, t, x / sigma and 2 * fourier features."""
        return self.dim + 2 + 2 * self.fourier

    @property
    def time_scale(self) -> float | None:
        """With time features: their fastest angular frequency along s or t (radians per unit
        time), from which FlowMap sizes its finite-difference step; None without (s and t enter
        raw, and the library's default step applies)."""
        if not self.time_features:
            return None
        return float(self.freqs[:2].abs().max())

    @classmethod
    def from_config(cls, config: dict) -> MLP:
        kw = {k: v for k, v in config.items() if k != "name"}
        return cls(**kw)

    def _base_row(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """[s, t, x / sigma], shape (B, dim + 2)."""
        return torch.cat([s[:, None], t[:, None], x / self.sigma], dim=1)

    def inputs(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """Input rows ``[s, t, y(, sin(u), cos(u))]``, y = x / sigma, u = y B (or [s, t, y] B with
        time features): shape (B, in_features)."""
        z = self._base_row(s, t, x)
        if self.freqs is None:
            return z
        u = (z if self.time_features else z[:, 2:]) @ self.freqs
        return torch.cat([z, torch.sin(u), torch.cos(u)], dim=1)

    def input_tangent(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor) -> Tensor:
        """Tangent of :meth:`inputs` at (s, t, x) along (ds, dt, dx): ``[ds, dt, dy, cos(u) du, -sin(u) du]``
        with ``dy = dx / sigma`` and ``du`` the tangent of u."""
        dz = self._base_row(ds, dt, dx)  # linear in (s, t, x): its tangent has the same form
        if self.freqs is None:
            return dz
        z = self._base_row(s, t, x)
        if not self.time_features:
            z, dz_u = z[:, 2:], dz[:, 2:]
        else:
            dz_u = dz
        u, du = z @ self.freqs, dz_u @ self.freqs
        return torch.cat([dz, torch.cos(u) * du, -torch.sin(u) * du], dim=1)

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """v of shape (B, dim) for s, t of shape (B,) and x of shape (B, dim)."""
        act = _ACTS[self.activation]
        h = self.inputs(s, t, x)
        for layer in self.hidden:
            h = act(layer(h))
        return self.sigma * self.out(h)

    def jvp(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """(v, dv): the output and its derivative along the tangent (ds, dt, dx), in one sweep."""
        b = x.shape[0]
        h = self.inputs(s, t, x)
        dh = self.input_tangent(s, t, x, ds, dt, dx)
        for layer in self.hidden:
            # One GEMM for primal and tangent stacked on the batch axis; the bias enters the primal only.
            z = torch.cat([h, dh], dim=0) @ layer.weight.T
            pre, dpre = z[:b] + layer.bias, z[b:]
            a, da = _act_and_grad(self.activation, pre)
            h, dh = a, da * dpre
        z = torch.cat([h, dh], dim=0) @ self.out.weight.T
        return self.sigma * (z[:b] + self.out.bias), self.sigma * z[b:]
