"""Build a FlowMap from a JSON-able config: a small, explicit table of constructors.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A model config is a plain dict that survives ``json.dumps``::

    {
        "net": {"name": "mlp", "dim": 2, "width": 512, "depth": 4},  # or {"name": "unet", ...}
        "sigma": 0.577,               # std of the base noise x0 ~ N(0, sigma^2 I)
        "interpolant": "linear",      # optional, default "linear"
        "learn_loss_weight": False,   # optional: learned log-variance w(s, t) of the loss
        "loss_weight": {"dim": 128, "hidden": 128},  # optional kwargs of LossWeight
    }

Other top-level keys (data set, method, training settings, ...) may sit beside these in a
checkpoint's ``config.json``; :func:`build_model` reads only :data:`MODEL_KEYS`.
The MLP takes its preconditioning scale from the top-level ``sigma`` unless its own config
sets one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from flowmaps.flowmap import FlowMap

MODEL_KEYS = ("net", "sigma", "interpolant", "learn_loss_weight", "loss_weight")
"""The top-level config keys that describe the model (everything else is metadata)."""


def _build_mlp(kwargs: dict[str, Any], sigma: float) -> nn.Module:
    from flowmaps.nets.mlp import MLP

    kwargs = dict(kwargs)
    kwargs.setdefault("sigma", sigma)
    return MLP(**kwargs)


def _build_unet(kwargs: dict[str, Any], sigma: float) -> nn.Module:
    from flowmaps.nets.unet import UNet

    kwargs = dict(kwargs)
    kwargs.setdefault("sigma", sigma)
    return UNet.from_config(kwargs)


NETS: dict[str, Callable[[dict[str, Any], float], nn.Module]] = {
    "mlp": _build_mlp,
    "unet": _build_unet,
}
"""Network name -> constructor(kwargs without "name", top-level sigma)."""


def build_net(net_config: dict[str, Any], sigma: float = 1.0) -> nn.Module:
    """Construct the network v(s, t, x) named by ``net_config["name"]`` with the other keys."""
    if not isinstance(net_config, dict) or "name" not in net_config:
        raise ValueError(f"net config must be a dict with a 'name' key; got {net_config!r}")
    name = net_config["name"]
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETS)}")
    kwargs = {k: v for k, v in net_config.items() if k != "name"}
    try:
        return NETS[name](kwargs, float(sigma))
    except TypeError as err:  # unexpected or missing constructor arguments
        raise ValueError(f"bad arguments for network {name!r}: {err}") from err


def build_model(config: dict[str, Any]) -> FlowMap:
    """A freshly initialised FlowMap described by ``config`` (see the module docstring).

    Raises:
        ValueError: if the config lacks "net" or names an unknown network or bad arguments.
    """
    if "net" not in config:
        raise ValueError(f"model config needs a 'net' entry; got keys {sorted(config)}")
    sigma = float(config.get("sigma", 1.0))
    net = build_net(config["net"], sigma)
    loss_weight = None
    if config.get("learn_loss_weight", False):
        from flowmaps.nets.embeddings import LossWeight

        loss_weight = LossWeight(**config.get("loss_weight", {}))
    return FlowMap(net, sigma=sigma, interpolant=config.get("interpolant", "linear"), loss_weight=loss_weight)


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The model part of a (possibly larger) config: only the keys in MODEL_KEYS."""
    return {k: config[k] for k in MODEL_KEYS if k in config}
