"""Command line: ``python -m flowmaps train | sample | evaluate``.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data. A sampling grid runs
0 = t_0 < t_1 < ... < t_N = 1 and one flow-map jump is taken per step.

Examples::

    python -m flowmaps train --data checkerboard --method lsd --steps 20000 --out checkpoints/cb-lsd
    python -m flowmaps train --data checkerboard --preset quick --out checkpoints/cb-quick  # about a minute on a CPU
    python -m flowmaps train --data checkerboard --method lsd --steps 40000 --out checkpoints/cb-lsd --resume
    python -m flowmaps sample --checkpoint checkpoints/cb-lsd --steps 1,2,4 --n 4000 --out samples.png
    python -m flowmaps sample --checkpoint checkpoints/cb-lsd --grid 0,0.3,0.7,1 --out samples.npy
    python -m flowmaps evaluate --checkpoint checkpoints/cb-lsd --n 64000 --seeds 0,1,2
    torchrun --nproc-per-node 2 -m flowmaps train --data fashion-mnist --method lsd --out checkpoints/fm

``train`` writes a checkpoint folder (model.safetensors, config.json, README.md with the
evaluation table) plus ``trainer.safetensors`` (optimiser state, for ``--resume``) and
``log.jsonl``. It prints a duration estimate after its first steps; Ctrl-C or SIGTERM stops it
after the current step and saves the model trained so far, marked as interrupted (exit status
128 + the signal's number). Every option is typed and range-checked; a bad value exits with status 2 and a
message that names the option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowmaps.metrics import mean_sd

IMAGE_SETS = ("fashion-mnist",)
DEFAULT_EVAL_STEPS = (1, 2, 4, 8, 16)
SW_PROJECTIONS = 128
SW_MAX_POINTS = 16_384
"""Sliced Wasserstein in the evaluation table: 128 directions on at most 16,384 points per set
(sorting 64k x 512 projections takes minutes on a small CPU)."""
TRAINER_STATE = "trainer.safetensors"
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"steps": 10_000, "width": 512, "depth": 4, "anneal_from": 1.0},
    "quick": {"steps": 6_000, "width": 128, "depth": 4, "lr": 3e-3, "anneal_from": 0.7},
}
"""Values of ``train --preset``; an option given on the command line overrides its preset value.
The quick preset is for 2-D sets on a CPU (measured durations and KL: README, "The library")."""
TIMING_STEPS = 20
"""Steps timed (after two warm-up steps) for the duration estimate that ``train`` prints."""

logger = logging.getLogger("flowmaps.cli")


# ---------------------------------------------------------------------------------- argument types
def _number(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(float, text, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(float, text, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(float, text, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def decay(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(float, text, "a number")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def drift_factor(text: str) -> float:
    """0 (off) or a number > 1."""
    value = _number(float, text, "a number")
    if value != 0 and not value > 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or > 1, got {value:g}")
    return value


def step_list(text: str) -> list[int]:
    """Comma-separated positive step counts, e.g. "1,2,4"."""
    items = [s for s in text.replace(" ", "").split(",") if s]
    if not items:
        raise argparse.ArgumentTypeError("expected step counts such as 1,2,4")
    values = [positive_int(s) for s in items]
    from flowmaps.sampling import MAX_STEPS

    if max(values) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} steps, got {max(values)}")
    return values


def int_list(text: str) -> list[int]:
    """Comma-separated non-negative integers, e.g. "1,2,2" (may be empty)."""
    return [nonnegative_int(s) for s in text.replace(" ", "").split(",") if s]


def seed_list(text: str) -> list[int]:
    """Comma-separated distinct non-negative seeds, e.g. "0,1,2" (at least one)."""
    values = int_list(text)
    if not values:
        raise argparse.ArgumentTypeError("expected seeds such as 0,1,2")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return values


def grid_spec(text: str) -> str | Tensor:
    """ "uniform", "edm", "cosine", or explicit times "0,0.5,1" (t = 0 noise, t = 1 data)."""
    from flowmaps.sampling import GRID_KINDS, parse_grid

    key = text.strip().lower()
    if key in GRID_KINDS:
        return key
    try:
        return parse_grid(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (or use one of {', '.join(GRID_KINDS)})") from None


def _methods() -> list[str]:
    from flowmaps.objectives import SELF_DISTILLATION

    return list(SELF_DISTILLATION)


def _data_sets() -> list[str]:
    from flowmaps.data.toy import TOY_SETS

    return list(TOY_SETS) + list(IMAGE_SETS)


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m flowmaps``."""
    parser = argparse.ArgumentParser(
        prog="python -m flowmaps",
        description="Flow maps by self-distillation: train, sample and evaluate (t = 0 noise, t = 1 data).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,evaluate}")

    tr = sub.add_parser("train", help="train a flow map and write a checkpoint folder")
    tr.add_argument("--data", required=True, choices=_data_sets(), help="2-D toy set or image set")
    tr.add_argument("--method", default="lsd", choices=_methods(), help="objective (default: lsd)")
    tr.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="default",
        help="quick: an MLP 4x128, lr 3e-3 annealed from 70%% of the run, 6000 steps: about a minute on 2 CPU cores; "
        "default: the paper's 2-D recipe (MLP 4x512, batch 1024, 10000 steps). Options given explicitly win",
    )
    tr.add_argument("--steps", type=positive_int, default=None, help="total optimiser steps (default 10000)")
    tr.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="global batch size, split among ranks (default 1024 for 2-D, 128 for images)",
    )
    tr.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 1e-3 2-D, 1e-2 images)")
    tr.add_argument(
        "--lr-decay-start",
        type=nonnegative_int,
        default=35_000,
        help="constant lr up to this step, then lr / sqrt(step / this); 0 disables (default 35000)",
    )
    tr.add_argument(
        "--grad-clip",
        type=nonnegative_float,
        default=None,
        help="gradient-norm clip, 0 disables (default 10 for 2-D, 1 for images)",
    )
    tr.add_argument(
        "--drift-factor",
        type=drift_factor,
        default=10.0,
        help="slow-divergence guard: roll back when the running median of the loss or gradient norm passes "
        "this many times its lowest value in the run; 0 turns it off (default 10)",
    )
    tr.add_argument("--ema-decay", type=decay, default=None, help="EMA decay (default 0.999 2-D, 0.9999 images)")
    tr.add_argument("--eta", type=unit_interval, default=0.75, help="fraction of the batch on the diagonal [0, 1]")
    tr.add_argument(
        "--reduction",
        choices=("mean", "sum_of_means"),
        default="mean",
        help="mean over all samples (3:1 at eta=0.75) or the sum of the two branch means",
    )
    tr.add_argument(
        "--backend",
        choices=("auto", "jvp", "tangent", "fd"),
        default="auto",
        help="derivative backend of the JVP objectives",
    )
    tr.add_argument(
        "--fd-step",
        type=positive_float,
        default=None,
        help="central-difference step in time units for --backend fd (default: the network's own, "
        "0.1 / its time scale: 1e-4 for the UNet's 1000 t embedding, else 5e-3)",
    )
    tr.add_argument(
        "--sigma",
        type=positive_float,
        default=None,
        help="noise std at t = 0 (default: the data std for 2-D sets, 0.5 for images)",
    )
    tr.add_argument(
        "--learn-loss-weight",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="learned log-variance loss weight w(s, t) (default: on for images, off for 2-D)",
    )
    tr.add_argument("--net", choices=("mlp", "unet"), default=None, help="network (default mlp 2-D, unet images)")
    tr.add_argument("--width", type=positive_int, default=None, help="MLP width (default 512)")
    tr.add_argument("--depth", type=positive_int, default=None, help="MLP hidden layers (default 4)")
    tr.add_argument("--activation", choices=("gelu", "silu", "tanh"), default="gelu", help="MLP activation")
    tr.add_argument("--channels", type=positive_int, default=64, help="UNet base channels (default 64)")
    tr.add_argument("--channel-mults", type=int_list, default=[1, 2, 2], help="UNet width multipliers, e.g. 1,2,2")
    tr.add_argument("--res-blocks", type=positive_int, default=2, help="UNet residual blocks per level")
    tr.add_argument("--attn-levels", type=int_list, default=[], help="UNet levels with attention, e.g. 2")
    tr.add_argument("--dropout", type=unit_interval, default=0.0, help="UNet dropout (diagonal branch only)")
    tr.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    tr.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    tr.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    tr.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast on CUDA (default: on only for objectives without JVPs)",
    )
    tr.add_argument(
        "--cuda-graph",
        action="store_true",
        help="capture the loss and its backward in a CUDA graph and replay it (CUDA; under torchrun, one per rank)",
    )
    tr.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network's forward and tangent pass (the first steps compile)",
    )
    tr.add_argument("--out", required=True, help="checkpoint folder to write")
    tr.add_argument("--log", default=None, help="JSONL log file (default: <out>/log.jsonl)")
    tr.add_argument("--log-every", type=positive_int, default=100)
    tr.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        default=1000,
        help="write the trainer state and the model every this many steps (0: only at the end)",
    )
    tr.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help=f"continue from a trainer state (default <out>/{TRAINER_STATE})",
    )
    tr.add_argument("--max-seconds", type=positive_float, default=None, help="stop after this much wall time")
    tr.add_argument(
        "--anneal-from",
        type=unit_interval,
        default=None,
        help="from this fraction of the run (its steps or --max-seconds, whichever ends it) the lr falls "
        "linearly to 0 at the end; 1 turns it off (default)",
    )
    tr.add_argument(
        "--eval-n",
        type=nonnegative_int,
        default=None,
        help="samples for the evaluation in the model card, 0 skips it (default 64000 2-D, 10000 images)",
    )
    tr.add_argument("--eval-steps", type=step_list, default=list(DEFAULT_EVAL_STEPS), help="e.g. 1,2,4,8,16")
    tr.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store the weights in fp16 (default: on for images)",
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    sa = sub.add_parser("sample", help="draw samples with N-step flow-map sampling")
    sa.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub id owner/name")
    sa.add_argument("--steps", type=step_list, default=[1, 2, 4], help="numbers of steps, e.g. 1,2,4")
    sa.add_argument(
        "--grid",
        type=grid_spec,
        default="uniform",
        help='uniform, edm, cosine, or explicit times such as "0,0.5,1" (then --steps is ignored)',
    )
    sa.add_argument("--n", type=positive_int, default=1000, help="number of samples")
    sa.add_argument("--seed", type=nonnegative_int, default=0)
    sa.add_argument("--device", default="auto")
    sa.add_argument("--out", required=True, help="output: .npy (array (K, n, *D), one row per grid) or .png")

    ev = sub.add_parser("evaluate", help="print sample-quality metrics at several step counts")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub id owner/name")
    ev.add_argument("--n", type=positive_int, default=None, help="samples (default 64000 2-D, 10000 images)")
    ev.add_argument("--steps", type=step_list, default=list(DEFAULT_EVAL_STEPS), help="e.g. 1,2,4,8,16")
    ev.add_argument("--grid", type=grid_spec, default="uniform", help="uniform, edm or cosine (or explicit times)")
    ev.add_argument("--seed", type=nonnegative_int, default=0, help="noise seed (one run)")
    ev.add_argument(
        "--seeds",
        type=seed_list,
        default=None,
        help="several noise seeds, e.g. 0,1,2: the table shows mean ± sd over them (replaces --seed)",
    )
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", default=None, help="also write the table as JSON to this file")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SystemExit(f"error: bad --device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for CUDA, which is not available here")
    return device


def is_image_set(name: str) -> bool:
    return name in IMAGE_SETS


def sample_shape(config: dict[str, Any]) -> tuple[int, ...]:
    """Shape of one sample, (D,) for points or (C, H, W) for images, from a checkpoint config."""
    if "shape" in config:
        return tuple(int(s) for s in config["shape"])
    net = config["net"]
    if net["name"] == "mlp":
        return (int(net.get("dim", 2)),)
    return (int(net.get("in_channels", 1)), 28, 28)


def make_data_sampler(data: str, device: torch.device) -> Callable[[int, torch.Generator], Tensor]:
    """data_sampler(n, generator) -> x1 of shape (n, *D) on ``device`` (the data end, t = 1)."""
    if is_image_set(data):
        from flowmaps.data.images import image_batch_sampler, load_fashion_mnist

        images, _ = load_fashion_mnist("train")
        return image_batch_sampler(images.to(device))

    from flowmaps.data.toy import sample_toy

    def toy_sampler(n: int, g: torch.Generator) -> Tensor:
        if g.device.type == "cpu":
            return sample_toy(data, n, g)
        # Toy samplers draw on the CPU: derive a CPU stream from the device generator.
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
        return sample_toy(data, n, torch.Generator().manual_seed(seed))

    return toy_sampler


def grids_for(grid: str | Tensor, steps: Sequence[int]) -> list[Tensor]:
    """The time grids to sample with: one per step count for a named grid, else the given one."""
    from flowmaps.sampling import make_grid

    if isinstance(grid, Tensor):
        return [grid]
    return [make_grid(grid, n) for n in steps]


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
    """n samples (n, *shape) on the CPU: noise at t = 0 (seeded), flow-map jumps along ``grid``.

    The same seed gives the same noise for every grid, so step counts are compared on equal terms.
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


def _grid_label(grid: Tensor) -> str:
    return f"N={grid.numel() - 1}"


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

    Checkerboard: histogram KL with its floor (exact samples, same n) and sliced Wasserstein; when
    a target bin is empty the KL is inf, and the row adds ``empty_bins``, ``KL_half`` (empty bins
    counted as half a sample, ``checkerboard_kl(eps=0.5)``) and ``floor_half`` (the same on exact samples);
    other 2-D sets: sliced Wasserstein and energy distance against n fresh data samples
    (both on at most SW_MAX_POINTS points, SW with SW_PROJECTIONS directions);
    images: FID (against the Fashion-MNIST test split) when the FID feature network exists.
    """
    data = config.get("data", "")
    shape = sample_shape(config)
    rows: list[dict[str, Any]] = []
    if is_image_set(data) or len(shape) > 1:
        try:
            from flowmaps.fid import fid, load_feature_network

            net = load_feature_network(device=device)
        except FileNotFoundError as err:
            logger.warning("FID skipped: %s", err)
            net = None
        for grid in grids:
            start = time.perf_counter()
            x = generate(model, n, shape, grid, seed, device, chunk=500)
            row = {"N": grid.numel() - 1, "grid": _grid_text(grid), "time_s": time.perf_counter() - start}
            if net is not None:
                row["FID"] = fid(x, net=net)
            rows.append(row)
            if on_row is not None:
                on_row(row)
        return rows

    from flowmaps.data.toy import sample_toy
    from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor, energy_distance, sliced_wasserstein

    reference = sample_toy(data, n, torch.Generator().manual_seed(seed + 1), dtype=torch.float64) if data else None
    for grid in grids:
        start = time.perf_counter()
        x = generate(model, n, shape, grid, seed, device).to(torch.float64)
        row: dict[str, Any] = {"N": grid.numel() - 1, "grid": _grid_text(grid), "time_s": time.perf_counter() - start}
        if data == "checkerboard":
            kl = checkerboard_kl(x)
            row["KL"] = kl.kl
            row["KL_floor"] = checkerboard_kl_floor(n)
        if reference is not None:
            g = torch.Generator().manual_seed(seed + 2)
            xs, ref = x[:SW_MAX_POINTS], reference[:SW_MAX_POINTS]
            row["SW"] = sliced_wasserstein(xs, ref, n_projections=SW_PROJECTIONS, generator=g)
            if data != "checkerboard":
                row["energy"] = energy_distance(xs, ref, generator=g)
        if data == "checkerboard" and kl.empty_bins:  # inf: how many bins are empty, the half-sample KL
            row["empty_bins"] = kl.empty_bins
            row["KL_half"] = checkerboard_kl(x, eps=0.5).kl
            row["floor_half"] = checkerboard_kl_floor(n, eps=0.5)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _grid_text(grid: Tensor) -> str:
    return ",".join(f"{t:.4g}" for t in grid.tolist())


def format_table(rows: Sequence[dict[str, Any]], skip: Sequence[str] = ("grid",)) -> str:
    """A plain-text table of rows (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols and c not in skip]

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{world} x {name}" if world > 1 else name
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------- train
def _train_defaults(args: argparse.Namespace) -> None:
    """Fill the preset's values and the data-dependent defaults (the paper's recipe for 2-D sets and images).

    Raises:
        ValueError: ``--preset quick`` with an image set (the preset is a 2-D CPU recipe).
    """
    images = is_image_set(args.data)
    if images and args.preset != "default":
        raise ValueError(f"--preset {args.preset} is a recipe for the 2-D sets; for {args.data} leave it out")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.batch_size is None:
        args.batch_size = 128 if images else 1024
    if args.lr is None:
        args.lr = 1e-2 if images else 1e-3
    if args.grad_clip is None:
        args.grad_clip = 1.0 if images else 10.0
    if args.ema_decay is None:
        args.ema_decay = 0.9999 if images else 0.999
    if args.learn_loss_weight is None:
        args.learn_loss_weight = images
    if args.net is None:
        args.net = "unet" if images else "mlp"
    if args.fp16 is None:
        args.fp16 = images
    if args.eval_n is None:
        args.eval_n = 10_000 if images else 64_000
    if args.sigma is None:
        if images:
            args.sigma = 0.5
        else:
            from flowmaps.data.toy import data_std

            args.sigma = data_std(args.data)


def model_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON model config (see flowmaps.registry) described by the train options."""
    images = is_image_set(args.data)
    if args.net == "mlp":
        if images:
            raise ValueError("--net mlp takes 2-D points; use --net unet for images")
        net = {
            "name": "mlp",
            "dim": 2,
            "width": args.width,
            "depth": args.depth,
            "activation": args.activation,
            "sigma": args.sigma,
        }
        shape = [2]
    else:
        if not images:
            raise ValueError("--net unet takes images; use --net mlp for 2-D sets")
        net = {
            "name": "unet",
            "in_channels": 1,
            "base_channels": args.channels,
            "channel_mults": list(args.channel_mults),
            "num_res_blocks": args.res_blocks,
            "attn_levels": list(args.attn_levels),
            "dropout": args.dropout,
            "sigma": args.sigma,
        }
        shape = [1, 28, 28]
    return {
        "net": net,
        "sigma": args.sigma,
        "interpolant": "linear",
        "learn_loss_weight": bool(args.learn_loss_weight),
        "shape": shape,
    }


def _describe_net(config: dict[str, Any], model: nn.Module) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    net = config["net"]
    if net["name"] == "mlp":
        text = f"MLP {net['depth']}x{net['width']} ({net.get('activation', 'gelu')}) on [s, t, x / sigma]"
    else:
        text = (
            f"UNet, {net['base_channels']} base channels x {net['channel_mults']}, "
            f"{net['num_res_blocks']} res blocks per level, embeddings of s and t - s"
        )
    if config.get("learn_loss_weight"):
        text += ", learned loss weight"
    return f"{text}; {n_params:,} parameters"


def cmd_train(args: argparse.Namespace) -> int:
    from flowmaps.hub import save_pretrained
    from flowmaps.objectives import DESCRIPTIONS, make_objective
    from flowmaps.registry import build_model
    from flowmaps.training import DivergenceError, TrainConfig, Trainer, close_distributed, init_distributed

    try:
        _train_defaults(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.fd_step is not None and args.backend != "fd":
        print(f"error: --fd-step is the step of --backend fd; got --backend {args.backend}", file=sys.stderr)
        return 2
    try:
        model_cfg = model_config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        info = init_distributed()
        device, rank, world = info.device, info.rank, info.world_size
    else:
        device, rank, world = _device(args.device), 0, 1
    if args.batch_size % world:
        print(f"error: --batch-size {args.batch_size} must be divisible by the {world} ranks", file=sys.stderr)
        return 2
    out = Path(args.out)
    state_path = out / TRAINER_STATE
    resume_path = None
    if args.resume is not None:
        resume_path = state_path if args.resume == "auto" else Path(args.resume)
        if not resume_path.is_file():
            print(f"error: --resume: no trainer state at {resume_path}", file=sys.stderr)
            return 2

    torch.manual_seed(args.seed)
    model = build_model(model_cfg)
    objective = make_objective(
        args.method, eta=args.eta, reduction=args.reduction, backend=args.backend, fd_step=args.fd_step
    )
    train_cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay_start=args.lr_decay_start,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        seed=args.seed,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        checkpoint_path=str(state_path),
        log_path=args.log if args.log is not None else str(out / "log.jsonl"),
        device=str(device),
        dtype=args.dtype,
        amp=args.amp,
        cuda_graph=args.cuda_graph,
        compile=args.compile,
        max_seconds=args.max_seconds,
        anneal_from=args.anneal_from,
        drift_factor=args.drift_factor or None,
    )
    sampler = make_data_sampler(args.data, device)
    try:
        trainer = Trainer(model, objective, sampler, train_cfg)
    except ValueError as err:  # e.g. a batch too small for the method's branches
        print(f"error: {err}", file=sys.stderr)
        close_distributed(wait=False)
        return 2
    if resume_path is not None:
        try:
            trainer.resume(resume_path)
        except (ValueError, RuntimeError, KeyError) as err:
            print(f"error: cannot resume from {resume_path}: {err}", file=sys.stderr)
            return 2
    start_step = trainer.global_step
    config = {
        **model_cfg,
        "data": args.data,
        "method": args.method,
        "objective": {"eta": args.eta, "reduction": args.reduction, "backend": args.backend}
        | ({"fd_step": model.resolve_fd_step(args.fd_step)} if args.backend == "fd" else {}),
        "train": train_cfg.to_dict(),
    }
    fp16 = "float16" if args.fp16 else "float32"
    card_base = {
        "title": f"flowmaps: {args.method.upper()} on {args.data}",
        "data": args.data,
        "network": _describe_net(model_cfg, model),
        "method": f"{args.method}: {DESCRIPTIONS.get(args.method, '')} (eta = {args.eta}, {args.reduction})",
        "hardware": _hardware(device, world),
    }
    wall_start = time.perf_counter()

    def write_model(metrics: Any = None, interrupted: bool = False) -> None:
        step = trainer.global_step
        card = {**card_base, "steps": step, "wall_time": time.perf_counter() - wall_start}
        extra: dict[str, Any] = {}
        if interrupted:
            card["status"] = f"interrupted at step {step} of {args.steps} (continue with --resume)"
            extra["interrupted_at"] = step
        if metrics:
            card["metrics"] = metrics
        save_pretrained(trainer, out, {**config, "steps": step, "eval": metrics or [], **extra}, card, dtype=fp16)

    signals: list[int] = []
    clock = _StepClock(start_step, args.steps, args.max_seconds)

    def each_step(tr: Trainer, logs: dict[str, Any]) -> None:
        if signals:  # a signal that came before train() started
            tr.request_stop()
        line = clock.tick(tr.global_step)
        if line and tr.is_main:
            _say(line)
        if tr.is_main and "recovered" not in logs and tr.global_step % every == 0:
            write_model()

    if rank == 0:
        logger.info("training %s on %s: %s", args.method, args.data, card_base["network"])
        if start_step < args.steps:
            _say(_plan_line(args, start_step, device))
    every = args.checkpoint_every if args.checkpoint_every else max(args.steps, 1) + 1
    try:
        with _stop_on_signals(trainer, signals):
            trainer.train(callback=each_step, callback_every=1, progress=not args.no_progress)
    except DivergenceError as err:
        print(f"error: {err}. No final model was written; try a lower --lr or --grad-clip", file=sys.stderr)
        if distributed:
            close_distributed(wait=False)
        return 1
    if signals:
        name = signal.Signals(signals[0]).name
        if rank == 0:
            write_model(interrupted=True)
            print(
                f"{name}: stopped at step {trainer.global_step} of {args.steps}; saved the model trained so far "
                f"to {out} (marked as interrupted), with {TRAINER_STATE} to continue: same command with --resume",
                file=sys.stderr,
            )
        if distributed:
            close_distributed(wait=False)
        return 128 + signals[0]
    if rank == 0:
        write_model()  # a Ctrl-C during the evaluation still leaves the trained model
        metrics: list[dict[str, Any]] = []
        if args.eval_n > 0:
            grids = grids_for("uniform", args.eval_steps)
            try:
                metrics = evaluate_model(trainer.ema_model, config, args.eval_n, grids, seed=args.seed, device=device)
            except KeyboardInterrupt:
                print(
                    f"evaluation interrupted: {out} holds the trained model without its evaluation table; "
                    f"run python -m flowmaps evaluate --checkpoint {out}",
                    file=sys.stderr,
                )
                return 130
            for row in metrics:
                row.pop("grid", None)
                row.pop("time_s", None)
            print(format_table(metrics))
            write_model(metrics)
        steps_done = trainer.global_step - start_step
        print(f"wrote {out} ({trainer.global_step} steps, {steps_done} this run)")
    if distributed:
        close_distributed()
    return 0


def _say(line: str) -> None:
    """Print a line to stdout without breaking a tqdm bar."""
    from tqdm.auto import tqdm

    tqdm.write(line)
    sys.stdout.flush()


def _fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _plan_line(args: argparse.Namespace, start_step: int, device: torch.device) -> str:
    """What ``train`` is about to do, and the quick recipe on a CPU."""
    left = args.steps - start_step
    estimate = f"a duration estimate follows after {2 + TIMING_STEPS} steps; " if left > 2 + TIMING_STEPS else ""
    line = f"training {left} steps (preset {args.preset}); {estimate}Ctrl-C stops and keeps the model trained so far"
    if device.type == "cpu" and args.preset == "default" and not is_image_set(args.data):
        line += (
            "\nhint: the defaults take 10-15 min on 2 idle CPU cores; for a quick CPU run add --preset quick "
            "(MLP 4x128, 6000 steps: about a minute)"
        )
    return line


class _StepClock:
    """Times steps ``start + 3 .. start + 2 + TIMING_STEPS`` (two warm-up steps first) and turns the
    per-step cost into the run's remaining duration (bounded by ``max_seconds``)."""

    def __init__(self, start_step: int, steps: int, max_seconds: float | None) -> None:
        self.warm = start_step + 2
        self.done = self.warm + TIMING_STEPS
        self.steps = steps
        self.max_seconds = max_seconds
        self.run_start = time.perf_counter()
        self.t0: float | None = None

    def tick(self, step: int) -> str | None:
        """Call after each step; returns the estimate line once, at the end of the timing."""
        now = time.perf_counter()
        if step == self.warm:
            self.t0 = now
        if step != self.done or self.t0 is None or step >= self.steps:
            return None
        per_step = (now - self.t0) / TIMING_STEPS
        left = per_step * (self.steps - step)
        capped = ""
        if self.max_seconds is not None and now - self.run_start + left > self.max_seconds:
            left = max(0.0, self.max_seconds - (now - self.run_start))
            capped = f", cut by --max-seconds at about step {step + int(left / per_step)}"
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        return (
            f"duration estimate: {1000 * per_step:.1f} ms per step (timed over steps {self.warm + 1}-{step}), "
            f"so about {_fmt_duration(left)} for the {self.steps - step} steps left{capped} (done near {finish}; "
            "plus the evaluation)"
        )


@contextlib.contextmanager
def _stop_on_signals(trainer: Any, caught: list[int]) -> Any:
    """While inside, SIGINT (Ctrl-C) and SIGTERM ask the trainer to stop after its current step and
    record the signal in ``caught``; a second signal acts as it would without this. Only in the main
    thread (signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        trainer.request_stop()
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------- sample
def _load(checkpoint: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:
    from flowmaps.hub import from_pretrained

    try:
        return from_pretrained(checkpoint, device=device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


PANEL_PLOT = 320
"""Side of a scatter panel's plotting square in the ``sample`` PNG, in pixels."""
POINT_COLOUR = (31, 90, 170)


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= raw (raw > 0)."""
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * base >= raw * (1 - 1e-9))


def _axis_range(samples: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """Half-width of a square view centred on 0 holding 99.8% of every panel's points, and its ticks."""
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


def _scatter_panel(x: np.ndarray, lim: float, ticks: Sequence[float], title: str) -> Any:
    """A scatter plot of points (n, 2) as an RGB PIL image: discs of 21 pixels (radius sqrt(5)) drawn with alpha
    (overlaps darken, so dense regions read as dense), an axis box with tick labels, and a title."""
    from PIL import Image, ImageDraw

    size = PANEL_PLOT
    left, top, right, bottom = 46, 30, 12, 30
    x = x[np.isfinite(x).all(axis=1)]
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
    ink = 1.0 - (1.0 - alpha) ** cover  # alpha compositing of equal-coloured discs, order-free
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


def _panel_title(grid: Tensor) -> str:
    """ "N = k steps", with the times when the grid is not uniform (t = 0 noise, t = 1 data)."""
    k = grid.numel() - 1
    title = f"N = {k} step" + ("" if k == 1 else "s")
    if not torch.allclose(grid.double().cpu(), torch.linspace(0, 1, k + 1, dtype=torch.float64), atol=1e-6):
        title += " (t = " + ", ".join(f"{t:.2g}" for t in grid.tolist()) + ")" if k <= 4 else " (non-uniform)"
    return title


def _write_png(path: Path, samples: list[Tensor], grids: list[Tensor]) -> None:
    """One panel per grid side by side: a scatter plot for points, a tile of 64 images for images."""
    from PIL import Image, ImageDraw

    from flowmaps.data.images import image_grid

    panels = []
    points = [x.float().numpy() for x in samples if x.ndim == 2]
    lim, ticks = _axis_range(points) if points else (1.0, [])
    for x, grid in zip(samples, grids):
        title = _panel_title(grid)
        if x.ndim == 2:
            panels.append(_scatter_panel(x.float().numpy(), lim, ticks, title))
        else:
            tile = Image.fromarray(image_grid(x[:64], nrow=8, pad_value=255)).convert("RGB")
            panel = Image.new("RGB", (max(tile.width, 160), tile.height + 26), "white")
            panel.paste(tile, (0, 26))
            ImageDraw.Draw(panel).text((panel.width / 2, 13), title, fill="black", font=_font(14), anchor="mm")
            panels.append(panel)
    gap = 8
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x_off = 0
    for panel in panels:
        canvas.paste(panel, (x_off, 0))
        x_off += panel.width + gap
    tmp = path.with_name(f".{path.name}.tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)


def cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        print(f"error: --out must end in .npy or .png, got {args.out!r}", file=sys.stderr)
        return 2
    device = _device(args.device)
    loaded = _load(args.checkpoint, device)
    if loaded is None:
        return 1
    model, config = loaded
    shape = sample_shape(config)
    grids = grids_for(args.grid, args.steps)
    samples = []
    for grid in grids:
        start = time.perf_counter()
        chunk = 500 if len(shape) > 1 else 16_384
        samples.append(generate(model, args.n, shape, grid, args.seed, device, chunk=chunk))
        print(f"{_grid_label(grid)}: grid {_grid_text(grid)}, {time.perf_counter() - start:.2f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        array = torch.stack(samples).float().numpy()
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, out)
        print(f"wrote {out}: array of shape {tuple(array.shape)} (grids, samples, *D)")
    else:
        _write_png(out, samples, grids)
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------- evaluate
KL_CONVENTION = (
    "KL = KL(target || histogram) on a 50 x 50 histogram of [-1, 1]^2 (the paper's estimator); the target is "
    "the checkerboard density at the bin centres normalised to sum 1, the histogram counts every sample "
    "(points off the square raise the KL); KL_floor = the same estimator on n exact samples (the best score "
    "possible at this n)."
)


def aggregate_seeds(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of mean and sd over seeds: ``runs[k]`` is the table of seed k (same grids, same order).

    Each numeric column c becomes c (the mean) and c_sd (the sample sd over seeds); a column that
    only some seeds' rows have (KL_half, empty_bins, floor_half appear only with empty bins) is filled
    for the others from the row itself (no empty bin: KL_half = KL, empty_bins = 0).
    """
    out = []
    for rows in zip(*runs):
        rows = [dict(r) for r in rows]
        if any("KL_half" in r for r in rows):
            half_floor = next(r["floor_half"] for r in rows if "floor_half" in r)
            for r in rows:
                r.setdefault("empty_bins", 0)
                r.setdefault("KL_half", r["KL"])
                r.setdefault("floor_half", half_floor)
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


def _pm_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table of :func:`aggregate_seeds` rows, cells as "mean ± sd"."""
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
    return format_table(shown)


def _inf_notes(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    device = _device(args.device)
    loaded = _load(args.checkpoint, device)
    if loaded is None:
        return 1
    model, config = loaded
    images = len(sample_shape(config)) > 1
    n = args.n if args.n is not None else (10_000 if images else 64_000)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    grids = grids_for(args.grid, args.steps)
    bar = tqdm(total=len(seeds) * len(grids), desc="evaluate", disable=args.no_progress, dynamic_ncols=True)
    runs = []
    try:
        for seed in seeds:

            def done(row: dict[str, Any], seed: int = seed) -> None:
                bar.set_postfix_str(f"seed {seed}, N = {row['N']} done", refresh=False)
                bar.update(1)

            runs.append(evaluate_model(model, config, n, grids, seed=seed, device=device, on_row=done))
    finally:
        bar.close()
    head = f"{args.checkpoint}: data {config.get('data', '?')}, method {config.get('method', '?')}, n = {n}"
    if len(seeds) > 1:
        rows = aggregate_seeds(runs)
        print(f"{head}, mean ± sd over noise seeds {','.join(map(str, seeds))}")
        print(_pm_table(rows))
    else:
        rows = runs[0]
        print(f"{head}, noise seed {seeds[0]}")
        print(format_table(rows))
    if config.get("data") == "checkerboard":
        print(KL_CONVENTION)
        for line in _inf_notes(rows, n):
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


# ---------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (argparse errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
