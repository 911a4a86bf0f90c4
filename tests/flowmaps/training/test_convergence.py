"""A short CPU run of LSD on a Gaussian mixture learns the one-step flow map.

The exact map X_{0,1} comes from an accurate ODE solve of the mixture's closed-form velocity.
An untrained network misses it by a wide margin; 400 LSD steps must bring the error under a
threshold that the untrained network does not meet.
"""

import time

import torch

from flowmaps.data.gmm import gmm_preset
from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import make_objective


def one_step_error(model, gmm, x0, target):
    with torch.no_grad():
        return (model.jump(x0, 0.0, 1.0) - target).pow(2).sum(1).mean().item()


def test_lsd_learns_the_one_step_map_of_a_gaussian_mixture():
    torch.manual_seed(0)
    gmm = gmm_preset("two_gaussians")
    model = FlowMap(MLP(dim=2, width=64, depth=3, sigma=gmm.sigma), sigma=gmm.sigma)
    g = torch.Generator().manual_seed(1)
    x0 = gmm.sigma * torch.randn(2000, 2, generator=g)
    target = gmm.exact_flow_map(x0.double(), 0.0, 1.0).float()
    untrained = one_step_error(model, gmm, x0, target)

    objective = make_objective("lsd")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(400):
        x1 = gmm.sample(256).float()
        loss = objective(model, x1).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = one_step_error(model, gmm, x0, target)
    spread = target.var(0).sum().item()  # error of always answering the mean
    print(
        f"one-step error: untrained {untrained:.4f}, trained {trained:.4f}, "
        f"data variance {spread:.4f}, {time.perf_counter() - start:.1f} s"
    )
    threshold = 0.15 * spread
    assert untrained > threshold
    assert trained < threshold
