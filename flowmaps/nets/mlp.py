"""The 2-D network of the paper: an MLP on [s, t, x / sigma] with a hand-written tangent pass.

Time convention: t = 0 is noise, t = 1 is data.

One layer loop (:func:`_layer_loop`) serves the forward pass and the tangent pass. The tangent
pass carries a directional derivative beside the primal rows (forward mode written out:
dh <- a'(z) dz per layer) and has its own closed-form backward (:class:`_TangentPass`), which
needs the second derivative a'' of the activation. Its cost, for a loss whose off-diagonal rows
take one tangent each: with a fraction eta of the batch on the diagonal, each layer's GEMMs run
on B + (1 - eta) B rows (1.25 B at eta = 0.75) instead of B.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)

_TRUNC2_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]
_ACTS = {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


# ----------------------------------------------------------------------------- activations
# The tangent pass needs a'(h) (forward mode: da = a'(h) dh) and, for its backward, a''(h).
#     gelu: a = h Phi(h),  a' = Phi(h) + h phi(h),      a'' = phi(h) (2 - h^2)
#     silu: a = h sig(h),  a' = sig (1 + h (1 - sig)),  a'' = sig (1 - sig) (2 + h (1 - 2 sig))
#     tanh: a = tanh(h),   a' = 1 - a^2,                a'' = -2 a a'
def _act_out(name: str, h: Tensor, out: Tensor) -> None:
    """a(h) written into out (same shape)."""
    ops = torch.ops.aten
    if name == "gelu":
        ops.gelu.out(h, out=out)
    elif name == "silu":
        ops.silu.out(h, out=out)
    else:
        ops.tanh.out(h, out=out)


def _act_backward(name: str, g: Tensor, h: Tensor, a: Tensor, out: Tensor) -> None:
    """g * a'(h) elementwise (g, h of one shape; a = a(h), used by tanh) written into out, through
    the native fused backward kernels of the exact (erf) GELU, SiLU and tanh."""
    ops = torch.ops.aten
    if name == "gelu":
        ops.gelu_backward.grad_input(g, h, grad_input=out)
    elif name == "silu":
        ops.silu_backward.grad_input(g, h, grad_input=out)
    else:
        ops.tanh_backward.grad_input(g, a, grad_input=out)


def _act_d2(name: str, h: Tensor, a: Tensor) -> Tensor:
    """a''(h) elementwise; a = a(h)."""
    if name == "gelu":
        hh = h * h
        return torch.exp(hh * -0.5).mul_(_INV_SQRT2PI).mul_(2.0 - hh)
    if name == "silu":
        sig = torch.sigmoid(h)
        return sig * (1.0 - sig) * (2.0 + h * (1.0 - 2.0 * sig))
    return (1.0 - a * a).mul_(a).mul_(-2.0)


# ----------------------------------------------------------------------------- the layer loop
def _layer_loop(
    layers: list[tuple[Tensor, Tensor]], act: str, h: Tensor, dh: Tensor | None = None, record: list | None = None
) -> tuple[Tensor, Tensor | None]:
    """The MLP's layers on input rows h (P, in) and, if given, input tangents dh (n, in) at the
    last n rows of h: per hidden layer (W, b)

        z = h W^T + b,  h <- a(z);    dz = dh W^T,  dh <- a'(z[P - n:]) * dz

    then the output layer gives (h W^T + b, dh W^T) (unscaled). This is the network's one loop:
    the forward pass runs it without tangents (autograd records it), the tangent pass inside
    :class:`_TangentPass` with them. With tangents, each layer's rows and tangents share one
    stacked buffer [h; dh] of P + n rows (so the backward runs one GEMM per gradient over both),
    all operands must have one dtype, and record (a list) receives the stacked inputs [h; dh]
    and pre-activations [z; dz] of each hidden layer, then the output layer's stacked input.
    """
    p = h.shape[0]
    if dh is not None:
        n = dh.shape[0]
        h = torch.cat([h, dh])
    for w, b in layers[:-1]:
        if dh is None:
            h = _ACTS[act](F.linear(h, w, b))
            continue
        z = h.new_empty(p + n, w.shape[0])
        torch.addmm(b, h[:p], w.t(), out=z[:p])
        torch.mm(h[p:], w.t(), out=z[p:])
        a = torch.empty_like(z)
        _act_out(act, z[:p], a[:p])
        _act_backward(act, z[p:], z[p - n : p], a[p - n : p], out=a[p:])
        record += [h, z]
        h = a
    w, b = layers[-1]
    if dh is None:
        return F.linear(h, w, b), None
    record.append(h)
    return torch.addmm(b, h[:p], w.t()), h[p:] @ w.t()


def _loop_backward(
    act: str, record: list, weights: list[Tensor], g: Tensor | None, g_d: Tensor | None, p: int, input_grad: bool
) -> tuple[list[Tensor], Tensor | None, Tensor | None]:
    """Reverse mode through :func:`_layer_loop` with tangents, in closed form.

    g (P, out) or None and g_d (n, out) or None are the gradients of the unscaled outputs; record
    is the loop's, P the number of primal rows. Per layer, from the gradients (G, G_d) of its
    outputs (h, dh), with G_z = G for the output layer and, for a hidden layer,

        G_z = a'(z) G  (+ a''(z) G_d dz on the last n rows),   G_dz = a'(z[P - n:]) G_d,

    all stacked as [G_z; G_dz]: grad W = [G_z; G_dz]^T [h; dh] and the gradient passed to the
    inputs [G_z; G_dz] W (one GEMM each), grad b = the sum of G_z over rows. Without g_d the
    tangent rows take no part. Returns the parameter gradients [W_1, b_1, ..., W_out, b_out] and
    those of the input rows and input tangents (None unless input_grad).
    """
    hs, zs = record[0::2], record[1::2]
    rows = hs[0].shape[0] if g_d is not None else p
    gz = hs[-1].new_empty(rows, weights[-1].shape[0])
    if g is None:
        gz[:p].zero_()
    else:
        gz[:p].copy_(g)
    if g_d is not None:
        gz[p:].copy_(g_d)
    n = rows - p
    grads: list[Tensor] = []
    for i in range(len(weights) - 1, -1, -1):
        if i < len(zs):  # a hidden layer: gz holds the gradient of its output; through the activation
            z, a, g_h = zs[i], hs[i + 1], gz
            gz = torch.empty_like(g_h)
            _act_backward(act, g_h[:p], z[:p], a[:p], out=gz[:p])
            if n:
                z_t, a_t = z[p - n : p], a[p - n : p]
                _act_backward(act, g_h[p:], z_t, a_t, out=gz[p:])
                gz[p - n : p].addcmul_(g_h[p:] * z[p:], _act_d2(act, z_t, a_t))
        grads[:0] = [gz.t() @ hs[i][:rows], gz[:p].sum(0)]
        if i == 0 and not input_grad:
            return grads, None, None
        gz = gz @ weights[i]
    return grads, gz[:p], (gz[p:] if g_d is not None else None)


class _TangentPass(torch.autograd.Function):
    """(out, dout): the layer loop with tangents, and its closed-form backward (once differentiable).

    Autograd would record about ten elementwise nodes per layer for a'(z) dz and differentiate
    them one by one; here each layer's backward is a few fused elementwise ops and one GEMM for
    the weight gradient and one for the input gradient over the stacked rows and tangents. When
    dout needs no gradient (a term under stop-gradient) the tangent rows leave the backward
    altogether. Under autocast the pass runs in the autocast dtype (as F.linear would).
    """

    @staticmethod
    def forward(ctx, h0: Tensor, dh0: Tensor, act: str, *params: Tensor):  # type: ignore[override]
        device_type = h0.device.type
        dtype = h0.dtype
        if torch.is_autocast_enabled(device_type) and dtype != torch.float64:
            dtype = torch.get_autocast_dtype(device_type)
        params = tuple(q.to(dtype) for q in params)
        weights = list(params[0::2])
        record: list = []
        out, dout = _layer_loop(list(zip(weights, params[1::2])), act, h0.to(dtype), dh0.to(dtype), record)
        ctx.act, ctx.p, ctx.n_record = act, h0.shape[0], len(record)
        ctx.save_for_backward(*record, *weights)
        return out, dout

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor | None, g_d: Tensor | None):  # type: ignore[override]
        saved = ctx.saved_tensors
        record, weights = list(saved[: ctx.n_record]), list(saved[ctx.n_record :])
        input_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grads, g_h0, g_dh0 = _loop_backward(ctx.act, record, weights, g, g_d, ctx.p, input_grad)
        return (g_h0, g_dh0, None, *grads)


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
        times: how the two times enter the row: "s_t" (the default, ``[s, t, ...]``, the paper's 2-D
            net) or "s_gap" (``[s, t - s, ...]``, the conditioning the paper found better for its
            image nets, section 5 of arXiv 2505.18825). The tangent follows: ``[ds, dt - ds, ...]``.
        init: "default" (PyTorch's ``nn.Linear`` initialisation, uniform with variance
            ``1 / (3 fan_in)``), "he": hidden weights normal with variance ``2 / fan_in`` and
            zero hidden biases (the output layer keeps the default), or "lecun": every layer,
            the output layer too, a normal truncated at two standard deviations with variance
            ``1 / fan_in`` after truncation and zero biases (Flax's ``Dense`` default, which the
            authors' released JAX checkerboard net starts from). Only the starting point; a
            checkpoint's weights replace it.

    Besides forward, ``jvp(s, t, x, ds, dt, dx)`` returns (v, dv), the output and its
    directional derivative along (ds, dt, dx), carrying the tangent through the same layer loop
    beside the primal (forward mode by hand) with a hand-written backward; the tangent may cover
    the last rows only (``partial_tangent``), like the UNet's.
    """

    partial_tangent = True  # jvp() accepts a tangent for the last rows only

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
        times: str = "s_t",
        init: str = "default",
    ) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be >= 1; got {dim}, {width}, {depth}")
        if times not in ("s_t", "s_gap"):
            raise ValueError(f"unknown times {times!r}; choose 's_t' ([s, t, x]) or 's_gap' ([s, t - s, x])")
        if init not in ("default", "he", "lecun"):
            raise ValueError(f"unknown init {init!r}; choose 'default', 'he' or 'lecun'")
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
        if times != "s_t":  # only then, so that older configs stay as they were
            self.config["times"] = times
        if init != "default":
            self.config["init"] = init
        self.gap = times == "s_gap"
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
        elif init == "lecun":
            for layer in [*self.hidden, self.out]:
                # A standard normal cut at +-2 has std 0.8796; dividing by it gives variance 1 / fan_in.
                std = math.sqrt(1.0 / layer.weight.shape[1]) / _TRUNC2_STD
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
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
        """[s, t, x / sigma] (or [s, t - s, x / sigma] with ``times="s_gap"``), shape (B, dim + 2).
        Linear in (s, t, x), so the same map sends a tangent (ds, dt, dx) to the row's tangent."""
        second = t - s if self.gap else t
        return torch.cat([s[:, None], second[:, None], x / self.sigma], dim=1)

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

    def _layers(self) -> list[tuple[Tensor, Tensor]]:
        return [(layer.weight, layer.bias) for layer in [*self.hidden, self.out]]

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """v of shape (B, dim) for s, t of shape (B,) (t = 0 noise, t = 1 data) and x of shape (B, dim)."""
        out, _ = _layer_loop(self._layers(), self.activation, self.inputs(s, t, x))
        return self.sigma * out

    def jvp(self, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """(v, dv): the output and its derivative along the tangent (ds, dt, dx), in one sweep.

        Equal to ``torch.func.jvp(net, (s, t, x), (ds, dt, dx))`` (tests/flowmaps/nets/test_mlp_options.py,
        float64), with s, t of shape (B,) (t = 0 noise, t = 1 data) and x of shape (B, dim). The
        tangent may cover only the last n rows: dx of shape (n, dim) and ds, dt of shape (n,) (or
        scalars) give dv of shape (n, dim) for those rows while v covers all B, so a loss runs
        its plain rows and its JVP rows in one call (see :attr:`partial_tangent` and
        flowmaps.objectives). Each layer runs one GEMM on the rows and one on the tangents into
        one stacked buffer, and the backward is written by hand (:class:`_TangentPass`, one GEMM
        per gradient over rows and tangents together): gradients flow to the weights and to every
        input, once (no double backward).

        Raises:
            ValueError: the tangent has more rows than x.
        """
        b, n = x.shape[0], dx.shape[0]
        if n > b:
            raise ValueError(f"the tangent has {n} rows, more than the {x.shape[0]} of x")
        ds = torch.as_tensor(ds, dtype=x.dtype, device=x.device)
        dt = torch.as_tensor(dt, dtype=x.dtype, device=x.device)
        ds = ds.expand(n) if ds.ndim == 0 else ds.reshape(n)
        dt = dt.expand(n) if dt.ndim == 0 else dt.reshape(n)
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device).expand(b)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(b)
        base = slice(b - n, None)
        h0 = self.inputs(s, t, x)
        dh0 = self.input_tangent(s[base], t[base], x[base], ds, dt, dx)
        params = [p for layer in self._layers() for p in layer]
        out, dout = _TangentPass.apply(h0, dh0, self.activation, *params)
        return self.sigma * out, self.sigma * dout
