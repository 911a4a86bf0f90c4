"""Machine-readable metrics of a checkpoint: model-index entries (huggingface_hub ``EvalResult``).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Read from config.json's ``metrics`` (and ``eval`` rows of ``flowmaps train``) and from the
``metrics.json`` rows of an image checkpoint. What each entry means:

- ``checkerboard_kl``: KL of a flow map's N-jump samples on the checkerboard (paper, Table 1),
  ``{N: {"mean", "sd", "seeds"}}``; a null mean is an infinite KL (an empty target bin).
- ``checkerboard_kl_ode``: a velocity field's ODE solves, ``{"dopri5": {..., "nfe"},
  "euler": {N: {...}}}``: a flow-matching model has no trained jump, so no flow-map KL.
- ``exact_map_mse``: E|X(x0) - X_exact(x0)|^2 against a mixture's exact flow map.
- metrics.json rows ``{"sampler", "nfe", "fid", ...}``: FID against the test split; for a
  flow-matching model the "flow map" rows (an off-diagonal never trained) are left out.
- a classifier's ``test_accuracy``.

Non-finite values are left out of the model-index (the card's tables still show them).
"""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub import EvalResult

DATASETS = {"fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST")}
"""flowmaps data name -> (Hub data set id, display name), for data sets that live on the Hub."""

SYNTHETIC = {
    "checkerboard": "4x4 checkerboard on [-1, 1]^2 (synthetic)",
    "eight_gaussians": "eight Gaussians on a circle (synthetic)",
}
"""flowmaps data name -> display name, for 2-D data drawn by flowmaps itself."""


def dataset_of(data: str | None) -> tuple[str, str, bool]:
    """(data set type, display name, lives on the Hub) for a flowmaps data name."""
    if data in DATASETS:
        return DATASETS[data][0], DATASETS[data][1], True
    name = data or "unknown"
    return name, SYNTHETIC.get(name, name), False


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _by_n(entries: dict[str, Any]) -> list[tuple[int, Any]]:
    """(N, value) sorted by N; a value is a number or a dict whose "mean" is the number (null: infinite)."""
    pairs = sorted((int(k), v) for k, v in entries.items() if str(k).isdigit())
    return [(n, v.get("mean") if isinstance(v, dict) else v) for n, v in pairs]


def _named_metrics(config: dict[str, Any], rows: dict[str, Any] | None) -> list[tuple[str, str, float, str | None]]:
    """(metric type, name, value, data split) for every finite metric of a checkpoint."""
    metrics = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
    out: list[tuple[str, str, float, str | None]] = []
    kl = "kl_divergence"
    velocity_only = config.get("method") == "fm"  # no trained jump: its flow-map rows are left out
    for n, value in _by_n({} if velocity_only else metrics.get("checkerboard_kl", {})):
        out.append((kl, f"checkerboard KL, flow map, N = {n}", value, None))
    ode = metrics.get("checkerboard_kl_ode", {})
    if "dopri5" in ode:
        nfe = ode["dopri5"].get("nfe")
        label = f" ({nfe:.0f} NFE)" if _finite(nfe) else ""
        out.append((kl, f"checkerboard KL, dopri5 on the velocity{label}", ode["dopri5"].get("mean"), None))
    for n, value in _by_n(ode.get("euler", {})):
        out.append((kl, f"checkerboard KL, Euler on the velocity, N = {n}", value, None))
    for label, value in metrics.get("exact_map_mse", {}).items():
        out.append(("mse", f"mean squared distance to the exact flow map, {label}", value, None))
    if "test_accuracy" in metrics:
        out.append(("accuracy", "top-1 accuracy", metrics["test_accuracy"], "test"))
    for row in [] if velocity_only else config.get("eval") or []:
        if isinstance(row, dict) and "N" in row and "KL" in row:
            out.append(("kl_divergence", f"KL, flow map, N = {row['N']}", row["KL"], None))
    for row in (rows or {}).values():
        sampler = str(row.get("sampler", ""))
        if "fid" not in row or (velocity_only and sampler.startswith("flow map")):
            continue
        out.append(("fid", f"FID, {sampler}, NFE {row.get('nfe')}", row["fid"], "test"))
    return [m for m in out if _finite(m[2])]


def eval_results(config: dict[str, Any], rows: dict[str, Any] | None = None) -> list[EvalResult]:
    """The model-index entries of a checkpoint's config (and its metrics.json ``rows``).

    Returns:
        one :class:`huggingface_hub.EvalResult` per finite metric, with the task of the card's
        pipeline tag and the data set of ``config["data"]``.
    """
    is_classifier = config.get("model") == "FeatureNet"
    dataset_type, dataset_name, _ = dataset_of("fashion-mnist" if is_classifier else config.get("data"))
    if is_classifier:
        task = "image-classification"
    else:
        task = pipeline_tag(config)
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(value), 6),
        )
        for metric_type, name, value, split in _named_metrics(config, rows)
    ]


def pipeline_tag(config: dict[str, Any]) -> str:
    """The Hub pipeline tag: image generation for image models, feature extraction for the FID
    network, "other" for 2-D point clouds (the Hub has no task for them)."""
    if config.get("model") == "FeatureNet":
        return "image-feature-extraction"
    net = config.get("net") if isinstance(config.get("net"), dict) else {}
    if net.get("name") == "unet" or config.get("data") in DATASETS:
        return "unconditional-image-generation"
    return "other"
