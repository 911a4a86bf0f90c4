"""Eulerian self-distillation (ESD) against an independent implementation, and a convergence run.

The reference below is written from the paper's definition alone (Boffi, Albergo, Vanden-Eijnden
2025, the Eulerian characterisation d/ds X_{s,t}(x) + grad_x X_{s,t}(x) . b_s(x) = 0): the map
X_{s,t}(x) = x + (t - s) v_{s,t}(x) is a plain function of (s, x) for each row, differentiated
with torch.func.jvp, and the teacher velocity b_s = v_{s,s} is an explicit .detach(). No library
code beyond the network's forward is used. Time convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp

from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import make_objective
from flowmaps.timesampling import diagonal_times, off_diagonal_times, split_batch


def _reference_esd(model: FlowMap, x1, x0, seed: int, eta: float, transport_sg: bool):
    """Mean over the batch of the per-sample squared residuals, drawn in the library's order."""
    g = torch.Generator().manual_seed(seed)
    n = x1.shape[0]
    n_diag, n_off = split_batch(n, eta)
    t_d = diagonal_times(n_diag, generator=g, dtype=x1.dtype)
    s, t = off_diagonal_times(n_off, generator=g, dtype=x1.dtype)
    net = model.net

    def X(s_, t_, x_):
        return x_ + (t_ - s_)[:, None] * net(s_, t_, x_)

    # diagonal: flow matching
    xd0, xd1 = x0[:n_diag], x1[:n_diag]
    it = (1 - t_d)[:, None] * xd0 + t_d[:, None] * xd1
    diag = ((net(t_d, t_d, it) - (xd1 - xd0)) ** 2).sum(1)
    # off-diagonal: the Eulerian residual at I_s
    xo0, xo1 = x0[n_diag:], x1[n_diag:]
    x_s = (1 - s)[:, None] * xo0 + s[:, None] * xo1
    b = net(s, s, x_s).detach()
    _, dX_ds = jvp(lambda s_: X(s_, t, x_s), (s,), (torch.ones_like(s),))
    _, transport = jvp(lambda x_: X(s, t, x_), (x_s,), (b,))
    if transport_sg:
        transport = transport.detach()
    off = ((dX_ds + transport) ** 2).sum(1)
    return torch.cat([diag, off]).mean()


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("transport_sg", [False, True])
@pytest.mark.parametrize("path", ["plain", "unfused-tangent", "fused-tangent"])
def test_esd_equals_an_independent_implementation(transport_sg: bool, path: str) -> None:
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=24, depth=3, sigma=0.6), sigma=0.6)
    g = torch.Generator().manual_seed(1)
    x1 = torch.rand(40, 2, generator=g) * 2 - 1
    x0 = 0.6 * torch.randn(40, 2, generator=g)
    kw = {"stopgrad": "teacher"} if transport_sg else {}
    if path == "plain":
        kw.update(backend="jvp", fuse_branches=False)
    if path == "unfused-tangent":  # the MLP's tangent pass, the branches in separate calls
        kw.update(backend="tangent", fuse_branches=False)
    obj = make_objective("esd", **kw)

    model.zero_grad()
    ref = _reference_esd(model, x1, x0, seed=5, eta=0.75, transport_sg=transport_sg)
    ref.backward()
    ref_grads = _grads(model)

    model.zero_grad()
    out = obj(model, x1, x0, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    torch.testing.assert_close(out.loss.detach(), ref.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_grads(model), ref_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.usefixtures("float64")
def test_the_two_placements_differ_only_in_the_gradient() -> None:
    """Same loss value; the gradient differs by the transport term's own gradient."""
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=16, depth=2, sigma=1.0), sigma=1.0)
    x1, x0 = torch.rand(32, 2) * 2 - 1, torch.randn(32, 2)
    res = {}
    for sg in ("none", "teacher"):
        model.zero_grad()
        out = make_objective("esd", stopgrad=sg)(model, x1, x0, generator=torch.Generator().manual_seed(2))
        out.loss.backward()
        res[sg] = (out.loss.detach(), _grads(model))
    torch.testing.assert_close(res["none"][0], res["teacher"][0], rtol=1e-12, atol=0)
    assert (res["none"][1] - res["teacher"][1]).abs().max() > 1e-6


def test_esd_converges_on_a_gaussian_mixture_without_rollback(one_thread) -> None:
    """The "esd" preset brings the 1-step exact-map error of a mixture under a threshold that the
    untrained network misses by far, and the trainer's guard never has to roll back."""
    from flowmaps.data.gmm import GaussianMixture
    from flowmaps.metrics import flowmap_error
    from flowmaps.training import TrainConfig, Trainer

    gmm = GaussianMixture(
        [0.3, 0.5, 0.2], [[-1.0, 0.5], [1.0, 1.0], [0.5, -1.0]], [[0.2, 0.6], [0.5, 0.15], [0.3, 0.3]]
    )
    sigma = gmm.sigma
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=64, depth=3, sigma=sigma), sigma=sigma)
    g = torch.Generator().manual_seed(11)
    untrained = flowmap_error(model, gmm, 0.0, 1.0, n=2048, generator=g)
    trainer = Trainer(
        model,
        make_objective("esd"),
        lambda n, gen: gmm.sample(n, generator=gen).float(),
        TrainConfig(steps=1500, batch_size=512, lr=2e-3, ema_decay=0.99, seed=0, log_every=500),
    )
    trainer.train(progress=False)
    err = flowmap_error(trainer.ema_model, gmm, 0.0, 1.0, n=2048, generator=torch.Generator().manual_seed(11))
    assert trainer.recoveries == 0
    print(f"1-step exact-map error: untrained {untrained:.4f}, ESD {err:.4f}")
    assert untrained > 0.4
    assert err < 0.1, (err, untrained)
