"""Flow-map checkpoints: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub`` for any flowmaps model.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A flowmaps model is a :class:`flowmaps.flowmap.FlowMap` built by
:func:`flowmaps.registry.build_model` from a config dict. :class:`FlowMapCheckpoint` pairs the two
and gets its saving, loading and pushing from :class:`flowmaps.hub.mixin.HubMixin` (that is,
huggingface_hub's PyTorchModelHubMixin); the functions below are the short way to call it.
The state dict is saved under the model's own keys, so checkpoints written before the mixin
load unchanged.

Example::

    >>> from flowmaps.hub import from_pretrained, save_pretrained
    >>> model, config = from_pretrained("checkpoints/checkerboard-lsd")  # doctest: +SKIP
    >>> save_pretrained(model, "my-copy", config, card={"title": "my copy"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from torch import nn

from flowmaps.hub.mixin import HubMixin
from flowmaps.hub.storage import CONFIG_NAME, DTYPES, REPO_ID_RE, expected_files_msg, hub_offline
from flowmaps.registry import build_model

log = logging.getLogger(__name__)


class FlowMapCheckpoint(HubMixin):
    """A flow map (or any model of :func:`flowmaps.registry.build_model`) with its config.json content.

    Args:
        model: the network; a trainer (anything with ``ema_model`` and ``model``) is not accepted
            here, see :func:`save_pretrained`.
        config: JSON-able config with the model's "net" entry (and "sigma", ...), plus metadata:
            "card" (the model card's text fields), "metrics", "base_model", ...
        weights_dtype: "float32" (bit-exact) or "float16" (half the size).

    Raises:
        ValueError: ``config`` lacks "net", or ``weights_dtype`` is not one of the allowed names.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], weights_dtype: str = "float32") -> None:
        if weights_dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {weights_dtype!r}")
        if "net" not in config:
            raise ValueError("config must contain the model's 'net' entry (see flowmaps.registry)")
        self.model = model
        self.config = dict(config)
        self._hub_weights_dtype = DTYPES[weights_dtype]

    def _hub_module(self) -> nn.Module:
        return self.model

    def _hub_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k not in ("weights_dtype", "flowmaps_version")}

    @classmethod
    def _hub_build(cls, config: dict[str, Any]) -> FlowMapCheckpoint:
        if "net" not in config:
            raise ValueError(f"{CONFIG_NAME} lacks the model's 'net' entry")
        return cls(build_model(config), config, weights_dtype="float32")


def _checkpoint(
    model: nn.Module, config: dict[str, Any], card: dict[str, Any] | str | None, ema: bool, dtype: str
) -> FlowMapCheckpoint:
    if hasattr(model, "ema_model") and hasattr(model, "model"):
        model = model.ema_model if ema else model.model
    config = dict(config)
    if isinstance(card, dict):
        config["card"] = card
    elif isinstance(card, str):
        config["card"] = {"text": card}
    return FlowMapCheckpoint(model, config, weights_dtype=dtype)


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    config: dict[str, Any],
    card: dict[str, Any] | str | None = None,
    ema: bool = True,
    dtype: str = "float32",
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``folder`` atomically.

    Args:
        model: a FlowMap, or a :class:`flowmaps.training.Trainer` (anything with ``ema_model``
            and ``model`` attributes), in which case ``ema`` picks the EMA weights (default) or
            the raw ones.
        folder: the checkpoint folder; created, or replaced if it exists. Files in an existing
            folder other than the three written here (training state, logs) are kept.
        config: JSON-able config; must contain the model keys read by
            :func:`flowmaps.registry.build_model` ("net", "sigma", ...).
        card: the model card's fields (see :func:`flowmaps.hub.model_card.model_card`), stored
            in config.json under "card" so that the card can be rebuilt from the config; or
            Markdown text, used as the card's body.
        ema: use the EMA weights when ``model`` is a trainer.
        dtype: "float32" (bit-exact) or "float16" (half the size; the shipped image models).

    Returns:
        The folder's path.

    Raises:
        ValueError: an unknown ``dtype``, or a config without "net".
        FileExistsError: ``folder`` exists and is not a folder.
    """
    _checkpoint(model, config, card, ema, dtype).save_pretrained(folder)
    return Path(folder)


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    config: dict[str, Any],
    card: dict[str, Any] | str | None = None,
    ema: bool = True,
    dtype: str = "float32",
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload flowmaps checkpoint",
    api: HfApi | None = None,
) -> str:
    """Upload a checkpoint (the files of :func:`save_pretrained`) to the Hub repository ``repo_id``.

    The repository is created if missing. ``api`` is the huggingface_hub client to use (default
    ``HfApi(token=token)``); the other arguments are those of :func:`save_pretrained`.

    Returns:
        the commit's URL.
    """
    ckpt = _checkpoint(model, config, card, ema, dtype)
    return ckpt.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message, api=api)


def _check_local_config(folder: Path) -> None:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"missing {str(config_path)!r}; {expected_files_msg()}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(config_path)!r} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "net" not in config:
        raise ValueError(f"{str(config_path)!r} lacks the model's 'net' entry")


def _load_from_hub(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None, device: str | torch.device, dtype
) -> FlowMapCheckpoint:
    offline = hub_offline()
    if not offline:  # huggingface_hub retries an unreachable Hub for about 25 s: say what waits
        log.info("no folder %r here: looking it up on the Hugging Face Hub", repo_id)
    try:
        return FlowMapCheckpoint.from_pretrained(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            torch_dtype=dtype,
            map_location=device,
        )
    except ValueError:  # the files came, but they are not a valid checkpoint: say so as it is
        raise
    except Exception as err:  # network, missing repo or file, offline cache miss, ...
        where = "the local Hub cache (offline mode)" if offline else "the Hugging Face Hub"
        raise FileNotFoundError(
            f"no checkpoint folder {repo_id!r} here (the folder "
            f"{str(Path(repo_id).absolute())!r} does not exist), and as a Hub repo id it was looked up "
            f"on {where} without success: "
            f"{type(err).__name__}: {err}. Expected: {expected_files_msg()}."
        ) from err


def from_pretrained(
    path_or_repo_id: str | os.PathLike,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint from a local folder or a Hub repository id.

    Args:
        path_or_repo_id: a folder written by :func:`save_pretrained`, or "owner/name" on the
            Hugging Face Hub (only the local cache is used when FLOWMAPS_HUB_OFFLINE or
            HF_HUB_OFFLINE is set). A name that is no folder is looked up on the Hub only if
            :func:`could_be_hub_id` (not for "./x", "checkpoints/x", "a/b/c", ...).
        device: where to put the model.
        revision: Hub branch, tag or commit (ignored for local folders).
        cache_dir: Hub cache folder (default: huggingface_hub's).
        dtype: the model's compute dtype (fp16 weights are upcast to it).

    Returns:
        (model in eval mode, config dict as read from config.json).

    Raises:
        FileNotFoundError: folder or files missing (the message names the missing folder, says
            whether the name was looked up on the Hub, and lists the expected files).
        ValueError: invalid safetensors file or config.json, or weights that do not fit the config.
    """
    path = Path(path_or_repo_id)
    text = str(path_or_repo_id)
    if path.is_dir():
        _check_local_config(path)
        ckpt = FlowMapCheckpoint.from_pretrained(path, torch_dtype=dtype, map_location=device)
    elif path.exists():
        raise FileNotFoundError(f"{text!r} is a file; expected a folder: {expected_files_msg()}")
    elif could_be_hub_id(text):
        ckpt = _load_from_hub(text, revision, cache_dir, device, dtype)
    else:
        raise FileNotFoundError(
            f"no checkpoint folder {text!r}: the folder {str(path.expanduser().absolute())!r} does not exist "
            f"(a name that reads as a local path, or that is no Hub id 'owner/name', is not looked up on the "
            "Hugging Face Hub); "
            f"{expected_files_msg()}"
        )
    return ckpt.model, ckpt.config


LOCAL_FOLDER_NAMES = frozenset({"checkpoints", "runs"})
"""First parts of a name taken as a local folder even where it does not exist: this project's own
examples write their checkpoints under them (``--out checkpoints/cb-lsd``, ``runs/fm``)."""


def could_be_hub_id(text: str) -> bool:
    """Whether a ``from_pretrained`` name that is no local folder is looked up on the Hub: an
    "owner/name" that huggingface_hub's ``validate_repo_id`` accepts and that does not look like a
    local path (``./``, ``../``, ``/`` or ``~`` in front, more than one ``/``, a first part that is
    an existing folder here or one of :data:`LOCAL_FOLDER_NAMES`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.startswith(("./", "../", "/", "~", ".\\", "..\\")) or "\\" in text or text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    owner = text.split("/", 1)[0]
    return REPO_ID_RE.fullmatch(text) is not None and owner not in LOCAL_FOLDER_NAMES and not Path(owner).is_dir()
