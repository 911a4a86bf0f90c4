"""Sample-quality evaluation of a trained flow map at several step counts, and its mean over seeds.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data. A sampling grid runs
0 = t_0 < t_1 < ... < t_N = 1 and one flow-map jump is taken per step (N = number of function
evaluations).

:func:`evaluate_model` scores a model on each grid: the checkerboard's histogram KL (the paper's
estimator, Sec. 5 of arXiv 2505.18825) with its floor, sliced Wasserstein and energy distances on
the other 2-D sets, FID on images. :func:`aggregate_seeds` turns one table per noise seed into
mean and sample sd per cell. ``flowmaps evaluate`` and ``flowmaps train`` print these tables.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowmaps.metrics import mean_sd
from flowmaps.utils import text_table

__all__ = [
    "IMAGE_SETS",
    "KL_CONVENTION",
    "aggregate_seeds",
    "evaluate_model",
    "generate",
    "grid_text",
    "grids_for",
    "inf_notes",
    "is_image_set",
    "pm_table",
    "sample_shape",
]

logger = logging.getLogger("flowmaps.evaluation")

IMAGE_SETS = ("fashion-mnist",)
SW_PROJECTIONS = 128
SW_MAX_POINTS = 16_384
"""Sliced Wasserstein in the evaluation table: 128 directions on at most 16,384 points per set
(sorting 64k x 512 projections takes minutes on a small CPU)."""
KL_CONVENTION = (
    "KL = KL(target || histogram) on a 50 x 50 histogram of [-1, 1]^2 (the paper's estimator); the target is "
    "the checkerboard density at the bin centres normalised to sum 1, the histogram counts every sample "
    "(points off the square raise the KL); KL_floor = the same estimator on n exact samples (the best score "
    "possible at this n)."
)


def is_image_set(name: str) -> bool:
    """Whether ``name`` is an image data set (the others are 2-D point sets)."""
    return name in IMAGE_SETS


def sample_shape(config: dict[str, Any]) -> tuple[int, ...]:
    """Shape of one sample, (D,) for points or (C, H, W) for images, from a checkpoint config."""
    if "shape" in config:
        return tuple(int(s) for s in config["shape"])
    net = config["net"]
    if net["name"] == "mlp":
        return (int(net.get("dim", 2)),)
    return (int(net.get("in_channels", 1)), 28, 28)


def grids_for(grid: str | Tensor, steps: Sequence[int]) -> list[Tensor]:
    """The time grids to sample with: one per step count for a named grid ("uniform", "edm",
    "cosine"), else the given grid alone (times from t = 0 noise to t = 1 data)."""
    from flowmaps.sampling import make_grid

    if isinstance(grid, Tensor):
        return [grid]
    return [make_grid(grid, n) for n in steps]


def grid_text(grid: Tensor) -> str:
    """The grid's times as "0,0.5,1"."""
    return ",".join(f"{t:.4g}" for t in grid.tolist())


@torch.no_grad()
def generate(
    model: nn.Module,
    n: int,
    shape: Sequence[int],
    grid: Tensor,
    seed: int = 0,
    device: torch.device | str = "cpu",
    chunk: int = 16_384,
) -> Tensor:
    """n samples (n, *shape) on the CPU: noise x0 = sigma * z at t = 0 (seeded), flow-map jumps along ``grid``.

    The same seed gives the same noise for every grid, so step counts are compared on equal terms.
    The noise is drawn on the CPU in the model's dtype and sampled in chunks of ``chunk`` on ``device``.
    """
    from flowmaps.sampling import flowmap_sample

    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x0 = model.sigma * torch.randn((n, *shape), generator=g, dtype=dtype)
    out = []
    for i in range(0, n, chunk):
        x = flowmap_sample(model, x0[i : i + chunk].to(device), grid).x
        out.append(x.cpu())
    return torch.cat(out)


def _image_rows(model, config, n, grids, seed, device, on_row) -> list[dict[str, Any]]:
    """FID per grid against the Fashion-MNIST test split (no FID when the feature network is missing)."""
    shape = sample_shape(config)
    try:
        from flowmaps.fid import fid, load_feature_network

        net = load_feature_network(device=device)
    except FileNotFoundError as err:
        logger.warning("FID skipped: %s", err)
        net = None
    rows = []
    for grid in grids:
        start = time.perf_counter()
        x = generate(model, n, shape, grid, seed, device, chunk=500)
        row = {"N": grid.numel() - 1, "grid": grid_text(grid), "time_s": time.perf_counter() - start}
        if net is not None:
            row["FID"] = fid(x, net=net)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _reference_points(data: str, n: int, seed: int) -> Tensor | None:
    """``n`` float64 data points to compare samples with: fresh ones of a named 2-D set, or for a
    CSV file of points (``flowmaps train --data FILE.csv``) ``n`` of its rows drawn with replacement,
    None when the file can no longer be read (the rows then hold no distance); None without data."""
    from flowmaps.data.named import sample_points

    g = torch.Generator().manual_seed(seed)
    if not data:
        return None
    if data.lower().endswith(".csv"):
        from flowmaps.data.point_cloud import read_points_file

        try:
            cloud = read_points_file(data)
        except ValueError as err:
            logger.warning("no reference points for the evaluation: %s", err)
            return None
        return cloud.points.to(torch.float64)[torch.randint(0, len(cloud), (n,), generator=g)]
    return sample_points(data, n, g, dtype=torch.float64)


def evaluate_model(
    model: nn.Module,
    config: dict[str, Any],
    n: int,
    grids: Sequence[Tensor],
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics per grid, as rows of a table; ``on_row(row)`` is called as each row is done (progress).

    Args:
        model: a FlowMap; config: its checkpoint config ("data", "net", "shape"); n: samples per
        grid; grids: time grids from t = 0 (noise) to t = 1 (data); seed: noise seed (the reference
        samples use seed + 1, the projections seed + 2).

    Returns:
        One row per grid: "N", "grid", "time_s" and the metrics. Checkerboard: histogram KL with
        its floor (exact samples, same n) and sliced Wasserstein; when a target bin is empty the KL
        is inf, and the row adds ``empty_bins``, ``KL_half`` (empty bins counted as half a sample,
        ``checkerboard_kl(eps=0.5)``) and ``floor_half`` (the same on exact samples); other 2-D
        sets: sliced Wasserstein and energy distance against n fresh data samples (both on at most
        SW_MAX_POINTS points, SW with SW_PROJECTIONS directions), or for a CSV file of points n of
        its rows drawn with replacement (no distances if the file is gone); images: FID against the
        Fashion-MNIST test split when the FID feature network exists.
    """
    data = config.get("data", "")
    shape = sample_shape(config)
    if is_image_set(data) or len(shape) > 1:
        return _image_rows(model, config, n, grids, seed, device, on_row)

    from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor, energy_distance, sliced_wasserstein

    reference = _reference_points(data, n, seed + 1)
    rows: list[dict[str, Any]] = []
    floors: dict[float | None, float] = {}  # the floor on this noise seed's exact samples, per eps, once

    def floor(eps: float | None = None) -> float:
        if eps not in floors:
            floors[eps] = checkerboard_kl_floor(n, seed=seed, eps=eps)
        return floors[eps]

    for grid in grids:
        start = time.perf_counter()
        x = generate(model, n, shape, grid, seed, device).to(torch.float64)
        row: dict[str, Any] = {"N": grid.numel() - 1, "grid": grid_text(grid), "time_s": time.perf_counter() - start}
        if data == "checkerboard":
            kl = checkerboard_kl(x)
            row["KL"] = kl.kl
            row["KL_floor"] = floor()
        if reference is not None:
            g = torch.Generator().manual_seed(seed + 2)
            xs, ref = x[:SW_MAX_POINTS], reference[:SW_MAX_POINTS]
            row["SW"] = sliced_wasserstein(xs, ref, n_projections=SW_PROJECTIONS, generator=g)
            if data != "checkerboard":
                row["energy"] = energy_distance(xs, ref, generator=g)
        if data == "checkerboard" and kl.empty_bins:  # inf: how many bins are empty, the half-sample KL
            row["empty_bins"] = kl.empty_bins
            row["KL_half"] = checkerboard_kl(x, eps=0.5).kl
            row["floor_half"] = floor(0.5)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def aggregate_seeds(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of mean and sd over seeds: ``runs[k]`` is the table of seed k (same grids, same order).

    Each numeric column c becomes c (the mean) and c_sd (the sample sd over seeds); a column that
    only some seeds' rows have (KL_half, empty_bins, floor_half appear only with empty bins) is filled
    for the others from the row itself (no empty bin: KL_half = KL, floor_half = KL_floor, empty_bins = 0).
    """
    out = []
    for rows in zip(*runs):
        rows = [dict(r) for r in rows]
        if any("KL_half" in r for r in rows):
            for r in rows:  # with no empty bin, counting empty bins as half a sample changes nothing
                r.setdefault("empty_bins", 0)
                r.setdefault("KL_half", r["KL"])
                r.setdefault("floor_half", r["KL_floor"])
        agg: dict[str, Any] = {"N": rows[0]["N"], "grid": rows[0]["grid"], "seeds": len(rows)}
        for key, value in rows[0].items():
            if key in ("N", "grid") or not isinstance(value, (int, float)):
                continue
            mean, sd = mean_sd([r[key] for r in rows])
            agg[key], agg[f"{key}_sd"] = mean, sd
            if not math.isfinite(mean):
                agg[f"{key}_inf"] = sum(not math.isfinite(r[key]) for r in rows)
        agg["per_seed"] = rows
        out.append(agg)
    return out


def pm_table(rows: Sequence[dict[str, Any]]) -> str:
    """The plain-text table of :func:`aggregate_seeds` rows, cells as "mean ± sd"."""
    shown = []
    for row in rows:
        cells: dict[str, Any] = {"N": row["N"]}
        for key, value in row.items():
            if key in ("N", "grid", "seeds", "per_seed") or key.endswith(("_sd", "_inf")):
                continue
            if not math.isfinite(value):
                cells[key] = f"inf ({row.get(key + '_inf', '?')} of {row['seeds']} seeds)"
            elif key == "empty_bins":
                cells[key] = f"{value:.1f}"
            else:
                cells[key] = f"{value:.4g} ± {row[key + '_sd']:.2g}"
        shown.append(cells)
    return text_table(shown)


def inf_notes(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
    """One line per row whose KL is inf, saying why and what the half-sample count gives."""
    lines = []
    for row in rows:
        if "KL" not in row or math.isfinite(row["KL"]) or "KL_half" not in row:
            continue
        several = "KL_half_sd" in row
        sd = f" ± {row['KL_half_sd']:.2g}" if several else ""
        where = f" (in {row['KL_inf']} of {row['seeds']} seeds)" if several else ""
        lines.append(
            f"N = {row['N']}: inf{where}: at least one target bin got no sample (an empty bin; "
            f"{row['empty_bins']:.3g} of them{' on average' if several else ''}); "
            "the KL with empty bins counted as half a sample is "
            f"{row['KL_half']:.4g}{sd}; the floor of exact samples is {row['floor_half']:.4g} on the same count"
        )
    if lines and n < 20_000:
        lines.append(
            f"(n = {n} gives about {n / 1250:.0f} samples per target bin, so even exact samples leave bins empty "
            "below about 20,000; the paper uses --n 64000)"
        )
    elif lines:
        lines.append(
            f"(n = {n} gives about {n / 1250:.0f} samples per target bin: an empty bin means a part of the board "
            "the model (almost) never reaches)"
        )
    return lines
