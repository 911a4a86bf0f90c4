"""Shipped checkpoints: find them (a local folder and/or Hub repos), classify, load and cache.

A checkpoint is a folder written by :func:`flowmaps.hub.save_pretrained` (config.json,
model.safetensors, README.md). Folders whose config has a 2-D MLP are offered to the 2-D tabs;
folders whose net is a "unet" to the image tab. Loading goes through
:func:`flowmaps.hub.from_pretrained` only (safetensors, never a pickle), and user-chosen names
are checked against the listing, so no name becomes a path outside the checkpoint folder.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowmaps.flowmap import FlowMap

log = logging.getLogger(__name__)

KIND_2D = "2d"
KIND_IMAGE = "image"


@dataclass
class CheckpointInfo:
    """What the app knows about one checkpoint without loading its weights."""

    name: str
    source: str  # local folder path or Hub repo id
    config: dict[str, Any]
    kind: str  # "2d", "image" or "other"
    data: str | None = None
    method: str | None = None
    card: str = ""
    stamp: str = ""  # the weights' and config's content digest (cache key; see content_stamp)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        bits = [b for b in (self.data, self.method) if b]
        return f"{self.name} ({', '.join(bits)})" if bits else self.name

    @property
    def short_label(self) -> str:
        """The label of a dropdown's choice: the name, with the data and method only where the
        name does not already hold them ("checkerboard-lsd", not "checkerboard-lsd (checkerboard,
        lsd)", which a dropdown's arrow cut at 1280 px)."""
        bits = [b for b in (self.data, self.method) if b and b not in self.name]
        return f"{self.name} ({', '.join(bits)})" if bits else self.name


#: Hex digits of the sha256 kept in a stamp (64 bits: no two checkpoints collide by chance).
STAMP_DIGITS = 16


def content_stamp(weights: Path, config: Path) -> str:
    """A digest of a checkpoint's content: sha256 of its weights file, then its config file, cut to
    :data:`STAMP_DIGITS` hex digits. The same files give the same stamp on any machine, whatever
    their time stamps (a fresh clone reuses a cache written from the same weights); any changed
    byte gives another. Raises OSError if a file cannot be read."""
    h = hashlib.sha256()
    for path in (weights, config):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")  # a boundary: moving bytes from one file to the other changes the digest
    return h.hexdigest()[:STAMP_DIGITS]


def _net(config: dict[str, Any]) -> dict[str, Any]:
    net = config.get("net")
    return net if isinstance(net, dict) else {}


def classify(config: dict[str, Any]) -> str:
    """``"2d"`` for an MLP on 2-D points, ``"image"`` for a UNet, else ``"other"``."""
    net = _net(config)
    name = str(net.get("name", "")).lower()
    try:
        dim = int(net.get("dim", 2))
    except (TypeError, ValueError):  # a malformed config must not break the whole listing
        return "other"
    if name == "mlp" and dim == 2:
        return KIND_2D
    if name == "unet":
        return KIND_IMAGE
    return "other"


def _name_of(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        for key in ("name", "dataset", "set", "method", "objective"):
            if isinstance(value.get(key), str):
                return value[key]
    return None


def _lookup(config: dict[str, Any], keys: tuple[str, ...], training_keys: tuple[str, ...]) -> str | None:
    """The first name found under ``keys`` at the top of a config, else under ``training_keys``
    inside its "training" (or "train") section."""
    for key in keys:
        found = _name_of(config.get(key))
        if found:
            return found
    train = config.get("training") or config.get("train")
    if isinstance(train, dict):
        for key in training_keys:
            found = _name_of(train.get(key))
            if found:
                return found
    return None


def infer_data(config: dict[str, Any], folder_name: str, known: list[str]) -> str | None:
    """The data set a 2-D checkpoint was trained on: from its config, else its folder name."""
    found = _lookup(config, ("data", "dataset", "data_set", "toy"), ("data", "dataset"))
    if found:
        return found
    lowered = folder_name.lower().replace("-", "_")
    for name in sorted(known, key=len, reverse=True):
        if lowered.startswith(name):
            return name
    return None


def infer_method(config: dict[str, Any], folder_name: str) -> str | None:
    """The training method of a checkpoint: from its config, else its folder name's last part."""
    found = _lookup(config, ("method", "objective"), ("method", "objective"))
    if found:
        return found
    parts = folder_name.lower().split("-")
    for n in (2, 1):
        tail = "-".join(parts[-n:])
        if tail in ("lsd", "esd", "psd-u", "psd-m", "psd", "fm", "meanflow", "shortcut", "ct"):
            return tail
    return None


class CheckpointStore:
    """Lists and loads checkpoints; thread-safe; keeps a few loaded models in memory.

    Args:
        root: the local checkpoint folder (may be missing: then nothing is shipped locally).
        hub_repos: Hub repository ids, each holding one checkpoint (read through
            :func:`flowmaps.hub.from_pretrained`).
        known_data: data set names, to read a data set from a folder name.
        max_loaded: how many loaded models to keep.
    """

    def __init__(
        self, root: Path, hub_repos: tuple[str, ...] = (), known_data: list[str] | None = None, max_loaded: int = 8
    ) -> None:
        self.root = Path(root)
        self.hub_repos = tuple(hub_repos)
        self.known_data = list(known_data or [])
        self.max_loaded = max_loaded
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._local: dict[str, CheckpointInfo] | None = None
        self._hub: dict[str, CheckpointInfo] | None = None
        self._scan_key: Any = None
        self._loaded: OrderedDict[str, tuple[FlowMap, dict[str, Any]]] = OrderedDict()
        self._digests: dict[tuple[str, int, int, int, int], str] = {}  # file identity -> content stamp

    # ------------------------------------------------------------------ listing
    def _local_key(self) -> Any:
        if not self.root.is_dir():
            return None
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.root.iterdir() if p.is_dir()))
        except OSError:
            return None

    def _read_local(self) -> dict[str, CheckpointInfo]:
        out: dict[str, CheckpointInfo] = {}
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            cfg_path = folder / "config.json"
            weights = folder / "model.safetensors"
            if not cfg_path.is_file() or not weights.is_file():
                continue
            try:
                config = json.loads(cfg_path.read_text())
                if not isinstance(config, dict):
                    raise ValueError("config.json is not a JSON object")
            except (OSError, ValueError) as err:
                self.warnings.append(f"skipped checkpoint {folder.name}: {err}")
                continue
            card_path = folder / "README.md"
            card = card_path.read_text(errors="replace") if card_path.is_file() else ""
            try:
                stamp = self._stamp(weights, cfg_path)
            except OSError as err:
                self.warnings.append(f"skipped checkpoint {folder.name}: {err}")
                continue
            out[folder.name] = CheckpointInfo(
                name=folder.name,
                source=str(folder),
                config=config,
                kind=classify(config),
                data=infer_data(config, folder.name, self.known_data),
                method=infer_method(config, folder.name),
                card=card,
                stamp=stamp,
            )
        return out

    def _stamp(self, weights: Path, config: Path) -> str:
        """:func:`content_stamp`, hashed once per file version in this process (a rescan of an
        unchanged folder reads no weights again)."""
        sw, sc = weights.stat(), config.stat()
        ident = (str(weights), sw.st_size, sw.st_mtime_ns, sc.st_size, sc.st_mtime_ns)
        if ident not in self._digests:
            self._digests[ident] = content_stamp(weights, config)
        return self._digests[ident]

    def _read_hub(self) -> dict[str, CheckpointInfo]:
        out: dict[str, CheckpointInfo] = {}
        if not self.hub_repos:
            return out
        from flowmaps.hub import hub_offline

        try:
            from huggingface_hub import hf_hub_download
        except ImportError:  # pragma: no cover - huggingface_hub is a dependency
            self.warnings.append("huggingface_hub is not installed; Hub checkpoints are skipped")
            return out
        for repo in self.hub_repos:
            try:
                cfg_file = hf_hub_download(repo, "config.json", local_files_only=hub_offline())
                config = json.loads(Path(cfg_file).read_text())
                try:
                    card = Path(hf_hub_download(repo, "README.md", local_files_only=hub_offline())).read_text()
                except Exception:  # a card is optional
                    card = ""
            except Exception as err:  # network, missing repo, offline cache miss
                self.warnings.append(f"could not read Hub checkpoint {repo}: {type(err).__name__}")
                continue
            short = repo.split("/")[-1]
            out[repo] = CheckpointInfo(
                name=repo,
                source=repo,
                config=config,
                kind=classify(config),
                data=infer_data(config, short, self.known_data),
                method=infer_method(config, short),
                card=card,
                stamp=repo,
            )
        return out

    def infos(self) -> dict[str, CheckpointInfo]:
        """Every checkpoint by name (rescans the local folder when it changed; Hub read once)."""
        with self._lock:
            if self._hub is None:
                self._hub = self._read_hub()
            key = self._local_key()
            if self._local is None or key != self._scan_key:
                self._local = self._read_local()
                self._scan_key = key
            return {**self._local, **self._hub}

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, info in self.infos().items() if kind is None or info.kind == kind]

    def info(self, name: str) -> CheckpointInfo:
        infos = self.infos()
        if name not in infos:
            raise KeyError(name)
        return infos[name]

    # ------------------------------------------------------------------ loading
    def load(self, name: str) -> tuple[FlowMap, dict[str, Any]]:
        """The model (eval mode, float32, CPU) and config of a listed checkpoint; cached."""
        from flowmaps.hub import from_pretrained

        info = self.info(name)  # only listed names: no user text becomes a path
        key = f"{name}@{info.stamp}"
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        model, config = from_pretrained(info.source)
        model.requires_grad_(False)
        with self._lock:
            self._loaded[key] = (model, config)
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return model, config
