"""Command line: ``python -m flowmaps train | sample | evaluate``.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data. A sampling grid runs
0 = t_0 < t_1 < ... < t_N = 1 and one flow-map jump is taken per step.

Examples::

    python -m flowmaps train --data checkerboard --method lsd --steps 20000 --out checkpoints/cb-lsd
    python -m flowmaps train --data checkerboard --method lsd --steps 40000 --out checkpoints/cb-lsd --resume
    python -m flowmaps sample --checkpoint checkpoints/cb-lsd --steps 1,2,4 --n 4000 --out samples.png
    python -m flowmaps sample --checkpoint checkpoints/cb-lsd --grid 0,0.3,0.7,1 --out samples.npy
    python -m flowmaps evaluate --checkpoint checkpoints/cb-lsd --n 64000
    torchrun --nproc-per-node 2 -m flowmaps train --data fashion-mnist --method lsd --out checkpoints/fm

``train`` writes a checkpoint folder (model.safetensors, config.json, README.md with the
evaluation table) plus ``trainer.safetensors`` (optimiser state, for ``--resume``) and
``log.jsonl``. Every option is typed and range-checked; a bad value exits with status 2 and a
message that names the option.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IMAGE_SETS = ("fashion-mnist",)
DEFAULT_EVAL_STEPS = (1, 2, 4, 8, 16)
SW_PROJECTIONS = 128
SW_MAX_POINTS = 16_384
"""Sliced Wasserstein in the evaluation table: 128 directions on at most 16,384 points per set
(sorting 64k x 512 projections takes minutes on a small CPU)."""
TRAINER_STATE = "trainer.safetensors"

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
    tr.add_argument("--steps", type=positive_int, default=10_000, help="total optimiser steps (default 10000)")
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
    tr.add_argument("--width", type=positive_int, default=512, help="MLP width (default 512)")
    tr.add_argument("--depth", type=positive_int, default=4, help="MLP hidden layers (default 4)")
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
        default=1.0,
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
    ev.add_argument("--seed", type=nonnegative_int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", default=None, help="also write the table as JSON to this file")
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
) -> list[dict[str, Any]]:
    """Metrics per grid, as rows of a table.

    Checkerboard: histogram KL with its floor (exact samples, same n) and sliced Wasserstein;
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
        return rows

    from flowmaps.data.toy import sample_toy
    from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor, energy_distance, sliced_wasserstein

    reference = sample_toy(data, n, torch.Generator().manual_seed(seed + 1), dtype=torch.float64) if data else None
    for grid in grids:
        start = time.perf_counter()
        x = generate(model, n, shape, grid, seed, device).to(torch.float64)
        row: dict[str, Any] = {"N": grid.numel() - 1, "grid": _grid_text(grid), "time_s": time.perf_counter() - start}
        if data == "checkerboard":
            row["KL"] = checkerboard_kl(x).kl
            row["KL_floor"] = checkerboard_kl_floor(n)
        if reference is not None:
            g = torch.Generator().manual_seed(seed + 2)
            xs, ref = x[:SW_MAX_POINTS], reference[:SW_MAX_POINTS]
            row["SW"] = sliced_wasserstein(xs, ref, n_projections=SW_PROJECTIONS, generator=g)
            if data != "checkerboard":
                row["energy"] = energy_distance(xs, ref, generator=g)
        rows.append(row)
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
    """Fill the data-dependent defaults (the paper's recipe for 2-D sets and for images)."""
    images = is_image_set(args.data)
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

    _train_defaults(args)
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

    def write_model(metrics: Any = None) -> None:
        card = {**card_base, "steps": trainer.global_step, "wall_time": time.perf_counter() - wall_start}
        if metrics:
            card["metrics"] = metrics
        save_pretrained(trainer, out, {**config, "steps": trainer.global_step, "eval": metrics or []}, card, dtype=fp16)

    def periodic(tr: Trainer, logs: dict[str, Any]) -> None:
        if tr.is_main and "recovered" not in logs:
            write_model()

    if rank == 0:
        logger.info("training %s on %s: %s", args.method, args.data, card_base["network"])
    every = args.checkpoint_every if args.checkpoint_every else max(args.steps, 1) + 1
    try:
        trainer.train(callback=periodic, callback_every=every, progress=not args.no_progress)
    except DivergenceError as err:
        print(f"error: {err}. No final model was written; try a lower --lr or --grad-clip", file=sys.stderr)
        if distributed:
            close_distributed(wait=False)
        return 1
    if rank == 0:
        metrics: list[dict[str, Any]] = []
        if args.eval_n > 0:
            grids = grids_for("uniform", args.eval_steps)
            metrics = evaluate_model(trainer.ema_model, config, args.eval_n, grids, seed=args.seed, device=device)
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


# ---------------------------------------------------------------------------------- sample
def _load(checkpoint: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:
    from flowmaps.hub import from_pretrained

    try:
        return from_pretrained(checkpoint, device=device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _points_panel(x: np.ndarray, size: int = 256, lim: float = 1.5) -> np.ndarray:
    """A log-scaled 2-D histogram of points (n, 2) as a uint8 image (white background)."""
    h, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=size, range=[[-lim, lim], [-lim, lim]])
    h = np.log1p(h[::-1])  # y up
    h = h / h.max() if h.max() > 0 else h
    return (255 * (1.0 - h)).astype(np.uint8)


def _write_png(path: Path, samples: list[Tensor], grids: list[Tensor]) -> None:
    from PIL import Image, ImageDraw

    from flowmaps.data.images import make_grid

    panels = []
    for x in samples:
        if x.ndim == 2:
            panels.append(_points_panel(x.numpy()))
        else:
            panels.append(make_grid(x[:64], nrow=8, pad_value=255))
    height = max(p.shape[0] for p in panels) + 16
    gap = 8
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    x_off = 0
    for panel, grid in zip(panels, grids):
        canvas.paste(Image.fromarray(panel), (x_off, 16))
        draw.text((x_off + 2, 2), _grid_label(grid), fill=0)
        x_off += panel.shape[1] + gap
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
def cmd_evaluate(args: argparse.Namespace) -> int:
    device = _device(args.device)
    loaded = _load(args.checkpoint, device)
    if loaded is None:
        return 1
    model, config = loaded
    images = len(sample_shape(config)) > 1
    n = args.n if args.n is not None else (10_000 if images else 64_000)
    rows = evaluate_model(model, config, n, grids_for(args.grid, args.steps), seed=args.seed, device=device)
    print(f"{args.checkpoint}: data {config.get('data', '?')}, method {config.get('method', '?')}, n = {n}")
    print(format_table(rows))
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
