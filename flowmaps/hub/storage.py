"""The files of a checkpoint and the checks around them: names, safetensors reading, strict loading.

A checkpoint is a folder (or a Hub repository) with three files: ``model.safetensors`` (the state
dict, fp32 or fp16), ``config.json`` (what :func:`flowmaps.registry.build_model` needs, plus
metadata) and ``README.md`` (the model card). Weights are only ever read with safetensors: a
pickle posing as ``model.safetensors`` is rejected without being executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
"""The files of a checkpoint folder (the model card is optional when loading)."""

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
"""Storage dtypes of ``save_pretrained``: float32 is bit-exact, float16 halves the size."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A Hub repository id "owner/name"."""


def expected_files_msg() -> str:
    """The sentence that error messages use to say what a checkpoint folder holds."""
    return f"a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME} (and {CARD_NAME})"


def resolve_checkpoint(name: str, root: str | os.PathLike = "checkpoints", must_exist: bool = False) -> Path:
    """The folder ``root / name`` for a checkpoint name given by a user, never a path outside root.

    ``name`` must be a single plain path component: letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit, at most 128 characters, no ``..``. Absolute paths, path
    separators, empty names and names that resolve (through symlinks) outside ``root`` are
    rejected with ValueError.

    Raises:
        ValueError: for a name that is not allowed.
        FileNotFoundError: if ``must_exist`` and the folder does not exist.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid checkpoint name {name!r}: use one plain folder name made of letters, digits, "
            "'.', '_' and '-' (no path separators, no '..', not absolute)"
        )
    root_path = Path(root).resolve()
    path = (root_path / name).resolve()
    if path.parent != root_path:
        raise ValueError(f"checkpoint name {name!r} resolves outside {str(root)!r}")
    if must_exist and not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {name!r} under {str(root)!r}")
    return path


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when FLOWMAPS_HUB_OFFLINE or HF_HUB_OFFLINE is set to 1/true/yes/on: only the local Hub cache is read."""
    return _truthy("FLOWMAPS_HUB_OFFLINE") or _truthy("HF_HUB_OFFLINE")


def state_for_saving(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A CPU copy of the state dict, floating tensors cast to ``dtype``, each with its own storage
    (safetensors refuses shared storage)."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().clone()
    return out


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors; never unpickles anything.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not a valid safetensors file (truncated, corrupt, a pickle, ...).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing weights file {str(path)!r}; {expected_files_msg()}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a valid safetensors file ({type(err).__name__}: {err})") from err


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Copy ``state`` into ``model`` after checking keys and shapes (strict); cast to the model's dtypes.

    Raises:
        ValueError: naming missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise ValueError(f"{source} do not match the model built from the config; " + "; ".join(parts))
    cast = {k: v.to(dtype=expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(cast, strict=True)
