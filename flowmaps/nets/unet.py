"""A small UNet for flow maps on 28x28 single-channel images (Fashion-MNIST, MNIST).

The network computes ``v_{s,t}(x)`` for the flow map ``X_{s,t}(x) = x + (t - s) v_{s,t}(x)``.
Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Layout (defaults: ``base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2``):

- conditioning: positional embeddings of ``s`` and ``t - s`` (the paper's choice; ``"s_t"``
  conditions on ``s`` and ``t`` instead), concatenated and mixed by a two-layer MLP into a
  vector ``c`` of width ``4 * base_channels``;
- encoder: a 3x3 input conv, then per resolution (28, 14, 7) ``num_res_blocks`` residual
  blocks, with a stride-2 conv between resolutions;
- middle: two residual blocks at 7x7 (with optional self-attention between them);
- decoder: per resolution ``num_res_blocks + 1`` residual blocks fed the encoder skips, nearest
  upsampling + 3x3 conv between resolutions;
- output: GroupNorm, SiLU, zero-initialised 3x3 conv.

Each residual block is GroupNorm -> SiLU -> conv -> GroupNorm -> ``(1 + scale) * h + shift``
with ``(scale, shift) = Linear(SiLU(c))`` -> SiLU -> dropout -> conv, plus a (1x1 when the
width changes) skip, summed and scaled by ``1/sqrt(2)``, as in ADM / EDM.

Preconditioning: ``v = sigma * F(x / sigma, s, t)``, with sigma the data/noise scale (0.5 for
images in [-1, 1]); the zero-initialised output layer makes ``v = 0`` at initialisation.

Every operation is smooth and supports forward-mode AD, so ``torch.func.jvp`` works with
respect to s, t and x, and backward through the JVP works too. Attention, when enabled, uses an
explicit matmul-softmax (fused scaled-dot-product kernels have no forward-mode AD); under
``torch.autograd.forward_ad`` dual tensors the softmax is written out of place, so the backward
through a dual-number JVP works too (backend "dual").

Tangent pass: ``UNet.jvp(s, t, x, ds, dt, dx)`` returns ``(v, dv)``, the output and its
directional derivative, by carrying the tangent beside the primal through the same layers
(backend "tangent" of :meth:`flowmaps.flowmap.FlowMap.jvp`). Linear layers (convs, linears,
upsampling) run on the primal with their bias and on the tangent without it (or once on both
stacked along the batch: ``STACK_TANGENT``); GroupNorm, SiLU, the scale/shift modulation,
softmax attention and the sinusoidal embeddings use their closed-form derivatives. Only
ordinary differentiable ops are used, so the backward through ``dv`` is plain reverse-mode
autograd: far cheaper than the backward of forward-mode AD in eager PyTorch. ``forward`` and
``jvp`` share one traversal (every layer takes an optional tangent), so they cannot drift apart.
The tangent may cover only the last rows of the batch, so that a loss runs its flow-matching rows
and its JVP rows in one call (:mod:`flowmaps.objectives`, ``fuse_branches``).
"""

from __future__ import annotations

import math
from typing import Any

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


class UNet(nn.Module):
    partial_tangent = True  # jvp() accepts a tangent for the last rows only

    """UNet ``net(s, t, x) -> v`` for flow maps on (B, C, H, W) images (default 1x28x28).

    Args:
        in_channels: image channels.
        base_channels: width at the first resolution.
        channel_mults: width multipliers per resolution (one entry per level; levels are
            separated by a factor-2 downsampling: 28, 14, 7 for three levels).
        num_res_blocks: residual blocks per level in the encoder (decoder has one more).
        attn_levels: indices of levels (0 = full resolution) with self-attention after each
            residual block; the middle gets attention if the last level is listed. Default none.
        num_heads: attention heads.
        dropout: dropout rate inside residual blocks (the objectives apply it on the diagonal
            branch only by calling the net in train mode there).
        emb_dim: width of each positional embedding (of s and of t - s).
        emb_scale: times are multiplied by this before the sinusoids (1000 maps t in [0, 1]
            to the usual range of diffusion time steps); lower it for a smoother t-dependence.
        sigma: preconditioning scale, ``v = sigma * F(x / sigma, ...)``; 0.5 for images in [-1, 1].
        time_cond: ``"s_dt"`` (embed s and t - s; the paper's choice) or ``"s_t"``.
        max_groups: upper bound on GroupNorm groups.

    All arguments are JSON-serialisable and stored in ``self.config``; rebuild with
    ``UNet.from_config(config)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_levels: tuple[int, ...] | list[int] = (),
        num_heads: int = 4,
        dropout: float = 0.0,
        emb_dim: int = 128,
        emb_scale: float = 1000.0,
        sigma: float = 0.5,
        time_cond: str = "s_dt",
        max_groups: int = 32,
    ) -> None:
        super().__init__()
        if time_cond not in ("s_dt", "s_t"):
            raise ValueError(f"time_cond must be 's_dt' or 's_t', got {time_cond!r}")
        channel_mults = [int(m) for m in channel_mults]
        attn_levels = [int(a) for a in attn_levels]
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "base_channels": int(base_channels),
            "channel_mults": channel_mults,
            "num_res_blocks": int(num_res_blocks),
            "attn_levels": attn_levels,
            "num_heads": int(num_heads),
            "dropout": float(dropout),
            "emb_dim": int(emb_dim),
            "emb_scale": float(emb_scale),
            "sigma": float(sigma),
            "time_cond": time_cond,
            "max_groups": int(max_groups),
        }
        self.sigma = float(sigma)
        self.time_cond = time_cond
        self.emb_dim = int(emb_dim)
        self.emb_scale = float(emb_scale)
        cond_dim = 4 * base_channels

        self.cond_mlp = nn.Sequential(nn.Linear(2 * emb_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, cond_dim, dropout, max_groups)

        def attn(c: int) -> SelfAttention:
            return SelfAttention(c, num_heads, max_groups)

        # Encoder.
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels = [base_channels]
        ch = base_channels
        n_levels = len(channel_mults)
        for level, mult in enumerate(channel_mults):
            out = base_channels * mult
            for _ in range(num_res_blocks):
                self.down_blocks.append(res(ch, out))
                self.down_attn.append(attn(out) if level in attn_levels else nn.Identity())
                ch = out
                skip_channels.append(ch)
            if level < n_levels - 1:
                self.downsamples.append(Downsample(ch))
                skip_channels.append(ch)

        # Middle.
        mid_attn = (n_levels - 1) in attn_levels
        self.mid1 = res(ch, ch)
        self.mid_attn = attn(ch) if mid_attn else nn.Identity()
        self.mid2 = res(ch, ch)

        # Decoder.
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(n_levels)):
            out = base_channels * channel_mults[level]
            for _ in range(num_res_blocks + 1):
                self.up_blocks.append(res(ch + skip_channels.pop(), out))
                self.up_attn.append(attn(out) if level in attn_levels else nn.Identity())
                ch = out
            if level > 0:
                self.upsamples.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(_groups(ch, max_groups), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def time_scale(self) -> float:
        """Fastest angular frequency of the time conditioning, radians per unit of s or t: the
        embedding's top frequency is 1 per position and positions are emb_scale * time. FlowMap
        sizes its finite-difference step from it (FlowMap.resolve_fd_step)."""
        return self.emb_scale

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        """Rebuild a UNet from its ``config`` dict (e.g. read back from config.json)."""
        return cls(**config)

    @property
    def state_shape(self) -> tuple[int, None, None]:
        """The shape of one state x: (in_channels, H, W), any H and W (a batch is (B, C, H, W))."""
        return (self.config["in_channels"], None, None)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def time_embedding(self, s: Tensor, t: Tensor) -> Tensor:
        """Conditioning vector from (s, t), t = 0 noise, t = 1 data: (B,), (B,) -> (B, 4 * base)."""
        return self._time_embedding(s, t, None, None)[0]

    def _time_embedding(self, s: Tensor, t: Tensor, ds: Tensor | None, dt: Tensor | None) -> Pair:
        if self.time_cond == "s_dt":
            second, dsecond = t - s, (None if ds is None else dt - ds)
        else:
            second, dsecond = t, dt
        e1, de1 = _positional_op(s, ds, self.emb_dim, self.emb_scale)
        e2, de2 = _positional_op(second, dsecond, self.emb_dim, self.emb_scale)
        h, dh = _cat((e1, de1), (e2, de2))
        lin1, _, lin2 = self.cond_mlp
        return _linear_op(lin2, *_silu_op(*_linear_op(lin1, h, dh)))

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """Flow-map velocity ``v_{s,t}(x)``.

        Args:
            s: start times (B,) (or a scalar, broadcast), t = 0 noise, t = 1 data.
            t: end times (B,) (or a scalar).
            x: states at time s, (B, C, H, W).

        Returns:
            v of shape (B, C, H, W), with ``v = sigma * F(x / sigma, s, t)``.
        """
        return self._run(s, t, x, None, None, None)[0]

    def jvp(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """``(v, dv)``: the output and its derivative along the tangent (ds, dt, dx), in one sweep.

        Equal to ``torch.func.jvp(net, (s, t, x), (ds, dt, dx))`` (tested to float64 precision),
        with s, t of shape (B,) (or scalars) and x of shape (B, C, H, W).

        The tangent may cover only the last n rows: dx of shape (n, C, H, W) and ds, dt of shape
        (n,) (or scalars) give dv of shape (n, C, H, W) for those rows, while v covers all B
        (a loss runs its plain rows and its JVP rows in one call; see flowmaps.objectives).
        """
        b = dx.shape[0]
        if b > x.shape[0]:
            raise ValueError(f"the tangent has {b} rows, more than the {x.shape[0]} of x")
        ds = torch.as_tensor(ds, dtype=x.dtype, device=x.device)
        dt = torch.as_tensor(dt, dtype=x.dtype, device=x.device)
        ds = ds.expand(b) if ds.ndim == 0 else ds.reshape(b)
        dt = dt.expand(b) if dt.ndim == 0 else dt.reshape(b)
        v, dv = self._run(s, t, x, ds, dt, dx)
        return v, dv

    def _run(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor | None, dt: Tensor | None, dx: Tensor | None) -> Pair:
        """The network, carrying the tangent (ds, dt, dx) beside the primal when it is not None."""
        b = x.shape[0]
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        s = s.expand(b) if s.ndim == 0 else s.reshape(b)
        t = t.expand(b) if t.ndim == 0 else t.reshape(b)
        emb, demb = self._time_embedding(s, t, ds, dt)

        def attend(att: nn.Module, h: Tensor, dh: Tensor | None) -> Pair:
            return (h, dh) if isinstance(att, nn.Identity) else att.pair_forward(h, dh)

        inv = 1.0 / self.sigma
        h, dh = _linear_op(self.conv_in, x * inv, None if dx is None else dx * inv)
        skips = [(h, dh)]
        blocks = iter(zip(self.down_blocks, self.down_attn, strict=True))
        n_levels = len(self.config["channel_mults"])
        for level in range(n_levels):
            for _ in range(self.config["num_res_blocks"]):
                block, att = next(blocks)
                h, dh = attend(att, *block.pair_forward(h, dh, emb, demb))
                skips.append((h, dh))
            if level < n_levels - 1:
                h, dh = self.downsamples[level].pair_forward(h, dh)
                skips.append((h, dh))

        h, dh = attend(self.mid_attn, *self.mid1.pair_forward(h, dh, emb, demb))
        h, dh = self.mid2.pair_forward(h, dh, emb, demb)

        blocks = iter(zip(self.up_blocks, self.up_attn, strict=True))
        for i, level in enumerate(reversed(range(n_levels))):
            for _ in range(self.config["num_res_blocks"] + 1):
                block, att = next(blocks)
                h, dh = attend(att, *block.pair_forward(*_cat((h, dh), skips.pop()), emb, demb))
            if level > 0:
                h, dh = self.upsamples[i].pair_forward(h, dh, size=skips[-1][0].shape[-2:])

        h, dh = _linear_op(self.conv_out, *_silu_op(*_group_norm_op(self.norm_out, h, dh)))
        return self.sigma * h, (None if dh is None else self.sigma * dh)
