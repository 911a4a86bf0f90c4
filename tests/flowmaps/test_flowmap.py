"""FlowMap: identity on the diagonal, derivative backends agree, interpolants are right."""

import math

import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.interpolants import LinearInterpolant, TrigInterpolant, make_interpolant
from flowmaps.nets.mlp import MLP
from tests.gaussian_flow import GaussianFlowNet, exact_map

pytestmark = pytest.mark.usefixtures("float64")


def small_model(act="gelu"):
    torch.manual_seed(0)
    return FlowMap(MLP(dim=2, width=32, depth=3, sigma=0.7, activation=act), sigma=0.7)


def test_jump_is_identity_on_the_diagonal():
    model = small_model()
    x = torch.randn(64, 2)
    t = torch.rand(64)
    assert torch.equal(model.jump(x, t, t), x)


@pytest.mark.parametrize("act", ["gelu", "silu", "tanh"])
@pytest.mark.parametrize("tangent", [(0.0, 1.0, False), (1.0, 0.0, False), (0.3, -0.7, True)])
def test_backends_agree(act, tangent):
    """Forward-mode JVP, the hand-written tangent pass and a central difference agree."""
    model = small_model(act)
    x = torch.randn(32, 2)
    s, t = torch.rand(32) * 0.5, 0.5 + torch.rand(32) * 0.5
    ds, dt, with_dx = tangent
    dx = torch.randn_like(x) if with_dx else None
    X_j, dX_j = model.jvp(x, s, t, dx=dx, ds=ds, dt=dt, backend="jvp")
    X_t, dX_t = model.jvp(x, s, t, dx=dx, ds=ds, dt=dt, backend="tangent")
    X_f, dX_f = model.jvp(x, s, t, dx=dx, ds=ds, dt=dt, backend="fd", fd_step=1e-5)
    X_d, dX_d = model.jvp(x, s, t, dx=dx, ds=ds, dt=dt, backend="dual")
    torch.testing.assert_close(dX_d, dX_j, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(X_t, X_j, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dX_t, dX_j, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dX_f, dX_j, rtol=1e-7, atol=1e-7)


def test_jvp_matches_the_exact_time_derivative():
    """d/dt X_{s,t}(x) of the exact Gaussian map equals b_t(X_{s,t}(x)) (Lagrangian identity)."""
    mean = torch.tensor([1.0, -0.5])
    model = FlowMap(GaussianFlowNet(mean, c=0.3, sigma=1.0), sigma=1.0)
    x = torch.randn(16, 2)
    s, t = 0.2, 0.7
    X, dX = model.jvp(x, s, t, dt=1.0, backend="jvp")
    torch.testing.assert_close(X, exact_map(mean, 0.3, 1.0, x, s, t))
    torch.testing.assert_close(dX, model.velocity(X, t), rtol=1e-10, atol=1e-10)


def test_gradients_flow_through_the_tangent_pass():
    model = small_model()
    x = torch.randn(8, 2)
    s, t = torch.zeros(8), torch.ones(8)
    grads = []
    for backend in ("jvp", "tangent", "dual"):
        model.zero_grad()
        _, dX = model.jvp(x, s, t, dt=1.0, backend=backend)
        dX.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-10, atol=1e-10)
    assert grads[0].abs().sum() > 0


def test_bad_times_and_backends_are_rejected():
    model = small_model()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="shape"):
        model.jump(x, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="backend"):
        model.jvp(x, 0.0, 1.0, dt=1.0, backend="magic")


@pytest.mark.parametrize("interp", [LinearInterpolant(), TrigInterpolant()])
def test_interpolant_endpoints_and_derivative(interp):
    x0, x1 = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(interp.sample(x0, x1, torch.zeros(5)).x_t, x0)
    torch.testing.assert_close(interp.sample(x0, x1, torch.ones(5)).x_t, x1)
    t, h = torch.rand(5) * 0.8 + 0.1, 1e-6
    fd = (interp.sample(x0, x1, t + h).x_t - interp.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(interp.sample(x0, x1, t).dx_t, fd, rtol=1e-6, atol=1e-6)
    assert math.isclose(float(interp.alpha(torch.tensor(0.0))), 1.0)


def test_unknown_interpolant():
    with pytest.raises(ValueError, match="linear"):
        make_interpolant("cubic")
