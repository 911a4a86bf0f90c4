"""The MLP's tangent pass and the objectives' branch fusion against plain, unfused references (float64).

Time convention: t = 0 is noise, t = 1 is data.

The fused default runs the diagonal rows and the off-diagonal rows that carry gradients in one call
of MLP.jvp (a partial tangent, hand-written backward). The reference computes every derivative
with torch.func.jvp through the MLP's autograd forward, each branch in its own call
(``backend="jvp", fuse_branches=False``): an independent path to the same loss and gradients.
"""

from __future__ import annotations

import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.nets.embeddings import LossWeight
from flowmaps.nets.mlp import MLP, _TangentPass
from flowmaps.objectives import make_objective
from flowmaps.timesampling import split_batch


def _model(activation: str = "gelu", seed: int = 0, fourier: int = 0, time_scale: float = 0.0) -> FlowMap:
    torch.manual_seed(seed)
    net = MLP(
        dim=2,
        width=24,
        depth=3,
        sigma=0.6,
        activation=activation,
        fourier=fourier,
        fourier_scale=2.0,
        fourier_time_scale=time_scale,
    )
    return FlowMap(net.double(), sigma=0.6)


def _loss_and_grads(objective, model: FlowMap, x1: torch.Tensor, seed: int):
    model.zero_grad(set_to_none=True)
    out = objective(model, x1, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return out, [p.grad.detach().clone() for p in model.parameters()]


def _fused_and_plain(method: str, kwargs: dict, model: FlowMap, x1: torch.Tensor, **extra):
    fused = make_objective(method, **kwargs, **extra)
    plain = make_objective(method, **{**kwargs, "backend": "jvp", "fuse_branches": False}, **extra)
    n_diag, n_off = split_batch(x1.shape[0], fused.eta if fused.has_off_diagonal else 1.0)
    return fused, plain, fused._can_fuse(model, n_diag, n_off, tangent=fused.uses_jvp)


# (method, settings, whether the default fuses the branches on the MLP)
CASES = [
    ("lsd", {}, True),
    ("lsd", {"reduction": "sum_of_means"}, True),
    ("lsd", {"backend": "tangent"}, True),
    ("lsd", {"stopgrad": "input"}, True),
    ("esd", {}, True),
    ("esd", {"stopgrad": "teacher"}, True),
    ("esd", {"velocity": "sample"}, True),  # the X-space Eulerian residual with b = x1 - x0
    ("esd", {"interval_weight": True}, True),
    ("psd-m", {}, True),
    ("meanflow", {}, True),  # the v-space residual
    ("ct", {}, True),
    ("lsd", {"eta": 0.0}, False),  # no diagonal rows: nothing to fuse
]


@pytest.mark.parametrize(("method", "kwargs", "fuses"), CASES)
@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
def test_fused_matches_plain(method: str, kwargs: dict, fuses: bool, activation: str) -> None:
    model = _model(activation)
    x1 = torch.rand(37, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fused, plain, fusing = _fused_and_plain(method, kwargs, model, x1)
    assert fusing == fuses
    ref, ref_grads = _loss_and_grads(plain, model, x1, seed=3)
    out, grads = _loss_and_grads(fused, model, x1, seed=3)
    assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=1e-14), (out.loss, ref.loss)
    assert out.logs.keys() == ref.logs.keys()
    for k in ref.logs:
        assert out.logs[k] == pytest.approx(ref.logs[k], rel=1e-11, abs=1e-14)
    for g, g_ref in zip(grads, ref_grads):
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12), (g - g_ref).abs().max()


@pytest.mark.parametrize(("method", "kwargs", "fuses"), [c for c in CASES if c[2]][:7])
@pytest.mark.parametrize("time_scale", [0.0, 3.0])
def test_fused_matches_plain_with_fourier_features(method: str, kwargs: dict, fuses: bool, time_scale: float) -> None:
    """With random Fourier features the input rows and their tangents change (for ESD's transport
    direction, and with time frequencies for every direction, the features' tangent is not zero);
    loss and gradients still match."""
    model = _model("gelu", fourier=5, time_scale=time_scale)
    x1 = torch.rand(37, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fused, plain, fusing = _fused_and_plain(method, kwargs, model, x1)
    assert fusing
    ref, ref_grads = _loss_and_grads(plain, model, x1, seed=3)
    out, grads = _loss_and_grads(fused, model, x1, seed=3)
    assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=1e-14), (out.loss, ref.loss)
    assert len(grads) == len(ref_grads) == 2 * (3 + 1)  # the frequencies are a buffer, not trained
    for g, g_ref in zip(grads, ref_grads):
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12), (g - g_ref).abs().max()


def test_distillation_teacher_and_learned_weight() -> None:
    """LMD, EMD, CD (a frozen teacher velocity, also the diagonal's target) and PD (a frozen flow
    map) with a learned log-variance, fused and plain."""
    teacher = _model("gelu", seed=5)
    model = _model("gelu", seed=0)
    model.loss_weight = LossWeight(dim=8, hidden=8).double()
    x1 = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for method in ("lmd", "emd", "cd", "pd"):
        fused, plain, fusing = _fused_and_plain(method, {}, model, x1, teacher=teacher)
        assert fusing
        ref, ref_grads = _loss_and_grads(plain, model, x1, seed=4)
        out, grads = _loss_and_grads(fused, model, x1, seed=4)
        assert torch.allclose(out.loss, ref.loss, rtol=1e-12)
        assert len(grads) > 2 * (3 + 1)  # the weight's parameters train too
        for g, g_ref in zip(grads, ref_grads):
            assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)


def _rows(n: int, g: torch.Generator):
    s, t = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    return s, t, torch.randn(n, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
def test_partial_tangent_matches_autodiff_and_passes_gradcheck(activation: str) -> None:
    """A tangent on the last rows only: v on every row equals the forward pass, dv on the last rows
    equals torch.func.jvp there; the hand-written backward passes gradcheck, also when only v or
    only dv carries a gradient (the other output then takes none)."""
    net = MLP(dim=2, width=6, depth=2, sigma=0.7, activation=activation).double()
    g = torch.Generator().manual_seed(0)
    n_diag, n = 3, 4
    sd, td, xd = _rows(n_diag, g)
    s, t, x = _rows(n, g)
    ds, dt = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    dx = torch.randn(n, 2, generator=g, dtype=torch.float64)
    v, dv = net.jvp(torch.cat([sd, s]), torch.cat([td, t]), torch.cat([xd, x]), ds, dt, dx)
    v_ref, dv_ref = torch.func.jvp(net, (s, t, x), (ds, dt, dx))
    assert v.shape == (n_diag + n, 2) and dv.shape == (n, 2)
    assert torch.allclose(v[n_diag:], v_ref, rtol=1e-13, atol=1e-14)
    assert torch.allclose(v[:n_diag], net(sd, td, xd), rtol=1e-13, atol=1e-14)
    assert torch.allclose(dv, dv_ref, rtol=1e-12, atol=1e-14)

    params = [p for layer in [*net.hidden, net.out] for p in (layer.weight, layer.bias)]
    h0 = torch.randn(n_diag + n, net.in_features, generator=g, dtype=torch.float64, requires_grad=True)
    dh0 = torch.randn(n, net.in_features, generator=g, dtype=torch.float64, requires_grad=True)
    for pick in (slice(0, 2), slice(0, 1), slice(1, 2)):

        def f(h, dh, *ps, pick=pick):
            return _TangentPass.apply(h, dh, activation, *ps)[pick]

        assert torch.autograd.gradcheck(f, (h0, dh0, *params), eps=1e-6, atol=1e-7)


def test_forward_is_the_layer_by_layer_network() -> None:
    """The forward pass (the layer loop without tangents) is the plain stack of layers, bit for bit,
    so checkpoints give the outputs they gave; jvp's primal rows agree with it."""
    torch.manual_seed(0)
    net = MLP(dim=2, width=32, depth=3, sigma=0.6)
    s, t, x = torch.rand(50), torch.rand(50), torch.randn(50, 2)
    h = net.inputs(s, t, x)
    for layer in net.hidden:
        h = torch.nn.functional.gelu(layer(h))
    assert torch.equal(net(s, t, x), net.sigma * net.out(h))
    v, _ = net.jvp(s, t, x, torch.zeros(3), torch.ones(3), torch.zeros(3, 2))
    torch.testing.assert_close(v, net(s, t, x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="tangent has 51 rows"):
        net.jvp(s, t, x, torch.zeros(51), torch.ones(51), torch.zeros(51, 2))


def test_bf16_autocast_backward_runs_and_stays_close() -> None:
    """Under CPU bf16 autocast the hand-written backward runs in the forward's autocast state and
    returns gradients of the parameters' dtype, close to the float32 ones."""
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=64, depth=3, sigma=0.6), sigma=0.6)
    x1 = torch.rand(256, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grads = {}
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = make_objective("esd")(model, x1, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        grads[bf16] = torch.cat([p.grad.flatten() for p in model.parameters()])
    rel = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert 0 < rel < 3e-2, rel
