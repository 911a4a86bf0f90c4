"""Layers of the flowmaps UNet (:mod:`flowmaps.nets.unet`), each carrying an optional tangent.

Every op and block maps a primal ``h`` and a tangent ``dh`` to ``(y, dy)``, with ``dy`` the
directional derivative of ``y`` along ``dh`` (a JVP written out by hand); ``dh = None`` runs the
plain layer and returns ``(y, None)``. The UNet's ``forward`` and ``jvp`` both go through these
ops, so the two passes share one traversal. The tangent may cover only the last ``dh.shape[0]``
rows of the batch (a partial tangent), so a loss can run its plain rows and its JVP rows in one
call (:mod:`flowmaps.objectives`, ``fuse_branches``).

Derivatives used (closed forms, checked against ``torch.func.jvp`` in the UNet's tests):

- conv, linear, nearest upsampling: linear maps, so the tangent goes through the layer without
  its bias (or once with the primal, stacked along the batch: ``STACK_TANGENT``);
- SiLU: ``d silu(h) = sig(h) (1 + h (1 - sig(h))) dh``;
- GroupNorm: with ``xhat = (h - mean) / std`` per group,
  ``d xhat = (dh - mean(dh) - xhat mean(xhat dh)) / std``, then times the per-channel weight;
- scale/shift modulation ``n (1 + scale) + shift``: the product rule;
- softmax attention: ``d attn = attn * (dlogits - sum_j attn dlogits)``;
- sinusoidal time embedding ``[cos a, sin a]`` with ``a = scale * t * freqs``:
  ``[-sin a, cos a] * scale * dt * freqs`` (times: t = 0 noise, t = 1 data).

Only ordinary differentiable ops are used, so the backward through ``dy`` is plain reverse-mode
autograd. Shapes: images (B, C, H, W), conditioning vectors (B, E), times (B,).
"""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn

from flowmaps.nets.embeddings import positional_embedding


def _groups(channels: int, max_groups: int) -> int:
    """Largest group count <= max_groups that divides channels."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


# ------------------------------------------------------------------ tangent-carrying layer ops
# Each op maps (h, dh) to (y, dy) with dy the derivative of y along dh; dh = None means "no
# tangent" and runs the plain layer. The tangent may cover only the last dh.shape[0] rows of the
# batch (a partial tangent): a loss can then run its plain rows and its JVP rows in one call.
Pair = tuple[Tensor, Tensor | None]


def _tail(x: Tensor, dh: Tensor) -> Tensor:
    """The rows of x that the tangent dh covers: the last dh.shape[0]."""
    n = dh.shape[0]
    return x if n == x.shape[0] else x[x.shape[0] - n :]


# How a conv or linear layer takes (h, dh): False (the default) runs the layer on h (bias fused)
# and its bias-free twin on dh; True stacks primal and tangent along the batch and runs one call
# (fewer launches, but a copy into the stacked buffer and a separate bias add). Same result either
# way; apart measured faster on the GPU (UNet LSD step, H200: 90 against 113 ms eager, 52.5 against
# 53.3 ms in a CUDA graph) and on 2 CPU threads (docs/benchmarks.md, backend "tangent-split").
STACK_TANGENT = False


def _linear_op(layer: nn.Module, h: Tensor, dh: Tensor | None) -> Pair:
    """A conv or linear layer on primal and tangent, the bias on the primal only."""
    if dh is None:
        return layer(h), None
    if not STACK_TANGENT:
        return layer(h), _no_bias(layer, dh)
    return _stacked_linear_op(layer, torch.cat([h, dh]), h.shape[0])


def _no_bias(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's linear part (no bias) on x: the map that carries a tangent."""
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, layer.weight, None, layer.stride, layer.padding)
    return F.linear(x, layer.weight)


def _stacked_linear_op(layer: nn.Module, stacked: Tensor, b: int) -> Pair:
    """A conv or linear layer on [primal; tangent] stacked along the batch (first b rows primal)."""
    if isinstance(layer, nn.Conv2d):
        z = F.conv2d(stacked, layer.weight, None, layer.stride, layer.padding)
        bias = None if layer.bias is None else layer.bias.view(1, -1, 1, 1)
    else:
        z = F.linear(stacked, layer.weight)
        bias = layer.bias
    y = z[:b] if bias is None else z[:b] + bias
    return y, z[b:]


def _silu_op(h: Tensor, dh: Tensor | None) -> Pair:
    """SiLU and its derivative sig(h) (1 + h (1 - sig(h)))."""
    if dh is None:
        return F.silu(h), None
    ht = _tail(h, dh)
    st = torch.sigmoid(ht)
    return F.silu(h), dh * (st * (1.0 + ht * (1.0 - st)))


def _group_norm_op(norm: nn.GroupNorm, h: Tensor, dh: Tensor | None) -> Pair:
    """GroupNorm; with xhat = (h - mean) / std per group, d xhat = (dh - mean(dh) - xhat mean(xhat dh)) / std."""
    if dh is None:
        return norm(h), None
    # The primal through the fused kernel; the statistics again for the tangent's rows only.
    hg = _tail(h, dh).reshape(dh.shape[0], norm.num_groups, -1)
    dg = dh.reshape(dh.shape[0], norm.num_groups, -1)
    var, mean = torch.var_mean(hg, dim=-1, keepdim=True, correction=0)
    rstd = torch.rsqrt(var + norm.eps)
    xhat = (hg - mean) * rstd
    dxhat = (dg - dg.mean(dim=-1, keepdim=True) - xhat * (xhat * dg).mean(dim=-1, keepdim=True)) * rstd
    return norm(h), dxhat.reshape(dh.shape) * norm.weight.view(1, -1, 1, 1)


def _softmax(z: Tensor) -> Tensor:
    """Softmax over the last dimension; out of place when z carries a forward-mode dual tangent.

    Under torch.autograd.forward_ad (the "dual" derivative backend), torch.softmax's tangent rule
    writes into its own saved output, and a backward through that tangent fails ("modified by an
    inplace operation"). exp(z - max) / sum uses only out-of-place ops and gives the same values;
    the max is a constant shift, which changes neither the result nor its derivatives.
    """
    if not torch.compiler.is_compiling() and fwAD.unpack_dual(z).tangent is not None:
        e = torch.exp(z - z.amax(dim=-1, keepdim=True).detach())
        return e / e.sum(dim=-1, keepdim=True)
    return torch.softmax(z, dim=-1)


def _dropout_op(drop: nn.Dropout, h: Tensor, dh: Tensor | None) -> Pair:
    """Dropout with one mask for primal and tangent."""
    if dh is None or not drop.training or drop.p == 0:
        return drop(h), dh
    mask = F.dropout(torch.ones_like(h), drop.p, training=True)
    return h * mask, dh * _tail(mask, dh)


def _positional_op(t: Tensor, dt: Tensor | None, dim: int, scale: float) -> Pair:
    """positional_embedding(t) and its derivative along dt: d[cos a, sin a] = [-sin a, cos a] da."""
    emb = positional_embedding(t, dim, scale=scale)
    if dt is None:
        return emb, None
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    da = (scale * dt).unsqueeze(-1) * freqs
    tail = _tail(emb, dt)
    cos, sin = tail[:, :half], tail[:, half:]
    return emb, torch.cat([-sin * da, cos * da], dim=-1)


def _cat(a: Pair, b: Pair) -> Pair:
    """Channel concatenation of two (h, dh) pairs."""
    h = torch.cat([a[0], b[0]], dim=1)
    return h, (None if a[1] is None else torch.cat([a[1], b[1]], dim=1))


class ResBlock(nn.Module):
    """Residual block with scale/shift conditioning: (B, C_in, H, W), (B, E) -> (B, C_out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, max_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, max_groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, max_groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        # Start each block as its skip path (as in EDM): zero the last conv.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.pair_forward(x, None, emb, None)[0]

    def pair_forward(self, x: Tensor, dx: Tensor | None, emb: Tensor, demb: Tensor | None) -> Pair:
        """(out, d out) from (x, dx) and the conditioning (emb, d emb); None tangents skip the derivative."""
        h, dh = _linear_op(self.conv1, *_silu_op(*_group_norm_op(self.norm1, x, dx)))
        mod, dmod = _linear_op(self.affine, *_silu_op(emb, demb))
        scale, shift = mod[:, :, None, None].chunk(2, dim=1)
        n, dn = _group_norm_op(self.norm2, h, dh)
        h = n * (1.0 + scale) + shift
        if dn is not None:
            dscale, dshift = dmod[:, :, None, None].chunk(2, dim=1)
            dh = dn * (1.0 + _tail(scale, dn)) + _tail(n, dn) * dscale + dshift
        h, dh = _linear_op(self.conv2, *_dropout_op(self.dropout, *_silu_op(h, dh)))
        if isinstance(self.skip, nn.Identity):
            sk, dsk = x, dx
        else:
            sk, dsk = _linear_op(self.skip, x, dx)
        c = 1.0 / math.sqrt(2.0)
        return (sk + h) * c, (None if dh is None else (dsk + dh) * c)


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels with an explicit matmul-softmax (JVP-safe)."""

    def __init__(self, channels: int, num_heads: int, max_groups: int) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(_groups(channels, max_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pair_forward(x, None)[0]

    def pair_forward(self, x: Tensor, dx: Tensor | None) -> Pair:
        """(out, d out); the softmax's derivative is attn * (dlogits - sum_j attn dlogits)."""
        b, c, h, w = x.shape
        d = c // self.num_heads
        shape = (b, 3, self.num_heads, d, h * w)
        qkv, dqkv = _linear_op(self.qkv, *_group_norm_op(self.norm, x, dx))
        q, k, v = qkv.reshape(shape).unbind(1)
        r = 1.0 / math.sqrt(d)
        attn = _softmax(torch.einsum("bndi,bndj->bnij", q, k) * r)
        out = torch.einsum("bnij,bndj->bndi", attn, v).reshape(b, c, h, w)
        dout = None
        if dqkv is not None:
            dq, dk, dv = dqkv.reshape((dqkv.shape[0], *shape[1:])).unbind(1)
            q, k, v, attn = (_tail(a, dq) for a in (q, k, v, attn))
            dlogits = (torch.einsum("bndi,bndj->bnij", dq, k) + torch.einsum("bndi,bndj->bnij", q, dk)) * r
            dattn = attn * (dlogits - (attn * dlogits).sum(dim=-1, keepdim=True))
            dout = torch.einsum("bnij,bndj->bndi", dattn, v) + torch.einsum("bnij,bndj->bndi", attn, dv)
            dout = dout.reshape(dq.shape[0], c, h, w)
        y, dy = _linear_op(self.proj, out, dout)
        c2 = 1.0 / math.sqrt(2.0)
        return (x + y) * c2, (None if dy is None else (dx + dy) * c2)


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def pair_forward(self, x: Tensor, dx: Tensor | None) -> Pair:
        return _linear_op(self.conv, x, dx)


class Upsample(nn.Module):
    """Nearest upsampling to a given size then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))

    def pair_forward(self, x: Tensor, dx: Tensor | None, size: tuple[int, int]) -> Pair:
        if dx is None:
            return self.forward(x, size), None
        if not STACK_TANGENT:
            return self.forward(x, size), _no_bias(self.conv, F.interpolate(dx, size=size, mode="nearest"))
        up = F.interpolate(torch.cat([x, dx]), size=size, mode="nearest")  # linear: one call for both
        return _stacked_linear_op(self.conv, up, x.shape[0])
