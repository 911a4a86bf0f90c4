"""Save, load and push through huggingface_hub's PyTorchModelHubMixin, with flowmaps' guarantees.

:class:`HubMixin` is the one place where flowmaps writes and reads checkpoints; the flow-map
checkpoints (:mod:`flowmaps.hub.checkpoint`) and the FID feature network
(:class:`flowmaps.fid.FeatureNet`) both use it, so both get the same card writer and the same
rules. What it adds to the mixin:

- ``save_pretrained`` is atomic: the mixin writes into a temporary folder beside the target,
  which is then renamed into place, so a reader never sees a half-written checkpoint; files of an
  existing folder other than the checkpoint's own (trainer state, logs, metrics.json) are kept.
- weights are written and read as safetensors only (the mixin's pickle fallback is not used) and
  loaded strictly: missing keys, unexpected keys and shape mismatches raise a ValueError that
  names them;
- the model card comes from :func:`flowmaps.hub.model_card.model_card`, built from config.json;
- ``push_to_hub`` takes an optional ``api`` (an :class:`huggingface_hub.HfApi`), e.g. one for
  another endpoint.

A subclass says what to save and how to rebuild itself: ``_hub_module()`` (the module whose
state dict is the weights), ``_hub_config()`` (config.json's content) and the class method
``_hub_build(config)`` (an instance with fresh weights, before loading).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, ModelCard, PyTorchModelHubMixin, hf_hub_download
from torch import nn

import flowmaps
from flowmaps.hub.model_card import PAPER_URL, model_card, read_metrics_rows
from flowmaps.hub.storage import (
    CARD_NAME,
    CHECKPOINT_FILES,
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_safetensors,
    load_state_checked,
    state_for_saving,
)
from flowmaps.utils import current_umask, fsync_dir


def _fsync_files(folder: Path) -> None:
    for item in folder.iterdir():
        if item.is_file() and not item.is_symlink():
            with open(item, "rb+") as fh:
                os.fsync(fh.fileno())


def _keep_other_files(source: Path, target: Path) -> None:
    """Hard-link (or copy) what else lives in ``source`` into ``target``: trainer state, logs, metrics."""
    for item in source.iterdir():
        if item.name in CHECKPOINT_FILES:
            continue
        dest = target / item.name
        if item.is_dir():
            shutil.copytree(item, dest)
            continue
        try:
            os.link(item, dest)
        except OSError:
            shutil.copy2(item, dest)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, NaN) replaced by None, through dicts,
    lists and tuples (tuples become lists).

    JSON has no inf or NaN: Python's json writes them as the bare words ``Infinity`` and ``NaN``,
    which JSON.parse and other strict readers (the Hub's among them) refuse. So config.json holds
    null where a number is not finite (e.g. a KL made infinite by an empty histogram bin); say
    what null means beside it (a card's notes do)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class HubMixin(
    PyTorchModelHubMixin,
    library_name="flowmaps",
    license="mit",
    paper_url=PAPER_URL,
    tags=["flowmaps"],
):
    """PyTorchModelHubMixin with atomic saving, strict safetensors-only loading and flowmaps' model card."""

    _hub_weights_dtype: torch.dtype = torch.float32

    # ------------------------------------------------------------------ what a subclass provides
    def _hub_module(self) -> nn.Module:
        """The module whose state dict is saved and loaded (default: self)."""
        return self  # type: ignore[return-value]

    def _hub_config(self) -> dict[str, Any]:
        """config.json's content, before ``weights_dtype`` and ``flowmaps_version`` are added."""
        raise NotImplementedError

    @classmethod
    def _hub_build(cls, config: dict[str, Any]) -> HubMixin:
        """An instance built from config.json's content, weights not yet loaded."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving
    def _full_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
        base = self._hub_config() if config is None else dict(config)
        dtype_name = str(self._hub_weights_dtype).removeprefix("torch.")
        return json_safe({**base, "weights_dtype": dtype_name, "flowmaps_version": flowmaps.__version__})

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: write ``model.safetensors`` (the state dict in ``_hub_weights_dtype``)."""
        from safetensors.torch import save_file

        tensors = state_for_saving(self._hub_module(), self._hub_weights_dtype)
        path = Path(save_directory) / WEIGHTS_NAME
        save_file(tensors, str(path), metadata={"format": "pt"})
        os.chmod(path, 0o666 & ~current_umask())  # safetensors writes 0600; a checkpoint is meant to be read

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The mixin's hook: the card of ``kwargs["config"]`` (see :func:`flowmaps.hub.model_card.model_card`)."""
        config = kwargs.get("config") or self._full_config(None)
        return model_card(config, metrics_rows=kwargs.get("metrics_rows"), repo_id=kwargs.get("repo_id"))

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike,
        *,
        config: dict[str, Any] | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write model.safetensors, config.json and README.md into ``save_directory`` atomically.

        Args:
            save_directory: the checkpoint folder; created, or replaced if it exists (other files
                in it are kept).
            config: config.json's content (default: ``_hub_config()``); ``weights_dtype`` and
                ``flowmaps_version`` are added.
            repo_id, push_to_hub, push_to_hub_kwargs: push the checkpoint afterwards, as the mixin does.
            model_card_kwargs: passed to :meth:`generate_model_card` (e.g. ``repo_id``).

        Returns:
            the commit URL when pushing, else None.

        Raises:
            FileExistsError: ``save_directory`` exists and is not a folder.
        """
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder} exists and is not a folder")
        full = self._full_config(config)
        card_kwargs = {"metrics_rows": read_metrics_rows(folder), **(model_card_kwargs or {}), "config": full}
        parent = folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=parent))
        try:
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; a checkpoint is not
            super().save_pretrained(tmp, config=full, model_card_kwargs=card_kwargs)
            if folder.is_dir():
                _keep_other_files(folder, tmp)
            _fsync_files(tmp)
            fsync_dir(tmp)
            if folder.is_dir():
                old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if push_to_hub:
            return self.push_to_hub(repo_id or folder.name, config=config, **push_to_hub_kwargs)
        return None

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        config: dict[str, Any] | None = None,
        commit_message: str = "Upload flowmaps checkpoint",
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        api: HfApi | None = None,
    ) -> str:
        """Save into a temporary folder and upload it as one commit to the Hub repository ``repo_id``.

        The card is written for ``repo_id``: a ``base_model`` named without an owner is taken to
        live under the same owner. ``api`` is the client to use (default: ``HfApi(token=token)``).

        Returns:
            the commit's URL.
        """
        if api is None:
            api = HfApi(token=token, library_name="flowmaps", library_version=flowmaps.__version__)
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "checkpoint"
            self.save_pretrained(folder, config=config, model_card_kwargs={"repo_id": repo_id})
            return api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=folder,
                commit_message=commit_message,
                revision=branch,
                create_pr=create_pr,
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        map_location: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
        **_from_config: Any,
    ) -> HubMixin:
        """The mixin's hook: build from config.json, then load model.safetensors strictly (never a pickle).

        ``_from_config`` holds the values the mixin copied out of config.json; ``_hub_build``
        reads them from ``config`` itself.

        Raises:
            FileNotFoundError: config.json or model.safetensors missing.
            ValueError: an invalid safetensors file, or weights that do not fit the config.
        """
        if not isinstance(config, dict):
            raise FileNotFoundError(f"missing or unreadable {CONFIG_NAME} in {model_id!r}; {CARD_NAME} is optional")
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
        else:
            weights = Path(
                hf_hub_download(
                    repo_id=model_id,
                    filename=WEIGHTS_NAME,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                    library_name="flowmaps",
                    library_version=flowmaps.__version__,
                )
            )
        state = load_safetensors(weights)
        instance = cls._hub_build(config)
        module = instance._hub_module().to(dtype=torch_dtype)
        load_state_checked(module, state, source=f"weights in {str(weights)!r}")
        module.to(map_location).eval()
        return instance
