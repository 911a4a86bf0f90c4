"""Library inputs that a public Space meets: dtypes and shapes of states, dopri5 at the edges of
floating point, batches too small for a method's branches, dual-number JVPs through attention.

Time convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowmaps.cli import main
from flowmaps.data.gmm import GaussianMixture
from flowmaps.flowmap import FlowMap
from flowmaps.metrics import flowmap_error
from flowmaps.nets.unet import UNet
from flowmaps.objectives import make_objective
from flowmaps.registry import build_model
from flowmaps.sampling import flowmap_sample, ode_solve
from flowmaps.training import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def mlp_model(dtype=torch.float32) -> FlowMap:
    torch.manual_seed(0)
    return build_model({"net": {"name": "mlp", "dim": 2, "width": 16, "depth": 2}, "sigma": 1.0}).to(dtype)


# ------------------------------------------------------------------------------ dtypes, shapes
ENTRIES = {
    "flowmap_sample": lambda m, x: flowmap_sample(m, x, "0, 0.5, 1").x,
    "ode_solve": lambda m, x: ode_solve(m.velocity, x, "heun", n_steps=3).x,
    "dopri5": lambda m, x: ode_solve(m.velocity, x, "dopri5", rtol=1e-3, atol=1e-4).x,
    "jump": lambda m, x: m.jump(x, 0.2, 0.9),
    "velocity": lambda m, x: m.velocity(x, 0.4),
    "call": lambda m, x: m(0.1, 0.6, x),
    "jvp": lambda m, x: m.jvp(x, 0.1, 0.6, dt=1.0)[1],
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_float64_noise_into_a_float32_model_is_cast(entry):
    model = mlp_model()
    x64 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = ENTRIES[entry](model, x64)
    assert out.dtype == torch.float32
    # The same as handing the model float32 noise yourself.
    torch.testing.assert_close(out, ENTRIES[entry](model, x64.float()), rtol=0, atol=0)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_float16_state_into_a_float32_model_is_widened(entry):
    model = mlp_model()
    x16 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2)).half()
    out = ENTRIES[entry](model, x16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ENTRIES[entry](model, x16.float()), rtol=0, atol=0)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize(
    "shape, words",
    [((6, 3), ["(6, 3)", "(B, 2)"]), ((6,), ["(6,)", "(B, 2)", "1 dimension"]), ((6, 2, 1), ["(6, 2, 1)", "(B, 2)"])],
)
def test_wrong_width_or_rank_names_what_was_given_and_what_is_needed(entry, shape, words):
    with pytest.raises(ValueError) as info:
        ENTRIES[entry](mlp_model(), torch.randn(shape))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_integer_states_are_cast_when_exact_and_refused_otherwise(entry):
    model = mlp_model()
    small = torch.tensor([[1, -2], [3, 0]])
    torch.testing.assert_close(ENTRIES[entry](model, small), ENTRIES[entry](model, small.float()), rtol=0, atol=0)
    big = torch.tensor([[2**24 + 1, 0]])  # float32 holds integers exactly only up to 2^24
    with pytest.raises(ValueError, match="torch.int64.*cannot hold exactly"):
        ENTRIES[entry](model, big)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_bool_and_complex_states_are_refused(entry, dtype):
    with pytest.raises(ValueError, match=f"{dtype}.*real floating tensor of shape \\(B, 2\\)"):
        ENTRIES[entry](mlp_model(), torch.ones(4, 2, dtype=dtype))


@pytest.mark.parametrize("entry", ["flowmap_sample", "ode_solve", "dopri5"])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_samplers_refuse_non_finite_noise(entry, bad):
    x = torch.randn(5, 2)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="x0 has 1 non-finite entry"):
        ENTRIES[entry](mlp_model(), x)


def test_numpy_noise_is_taken_and_other_objects_refused():
    model = mlp_model()
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(flowmap_sample(model, x.numpy(), "0, 1").x, flowmap_sample(model, x, "0, 1").x)
    with pytest.raises(ValueError, match="x0 must be a torch.Tensor of shape \\(B, 2\\); got list"):
        flowmap_sample(model, [[0.0, 1.0]], "0, 1")


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one state"):
        flowmap_sample(mlp_model(), torch.zeros(0, 2), "0, 1")


def test_unet_states_are_checked_for_channels_and_rank_not_for_size():
    torch.manual_seed(0)
    net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, num_heads=2)
    model = FlowMap(net, sigma=0.5)
    assert model.state_shape == (1, None, None)
    out = model.jump(torch.randn(2, 1, 12, 12, dtype=torch.float64), 0.0, 1.0)  # any size, cast to float32
    assert out.shape == (2, 1, 12, 12) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(2, 3, 12, 12\); this model takes states of shape \(B, 1, H, W\)"):
        model.jump(torch.randn(2, 3, 12, 12), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\(2, 12, 12\) \(3 dimensions\).*\(B, 1, H, W\) \(4 dimensions"):
        flowmap_sample(model, torch.randn(2, 12, 12), "0, 1")


def test_a_net_without_a_state_shape_gets_the_dtype_cast_only():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, s, t, x):
            return self.a * x

    model = FlowMap(Plain())
    assert model.state_shape is None
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    out = flowmap_sample(model, x, "0, 1").x
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() * 1.5)  # X_{0,1}(x) = x + 1 * 0.5 x


def test_flowmap_error_refuses_a_target_of_another_dimension():
    gmm3 = GaussianMixture(torch.ones(1), torch.zeros(1, 3), 0.1, sigma=1.0)
    with pytest.raises(ValueError, match=r"states of shape \(B, 2\) but the target has dimension 3"):
        flowmap_error(mlp_model(), gmm3, n=8)


def test_fid_features_refuse_integer_and_non_finite_images():
    from flowmaps.fid import FeatureNet, features

    torch.manual_seed(0)
    net = FeatureNet(width=4, feature_dim=8)
    ok = features(torch.zeros(2, 1, 28, 28), net)
    assert ok.shape == (2, 8)
    with pytest.raises(ValueError, match=r"torch.uint8; they must be floats in \[-1, 1\]"):
        features(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), net)
    bad = torch.zeros(2, 1, 28, 28)
    bad[1, 0, 3, 4] = math.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        features(bad, net)


# ------------------------------------------------------------------------------------ dopri5
def test_dopri5_on_a_float16_state_matches_the_closed_form():
    """dx/dt = -x from t = 0 to 1 in float16: x(1) = x0 e^-1. The squared scaled error of a
    first step overflows float16 (max 65504); the norm is taken in float32."""
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(3)).half()
    res = ode_solve(lambda x, t: -x, x0, "dopri5")
    assert res.x.dtype == torch.float16
    exact = x0.float() * math.exp(-1.0)
    err = (res.x.float() - exact).abs().max().item()
    assert err < 4e-3, err  # float16 rounding of states of size up to about 4: ulp 2^-8 near 2..4
    assert res.stats["accepted"] >= 1


def test_dopri5_with_a_huge_but_finite_velocity_chooses_a_step():
    """A constant velocity c = 1e30 in float32: the squared norm of the scaled velocity (c / 1e-6)^2
    overflows float32, which made the starting step 0 (and a ZeroDivisionError). x(1) = x0 + c."""
    x0 = torch.zeros(4, 2)
    res = ode_solve(lambda x, t: torch.full_like(x, 1e30), x0, "dopri5")
    torch.testing.assert_close(res.x, torch.full_like(x0, 1e30), rtol=1e-5, atol=0)


def test_dopri5_with_an_infinite_starting_velocity_says_so():
    """b_t(x) = x / t is infinite at t = 0 (for x != 0): a ValueError at the start, not a ZeroDivisionError."""
    with pytest.raises(ValueError, match="velocity at the start time t=0 has 8 non-finite entries"):
        ode_solve(lambda x, t: x / t[:, None], torch.ones(4, 2), "dopri5")
    # Started after the singularity the same velocity solves fine: x(1) = x(0.5) * 2.
    res = ode_solve(lambda x, t: x / t[:, None], torch.ones(4, 2, dtype=torch.float64), "dopri5", t0=0.5, t1=1.0)
    torch.testing.assert_close(res.x, torch.full((4, 2), 2.0, dtype=torch.float64), rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- branch sizes
def _points(n, g):
    return torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("method", ["lsd", "esd", "psd-u", "psd-m", "meanflow", "ct", "shortcut"])
def test_a_batch_of_one_is_refused_by_a_method_with_two_branches(method):
    model = mlp_model()
    obj = make_objective(method)
    with pytest.raises(ValueError, match=f"method '{method}' at eta=0.75 needs at least 2 per rank"):
        obj(model, torch.randn(1, 2))
    with pytest.raises(ValueError, match="use a batch size of at least 2"):
        Trainer(model, make_objective(method), _points, TrainConfig(steps=1, batch_size=1, guard_every=1))


@pytest.mark.parametrize("method", ["lsd", "meanflow", "psd-m"])
@pytest.mark.parametrize("eta", [0.05, 0.5, 0.95])
@pytest.mark.parametrize("batch", [2, 3, 7])
def test_batches_of_two_or_more_train_both_branches(method, eta, batch):
    obj = make_objective(method, eta=eta)
    out = obj(mlp_model(), torch.randn(batch, 2), generator=torch.Generator().manual_seed(0))
    assert set(out.logs) == {"diagonal", obj.name, "loss"}
    assert all(math.isfinite(v) for v in out.logs.values())


def test_methods_with_one_branch_take_a_batch_of_one():
    model = mlp_model()
    assert math.isfinite(make_objective("fm")(model, torch.randn(1, 2)).loss.item())
    assert math.isfinite(make_objective("lsd", eta=0.0)(model, torch.randn(1, 2)).loss.item())  # off-diagonal only


def test_the_message_names_the_global_batch_needed_over_several_ranks():
    obj = make_objective("meanflow")
    with pytest.raises(ValueError) as info:
        obj.check_batch_size(1, world_size=2)
    text = str(info.value)
    assert "batch size 2 over 2 ranks gives 1 sample per rank" in text and "at least 4" in text


def test_the_cli_refuses_meanflow_at_batch_size_one(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "checkerboard", "--method", "meanflow", "--batch-size", "1", "--steps", "2"]
    code = main([*args, "--width", "8", "--depth", "1", "--no-progress", "--eval-n", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: batch size 1 gives 1 sample per rank, but method 'meanflow' at eta=0.75 needs at least 2" in err
    assert "Traceback" not in err
    assert not (out / "model.safetensors").exists()


def _two_rank_batch_worker(rank: int, world: int, out_dir: str) -> None:
    model = mlp_model()
    try:
        Trainer(model, make_objective("meanflow"), _points, TrainConfig(steps=1, batch_size=2, guard_every=1))
    except ValueError as err:
        assert "batch size 2 over 2 ranks gives 1 sample per rank" in str(err) and "at least 4" in str(err)
    else:
        raise AssertionError("a global batch of 2 over 2 ranks was accepted for meanflow")
    Trainer(model, make_objective("meanflow"), _points, TrainConfig(steps=1, batch_size=4, guard_every=1))


def test_two_ranks_check_the_batch_per_rank(tmp_path):
    from tests.flowmaps.training.test_training import _spawn_ranks

    _spawn_ranks(_two_rank_batch_worker, 2, tmp_path)


# ------------------------------------------------------------------ dual numbers and attention
@pytest.mark.parametrize("method", ["lsd", "esd", "ct", "meanflow"])
def test_dual_backend_trains_a_unet_with_attention(method):
    """Loss and gradients through torch.autograd.forward_ad (backend "dual") equal those of the
    UNet's hand-written tangent pass, with attention at the low resolution (float64)."""
    torch.manual_seed(0)
    net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, num_heads=2, attn_levels=(1,))
    for p in net.parameters():  # away from the zero initialisation, so attention matters
        p.data.normal_(0.0, 0.1)
    model = FlowMap(net, sigma=0.5).double()
    x1 = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    x0 = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    results = []
    for backend in ("dual", "tangent"):
        model.zero_grad()
        out = make_objective(method, backend=backend)(model, x1, x0, generator=torch.Generator().manual_seed(4))
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((out.loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-8, atol=1e-10)
    assert results[0][1].abs().sum() > 0
