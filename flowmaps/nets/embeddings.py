"""Time embeddings and the learned loss weight.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def positional_embedding(t: Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0) -> Tensor:
    """Sinusoidal (transformer-style) embedding of a scalar time.

    With ``k = dim // 2`` frequencies ``f_i = max_period^(-i / k)``, ``i = 0..k-1``:

        emb(t) = [cos(scale * t * f_0), ..., cos(scale * t * f_{k-1}),
                  sin(scale * t * f_0), ..., sin(scale * t * f_{k-1})]

    ``scale`` maps t in [0, 1] (t = 0 noise, t = 1 data) to the range of positions that the
    frequencies resolve. Smooth in t, so it supports forward-mode AD (``torch.func.jvp``).

    Args:
        t: times of shape (B,).
        dim: even embedding width.

    Returns:
        (B, dim) tensor of the dtype of t.
    """
    if dim % 2 != 0:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = (scale * t).unsqueeze(-1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class PositionalEmbedding(nn.Module):
    """Module wrapper of :func:`positional_embedding`: (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"dim must be even, got {dim}")
        self.dim = dim
        self.max_period = max_period
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        return positional_embedding(t, self.dim, self.max_period, self.scale)


class LossWeight(nn.Module):
    """Learned log-variance w(s, t) for the per-sample loss weighting (as in EDM2).

    Each loss term is weighted as ``exp(-w(s, t)) * sum(r^2) + w(s, t)``: minimising over w gives
    ``w = log E[sum(r^2) | s, t]``, so every (s, t) contributes on a comparable scale.

    Features are positional embeddings of s and of (t - s) (t = 0 noise, t = 1 data),
    concatenated and passed through a tiny MLP (or a single linear layer when ``hidden=0``). The
    last layer is zero-initialised, so w = 0 (plain sum of squares) at initialisation.

    Args:
        dim: width of each positional embedding (the features have width 2 * dim).
        hidden: width of the hidden layer; 0 means a single linear layer.
    """

    def __init__(self, dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.embed = PositionalEmbedding(dim)
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(2 * dim, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        """Log-variance w(s, t).

        Args:
            s: start times (B,), t: end times (B,) (t = 0 noise, t = 1 data).

        Returns:
            (B,) tensor.
        """
        s = torch.as_tensor(s)
        t = torch.as_tensor(t, dtype=s.dtype, device=s.device)
        s, t = torch.broadcast_tensors(s.reshape(-1), t.reshape(-1))
        feats = torch.cat([self.embed(s), self.embed(t - s)], dim=-1)
        return self.net(feats).squeeze(-1)
