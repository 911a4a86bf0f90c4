"""Checkpoints through huggingface_hub: save, load and push flow maps, with model cards built from their config.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A checkpoint is a folder (or a Hub repository) with three files: ``model.safetensors`` (the
network's state dict, the EMA weights by default, fp32 or fp16), ``config.json`` (the model
config of :func:`flowmaps.registry.build_model` plus metadata: data set, method, training
settings, metrics, the card's fields) and ``README.md`` (the model card, with Hub metadata).

- :mod:`flowmaps.hub.storage`: the file names, safetensors reading, strict loading, the name guard;
- :mod:`flowmaps.hub.mixin`: :class:`HubMixin`, huggingface_hub's PyTorchModelHubMixin with atomic
  saving, strict safetensors-only loading and the card below;
- :mod:`flowmaps.hub.checkpoint`: :func:`save_pretrained`, :func:`from_pretrained`, :func:`push_to_hub`;
- :mod:`flowmaps.hub.model_card` and :mod:`flowmaps.hub.model_index`: the card and its metrics.

Example::

    >>> from flowmaps.hub import from_pretrained
    >>> model, config = from_pretrained("checkpoints/checkerboard-lsd")  # doctest: +SKIP
"""

from flowmaps.hub.checkpoint import FlowMapCheckpoint, from_pretrained, push_to_hub, save_pretrained
from flowmaps.hub.mixin import HubMixin
from flowmaps.hub.model_card import model_card, render_model_card, write_model_card
from flowmaps.hub.storage import (
    CARD_NAME,
    CHECKPOINT_FILES,
    CONFIG_NAME,
    WEIGHTS_NAME,
    hub_offline,
    load_safetensors,
    load_state_checked,
    resolve_checkpoint,
)

__all__ = [
    "CARD_NAME",
    "CHECKPOINT_FILES",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FlowMapCheckpoint",
    "HubMixin",
    "from_pretrained",
    "hub_offline",
    "load_safetensors",
    "load_state_checked",
    "model_card",
    "push_to_hub",
    "render_model_card",
    "resolve_checkpoint",
    "save_pretrained",
    "write_model_card",
]
