"""Tests for flowmaps.nets.unet and flowmaps.nets.embeddings.

Time convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import jvp

from flowmaps.nets.embeddings import LossWeight, PositionalEmbedding, positional_embedding
from flowmaps.nets.unet import UNet

SMALL = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, num_heads=2)


def _randomise(net: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Perturb every parameter so that zero-initialised layers do not hide the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(b: int = 3, dtype: torch.dtype = torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 28, 28, generator=g, dtype=dtype) * 0.5
    s = torch.rand(b, generator=g, dtype=dtype) * 0.5
    t = s + 0.1 + 0.4 * torch.rand(b, generator=g, dtype=dtype)
    return s, t, x


# ------------------------------------------------------------------ embeddings


def test_positional_embedding_values() -> None:
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    e = positional_embedding(t, 8, scale=1000.0)
    assert e.shape == (3, 8) and e.dtype == torch.float64
    assert torch.equal(e[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float64))
    # Frequencies 10000^(-i/4), i = 0..3: check one entry by hand.
    assert math.isclose(float(e[1, 5]), math.sin(250.0 * 10_000 ** (-1 / 4)), rel_tol=1e-12)
    # Each (cos, sin) pair lies on the unit circle.
    assert torch.allclose(e[:, :4] ** 2 + e[:, 4:] ** 2, torch.ones(3, 4, dtype=torch.float64))
    assert PositionalEmbedding(8)(t).shape == (3, 8)
    with pytest.raises(ValueError):
        positional_embedding(t, 7)


def test_loss_weight_starts_at_zero_and_learns() -> None:
    lw = LossWeight(dim=16, hidden=32)
    json.dumps(lw.config)
    s = torch.rand(5)
    t = s + 0.2
    w = lw(s, t)
    assert w.shape == (5,) and torch.equal(w, torch.zeros(5))
    # Minimising exp(-w) * r2 + w over w gives w = log r2: one gradient step moves w towards it.
    opt = torch.optim.SGD(lw.parameters(), lr=0.1)
    r2 = torch.full((5,), 4.0)
    for _ in range(2):
        w = lw(s, t)
        loss = (torch.exp(-w) * r2 + w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (lw(s, t) > 0).all()  # moved towards log 4 > 0
    assert LossWeight(dim=16, hidden=0)(s, t).abs().max() == 0


# ------------------------------------------------------------------ UNet


def test_default_unet_size_and_shape() -> None:
    net = UNet()
    n = net.num_parameters()
    assert 2e6 < n < 1e7, n  # a few million parameters: an fp16 checkpoint of a few MB
    s, t, x = _inputs(2, torch.float32)
    v = net(s, t, x)
    assert v.shape == x.shape
    assert torch.equal(v, torch.zeros_like(v))  # zero-initialised output layer


def test_small_unet_shapes_scalar_times_and_attention() -> None:
    net = UNet(**SMALL, attn_levels=(1,)).double()
    _randomise(net)
    s, t, x = _inputs(2)
    v = net(s, t, x)
    assert v.shape == (2, 1, 28, 28) and torch.isfinite(v).all()
    # Scalar times broadcast to the batch.
    v0 = net(torch.tensor(0.2, dtype=torch.float64), 0.7, x)
    v1 = net(torch.full((2,), 0.2, dtype=torch.float64), torch.full((2,), 0.7, dtype=torch.float64), x)
    torch.testing.assert_close(v0, v1)
    # Other image sizes divisible by the downsampling work too (e.g. 32x32).
    assert net(s, t, torch.randn(2, 1, 32, 32, dtype=torch.float64)).shape == (2, 1, 32, 32)


def test_conditioning_on_s_and_t_minus_s() -> None:
    net = UNet(**SMALL).double()
    _randomise(net)
    s, t, x = _inputs(2)
    v = net(s, t, x)
    assert not torch.allclose(v, net(s, t + 0.1, x))
    assert not torch.allclose(v, net(s + 0.1, t, x))
    # With time_cond="s_dt" the embedding sees (s, t - s); with "s_t" it sees (s, t).
    e = net.time_embedding(s, t)
    feats = torch.cat([positional_embedding(s, 16), positional_embedding(t - s, 16)], dim=-1)
    torch.testing.assert_close(e, net.cond_mlp(feats))
    with pytest.raises(ValueError):
        UNet(**SMALL, time_cond="t_only")


def test_preconditioning_scales_input_and_output() -> None:
    """v = sigma * F(x / sigma): two nets with equal weights and sigmas a, b satisfy
    v_b(x) = (b / a) v_a(x a / b)."""
    a, b = 0.5, 2.0
    na = UNet(**SMALL, sigma=a).double()
    _randomise(na)
    nb = UNet(**{**SMALL, "sigma": b}).double()
    nb.load_state_dict(na.state_dict())
    s, t, x = _inputs(2)
    torch.testing.assert_close(nb(s, t, x), (b / a) * na(s, t, x * a / b))


def test_config_roundtrip_is_json() -> None:
    net = UNet(**SMALL, attn_levels=[1], dropout=0.1)
    cfg = json.loads(json.dumps(net.config))
    net2 = UNet.from_config(cfg)
    net2.load_state_dict(net.state_dict())
    assert net2.config == net.config
    _randomise(net2)
    net.load_state_dict(net2.state_dict())
    net.eval(), net2.eval()
    s, t, x = _inputs(2, torch.float32)
    torch.testing.assert_close(net(s, t, x), net2(s, t, x))


def test_dropout_only_in_train_mode() -> None:
    net = UNet(**SMALL, dropout=0.5)
    _randomise(net)
    s, t, x = _inputs(2, torch.float32)
    net.eval()
    torch.testing.assert_close(net(s, t, x), net(s, t, x))
    net.train()
    assert not torch.allclose(net(s, t, x), net(s, t, x))


def test_jvp_in_t_matches_central_difference() -> None:
    net = UNet(**SMALL).double()
    _randomise(net)
    s, t, x = _inputs(2)

    def f(tt: torch.Tensor) -> torch.Tensor:
        return net(s, tt, x)

    v, dv = jvp(f, (t,), (torch.ones_like(t),))
    h = 1e-6
    fd = (f(t + h) - f(t - h)) / (2 * h)
    torch.testing.assert_close(v, f(t))
    assert dv.abs().max() > 1e-3  # a non-trivial derivative
    torch.testing.assert_close(dv, fd, rtol=1e-6, atol=1e-6 * float(dv.detach().abs().max()))


def test_jvp_in_s_t_and_x_jointly_matches_central_difference() -> None:
    """Tangent (ds, dt, dx) through every input, with attention at 14x14 (explicit softmax)."""
    net = UNet(**SMALL, attn_levels=(1,)).double()
    _randomise(net)
    s, t, x = _inputs(2)
    g = torch.Generator().manual_seed(5)
    ds, dt = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([0.3, 1.0], dtype=torch.float64)
    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    _, dv = jvp(net, (s, t, x), (ds, dt, dx))
    h = 1e-6
    fd = (net(s + h * ds, t + h * dt, x + h * dx) - net(s - h * ds, t - h * dt, x - h * dx)) / (2 * h)
    torch.testing.assert_close(dv, fd, rtol=1e-6, atol=1e-6 * float(dv.detach().abs().max()))


def test_backward_through_jvp_gives_finite_gradients() -> None:
    """The Lagrangian loss differentiates d/dt X_{s,t} w.r.t. the weights: backward through the JVP."""
    net = UNet(**SMALL, attn_levels=(1,), dropout=0.1).double()
    _randomise(net)
    s, t, x = _inputs(2)

    def jump(tt: torch.Tensor) -> torch.Tensor:
        return x + (tt - s)[:, None, None, None] * net(s, tt, x)

    _, dX = jvp(jump, (t,), (torch.ones_like(t),))
    loss = (dX**2).sum()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # Spot check one weight against a finite difference of the loss.
    p = net.conv_out.bias
    h = 1e-6

    def loss_at(delta: float) -> float:
        with torch.no_grad():
            p.add_(delta)
            _, d = jvp(jump, (t,), (torch.ones_like(t),))
            p.sub_(delta)
        return float((d**2).sum())

    torch.manual_seed(0)  # dropout masks must not differ between the calls
    net.eval()
    p.grad = None
    _, dX = jvp(jump, (t,), (torch.ones_like(t),))
    (dX**2).sum().backward()
    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert math.isclose(float(p.grad[0]), fd, rel_tol=1e-5, abs_tol=1e-8)


# ------------------------------------------------------------------ tangent pass


@pytest.mark.parametrize(
    "extra",
    [
        {"attn_levels": (1,)},  # attention at the second level and in the middle
        {"time_cond": "s_t", "channel_mults": (1, 2, 2), "num_res_blocks": 2},  # three levels, 7x7 middle
    ],
)
def test_tangent_pass_equals_torch_func_jvp(extra) -> None:
    """UNet.jvp carries the tangent by hand; it must equal forward-mode AD to float64 precision,
    for a tangent moving s, t and x at once."""
    net = UNet(**{**SMALL, **extra}).double()
    _randomise(net)
    s, t, x = _inputs(3)
    g = torch.Generator().manual_seed(5)
    ds, dt = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v_ref, dv_ref = jvp(net, (s, t, x), (ds, dt, dx))
    v, dv = net.jvp(s, t, x, ds, dt, dx)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(dv, dv_ref, rtol=1e-10, atol=1e-10)
    assert dv.abs().max() > 1e-2  # a real derivative, not zeros on both sides
    # Scalar tangents broadcast like the (B,) ones.
    _, dv_scalar = net.jvp(s, t, x, 0.0, 1.0, torch.zeros_like(x))
    _, dv_vec = net.jvp(
        s, t, x, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), torch.zeros_like(x)
    )
    torch.testing.assert_close(dv_scalar, dv_vec)


def test_gradients_through_the_tangent_pass_equal_those_through_jvp() -> None:
    """The LSD loss differentiates d/dt X: the weight gradients of a loss on dv must agree."""
    net = UNet(**SMALL, attn_levels=(1,)).double()
    _randomise(net)
    s, t, x = _inputs(2)
    ones, zeros = torch.ones_like(s), torch.zeros_like(s)
    grads = []
    for mode in ("jvp", "tangent"):
        net.zero_grad()
        if mode == "jvp":
            v, dv = jvp(net, (s, t, x), (zeros, ones, torch.zeros_like(x)))
        else:
            v, dv = net.jvp(s, t, x, zeros, ones, torch.zeros_like(x))
        (dv.pow(2).sum() + (v * dv).sum()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    scale = float(grads[0].abs().max())
    assert scale > 1e-3
    # Entries that are zero in exact arithmetic come out at rounding level: absolute tolerance relative to the largest.
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-8, atol=1e-11 * scale)


def test_tangent_pass_uses_one_dropout_mask_for_primal_and_tangent() -> None:
    """In train mode with dropout, dv is the derivative of the dropped-out network: a central
    difference of the primal under the same random masks (same seed) matches it."""
    net = UNet(**SMALL, dropout=0.5).double().train()
    _randomise(net)
    s, t, x = _inputs(2)
    dx = torch.randn_like(x)
    zeros = torch.zeros_like(s)
    h = 1e-6

    def run(xx, dd):
        torch.manual_seed(123)
        return net.jvp(s, t, xx, zeros, zeros, dd)

    _, dv = run(x, dx)
    v_plus, _ = run(x + h * dx, dx)
    v_minus, _ = run(x - h * dx, dx)
    torch.testing.assert_close(dv, (v_plus - v_minus) / (2 * h), rtol=1e-5, atol=1e-6)
    # ... and the masks really differ between seeds (dropout is active).
    torch.manual_seed(7)
    assert not torch.allclose(net.jvp(s, t, x, zeros, zeros, dx)[0], run(x, dx)[0])


@pytest.mark.parametrize("stacked", [True, False])
def test_partial_tangent_covers_the_last_rows(stacked, monkeypatch) -> None:
    """A tangent for the last n rows only gives those rows' derivative (and the full primal),
    whether the layers stack primal and tangent in one call or run them apart."""
    import flowmaps.nets.unet_blocks as unet_blocks

    monkeypatch.setattr(unet_blocks, "STACK_TANGENT", stacked)
    net = UNet(**SMALL, attn_levels=(1,)).double()
    _randomise(net)
    s, t, x = _inputs(4)
    g = torch.Generator().manual_seed(9)
    ds, dt = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v_full, dv_full = net.jvp(s, t, x, ds, dt, dx)
    v_ref, dv_ref = jvp(net, (s, t, x), (ds, dt, dx))
    torch.testing.assert_close(dv_full, dv_ref, rtol=1e-10, atol=1e-10)
    v, dv = net.jvp(s, t, x, ds[1:], dt[1:], dx[1:])
    assert v.shape == x.shape and dv.shape == (3, 1, 28, 28)
    torch.testing.assert_close(v, v_full, rtol=0, atol=1e-12)
    torch.testing.assert_close(dv, dv_full[1:], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="more than"):
        net.jvp(s[:2], t[:2], x[:2], ds, dt, dx)
