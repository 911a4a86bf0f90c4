"""The MLP's options: random Fourier features of x (exact tangent pass, config, checkpoints) and init.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import json

import pytest
import torch

from flowmaps.hub import from_pretrained, save_pretrained
from flowmaps.nets.mlp import MLP
from flowmaps.registry import build_model


def _points(b: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.rand(b, generator=g, dtype=torch.float64), torch.rand(b, generator=g, dtype=torch.float64)
    x = torch.randn(b, 2, generator=g, dtype=torch.float64)
    ds, dt = torch.randn(b, generator=g, dtype=torch.float64), torch.randn(b, generator=g, dtype=torch.float64)
    dx = torch.randn(b, 2, generator=g, dtype=torch.float64)
    return s, t, x, ds, dt, dx


@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
@pytest.mark.parametrize("time_scale", [0.0, 2.0])
def test_jvp_with_features_matches_autodiff(activation: str, time_scale: float) -> None:
    """The hand-written tangent pass (features' tangent cos(u) du, -sin(u) du) equals torch.func.jvp,
    for a tangent along x as well as along s and t."""
    torch.manual_seed(0)
    net = MLP(
        width=16, depth=3, sigma=0.7, activation=activation, fourier=6, fourier_scale=3.0, fourier_time_scale=time_scale
    ).double()
    s, t, x, ds, dt, dx = _points()
    v, dv = net.jvp(s, t, x, ds, dt, dx)
    v_ref, dv_ref = torch.func.jvp(net, (s, t, x), (ds, dt, dx))
    assert torch.allclose(v, v_ref, rtol=1e-12, atol=1e-13)
    assert torch.allclose(dv, dv_ref, rtol=1e-10, atol=1e-12), (dv - dv_ref).abs().max()
    # the x-direction alone: the features' part of the tangent is not zero, and it matters
    zero = torch.zeros_like(s)
    _, dv_x = net.jvp(s, t, x, zero, zero, dx)
    _, dv_x_ref = torch.func.jvp(net, (s, t, x), (zero, zero, dx))
    assert torch.allclose(dv_x, dv_x_ref, rtol=1e-10, atol=1e-12)
    assert dv_x.abs().max() > 1e-3
    # along t alone: with time frequencies the features' tangent is not zero either
    _, dv_t = net.jvp(s, t, x, zero, dt, torch.zeros_like(x))
    _, dv_t_ref = torch.func.jvp(net, (s, t, x), (zero, dt, torch.zeros_like(x)))
    assert torch.allclose(dv_t, dv_t_ref, rtol=1e-10, atol=1e-12)


def test_features_are_fixed_and_change_the_inputs() -> None:
    net = MLP(width=8, depth=2, sigma=0.5, fourier=4, fourier_scale=2.0)
    assert net.in_features == 2 + 2 + 8
    assert net.hidden[0].in_features == net.in_features
    assert "freqs" in net.state_dict() and all(p is not net.freqs for p in net.parameters())
    s, t, x = torch.zeros(3), torch.ones(3), torch.randn(3, 2)
    rows = net.inputs(s, t, x)
    u = (x / 0.5) @ net.freqs
    assert torch.allclose(rows[:, 4:8], torch.sin(u)) and torch.allclose(rows[:, 8:], torch.cos(u))
    # the same config and seed give the same frequencies; another seed other ones
    again = MLP.from_config(json.loads(json.dumps(net.config)))
    assert torch.equal(again.freqs, net.freqs)
    other = MLP(width=8, depth=2, sigma=0.5, fourier=4, fourier_scale=2.0, fourier_seed=1)
    assert not torch.equal(other.freqs, net.freqs)
    # time frequencies: rows for s and t, and the features then move with t
    timed = MLP(width=8, depth=2, sigma=0.5, fourier=4, fourier_scale=2.0, fourier_time_scale=1.5)
    assert timed.freqs.shape == (4, 4) and timed.config["fourier_time_scale"] == 1.5
    assert not torch.equal(timed.inputs(s, t, x)[:, 4:], timed.inputs(s, 0.5 * t, x)[:, 4:])
    assert "fourier_time_scale" not in net.config


def test_default_has_no_features_and_keeps_the_old_config_and_state() -> None:
    """Off by default: the config has no new keys and the state dict no new tensors, so the
    checkpoints written before the option load unchanged."""
    net = MLP(width=8, depth=2)
    assert set(net.config) == {"name", "dim", "width", "depth", "sigma", "activation"}
    assert net.freqs is None and net.in_features == 4
    assert set(net.state_dict()) == {
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
        "out.weight",
        "out.bias",
    }


@pytest.mark.parametrize(
    "bad", [{"fourier": -1}, {"fourier": 3, "fourier_scale": 0.0}, {"fourier": 3, "fourier_time_scale": -1.0}]
)
def test_bad_feature_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="fourier"):
        MLP(width=8, depth=2, **bad)


def test_checkpoint_round_trip(tmp_path) -> None:
    config = {
        "net": {
            "name": "mlp",
            "dim": 2,
            "width": 12,
            "depth": 2,
            "fourier": 5,
            "fourier_scale": 2.5,
            "fourier_time_scale": 1.0,
        },
        "sigma": 0.6,
        "data": "checkerboard",
    }
    torch.manual_seed(0)
    model = build_model(config)
    folder = save_pretrained(model, tmp_path / "ck", config)
    loaded, cfg = from_pretrained(folder)
    assert cfg["net"]["fourier"] == 5
    assert torch.equal(loaded.net.freqs, model.net.freqs)
    s, t = torch.rand(7), torch.rand(7)
    x = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.equal(loaded(s, t, x), model(s, t, x))


def test_he_init_option() -> None:
    """init="he": hidden weights with variance 2 / fan_in and zero biases, recorded in the config
    only when chosen; the default keeps PyTorch's initialisation (variance 1 / (3 fan_in))."""
    torch.manual_seed(0)
    net = MLP(width=256, depth=3, init="he")
    assert net.config["init"] == "he"
    for layer in net.hidden:
        fan_in = layer.weight.shape[1]
        assert torch.count_nonzero(layer.bias) == 0
        if fan_in > 100:  # enough weights for the variance to be pinned down
            assert layer.weight.var().item() == pytest.approx(2.0 / fan_in, rel=0.05)
    default = MLP(width=256, depth=3)
    assert "init" not in default.config
    assert default.hidden[1].weight.var().item() == pytest.approx(1.0 / (3 * 256), rel=0.05)
    assert MLP.from_config(json.loads(json.dumps(net.config))).config == net.config
    with pytest.raises(ValueError, match="'default', 'he' or 'lecun'"):
        MLP(width=8, depth=2, init="xavier")


def test_lecun_init_option() -> None:
    """init="lecun" (Flax's Dense default, the released checkerboard net's start): every layer, the
    output layer too, has zero biases and weights with variance 1 / fan_in, none beyond two of the
    untruncated normal's standard deviations; recorded in the config, which rebuilds the same net."""
    torch.manual_seed(0)
    net = MLP(width=512, depth=3, init="lecun")
    assert net.config["init"] == "lecun"
    for layer in [*net.hidden, net.out]:
        fan_in = layer.weight.shape[1]
        assert torch.count_nonzero(layer.bias) == 0
        cut = 2.0 * (1.0 / fan_in) ** 0.5 / 0.8796256610342398
        assert layer.weight.abs().max().item() <= cut
        if layer.weight.numel() > 1000:  # enough weights for the variance to be pinned down
            assert layer.weight.var().item() == pytest.approx(1.0 / fan_in, rel=0.05)
    # an untruncated normal of that variance would put about 5% of its weights beyond the cut
    assert net.hidden[1].weight.abs().max().item() > 0.9 * cut
    assert MLP.from_config(json.loads(json.dumps(net.config))).config == net.config


def test_gap_times_option() -> None:
    """times="s_gap" feeds [s, t - s, x / sigma]: it equals the default net fed (s, t - s) by hand, its
    tangent pass equals torch.func.jvp along s, t and x, it survives a checkpoint's config, and an
    unknown value is refused."""
    torch.manual_seed(0)
    gap = MLP(width=16, depth=3, sigma=0.7, times="s_gap").double()
    plain = MLP(width=16, depth=3, sigma=0.7).double()
    plain.load_state_dict(gap.state_dict())
    s, t, x, ds, dt, dx = _points()
    with torch.no_grad():
        assert torch.allclose(gap(s, t, x), plain(s, t - s, x), rtol=0, atol=1e-14)
        assert not torch.allclose(gap(s, t, x), plain(s, t, x), atol=1e-3)
    v, dv = gap.jvp(s, t, x, ds, dt, dx)
    v_ref, dv_ref = torch.func.jvp(gap, (s, t, x), (ds, dt, dx))
    assert torch.allclose(v, v_ref, rtol=1e-12, atol=1e-13)
    assert torch.allclose(dv, dv_ref, rtol=1e-10, atol=1e-12)
    # along s alone the gap input moves too (d(t - s) = -ds): a tangent that forgot it would differ
    zero = torch.zeros_like(s)
    _, dv_s = gap.jvp(s, t, x, ds, zero, torch.zeros_like(x))
    _, dv_s_ref = torch.func.jvp(gap, (s, t, x), (ds, zero, torch.zeros_like(x)))
    assert torch.allclose(dv_s, dv_s_ref, rtol=1e-10, atol=1e-12)
    assert gap.config["times"] == "s_gap" and "times" not in plain.config
    rebuilt = MLP.from_config(gap.config).double()
    assert torch.equal(rebuilt.inputs(s, t, x), gap.inputs(s, t, x))
    with pytest.raises(ValueError, match="unknown times"):
        MLP(width=8, depth=2, times="t_s")
