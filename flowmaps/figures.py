"""PNG figures of samples: scatter panels for 2-D points, image tiles, one panel per time grid.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data; a panel's title names its
grid's number of steps N (and its times when the grid is not uniform).

Drawn with Pillow alone (no plotting library): :func:`scatter_panel` rasterises points as discs of
21 pixels composited with alpha, so dense regions read as dense; :func:`write_samples_png` puts the
panels side by side and writes the file atomically. ``flowmaps sample --out x.png`` uses it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowmaps.utils import atomic_write

__all__ = ["PANEL_PLOT", "POINT_COLOUR", "axis_range", "panel_title", "scatter_panel", "write_samples_png"]

PANEL_PLOT = 320
"""Side of a scatter panel's plotting square, in pixels."""
POINT_COLOUR = (31, 90, 170)
_MARGINS = (46, 30, 12, 30)  # left, top, right, bottom of a scatter panel


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= raw (raw > 0)."""
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * base >= raw * (1 - 1e-9))


def axis_range(samples: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """Half-width of a square view centred on 0 holding 99.8% of every panel's points (n, 2), and its ticks."""
    extent = max(float(np.quantile(np.abs(x[np.isfinite(x).all(axis=1)]), 0.998)) if len(x) else 0.0 for x in samples)
    extent = extent if extent > 0 else 1.0
    step = _nice_step(extent / 3)
    top = math.ceil(extent / step - 1e-9) * step
    ticks = [k * step for k in range(-round(top / step), round(top / step) + 1)]
    return top * 1.04, ticks


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ink(x: np.ndarray, lim: float, size: int) -> np.ndarray:
    """Coverage in [0, 1] of each pixel of a size x size view of [-lim, lim]^2 by discs of radius sqrt(5)
    px at the points (n, 2), composited with one alpha (order-free: 1 - (1 - alpha)^count)."""
    px = np.floor((x[:, 0] + lim) / (2 * lim) * size).astype(np.int64)
    py = np.floor((lim - x[:, 1]) / (2 * lim) * size).astype(np.int64)
    keep = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    counts = np.zeros((size + 4, size + 4))
    np.add.at(counts, (py[keep] + 2, px[keep] + 2), 1.0)
    cover = np.zeros((size, size))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dx * dx + dy * dy <= 5:  # a disc of radius sqrt(5) px (21 pixels)
                cover += counts[2 + dy : 2 + dy + size, 2 + dx : 2 + dx + size]
    alpha = float(np.clip(600.0 / max(len(x), 1), 0.012, 0.6))
    return 1.0 - (1.0 - alpha) ** cover


def scatter_panel(x: np.ndarray, lim: float, ticks: Sequence[float], title: str) -> Any:
    """A scatter plot of points (n, 2) on the view [-lim, lim]^2 as an RGB PIL image: discs of 21
    pixels drawn with alpha, an axis box with tick labels, and a title. Non-finite points are dropped."""
    from PIL import Image, ImageDraw

    size = PANEL_PLOT
    left, top, right, bottom = _MARGINS
    ink = _ink(x[np.isfinite(x).all(axis=1)], lim, size)
    colour = np.asarray(POINT_COLOUR, dtype=np.float64)
    rgb = 255.0 * (1.0 - ink[..., None]) + colour * ink[..., None]
    plot = Image.fromarray(np.round(rgb).astype(np.uint8), "RGB")

    panel = Image.new("RGB", (left + size + right, top + size + bottom), "white")
    panel.paste(plot, (left, top))
    draw = ImageDraw.Draw(panel)
    font, title_font = _font(11), _font(14)
    draw.rectangle((left - 1, top - 1, left + size, top + size), outline="black")
    for t in ticks:
        at = (t + lim) / (2 * lim) * size
        label = f"{t:g}"
        xx, yy = left + at, top + size - at
        draw.line((xx, top + size, xx, top + size + 4), fill="black")
        draw.text((xx, top + size + 6), label, fill="black", font=font, anchor="mt")
        draw.line((left - 5, yy, left - 1, yy), fill="black")
        draw.text((left - 7, yy), label, fill="black", font=font, anchor="rm")
    draw.text((left + size / 2, top / 2), title, fill="black", font=title_font, anchor="mm")
    return panel


def panel_title(grid: Tensor) -> str:
    """ "N = k steps", with the times when the grid is not uniform (t = 0 noise, t = 1 data)."""
    k = grid.numel() - 1
    title = f"N = {k} step" + ("" if k == 1 else "s")
    if not torch.allclose(grid.double().cpu(), torch.linspace(0, 1, k + 1, dtype=torch.float64), atol=1e-6):
        title += " (t = " + ", ".join(f"{t:.2g}" for t in grid.tolist()) + ")" if k <= 4 else " (non-uniform)"
    return title


def _image_panel(x: Tensor, title: str) -> Any:
    """The first 64 images of x (n, C, H, W) in [-1, 1] as an 8-wide tile under a title."""
    from PIL import Image, ImageDraw

    from flowmaps.data.images import image_grid

    tile = Image.fromarray(image_grid(x[:64], nrow=8, pad_value=255)).convert("RGB")
    panel = Image.new("RGB", (max(tile.width, 160), tile.height + 26), "white")
    panel.paste(tile, (0, 26))
    ImageDraw.Draw(panel).text((panel.width / 2, 13), title, fill="black", font=_font(14), anchor="mm")
    return panel


def write_samples_png(path: str | os.PathLike, samples: Sequence[Tensor], grids: Sequence[Tensor]) -> None:
    """One panel per grid side by side, written atomically to ``path``: a scatter plot for points
    (n, 2), sharing one view, or a tile of 64 images for images (n, C, H, W)."""
    from PIL import Image

    points = [x.float().numpy() for x in samples if x.ndim == 2]
    lim, ticks = axis_range(points) if points else (1.0, [])
    panels = []
    for x, grid in zip(samples, grids):
        title = panel_title(grid)
        if x.ndim == 2:
            panels.append(scatter_panel(x.float().numpy(), lim, ticks, title))
        else:
            panels.append(_image_panel(x, title))
    gap = 8
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x_off = 0
    for panel in panels:
        canvas.paste(panel, (x_off, 0))
        x_off += panel.width + gap
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
