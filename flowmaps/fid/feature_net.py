"""The FID feature network: a small Fashion-MNIST classifier, its training, and its checkpoint.

No Inception weights are available offline, so flowmaps' FID and KID (:mod:`flowmaps.fid.metric`)
use the penultimate layer of :class:`FeatureNet`, a small CNN trained on the Fashion-MNIST
training split by :func:`train_classifier` and shipped in ``checkpoints/fid-classifier``.
Scores computed with it are comparable with each other, not with Inception-based FIDs.

Its checkpoint goes through the same code as the flow maps' (:class:`flowmaps.hub.HubMixin`, on
huggingface_hub's PyTorchModelHubMixin): ``FeatureNet.from_pretrained(folder_or_repo_id)``,
``net.save_pretrained(folder, config=...)``, ``net.push_to_hub(repo_id)``, one card writer.
config.json holds the constructor's arguments (width, feature_dim, num_classes, dropout), the
training metrics and ``"model": "FeatureNet"``.

Images are (N, 1, 28, 28) floats in [-1, 1] (data at t = 1 in the flow-map time convention,
t = 0 noise).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmaps.hub.mixin import HubMixin
from flowmaps.hub.storage import CONFIG_NAME, WEIGHTS_NAME

DEFAULT_PATH = Path("checkpoints/fid-classifier")
"""The shipped feature network's folder."""

ARCH_KEYS = ("width", "feature_dim", "num_classes", "dropout")


class FeatureNet(nn.Module, HubMixin):
    """Small CNN classifier for 1x28x28 images; its penultimate layer gives FID features.

    Layout: two stages of [conv3x3 -> BN -> ReLU] x 2 + 2x2 max-pool (28 -> 14 -> 7), widths
    ``width`` and ``2 * width``, then a 3x3 conv to ``4 * width`` with BN, ReLU and global average
    pooling, a linear layer to ``feature_dim`` (the features: its output before the
    activation), ReLU, dropout and a linear layer to ``num_classes`` logits.

    Args:
        width: channels of the first stage.
        feature_dim: width of the feature layer.
        num_classes: number of classes.
        dropout: dropout before the classifier head.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "width": int(width),
            "feature_dim": int(feature_dim),
            "num_classes": int(num_classes),
            "dropout": float(dropout),
        }

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        w = width
        self.body = nn.Sequential(
            *block(1, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature = nn.Linear(4 * w, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeatureNet:
        """Rebuild from the ``config`` dict (as stored in config.json)."""
        return cls(**config)

    # -------------------------------------------------------------- checkpoint (flowmaps.hub.HubMixin)
    def _hub_config(self) -> dict[str, Any]:
        return {"model": "FeatureNet", **self.config}

    @classmethod
    def _hub_build(cls, config: dict[str, Any]) -> FeatureNet:
        """Rebuild from config.json: the arguments at its top level (or, in the first layout, under "config")."""
        arch = config["config"] if isinstance(config.get("config"), dict) else config
        return cls(**{k: arch[k] for k in ARCH_KEYS if k in arch})

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, feature_dim) penultimate features."""
        return self.feature(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, num_classes) logits."""
        return self.head(self.features(x))


def augment_images(x: Tensor, generator: torch.Generator | None, max_shift: int = 2) -> Tensor:
    """Random horizontal flips and integer shifts of up to ``max_shift`` pixels (zero padding at
    -1, the background value). x: (B, 1, H, W)."""
    b, _, h, w = x.shape
    dev = x.device
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift > 0:
        p = max_shift
        padded = F.pad(x, (p, p, p, p), value=-1.0)
        oy = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]
        idx = torch.arange(b, device=dev)[:, None, None]
        x = padded[idx, 0, rows, cols].unsqueeze(1)
    return x


@torch.no_grad()
def accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a classifier on (N, 1, 28, 28) images in [-1, 1] with int labels."""
    was_training = net.training
    net.eval()
    dev = next(net.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        xb = images[i : i + batch_size].to(dev, torch.float32)
        yb = labels[i : i + batch_size].to(dev)
        correct += int((net(xb).argmax(-1) == yb).sum())
    net.train(was_training)
    return correct / max(1, len(images))


def train_classifier(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    *,
    epochs: int = 6,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    augment: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
    config: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[FeatureNet, dict[str, Any]]:
    """Train a :class:`FeatureNet` classifier with AdamW and a cosine learning-rate decay.

    Args:
        train_images: (N, 1, 28, 28) float in [-1, 1]; train_labels: (N,) int64.
        test_images, test_labels: optional held-out set, evaluated after every epoch.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        augment: random horizontal flips and shifts of up to 2 pixels.
        device: where to train (the whole data set is moved there).
        config: keyword arguments for :class:`FeatureNet`.
        log: called with one line per epoch (None for silence).

    Returns:
        the trained network (eval mode, on ``device``) and a dict of metrics
        (``train_accuracy`` on the first 10,000 training images, ``test_accuracy`` if a test set
        is given, ``epochs``, ``seconds``).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    net = FeatureNet(**(config or {})).to(device)
    x_all = train_images.to(device, torch.float32)
    y_all = train_labels.to(device, torch.int64)
    n = len(x_all)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total)))
    metrics: dict[str, Any] = {"epochs": epochs, "n_train": len(train_images)}
    if test_images is not None:
        metrics["n_test"] = len(test_images)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, device=device, generator=gen)
        running, seen = 0.0, 0
        for k in range(steps_per_epoch):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            xb, yb = x_all[idx], y_all[idx]
            if augment:
                xb = augment_images(xb, gen)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
        line = f"epoch {epoch + 1}/{epochs} loss {running / seen:.4f}"
        if test_images is not None and test_labels is not None:
            acc = accuracy(net, test_images, test_labels)
            metrics["test_accuracy"] = acc
            line += f" test acc {acc:.4f}"
        if log is not None:
            log(line + f" ({time.perf_counter() - start:.1f} s)")
    net.eval()
    metrics["train_accuracy"] = accuracy(net, train_images[:10_000], train_labels[:10_000])
    metrics["seconds"] = time.perf_counter() - start
    return net, metrics


def _json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool, dict, list))}


def save_feature_network(
    net: FeatureNet, path: str | os.PathLike = DEFAULT_PATH, metrics: dict[str, Any] | None = None
) -> Path:
    """Save weights (safetensors), config.json (architecture + ``metrics``) and the model card into
    ``path``, atomically (:meth:`flowmaps.hub.HubMixin.save_pretrained`); returns ``path``.

    Files already in ``path`` other than those three (the reference-statistics cache) are kept.
    """
    config = {**net._hub_config(), "metrics": _json_metrics(dict(metrics or {}))}
    net.save_pretrained(path, config=config)
    return Path(path)


def load_feature_network(path: str | os.PathLike = DEFAULT_PATH, device: str | torch.device = "cpu") -> FeatureNet:
    """Load the feature network saved by :func:`save_feature_network` (eval mode, strict, safetensors only).

    Raises:
        FileNotFoundError: the folder or one of its files is missing, with how to create it.
        ValueError: weights that do not fit the config, or an invalid safetensors file.
    """
    path = Path(path)
    if not (path / WEIGHTS_NAME).exists() or not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(
            f"FID feature network not found in {path} (needs {WEIGHTS_NAME} and {CONFIG_NAME}). "
            "Train it with `python -m bench.train_fid_classifier --out "
            f"{path}` (a few minutes on a GPU), or pass path= to the folder that holds it."
        )
    net = FeatureNet.from_pretrained(path, map_location=device)
    net._source_path = str(path)  # remembered to place the reference-statistics cache
    return net


def resolve_net(net: FeatureNet | str | os.PathLike | None) -> FeatureNet:
    """``net`` itself, or the feature network loaded from the folder ``net`` (None: the default folder)."""
    if isinstance(net, FeatureNet):
        return net
    return load_feature_network(DEFAULT_PATH if net is None else net)
