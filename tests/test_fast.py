"""The fused fast path computes the same loss and gradients as the plain objectives (float64).

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import pytest
import torch

from flowmaps.fast import FastObjective, fusable, stacked_mlp
from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import make_objective


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


CASES = [
    ("fm", {}),
    ("lsd", {}),
    ("lsd", {"reduction": "sum_of_means"}),
    ("lsd", {"backend": "jvp"}),
    ("esd", {}),
    ("esd", {"velocity": "sample"}),  # the X-space Eulerian residual with b = x1 - x0
    ("lsd", {"eta": 0.0}),
]


@pytest.mark.parametrize(("method", "kwargs"), CASES)
@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
def test_fused_matches_plain(method: str, kwargs: dict, activation: str) -> None:
    model = _model(activation)
    x1 = torch.rand(37, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plain = make_objective(method, **kwargs)
    fast = FastObjective(plain)
    assert fusable(plain, model, x1)
    ref, ref_grads = _loss_and_grads(plain, model, x1, seed=3)
    out, grads = _loss_and_grads(fast, model, x1, seed=3)
    assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=1e-14), (out.loss, ref.loss)
    assert out.logs.keys() == ref.logs.keys()
    for k in ref.logs:
        assert out.logs[k] == pytest.approx(ref.logs[k], rel=1e-11, abs=1e-14)
    for g, g_ref in zip(grads, ref_grads):
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12), (g - g_ref).abs().max()


@pytest.mark.parametrize(("method", "kwargs"), CASES)
@pytest.mark.parametrize("time_scale", [0.0, 3.0])
def test_fused_matches_plain_with_fourier_features(method: str, kwargs: dict, time_scale: float) -> None:
    """With random Fourier features the input rows and their tangents change (for ESD's transport
    direction, and with time frequencies for every direction, the features' tangent is not zero);
    loss and gradients still match."""
    model = _model("gelu", fourier=5, time_scale=time_scale)
    x1 = torch.rand(37, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plain = make_objective(method, **kwargs)
    assert fusable(plain, model, x1)
    ref, ref_grads = _loss_and_grads(plain, model, x1, seed=3)
    out, grads = _loss_and_grads(FastObjective(plain), model, x1, seed=3)
    assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=1e-14), (out.loss, ref.loss)
    assert len(grads) == len(ref_grads) == 2 * (3 + 1)  # the frequencies are a buffer, not trained
    for g, g_ref in zip(grads, ref_grads):
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12), (g - g_ref).abs().max()


def test_distillation_teacher_and_learned_weight() -> None:
    """LMD (a frozen teacher velocity) and a learned log-variance go through the fused path too."""
    teacher = _model("gelu", seed=5)
    model = _model("gelu", seed=0)
    from flowmaps.nets.embeddings import LossWeight

    model.loss_weight = LossWeight(dim=8, hidden=8).double()
    x1 = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for method in ("lmd", "emd"):
        plain = make_objective(method, teacher=teacher)
        ref, ref_grads = _loss_and_grads(plain, model, x1, seed=4)
        out, grads = _loss_and_grads(FastObjective(plain), model, x1, seed=4)
        assert torch.allclose(out.loss, ref.loss, rtol=1e-12)
        for g, g_ref in zip(grads, ref_grads):
            assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)


def test_falls_back_where_not_fused() -> None:
    """PSD, MeanFlow, CT and an interval-weighted X-space Eulerian are not fused: the wrapper
    returns the plain objective's result."""
    model = _model()
    x1 = torch.rand(16, 2, dtype=torch.float64) * 2 - 1
    for method, kw in (("psd-m", {}), ("meanflow", {}), ("ct", {}), ("esd", {"interval_weight": True})):
        plain = make_objective(method, **kw)
        assert not fusable(plain, model, x1)
        ref = plain(model, x1, generator=torch.Generator().manual_seed(0))
        out = FastObjective(plain)(model, x1, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.loss, ref.loss)


def test_stacked_mlp_matches_tangent_pass_and_gradcheck() -> None:
    """The fused pass equals MLP.jvp on primal and tangent; its backward passes gradcheck."""
    net = MLP(dim=2, width=6, depth=2, sigma=0.7).double()
    g = torch.Generator().manual_seed(0)
    n_diag, n = 3, 4
    s, t = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    dx = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ds, dt = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    xd, td = (
        torch.randn(n_diag, 2, generator=g, dtype=torch.float64),
        torch.rand(n_diag, generator=g, dtype=torch.float64),
    )
    rows = lambda a, b, c: torch.cat([a[:, None], b[:, None], c / net.sigma], dim=1)  # noqa: E731
    h0 = torch.cat([rows(td, td, xd), rows(s, t, x), rows(ds, dt, dx)])
    v, dv = stacked_mlp(net, h0, n_diag + n, n, 1)
    v_ref, dv_ref = net.jvp(s, t, x, ds, dt, dx)
    assert torch.allclose(v[n_diag:], v_ref, rtol=1e-13, atol=1e-14)
    assert torch.allclose(v[:n_diag], net(td, td, xd), rtol=1e-13, atol=1e-14)
    assert torch.allclose(dv, dv_ref, rtol=1e-12, atol=1e-14)

    params = [p for layer in [*net.hidden, net.out] for p in (layer.weight, layer.bias)]
    h0 = h0.clone().requires_grad_(True)

    def f(h, *ps):
        from flowmaps.fast import _StackedMLP

        return _StackedMLP.apply(h, n_diag + n, n, 1, "gelu", *ps)

    assert torch.autograd.gradcheck(f, (h0, *params), eps=1e-6, atol=1e-7)
