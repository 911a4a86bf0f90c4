"""The image tab: shipped Fashion-MNIST flow maps sampled at several step counts from one noise.

The same noise x0 ~ N(0, sigma^2 I) (seeded) feeds every row, so the same garments sharpen as
the number of steps N grows; an ODE baseline integrates the network's own velocity v_{t,t} from
that noise too. Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from flowmaps.data.images import image_grid
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
#: The network calls the progress bar of :func:`sample_rows` counts for the adaptive solver
#: (rtol 1e-3) before it runs: a typical count on the shipped Fashion-MNIST models.
ADAPTIVE_CALLS_GUESS = 60
SCALE = 3
LABEL_WIDTH = 230


#: The tab's lesson, shown above the picture.
LESSON = (
    "**The lesson.** Every row starts from the same noise. A flow map turns it into garments in one jump and "
    "sharpens them as N grows, one network call per jump; an ODE solver on the same network's velocity needs "
    "tens of calls for the same quality. The flow-matching baseline learned only the velocity, so its rows are "
    "Euler steps of that velocity, which need many more steps than a flow map's jumps."
)


@dataclass
class Row:
    """One row of the picture: a label, the images (n, 1, 28, 28) in [-1, 1], time per image.

    ``sampler`` is "flow map", "euler" (Euler steps of the velocity v_{t,t}) or the ODE baseline's
    method; ``grid_kind`` the time grid's kind ("uniform", "edm", "cosine", "custom" or "adaptive");
    ``times`` a second label line (a custom grid's times), or ""."""

    label: str
    images: np.ndarray
    ms_per_image: float
    nfe: int
    sampler: str = "flow map"
    grid_kind: str = "uniform"
    times: str = ""


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
    euler: bool = False,
    kind: str = "uniform",
    progress: Callable[[float, str], Any] | None = None,
) -> list[Row]:
    """One row per (label, grid), then the ODE baseline, all from one noise x0 at t = 0.

    Each row's time is one run after an untimed warm-up call of the model (not a median).

    Rows are flow-map jumps along each grid, or with ``euler`` (a flow-matching model, whose
    off-diagonal v_{s,t}, s < t, was never trained) Euler steps of its velocity v_{t,t} along it.
    ``kind`` is the grids' kind (for the FID look-up of :func:`row_fid_cell`), "custom" for a typed grid.

    ``progress(fraction, description)``, if given, is called before each row and once at the end
    (fraction 1.0): the fraction is the share of the rows' network calls done so far (a grid row
    makes one call per step, the ODE baseline its NFE; the adaptive solver, whose count is known
    only after it ran, is counted as :data:`ADAPTIVE_CALLS_GUESS`), rising from 0 to 1.
    """
    method, ode_steps = ODE_BASELINES.get(ode, ("none", None))
    plan = [(label, len(grid) - 1) for label, grid in grids]
    if method != "none":
        calls = ADAPTIVE_CALLS_GUESS if ode_steps is None else ode_steps * (2 if method == "heun" else 1)
        plan.append((f"ODE {method}", calls))
    total, done = sum(c for _, c in plan), 0

    def report(k: int) -> None:
        nonlocal done
        if progress is not None:
            progress(done / total, f"sampling {plan[k][0]}" if k < len(plan) else "composing the picture")
        if k < len(plan):
            done += plan[k][1]

    shape = image_shape(config)
    x0 = model.sigma * torch.randn((n_images, *shape), generator=torch.Generator().manual_seed(seed))
    rows: list[Row] = []
    model = model.eval()
    with torch.no_grad():
        flowmap_sample(model, x0[:1], make_grid("uniform", 1))  # untimed warm-up: the first row must not pay it
        for k, (label, grid) in enumerate(grids):
            report(k)
            t = time.perf_counter()
            if euler:
                res = ode_solve(model.velocity, x0, method="euler", grid=grid)
            else:
                res = flowmap_sample(model, x0, grid)
            ms = (time.perf_counter() - t) * 1000 / n_images
            # with a custom grid, the row before it is the one-jump map on the uniform grid
            g_kind = "custom" if label.startswith("custom") else ("uniform" if kind == "custom" else kind)
            times = f"t = {_times(grid)}" if g_kind == "custom" else ""
            sampler = "euler" if euler else "flow map"
            rows.append(Row(label, res.x.clamp(-1, 1).numpy(), ms, res.nfe, sampler, g_kind, times))
        if method != "none":
            report(len(grids))
            t = time.perf_counter()
            if method == "dopri5":
                res = ode_solve(model.velocity, x0, method="dopri5", rtol=1e-3, atol=1e-4, max_steps=200)
            else:
                res = ode_solve(model.velocity, x0, method=method, n_steps=ode_steps)
            ms = (time.perf_counter() - t) * 1000 / n_images
            g_kind = "adaptive" if method == "dopri5" else "uniform"
            rows.append(Row(f"ODE {method}, {res.nfe} NFE", res.x.clamp(-1, 1).numpy(), ms, res.nfe, method, g_kind))
    report(len(plan))
    return rows


def _times(grid: torch.Tensor, max_items: int = 4) -> str:
    vals = [f"{v:.3g}" for v in grid.tolist()]
    if len(vals) > max_items:
        vals = vals[: max_items // 2] + ["..."] + vals[-max_items // 2 :]
    return ", ".join(vals)


#: Sampler names of metrics.json (bench/eval_images.py) for a row's (sampler, grid kind).
_METRIC_SAMPLERS = {
    ("flow map", "uniform"): "flow map",
    ("flow map", "cosine"): "flow map, cosine grid",
    ("heun", "uniform"): "Heun ODE",
}


def _entry(metrics: Any, row: Row) -> dict | None:
    """The metrics.json entry of ``row``'s sampler, grid and NFE, or None if not measured."""
    name = _METRIC_SAMPLERS.get((row.sampler, row.grid_kind))
    if name is None or not isinstance(metrics, dict):
        return None
    for entry in metrics.values():
        if isinstance(entry, dict) and entry.get("sampler") == name and entry.get("nfe") == row.nfe:
            return entry
    return None


def fid_cell(entry: Any) -> str:
    """A FID as a table shows it: ``13.2 ± 0.6`` (the mean over noise seeds and its sd, as
    bench/eval_images.py writes them), ``13.2`` without a spread, :data:`NOT_MEASURED` without a FID."""
    fid = entry.get("fid") if isinstance(entry, dict) else None
    if not isinstance(fid, (int, float)):
        return NOT_MEASURED
    sd = entry.get("fid_sd")
    return f"{fid:.1f}" + (f" ± {sd:.1f}" if isinstance(sd, (int, float)) else "")


def row_fid_cell(metrics: Any, row: Row) -> str:
    """:func:`fid_cell` of ``row``'s entry in metrics.json."""
    return fid_cell(_entry(metrics, row))


def fid_convention(metrics: Any) -> str:
    """How the FIDs of metrics.json were measured, in one sentence, or "" when it does not say:
    the samples per FID and the noise seeds whose mean and sd the cells give."""
    if not isinstance(metrics, dict):
        return ""
    entries = [e for e in metrics.values() if isinstance(e, dict) and isinstance(e.get("fid"), (int, float))]
    samples = sorted({e["fid_samples"] for e in entries if isinstance(e.get("fid_samples"), int)})
    seeds = sorted({tuple(e["noise_seeds"]) for e in entries if isinstance(e.get("noise_seeds"), list)})
    if len(samples) != 1 or len(seeds) != 1:
        return ""
    return (
        f"Each FID is of {samples[0]:,} samples, the mean ± sd over noise seeds "
        f"{', '.join(map(str, seeds[0]))}, measured on the GPU machine (bench/eval_images.py)."
    )


#: What a table cell shows for a FID that was not measured.
NOT_MEASURED = "—"


def fid_markdown(metrics: Any, euler: bool = False) -> str:
    """A short FID-against-NFE table from a model's metrics.json (FID: lower is better; mean ± sd
    over noise seeds where it gives them), or "". A cell not measured shows :data:`NOT_MEASURED`,
    explained in a line under the table."""
    if not isinstance(metrics, dict):
        return ""
    cols: dict[str, dict[int, dict]] = {}
    for entry in metrics.values():
        if isinstance(entry, dict) and isinstance(entry.get("fid"), (int, float)) and "nfe" in entry:
            cols.setdefault(str(entry.get("sampler", "?")), {})[int(entry["nfe"])] = entry
    if euler:  # a flow-matching model's "flow map" entries are jumps of its untrained off-diagonal
        cols = {k: v for k, v in cols.items() if not k.startswith("flow map")}
    if not cols:
        return ""
    nfes = sorted({n for v in cols.values() for n in v})
    lines = ["| NFE | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for n in nfes:
        lines.append(f"| {n} | " + " | ".join(fid_cell(v.get(n)) for v in cols.values()) + " |")
    gaps = any(n not in v for n in nfes for v in cols.values())
    notes = [fid_convention(metrics)] + (
        [f"{NOT_MEASURED} means not measured for that sampler and NFE."] if gaps else []
    )
    notes = [t for t in notes if t]
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")


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
        tile = image_grid(imgs, nrow=imgs.shape[0], padding=2, pad_value=255)
        strips.append(Image.fromarray(tile).resize((tile.shape[1] * SCALE, tile.shape[0] * SCALE), Image.NEAREST))
    width = LABEL_WIDTH + max(s.width for s in strips)
    height = sum(s.height for s in strips)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(16), _font(13)
    y = 0
    for row, strip in zip(rows, strips):
        canvas.paste(strip.convert("RGB"), (LABEL_WIDTH, y))
        top = y + strip.height // 2 - (27 if row.times else 18)
        draw.text((8, top), row.label, fill="black", font=font)
        if row.times:
            draw.text((8, top + 19), row.times, fill="black", font=small)
            top += 17
        draw.text((8, top + 20), f"{row.ms_per_image:.1f} ms / image", fill="#555", font=small)
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


def default_grids(
    kind: str, steps: int, custom: torch.Tensor | None, euler: bool = False
) -> list[tuple[str, torch.Tensor]]:
    """Rows N = 1, 2, 4, 8 and the chosen N on grid ``kind`` (or one custom grid after N = 1, whose
    N is the number of typed steps: the N slider does not apply). With ``euler`` (a flow-matching
    model) the labels say Euler steps of the velocity, not flow-map jumps."""
    if custom is not None:
        n = len(custom) - 1
        if euler:
            return [("Euler, 1 step", make_grid("uniform", 1)), (f"custom, Euler, {n} steps", custom)]
        return [("N = 1 (uniform)", make_grid("uniform", 1)), (f"custom, N = {n}", custom)]
    ns = sorted(set(ROW_STEPS) | {steps})
    if euler:
        return [(f"Euler, {n} step{'s' * (n > 1)} ({kind})", make_grid(kind, n)) for n in ns]
    return [(f"N = {n} ({kind})", make_grid(kind, n)) for n in ns]
