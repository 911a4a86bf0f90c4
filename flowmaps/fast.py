"""An opt-in fast path for self-distillation with the 2-D MLP: one fused pass, hand-written backward.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

What it computes is exactly what :mod:`flowmaps.objectives` computes (same samples for the same
generator, same loss, same gradients up to floating-point rounding; ``tests/test_fast.py`` checks
it in float64). Only the way it is computed changes:

1. **One stacked pass for both branches.** For an MLP ``v = sigma * F([s, t, x / sigma])`` the
   diagonal rows (flow matching), the off-diagonal primal rows and the off-diagonal tangent rows
   go through each layer as *one* GEMM on a stacked batch of ``n_diag + (1 + k) n_off`` rows
   (``k`` tangents). With eta = 0.75 and one tangent that is 1.25 B rows instead of B, so the
   LSD step costs about (3 * 1.25 + 0.25) / 3 = 1.33 flow-matching steps in GEMM work (the last
   0.25 B is the teacher's no-grad forward), the paper's cost model.
2. **A hand-written backward.** Forward-mode through an activation a gives
   ``dh = a'(pre) * dpre``; reverse mode through that needs ``a''``. Autograd would record every
   elementwise primitive of ``a`` and ``a'`` (about ten nodes per layer, each with its own saved
   tensors and kernels); :class:`_StackedMLP` instead saves the layer inputs and
   pre-activations and uses the closed forms

       gelu: a = h Phi(h),             a' = Phi(h) + h phi(h),       a'' = phi(h) (2 - h^2)
       silu: a = h sig(h),             a' = sig (1 + h (1 - sig)),   a'' = sig (1 - sig) (2 + h (1 - 2 sig))
       tanh: a = tanh(h),              a' = 1 - a^2,                 a'' = -2 a a'

   so each layer's backward is two GEMMs on the stacked rows plus a few fused elementwise ops.
   Tangent blocks that need no gradient (the Eulerian transport term, under stop-gradient) ride
   along in the forward GEMMs and are left out of the backward ones.

Use it through :class:`FastObjective`, which wraps any objective and falls back to the plain
objective for configurations it does not fuse (other networks, PSD, MeanFlow's v-space residual,
stopgrad variants, dropout)::

    >>> from flowmaps.objectives import make_objective
    >>> from flowmaps.fast import FastObjective
    >>> objective = FastObjective(make_objective("lsd"))   # same call: objective(model, x1)

``FastObjective(..., return_logs=False)`` skips the ``.item()`` calls of the logs, so a whole
training step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowmaps.flowmap import FlowMap
from flowmaps.interpolants import _expand
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import Eulerian, FlowMatching, Lagrangian, LossOutput, Objective, _sq
from flowmaps.timesampling import diagonal_times, off_diagonal_times, split_batch

__all__ = ["FastObjective", "stacked_mlp", "fusable"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------- activations
# a(h) and "vjp of a": act_backward(g, h, a) = g * a'(h), through the native fused kernels
# (one vectorised pass each), and a''(h) in closed form for the second-order term.
def _act(name: str, h: Tensor) -> Tensor:
    """a(h): the exact (erf) GELU, SiLU or tanh."""
    if name == "gelu":
        return torch.nn.functional.gelu(h)
    if name == "silu":
        return torch.nn.functional.silu(h)
    return torch.tanh(h)


def _act_backward(name: str, g: Tensor, h: Tensor, a: Tensor, out: Tensor | None = None) -> Tensor:
    """g * a'(h) for g, h of the same shape; a = a(h) (used by tanh); written into out if given."""
    ops = torch.ops.aten
    if name == "gelu":
        return ops.gelu_backward(g, h) if out is None else ops.gelu_backward.grad_input(g, h, grad_input=out)
    if name == "silu":
        return ops.silu_backward(g, h) if out is None else ops.silu_backward.grad_input(g, h, grad_input=out)
    return ops.tanh_backward(g, a) if out is None else ops.tanh_backward.grad_input(g, a, grad_input=out)


def _act_d2(name: str, h: Tensor, a: Tensor) -> Tensor:
    """a''(h); a = a(h)."""
    if name == "gelu":
        hh = h * h
        return torch.exp(hh * -0.5).mul_(_INV_SQRT2PI).mul_(2.0 - hh)
    if name == "silu":
        sig = torch.sigmoid(h)
        return sig * (1.0 - sig) * (2.0 + h * (1.0 - 2.0 * sig))
    return (1.0 - a * a).mul_(a).mul_(-2.0)


# ----------------------------------------------------------------------------- fused MLP
class _StackedMLP(torch.autograd.Function):
    """Forward and tangent pass of an MLP on stacked rows, with a hand-written backward.

    Rows of the input ``h0`` (R, d_in), R = n_primal + k * n_tan:
      - rows [0, n_primal): primal inputs; the last n_tan of them are the base points of the
        tangents;
      - then k blocks of n_tan tangent rows each, block j the input tangent along direction j
        at those base points. Blocks [0, k_grad) get gradients, the rest are forward only.

    Per hidden layer with weight W (out, in) and bias b:
        pre = h[:P] W^T + b;  dpre_j = dh_j W^T;  h'[:P] = a(pre);  dh'_j = a'(pre[P - n:]) * dpre_j
    and the output layer gives (h[:P] W^T + b_out, dh W^T) (the caller scales by sigma).
    Backward, with G the incoming gradients: G_pre = a'(pre) G_h (plus, on the tangents' base
    rows, a''(pre) sum_j G_dh_j dpre_j), G_dpre_j = a'(pre) G_dh_j; then per layer one GEMM for
    the weight gradient over all rows that carry gradient and one for the input gradient.
    """

    @staticmethod
    def forward(ctx, h0, n_primal, n_tan, k_grad, act, *params):  # type: ignore[override]
        weights, biases = params[0::2], params[1::2]
        p = n_primal
        rows = h0.shape[0]
        k = (rows - p) // n_tan if n_tan else 0
        h = h0
        saved_h, saved_z, saved_a = [], [], []
        for w, b in zip(weights[:-1], biases[:-1]):
            z = torch.empty(rows, w.shape[0], dtype=h.dtype, device=h.device)
            torch.addmm(b, h[:p], w.t(), out=z[:p])
            if k:
                torch.mm(h[p:], w.t(), out=z[p:])
            h_next = torch.empty_like(z)
            pre = z[:p]
            a = h_next[:p]
            if act == "gelu":
                torch.ops.aten.gelu.out(pre, out=a)
            else:
                a.copy_(_act(act, pre))
            pre_off, a_off = pre[p - n_tan :], a[p - n_tan :]
            for j in range(k):
                sl = slice(p + j * n_tan, p + (j + 1) * n_tan)
                _act_backward(act, z[sl], pre_off, a_off, out=h_next[sl])
            saved_h.append(h)
            saved_z.append(z)
            saved_a.append(a)
            h = h_next
        saved_h.append(h)
        w, b = weights[-1], biases[-1]
        out_primal = torch.addmm(b, h[:p], w.t())
        out_tan = h[p:] @ w.t()
        ctx.meta = (p, n_tan, k_grad, act, rows, len(weights))
        ctx.save_for_backward(*saved_h, *saved_z, *saved_a, *weights)
        return out_primal, out_tan

    @staticmethod
    def backward(ctx, g_primal, g_tan):  # type: ignore[override]
        p, n_tan, k_grad, act, rows, n_layers = ctx.meta
        saved = list(ctx.saved_tensors)
        hs = saved[:n_layers]
        zs = saved[n_layers : 2 * n_layers - 1]
        acts = saved[2 * n_layers - 1 : 3 * n_layers - 2]
        weights = saved[3 * n_layers - 2 :]
        rg = p + k_grad * n_tan  # rows that carry gradient
        like = {"dtype": hs[0].dtype, "device": hs[0].device}
        d_out = weights[-1].shape[0]
        gz = torch.empty(rg, d_out, **like)
        if g_primal is None:
            gz[:p].zero_()
        else:
            gz[:p] = g_primal
        if k_grad:
            if g_tan is None:
                gz[p:].zero_()
            else:
                gz[p:] = g_tan[: k_grad * n_tan]
        grads: list[Tensor | None] = [None] * (2 * n_layers)
        grads[2 * n_layers - 2] = gz.t() @ hs[-1][:rg]
        grads[2 * n_layers - 1] = gz[:p].sum(0)
        g_h = gz @ weights[-1]
        for layer in range(n_layers - 2, -1, -1):
            z, a = zs[layer], acts[layer]
            pre = z[:p]
            g_z = torch.empty_like(g_h)
            g_pre = _act_backward(act, g_h[:p], pre, a, out=g_z[:p])
            if k_grad:
                pre_off, a_off = pre[p - n_tan :], a[p - n_tan :]
                second = None
                for j in range(k_grad):
                    sl = slice(p + j * n_tan, p + (j + 1) * n_tan)
                    _act_backward(act, g_h[sl], pre_off, a_off, out=g_z[sl])
                    term = g_h[sl] * z[sl]
                    second = term if second is None else second.add_(term)
                g_pre[p - n_tan :].addcmul_(second, _act_d2(act, pre_off, a_off))
            grads[2 * layer] = g_z.t() @ hs[layer][:rg]
            grads[2 * layer + 1] = g_pre.sum(0)
            if layer > 0 or ctx.needs_input_grad[0]:
                g_h = g_z @ weights[layer]
        g_h0 = None
        if ctx.needs_input_grad[0]:
            g_h0 = torch.zeros(rows, g_h.shape[1], **like)
            g_h0[:rg] = g_h
        return (g_h0, None, None, None, None, *grads)


def stacked_mlp(net: MLP, h0: Tensor, n_primal: int, n_tan: int, k_grad: int) -> tuple[Tensor, Tensor]:
    """Run ``net`` on stacked inputs h0 = [primal rows; k tangent blocks] in one fused pass.

    Args:
        net: the MLP (its activation and layers are used; inputs are already its input rows,
            ``net.inputs`` and ``net.input_tangent``: [s, t, x / sigma] and any Fourier features).
        h0: (n_primal + k * n_tan, net.in_features) stacked input rows and input tangents.
        n_primal: number of primal rows; the tangents sit at the last n_tan of them.
        n_tan: rows per tangent block.
        k_grad: how many leading tangent blocks need gradients (the rest are forward only).

    Returns:
        (v, dv): v of shape (n_primal, dim), the network output, and dv of shape
        (k * n_tan, dim), the stacked directional derivatives, both already scaled by sigma.
    """
    params: list[Tensor] = []
    for layer in [*net.hidden, net.out]:
        params += [layer.weight, layer.bias]
    out, dout = _StackedMLP.apply(h0, n_primal, n_tan, k_grad, net.activation, *params)
    return net.sigma * out, net.sigma * dout


def _tangent_rows(net: MLP, s: Tensor, t: Tensor, x: Tensor, ds: Tensor, dt: Tensor, dx: Tensor | None) -> Tensor:
    """Input tangent rows along (ds, dt, dx) at base points (s, t, x) (the Fourier features' tangent
    depends on them). ``dx = None`` is a zero dx: where the features depend on x only, those rows
    are [ds, dt, 0, ..., 0], written without computing the features."""
    if dx is None and not net.time_features:
        rows = torch.zeros(x.shape[0], net.in_features, dtype=x.dtype, device=x.device)
        rows[:, 0], rows[:, 1] = ds, dt
        return rows
    return net.input_tangent(s, t, x, ds, dt, torch.zeros_like(x) if dx is None else dx)


def _has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.training and m.p > 0 for m in model.modules())


def fusable(objective: Objective, model: FlowMap, x1: Tensor) -> bool:
    """Whether :class:`FastObjective` fuses this objective on this model (else it falls back)."""
    if not isinstance(model.net, MLP) or x1.ndim != 2 or _has_active_dropout(model):
        return False
    if type(objective) is FlowMatching:
        return True
    if type(objective) is Lagrangian:
        return objective.stopgrad == "teacher" and objective.backend in ("auto", "tangent", "jvp")
    if type(objective) is Eulerian:
        return (
            objective.space == "map"
            and not objective.interval_weight
            and objective.backend in ("auto", "tangent", "jvp")
        )
    return False


class FastObjective(nn.Module):
    """Wrap an objective: the same loss and gradients, computed in one fused pass where possible.

    Fused: flow matching, LSD / LMD (``stopgrad="teacher"``) and the Eulerian family in X-space
    (``space="map"``: ESD, EMD; both stop-gradient placements; no ``interval_weight``) on an
    :class:`~flowmaps.nets.mlp.MLP`
    without active dropout, with the exact-derivative backends ("auto", "tangent", "jvp"; all
    three compute the same exact derivative). Everything else calls the wrapped objective.

    The random draws (noise, then diagonal times, then off-diagonal times) happen in the same
    order as in :class:`~flowmaps.objectives.Objective`, so with the same generator both give
    the same batch.

    Args:
        objective: the objective to wrap (e.g. ``make_objective("lsd")``).
        return_logs: if False, skip the per-term logs (no host synchronisation, so the step can
            be captured in a CUDA graph); ``logs`` is then empty.
    """

    def __init__(self, objective: Objective, return_logs: bool = True) -> None:
        super().__init__()
        self.objective = objective
        self.return_logs = return_logs
        self.name = objective.name

    def forward(
        self, model: FlowMap, x1: Tensor, x0: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The wrapped objective's loss on data x1 (B, dim); x0 noise (drawn if None)."""
        obj = self.objective
        if not fusable(obj, model, x1):
            return obj(model, x1, x0, generator)
        if x0 is None:
            x0 = model.sigma * torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape; got {tuple(x0.shape)} and {tuple(x1.shape)}")
        net: MLP = model.net  # type: ignore[assignment]
        batch = x1.shape[0]
        eta = obj.eta if obj.has_off_diagonal else 1.0
        n_diag, n_off = split_batch(batch, eta)
        kw = {"generator": generator, "device": x1.device, "dtype": x1.dtype}
        td = diagonal_times(n_diag, **kw) if n_diag else None
        s = t = None
        if n_off:
            s, t = off_diagonal_times(n_off, kind=obj.times, **kw)

        # ---- stacked input rows: [diagonal; off-diagonal primal; tangent blocks]
        blocks, target_diag = [], None
        if n_diag:
            it = model.interpolant.sample(x0[:n_diag], x1[:n_diag], td)
            blocks.append(net.inputs(td, td, it.x_t))
            if obj.diagonal_target == "teacher":
                with torch.no_grad():
                    target_diag = obj.teacher_velocity(model, it.x_t, td)
            else:
                target_diag = it.dx_t
        k_grad = 0
        if n_off:
            its = model.interpolant.sample(x0[n_diag:], x1[n_diag:], s)
            x_s = its.x_t
            blocks.append(net.inputs(s, t, x_s))
            zeros, ones = torch.zeros_like(s), torch.ones_like(s)
            if isinstance(obj, Lagrangian):
                blocks.append(_tangent_rows(net, s, t, x_s, zeros, ones, None))  # d/dt
                k_grad = 1
            else:  # Eulerian, X-space
                if obj.velocity == "sample":
                    b = its.dx_t
                else:
                    with torch.no_grad():
                        b = obj.teacher_velocity(model, x_s, s)
                if obj.stopgrad == "none":
                    # one directional derivative along (ds, dt, dx) = (1, 0, b), with gradient
                    blocks.append(_tangent_rows(net, s, t, x_s, ones, zeros, b))
                else:
                    blocks.append(_tangent_rows(net, s, t, x_s, ones, zeros, None))  # d/ds, with gradient
                    blocks.append(_tangent_rows(net, s, t, x_s, zeros, zeros, b))  # grad_x . b, under sg
                k_grad = 1  # the first tangent block carries gradients
        h0 = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
        v, dv = stacked_mlp(net, h0, n_diag + n_off, n_off, k_grad)

        branch_sums, branch_counts = [], []
        logs: dict[str, float] = {}
        if n_diag:
            sq = _sq(v[:n_diag] - target_diag)
            branch_sums.append(obj._weighted(model, td, td, sq).sum())
            branch_counts.append(n_diag)
            if self.return_logs:
                logs["diagonal"] = sq.detach().mean().item()
        if n_off:
            v_off = v[n_diag:]
            gap = _expand(t - s, x_s)
            if isinstance(obj, Lagrangian):
                # X = x + (t - s) v, dX/dt = v + (t - s) dv/dt; target sg(v_{t,t}(sg(X))).
                X = x_s + gap * v_off
                dX_dt = v_off + gap * dv
                with torch.no_grad():
                    target = obj.teacher_velocity(model, X.detach(), t)
                r = dX_dt - target
            elif obj.stopgrad == "none":
                # d/ds X + grad_x X . b = b - v + (t - s) (d/ds v + grad_x v . b), all with gradient.
                r = b - v_off + gap * dv
            else:
                # d/ds X = -v + (t - s) dv/ds; transport sg(grad_x X . b) = b + (t - s) grad_x v . b.
                dX_ds = -v_off + gap * dv[:n_off]
                transport = (b + gap * dv[n_off:]).detach()
                r = dX_ds + transport
            sq = _sq(r)
            branch_sums.append(obj._weighted(model, s, t, sq).sum())
            branch_counts.append(n_off)
            if self.return_logs:
                logs[obj.name] = sq.detach().mean().item()
        if obj.reduction == "mean":
            loss = sum(branch_sums) / batch
        else:
            loss = sum(total / n for total, n in zip(branch_sums, branch_counts))
        if self.return_logs:
            logs["loss"] = float(loss.detach())
        return LossOutput(loss=loss, logs=logs)
