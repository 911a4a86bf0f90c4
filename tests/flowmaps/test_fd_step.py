"""The finite-difference backend takes a step sized to the network's time scale.

Time convention: t = 0 is noise, t = 1 is data. The UNet embeds 1000 s and 1000 (t - s), so a
step of 5e-3 moves its fastest time feature by 5 radians; its own step, 0.1 / 1000, is tested
against the exact tangent pass in float32, the dtype training uses.
"""

from __future__ import annotations

import json

import pytest
import torch

from flowmaps.cli import main
from flowmaps.flowmap import DEFAULT_FD_STEP, FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.nets.unet import UNet
from flowmaps.objectives import make_objective
from tests import REPO

OLD_DEFAULT = 5e-3
SHIPPED = REPO / "checkpoints" / "fmnist-lsd"


def _relative_errors(model: FlowMap, fd_step: float | None, seed: int = 1) -> list[float]:
    """|fd - tangent| / |tangent| of d/ds X_{s,t} and d/dt X_{s,t} on a batch of images."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(4, 1, 28, 28, generator=g)
    s = 0.5 * torch.rand(4, generator=g)
    t = s + 0.5 * torch.rand(4, generator=g)
    out = []
    with torch.no_grad():
        for ds, dt in ((1.0, 0.0), (0.0, 1.0)):
            _, exact = model.jvp(x, s, t, ds=ds, dt=dt, backend="tangent")
            _, fd = model.jvp(x, s, t, ds=ds, dt=dt, backend="fd", fd_step=fd_step)
            out.append(float((fd - exact).norm() / exact.norm()))
    return out


def _small_unet() -> FlowMap:
    torch.manual_seed(0)
    unet = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16)
    with torch.no_grad():  # the output layer starts at zero: move every weight off its init
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return FlowMap(unet, sigma=0.5).eval()


def test_unet_states_its_time_scale_and_fd_defaults_from_it():
    model = _small_unet()
    assert model.net.time_scale == 1000.0
    assert model.resolve_fd_step() == pytest.approx(1e-4)
    assert model.resolve_fd_step(3e-4) == 3e-4  # an explicit step wins
    slow = FlowMap(UNet(base_channels=8, channel_mults=(1,), num_res_blocks=1, emb_dim=16, emb_scale=1.0))
    assert slow.resolve_fd_step() == DEFAULT_FD_STEP  # capped at the library's default


def test_unet_fd_default_step_matches_the_tangent_pass():
    """Relative error of d/ds X and d/dt X under 1 % at the network's own step; the old default
    step 5e-3 is off by more than 50 %."""
    model = _small_unet()
    assert max(_relative_errors(model, None)) < 0.01
    assert min(_relative_errors(model, OLD_DEFAULT)) > 0.5


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="shipped fmnist-lsd checkpoint absent")
def test_shipped_unet_fd_default_step_matches_the_tangent_pass():
    from flowmaps.hub import from_pretrained

    model, _ = from_pretrained(SHIPPED)
    default = _relative_errors(model, None)
    assert max(default) < 0.01, default
    assert _relative_errors(model, OLD_DEFAULT)[0] > 0.1  # d/ds X, the Eulerian objectives' derivative


def test_objective_fd_step_reaches_the_network():
    """The objectives pass fd_step=None through, so the loss with backend "fd" is the tangent
    pass's loss to within the derivative's error, and worse with the old step."""
    model = _small_unet()
    x1 = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x0 = 0.5 * torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))

    def loss(**kw):
        obj = make_objective("esd", eta=0.0, **kw)
        with torch.no_grad():
            return float(obj(model, x1, x0, generator=torch.Generator().manual_seed(4)).loss)

    exact = loss(backend="tangent")
    assert abs(loss(backend="fd") - exact) < 0.01 * exact
    assert abs(loss(backend="fd", fd_step=OLD_DEFAULT) - exact) > 0.1 * exact
    with pytest.raises(ValueError, match="fd_step"):
        make_objective("lsd", backend="fd", fd_step=-1.0)
    with pytest.raises(ValueError, match="fd_step"):
        model.resolve_fd_step(0.0)


def test_mlp_time_features_set_the_step():
    assert FlowMap(MLP(width=8, depth=1)).resolve_fd_step() == DEFAULT_FD_STEP  # raw s, t: no time scale
    net = MLP(width=8, depth=1, fourier=8, fourier_time_scale=50.0)
    assert net.time_scale == pytest.approx(float(net.freqs[:2].abs().max()))
    assert FlowMap(net).resolve_fd_step() == pytest.approx(min(DEFAULT_FD_STEP, 0.1 / net.time_scale))


def test_cli_fd_step(tmp_path, capsys):
    tiny = ["--width", "8", "--depth", "1", "--batch-size", "16", "--steps", "2", "--eval-n", "0", "--no-progress"]
    base = ["train", "--data", "checkerboard", "--method", "esd", *tiny]
    assert main([*base, "--backend", "fd", "--fd-step", "2e-3", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["objective"]["fd_step"] == 2e-3
    assert main([*base, "--backend", "fd", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["objective"]["fd_step"] == DEFAULT_FD_STEP
    assert main([*base, "--fd-step", "2e-3", "--out", str(tmp_path / "c")]) == 2
    assert "--fd-step is the step of --backend fd" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--backend", "fd", "--fd-step", "-1", "--out", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert "--fd-step: must be > 0" in capsys.readouterr().err
