"""flowmaps: flow maps (consistency models) learned by self-distillation.

Time convention everywhere: t = 0 is noise, t = 1 is data.

A flow map X_{s,t}(x) = x + (t - s) v_{s,t}(x) jumps along the probability-flow ODE from time s
to time t in one network call. Train one with a self-distillation objective (Lagrangian "lsd",
Eulerian "esd", progressive "psd-u" / "psd-m", or the presets "meanflow", "shortcut", "ct"),
then sample on any time grid::

    import torch
    from flowmaps import FlowMap, MLP, Trainer, TrainConfig, make_objective, flowmap_sample, sample_toy

    model = FlowMap(MLP(dim=2, width=256, depth=3, sigma=0.577), sigma=0.577)
    trainer = Trainer(model, make_objective("lsd"), lambda n, g: sample_toy("checkerboard", n, generator=g),
                      TrainConfig(steps=2000, batch_size=1024))
    trainer.train()
    x = flowmap_sample(trainer.ema_model, 0.577 * torch.randn(4096, 2), [0.0, 0.5, 1.0]).x
"""

from flowmaps.data.gmm import GaussianMixture, gmm_preset
from flowmaps.data.point_cloud import points_from_array, points_from_csv
from flowmaps.data.toy import TOY_SETS, sample_toy
from flowmaps.flowmap import FlowMap
from flowmaps.hub import from_pretrained, save_pretrained
from flowmaps.interpolants import LinearInterpolant, TrigInterpolant, make_interpolant
from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor, energy_distance, sliced_wasserstein
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import (
    Eulerian,
    FlowMatching,
    Lagrangian,
    LossOutput,
    Progressive,
    make_objective,
)
from flowmaps.registry import build_model
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve, parse_grid, validate_grid
from flowmaps.training import DivergenceError, GraphedLoss, TrainConfig, Trainer, compile_network

__version__ = "0.1.0"

__all__ = [
    "GraphedLoss",
    "compile_network",
    "FlowMap",
    "MLP",
    "LinearInterpolant",
    "TrigInterpolant",
    "make_interpolant",
    "FlowMatching",
    "Lagrangian",
    "Eulerian",
    "Progressive",
    "LossOutput",
    "make_objective",
    "Trainer",
    "TrainConfig",
    "DivergenceError",
    "build_model",
    "save_pretrained",
    "from_pretrained",
    "flowmap_sample",
    "ode_solve",
    "make_grid",
    "parse_grid",
    "validate_grid",
    "sample_toy",
    "TOY_SETS",
    "points_from_array",
    "points_from_csv",
    "GaussianMixture",
    "gmm_preset",
    "checkerboard_kl",
    "checkerboard_kl_floor",
    "sliced_wasserstein",
    "energy_distance",
]
