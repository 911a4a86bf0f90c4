"""The image tab: shipped Fashion-MNIST flow maps sampled at several step counts from one noise.

The same noise x0 ~ N(0, sigma^2 I) (seeded) feeds every row, so the same garments sharpen as
the number of steps N grows; an ODE baseline integrates the network's own velocity v_{t,t} from
that noise too. Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from flowmaps.data.images import make_grid as tile_images
from flowmaps.flowmap import FlowMap
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve

#: ODE baselines offered in the page: label -> (method, steps or None for adaptive).
ODE_BASELINES: dict[str, tuple[str, int | None]] = {
    "Heun, 16 steps (32 NFE)": ("heun", 16),
    "Heun, 32 steps (64 NFE)": ("heun", 32),
    "Euler, 64 steps (64 NFE)": ("euler", 64),
    "Dormand-Prince, adaptive (rtol 1e-3)": ("dopri5", None),
    "none": ("none", None),
}
DEFAULT_ODE = "Heun, 16 steps (32 NFE)"
#: Step counts shown as rows besides the chosen one.
ROW_STEPS = (1, 2, 4, 8)
SCALE = 3
LABEL_WIDTH = 230


@dataclass
class Row:
    """One row of the picture: a label, the images (n, 1, 28, 28) in [-1, 1], time per image."""

    label: str
    images: np.ndarray
    ms_per_image: float
    nfe: int


def image_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of a UNet checkpoint's images (28 x 28 unless its config says otherwise)."""
    net = config.get("net", {})
    c = int(net.get("in_channels", 1))
    size = config.get("image_size") or config.get("resolution") or 28
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    return (c, size, size)


def sample_rows(
    model: FlowMap,
    config: dict[str, Any],
    grids: list[tuple[str, torch.Tensor]],
    ode: str,
    n_images: int,
    seed: int,
) -> list[Row]:
    """One row per (label, grid) of flow-map samples, then the ODE baseline, all from one noise."""
    shape = image_shape(config)
    x0 = model.sigma * torch.randn((n_images, *shape), generator=torch.Generator().manual_seed(seed))
    rows: list[Row] = []
    model = model.eval()
    with torch.no_grad():
        for label, grid in grids:
            t = time.perf_counter()
            res = flowmap_sample(model, x0, grid)
            ms = (time.perf_counter() - t) * 1000 / n_images
            rows.append(Row(label, res.x.clamp(-1, 1).numpy(), ms, res.nfe))
        method, steps = ODE_BASELINES.get(ode, ("none", None))
        if method != "none":
            t = time.perf_counter()
            if method == "dopri5":
                res = ode_solve(model.velocity, x0, method="dopri5", rtol=1e-3, atol=1e-4, max_steps=200)
            else:
                res = ode_solve(model.velocity, x0, method=method, n_steps=steps)
            ms = (time.perf_counter() - t) * 1000 / n_images
            rows.append(Row(f"ODE {method}, {res.nfe} NFE", res.x.clamp(-1, 1).numpy(), ms, res.nfe))
    return rows


def _font(size: int = 15) -> ImageFont.ImageFont:
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default()


def compose(rows: list[Row]) -> Image.Image:
    """One picture: a labelled strip per row, images scaled up 3x (nearest) for the page."""
    strips = []
    for row in rows:
        imgs = row.images
        if imgs.shape[1] != 1:  # colour: show the first channel's grey levels
            imgs = imgs.mean(axis=1, keepdims=True)
        tile = tile_images(imgs, nrow=imgs.shape[0], padding=2, pad_value=255)
        strips.append(Image.fromarray(tile).resize((tile.shape[1] * SCALE, tile.shape[0] * SCALE), Image.NEAREST))
    width = LABEL_WIDTH + max(s.width for s in strips)
    height = sum(s.height for s in strips)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(16), _font(13)
    y = 0
    for row, strip in zip(rows, strips):
        canvas.paste(strip.convert("RGB"), (LABEL_WIDTH, y))
        draw.text((8, y + strip.height // 2 - 18), row.label, fill="black", font=font)
        draw.text((8, y + strip.height // 2 + 2), f"{row.ms_per_image:.1f} ms / image", fill="#555", font=small)
        y += strip.height
    return canvas


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metrics_table(metrics: Any) -> str:
    """Markdown table of a config's "metrics": {name: value}, {row: {col: value}} or [{...}]."""
    if isinstance(metrics, dict) and metrics and all(not isinstance(v, (dict, list)) for v in metrics.values()):
        lines = ["| metric | value |", "| --- | --- |"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        return "\n".join(lines)
    if isinstance(metrics, dict) and all(isinstance(v, dict) for v in metrics.values()):
        rows = [{"": k, **v} for k, v in metrics.items()]
    elif isinstance(metrics, list) and all(isinstance(v, dict) for v in metrics):
        rows = list(metrics)
    else:
        return "```\n" + json.dumps(metrics, indent=1)[:3000] + "\n```"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tidy_table(markdown: str) -> str:
    """A Markdown table made easier to read in a narrow panel: columns whose value is the same on
    every row (sample count, hardware) leave the table for a line under it, and underscores in the
    headers become spaces, so that a cell wraps between words, not inside a number.

    Text that is not one table (a header, a rule and rows of as many cells) comes back unchanged.
    """
    lines = [ln for ln in markdown.strip().splitlines() if ln.strip()]
    if len(lines) < 3 or not all(ln.lstrip().startswith("|") for ln in lines):
        return markdown
    header, rows = _cells(lines[0]), [_cells(ln) for ln in lines[2:]]
    if any(len(r) != len(header) for r in rows) or not set(lines[1]) <= set("|-: "):
        return markdown
    constant = [j for j in range(len(header)) if len(rows) > 1 and len({r[j] for r in rows}) == 1]
    keep = [j for j in range(len(header)) if j not in constant]
    out = [
        "| " + " | ".join(header[j].replace("_", " ") for j in keep) + " |",
        "| " + " | ".join("---" for _ in keep) + " |",
    ]
    out += ["| " + " | ".join(r[j] for j in keep) + " |" for r in rows]
    if constant:
        out += ["", "Every row: " + "; ".join(f"{header[j].replace('_', ' ')} {rows[0][j]}" for j in constant) + "."]
    return "\n".join(out)


def card_metrics(config: dict[str, Any], card: str) -> str:
    """The FID-against-steps table of a model: config.json "metrics", else the card's Metrics section."""
    metrics = config.get("metrics")
    if metrics:
        return tidy_table(metrics_table(metrics))
    m = re.search(r"^##\s*Metrics\s*$(.*?)(?=^##\s|\Z)", card or "", flags=re.M | re.S)
    if m and m.group(1).strip():
        return tidy_table(m.group(1).strip())
    return "_this checkpoint's model card has no metrics table_"


def default_grids(kind: str, steps: int, custom: torch.Tensor | None) -> list[tuple[str, torch.Tensor]]:
    """Rows N = 1, 2, 4, 8 and the chosen N on grid ``kind`` (or one custom grid after N = 1)."""
    if custom is not None:
        n = len(custom) - 1
        return [("N = 1", make_grid("uniform", 1)), (f"custom, N = {n}", custom)]
    ns = sorted(set(ROW_STEPS) | {steps})
    return [(f"N = {n} ({kind})", make_grid(kind, n)) for n in ns]
