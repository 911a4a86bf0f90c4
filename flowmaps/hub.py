"""Save and load trained flow maps: safetensors weights, a JSON config and a model card.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A checkpoint is a folder with three files:

- ``model.safetensors``: the network's state dict (the EMA weights by default), fp32 or fp16;
- ``config.json``: the model config understood by :func:`flowmaps.registry.build_model`, plus
  any metadata (data set, method, training settings, evaluation numbers);
- ``README.md``: a model card (data, network, method, steps, wall time, hardware, metrics).

:func:`save_pretrained` writes the folder atomically: everything goes into a temporary folder
beside the target, which is then renamed into place, so a reader never sees a half-written
checkpoint. :func:`from_pretrained` reads a local folder or, failing that, a Hugging Face Hub
repository id through ``huggingface_hub.snapshot_download`` (offline when ``FLOWMAPS_HUB_OFFLINE``
or ``HF_HUB_OFFLINE`` is set). Weights are only ever read with safetensors: a pickle file posing
as ``model.safetensors`` is rejected without being executed.

Example::

    >>> from flowmaps.hub import from_pretrained
    >>> model, config = from_pretrained("checkpoints/checkerboard-lsd")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

import flowmaps
from flowmaps.registry import build_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
"""The files of a checkpoint folder (the model card is optional when loading)."""

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------------------------- paths
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


# ---------------------------------------------------------------------------------- model card
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metrics_table(metrics: Any) -> str:
    """Markdown table from {name: value}, {row: {col: value}} or [{col: value}, ...]."""
    if isinstance(metrics, dict) and all(not isinstance(v, dict) for v in metrics.values()):
        lines = ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        return "\n".join(lines)
    if isinstance(metrics, dict):
        rows = [{"": k, **v} for k, v in metrics.items()]
    else:
        rows = list(metrics)
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_seconds(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return str(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def render_model_card(card: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """A Markdown model card with Hub front matter.

    Known keys of ``card`` (all optional): title, summary, data, network, method, steps,
    wall_time (seconds or text), hardware, metrics (see below), license, usage, notes. Other
    keys are listed under "Details". ``metrics`` is {name: value}, {row: {column: value}} or a
    list of row dicts, rendered as a table.
    """
    card = dict(card)
    license_ = card.pop("license", "mit")
    title = card.pop("title", "flowmaps checkpoint")
    out = [
        "---",
        "library_name: flowmaps",
        f"license: {license_}",
        "tags:",
        "- flow-map",
        "- consistency-model",
        "- self-distillation",
        "---",
        "",
        f"# {title}",
        "",
    ]
    summary = card.pop("summary", None)
    if summary:
        out += [str(summary), ""]
    out += [
        "A flow map X_{s,t}(x) = x + (t - s) v_{s,t}(x) trained by self-distillation "
        "(Boffi, Albergo, Vanden-Eijnden, arXiv 2505.18825). Time runs from t = 0 (noise) to "
        "t = 1 (data); one network serves every number of sampling steps.",
        "",
        "## Training",
        "",
    ]
    fields = [
        ("data", "Data"),
        ("network", "Network"),
        ("method", "Method"),
        ("steps", "Steps"),
        ("wall_time", "Wall time"),
        ("hardware", "Hardware"),
    ]
    for key, label in fields:
        if key in card:
            value = card.pop(key)
            text = _fmt_seconds(value) if key == "wall_time" else _fmt(value)
            out.append(f"- **{label}**: {text}")
    out.append("")
    metrics = card.pop("metrics", None)
    if metrics:
        out += ["## Metrics", "", _metrics_table(metrics), ""]
    usage = card.pop(
        "usage",
        "```python\nfrom flowmaps.hub import from_pretrained\n\n"
        'model, config = from_pretrained("<this folder or Hub id>")\n```',
    )
    out += ["## Usage", "", str(usage), ""]
    notes = card.pop("notes", None)
    if card:
        out += ["## Details", ""]
        out += [f"- **{k}**: {_fmt(v)}" for k, v in card.items()]
        out.append("")
    if notes:
        out += ["## Notes", "", str(notes), ""]
    if config is not None:
        out += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- saving
def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _state_for_saving(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A CPU copy of the state dict, floating tensors cast to dtype, each with its own storage."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().clone()
    return out


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
        card: model card: a dict rendered by :func:`render_model_card`, or Markdown text.
        ema: use the EMA weights when ``model`` is a trainer.
        dtype: "float32" (bit-exact) or "float16" (half the size; the shipped image models).

    Returns:
        The folder's path.
    """
    from safetensors.torch import save as st_save

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
    if "net" not in config:
        raise ValueError("config must contain the model's 'net' entry (see flowmaps.registry)")
    if hasattr(model, "ema_model") and hasattr(model, "model"):
        model = model.ema_model if ema else model.model
    torch_dtype = _DTYPES[dtype]
    tensors = _state_for_saving(model, torch_dtype)
    full_config = {
        **config,
        "weights_dtype": str(torch_dtype).removeprefix("torch."),
        "flowmaps_version": flowmaps.__version__,
    }
    config_text = json.dumps(full_config, indent=2, sort_keys=True)
    if card is None:
        card = {}
    card_text = card if isinstance(card, str) else render_model_card(card, full_config)

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is not
        _write_file(tmp / WEIGHTS_NAME, st_save(tensors, metadata={"format": "pt"}))
        _write_file(tmp / CONFIG_NAME, config_text.encode())
        _write_file(tmp / CARD_NAME, card_text.encode())
        if folder.is_dir():
            for item in folder.iterdir():  # keep what else lives there (trainer state, logs)
                if item.name not in CHECKPOINT_FILES:
                    target = tmp / item.name
                    if item.is_dir():
                        shutil.copytree(item, target)
                    else:
                        try:
                            os.link(item, target)
                        except OSError:
                            shutil.copy2(item, target)
        _fsync_dir(tmp)
        if folder.is_dir():
            old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------------------------- loading
def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when FLOWMAPS_HUB_OFFLINE or HF_HUB_OFFLINE is set to 1/true/yes/on."""
    return _truthy("FLOWMAPS_HUB_OFFLINE") or _truthy("HF_HUB_OFFLINE")


def _expected_files_msg() -> str:
    return f"a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME} (and {CARD_NAME})"


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """Fetch (or find in the local cache) a Hub repository's checkpoint files."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=list(CHECKPOINT_FILES),
            local_files_only=offline,
            library_name="flowmaps",
            library_version=flowmaps.__version__,
        )
    except Exception as err:  # network, missing repo, offline cache miss, ...
        where = "the local Hub cache (offline mode)" if offline else "the Hugging Face Hub"
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder and could not be loaded from {where}: "
            f"{type(err).__name__}: {err}. Expected: {_expected_files_msg()}."
        ) from err
    return Path(folder)


def _locate(path_or_repo_id: str | os.PathLike, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{str(path)!r} is a file; expected a folder: {_expected_files_msg()}")
    text = str(path_or_repo_id)
    if _REPO_ID_RE.fullmatch(text) and not text.startswith("."):
        return _download(text, revision, cache_dir)
    raise FileNotFoundError(
        f"no checkpoint folder {text!r} (and it is not a Hub repo id 'owner/name'); {_expected_files_msg()}"
    )


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors; never unpickles anything.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not a valid safetensors file (truncated, corrupt, a pickle, ...).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing weights file {str(path)!r}; {_expected_files_msg()}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a valid safetensors file ({type(err).__name__}: {err})") from err


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Copy ``state`` into ``model`` after checking keys and shapes; cast to the model's dtypes.

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
            Hugging Face Hub (fetched with ``snapshot_download``; only the local cache is used
            when FLOWMAPS_HUB_OFFLINE or HF_HUB_OFFLINE is set).
        device: where to put the model.
        revision: Hub branch, tag or commit (ignored for local folders).
        cache_dir: Hub cache folder (default: huggingface_hub's).
        dtype: the model's compute dtype (fp16 weights are upcast to it).

    Returns:
        (model in eval mode, config dict as read from config.json).

    Raises:
        FileNotFoundError: folder or files missing (the message lists the expected files).
        ValueError: invalid safetensors file, or weights that do not fit the config.
    """
    folder = _locate(path_or_repo_id, revision, cache_dir)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"missing {str(config_path)!r}; {_expected_files_msg()}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(config_path)!r} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "net" not in config:
        raise ValueError(f"{str(config_path)!r} lacks the model's 'net' entry")
    state = load_safetensors(folder / WEIGHTS_NAME)
    model = build_model(config).to(dtype=dtype)
    load_state_checked(model, state, source=f"weights in {str(folder / WEIGHTS_NAME)!r}")
    return model.to(device).eval(), config
