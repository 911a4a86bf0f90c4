"""The trainer state file: one safetensors file, nothing pickled.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

:func:`save_state_file` stores a nested state (dicts, lists, tuples, tensors, JSON scalars: model,
EMA and optimiser state dicts, RNG states, step and guard windows) as the file's tensors, each
under its path in the nesting (e.g. ``/optimizer/state/0/exp_avg``), and the rest as a JSON
skeleton in the file's metadata under ``"flowmaps_trainer"``. :func:`load_state_file` rebuilds
the nesting; it never unpickles anything, so a file from elsewhere can be read safely.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowmaps.utils import atomic_write, current_umask

__all__ = [
    "load_state_file",
    "load_trainer_state",
    "rng_state",
    "save_state_file",
    "set_rng_state",
    "trainer_state",
]

logger = logging.getLogger("flowmaps.training")
_META_KEY = "flowmaps_trainer"


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Nested containers -> a JSON skeleton; tensors go to ``tensors`` under their path."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        items = []
        for i, (k, v) in enumerate(obj.items()):
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot store a dict key of type {type(k).__name__} at {prefix}")
            items.append([k, _flatten(v, f"{prefix}/{i}", tensors)])
        return {"__items__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store an object of type {type(obj).__name__} at {prefix}")


def _unflatten(skel: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__items__" in skel:
            return {k: _unflatten(v, tensors) for k, v in skel["__items__"]}
        if "__tuple__" in skel:
            return tuple(_unflatten(v, tensors) for v in skel["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in skel.items()}
    if isinstance(skel, list):
        return [_unflatten(v, tensors) for v in skel]
    return skel


def save_state_file(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a nested state (tensors + JSON-able values) to one safetensors file, atomically.

    The bytes go to a temporary file in the same folder, which is fsynced and then renamed over
    ``path`` (:func:`flowmaps.utils.atomic_write`), so a crash never leaves a half-written checkpoint.

    Raises:
        TypeError: a value that is neither a tensor, a container nor a JSON scalar.
    """
    from safetensors.torch import save as st_save

    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    data = st_save(tensors, metadata={_META_KEY: json.dumps(skeleton)})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write, mode=0o666 & ~current_umask())


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_state_file` (safetensors only; nothing is unpickled).

    Raises:
        FileNotFoundError: missing file. ValueError: not a valid trainer checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trainer checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a valid safetensors file ({type(err).__name__}: {err})") from err
    if _META_KEY not in meta:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a flowmaps trainer checkpoint")
    return _unflatten(json.loads(meta[_META_KEY]), tensors)


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """The states of the training generator, torch's global CPU generator and (on CUDA) the device's."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(generator: torch.Generator, device: torch.device, state: dict[str, Tensor]) -> None:
    """Restore :func:`rng_state` (the CUDA entry only on a CUDA device)."""
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def trainer_state(trainer: Any) -> dict[str, Any]:
    """What :meth:`Trainer.state_dict` returns: weights, EMA, objective, optimiser, step, the guard's
    scale, count and windows, every rank's RNG states (a collective with several ranks) and the config."""
    from flowmaps.training.distributed import gather_rng

    return {
        "model": trainer.model.state_dict(),
        "ema": trainer.ema_model.state_dict(),
        "objective": trainer.objective.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "step": trainer.global_step,
        "lr_scale": trainer.lr_scale,
        "recoveries": trainer.guard.recoveries,
        "guard": trainer.guard.state_dict(),
        "rng": gather_rng(rng_state(trainer.generator, trainer.device), trainer.device),
        "world_size": trainer.world_size,
        "config": trainer.config.to_dict(),
    }


def load_trainer_state(trainer: Any, state: dict[str, Any]) -> None:
    """Load :func:`trainer_state` into ``trainer`` (its own config is kept). The RNG states are
    restored when the file holds this rank's and was written by as many ranks; otherwise the
    generator is reseeded from the step (with a warning)."""
    from flowmaps.training.distributed import RANK_SEED_STRIDE

    trainer.model.load_state_dict(state["model"])
    trainer.ema_model.load_state_dict(state["ema"])
    trainer.objective.load_state_dict(state["objective"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.global_step = int(state["step"])
    trainer.lr_scale = float(state["lr_scale"])
    trainer.guard.load_state_dict(state.get("guard", {}), int(state.get("recoveries", 0)), trainer.global_step)
    rng, rank, world = state.get("rng", {}), trainer.rank, trainer.world_size
    if str(rank) in rng and int(state.get("world_size", 1)) == world:
        set_rng_state(trainer.generator, trainer.device, rng[str(rank)])
    else:
        logger.warning("no RNG state for rank %d of %d: reseeding from the step", rank, world)
        trainer.generator.manual_seed(trainer.config.seed + RANK_SEED_STRIDE * rank + trainer.global_step)
    trainer.guard.start()
