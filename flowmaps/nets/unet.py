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
stacked along the batch: ``unet_blocks.STACK_TANGENT``); GroupNorm, SiLU, the scale/shift
modulation, softmax attention and the sinusoidal embeddings use their closed-form derivatives
(the layers and their derivatives live in :mod:`flowmaps.nets.unet_blocks`). Only ordinary
differentiable ops are used, so the backward through ``dv`` is plain reverse-mode autograd: far
cheaper than the backward of forward-mode AD in eager PyTorch. ``forward`` and ``jvp`` share one
traversal (every layer takes an optional tangent), so they cannot drift apart. The tangent may
cover only the last rows of the batch, so that a loss runs its flow-matching rows and its JVP
rows in one call (:mod:`flowmaps.objectives`, ``fuse_branches``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowmaps.nets.unet_blocks import (
    Downsample,
    Pair,
    ResBlock,
    SelfAttention,
    Upsample,
    _cat,
    _group_norm_op,
    _groups,
    _linear_op,
    _positional_op,
    _silu_op,
)


class UNet(nn.Module):
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

    partial_tangent = True  # jvp() accepts a tangent for the last rows only

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

        # Built in this order (conditioning, encoder, middle, decoder, output) so that a seeded
        # initialisation draws the same numbers and the state_dict keys keep their order.
        self.cond_mlp = nn.Sequential(nn.Linear(2 * emb_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        ch, skip_channels = self._build_encoder()
        self._build_middle(ch)
        ch = self._build_decoder(ch, skip_channels)
        self.norm_out = nn.GroupNorm(_groups(ch, max_groups), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _res(self, in_ch: int, out_ch: int) -> ResBlock:
        """A residual block conditioned on the (B, 4 * base_channels) time embedding."""
        cfg = self.config
        return ResBlock(in_ch, out_ch, 4 * cfg["base_channels"], cfg["dropout"], cfg["max_groups"])

    def _attn(self, channels: int, level: int) -> nn.Module:
        """Self-attention when ``level`` is in attn_levels, else an identity placeholder."""
        cfg = self.config
        if level not in cfg["attn_levels"]:
            return nn.Identity()
        return SelfAttention(channels, cfg["num_heads"], cfg["max_groups"])

    def _build_encoder(self) -> tuple[int, list[int]]:
        """down_blocks, down_attn, downsamples; returns the last width and every skip's width."""
        cfg = self.config
        base, mults = cfg["base_channels"], cfg["channel_mults"]
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels = [base]
        ch = base
        for level, mult in enumerate(mults):
            out = base * mult
            for _ in range(cfg["num_res_blocks"]):
                self.down_blocks.append(self._res(ch, out))
                self.down_attn.append(self._attn(out, level))
                ch = out
                skip_channels.append(ch)
            if level < len(mults) - 1:
                self.downsamples.append(Downsample(ch))
                skip_channels.append(ch)
        return ch, skip_channels

    def _build_middle(self, ch: int) -> None:
        """mid1, mid_attn (attention if the last level is in attn_levels), mid2, all at width ch."""
        self.mid1 = self._res(ch, ch)
        self.mid_attn = self._attn(ch, len(self.config["channel_mults"]) - 1)
        self.mid2 = self._res(ch, ch)

    def _build_decoder(self, ch: int, skip_channels: list[int]) -> int:
        """up_blocks, up_attn, upsamples, consuming skip_channels from the end; returns the last width."""
        cfg = self.config
        base, mults = cfg["base_channels"], cfg["channel_mults"]
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(mults))):
            out = base * mults[level]
            for _ in range(cfg["num_res_blocks"] + 1):
                self.up_blocks.append(self._res(ch + skip_channels.pop(), out))
                self.up_attn.append(self._attn(out, level))
                ch = out
            if level > 0:
                self.upsamples.append(Upsample(ch))
        return ch

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
