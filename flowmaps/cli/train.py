"""``flowmaps train``: train a flow map on a 2-D set or Fashion-MNIST and write a checkpoint folder.

Time convention: t = 0 is noise, t = 1 is data.

The training settings' flags are derived from :class:`flowmaps.training.TrainConfig`'s fields
(``--batch-size`` for ``batch_size``, ...), with their ranges and help; a range that allows "off"
(None) takes 0 on the command line. The defaults follow the paper's 2-D recipe, or the image
recipe for Fashion-MNIST (:data:`DATA_DEFAULTS`); ``--preset quick`` is a one-minute CPU recipe.
``--init-from`` continues from another checkpoint's network (the lineage goes into the card), and
``--note`` adds a sentence to the card. The folder holds model.safetensors, config.json and
README.md (with the evaluation table), plus trainer.safetensors (for ``--resume``) and log.jsonl.
A folder that holds a run already is refused unless ``--resume`` (continue it) or ``--overwrite``
(remove its :data:`RUN_FILES`, then train afresh).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowmaps.cli.options import (
    OFF,
    SEED,
    UNIT,
    int_list,
    nonnegative_int,
    positive_float,
    positive_int,
    range_type,
    seed_type,
    step_list,
)
from flowmaps.data.point_cloud import CSV_MAX_BYTES, CSV_MAX_ROWS, read_points_file
from flowmaps.evaluation import IMAGE_SETS, is_image_set
from flowmaps.training import TrainConfig, config_fields
from flowmaps.utils import Range

TRAINER_STATE = "trainer.safetensors"
RUN_FILES = ("config.json", "model.safetensors", TRAINER_STATE, "log.jsonl", "README.md")
"""The files a run writes into --out (config first: without it the folder is no checkpoint); a
folder holding any of the first four holds a run, which --overwrite removes, README.md included."""
DEFAULT_EVAL_STEPS = (1, 2, 4, 8, 16)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"steps": 10_000, "width": 512, "depth": 4, "anneal_from": 1.0},
    "quick": {"steps": 6_000, "width": 128, "depth": 4, "lr": 3e-3, "anneal_from": 0.7},
}
"""Values of ``train --preset``; an option given on the command line overrides its preset value.
The quick preset is for 2-D sets on a CPU (measured durations and KL: README, "The library")."""
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "2-D": {
        "batch_size": 1024,
        "lr": 1e-3,
        "grad_clip": 10.0,
        "ema_decay": 0.999,
        "net": "mlp",
        "learn_loss_weight": False,
        "fp16": False,
        "eval_n": 64_000,
    },
    "images": {
        "batch_size": 128,
        "lr": 1e-2,
        "grad_clip": 1.0,
        "ema_decay": 0.9999,
        "net": "unet",
        "learn_loss_weight": True,
        "fp16": True,
        "eval_n": 10_000,
        "sigma": 0.5,
    },
}
"""Defaults that depend on the data: the paper's 2-D recipe and its image recipe."""
CLI_DEFAULTS = {"checkpoint_every": 1000, "device": "auto"}
"""Where the command line's default differs from TrainConfig's."""
ARCHITECTURE = (
    "net",
    "width",
    "depth",
    "activation",
    "channels",
    "channel_mults",
    "res_blocks",
    "attn_levels",
    "dropout",
    "sigma",
)
"""Options that shape the network: with --init-from the network is the checkpoint's."""


def _default_text(name: str, default: Any) -> str:
    if name in DATA_DEFAULTS["2-D"]:
        return f"default {DATA_DEFAULTS['2-D'][name]:g} for 2-D, {DATA_DEFAULTS['images'][name]:g} for images"
    value = CLI_DEFAULTS.get(name, default)
    if value is None:
        return "default: none"
    return f"default {value:g}" if isinstance(value, float) else f"default {value}"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--batch-size`` for ``batch_size``), typed and range-checked
    from the field's metadata. Every flag defaults to None (not given); :func:`train_config` fills in."""
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata["help"]
        if "default" not in text:
            text += f" ({_default_text(f.name, f.default)})"
        rng: Range | None = f.metadata.get("range")
        if f.name == "seed":  # torch's generators bound it (options.SEED)
            text = text.replace(" (default", f"; 0 to {SEED.high} (default")
            parser.add_argument(flag, type=seed_type, default=None, help=text)
        elif "bool" in str(f.type):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif rng is not None:
            whole = str(f.type).startswith("int")
            text = text.replace(" (default", f"; {rng.describe(off_word='0')} (default")
            parser.add_argument(flag, type=range_type(rng, integer=whole), default=None, help=text)
        else:
            parser.add_argument(flag, choices=f.metadata.get("choices"), default=None, help=text)


def is_csv_data(data: str) -> bool:
    """Whether a ``--data`` value names a CSV file of points (it ends in .csv)."""
    return data.lower().endswith(".csv")


def data_name(names: list[str], text: str) -> str:
    """``--data``'s type: one of ``names`` or a path ending in .csv (read later, by :func:`fill_defaults`).

    Raises:
        argparse.ArgumentTypeError: anything else (the message lists the choices).
    """
    if text in names or is_csv_data(text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r}; choose one of {', '.join(names)}, or give a file name ending in .csv"
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``train`` sub-command's options; returns its parser (the caller attaches the run)."""
    from flowmaps.data.named import POINT_SETS
    from flowmaps.objectives import SELF_DISTILLATION

    tr = sub.add_parser("train", help="train a flow map and write a checkpoint folder")
    names = list(POINT_SETS) + list(IMAGE_SETS)
    tr.add_argument(
        "--data",
        required=True,
        type=functools.partial(data_name, names),
        metavar="{" + ",".join(names) + "} or FILE.csv",
        help="2-D toy set or Gaussian mixture (exact flow map known), image set, or a CSV file of x, y rows "
        f"(at most {CSV_MAX_ROWS} rows and {CSV_MAX_BYTES >> 20} MB, as in the app)",
    )
    tr.add_argument("--method", default="lsd", choices=list(SELF_DISTILLATION), help="objective (default: lsd)")
    tr.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="default",
        help="quick: an MLP 4x128, lr 3e-3 annealed from 70%% of the run, 6000 steps: about a minute on an "
        "idle CPU core, 2-3 min on a busy machine; "
        "default: the paper's 2-D recipe (MLP 4x512, batch 1024, 10000 steps). Options given explicitly win",
    )
    tr.add_argument(
        "--out",
        required=True,
        help="checkpoint folder to write; one that holds a run already is refused unless --resume "
        "(continue it) or --overwrite (replace it)",
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out: its checkpoint, model card, trainer state and log.jsonl are "
        "removed before training starts",
    )
    add_config_flags(tr)
    ob = tr.add_argument_group("objective")
    ob.add_argument("--eta", type=range_type(UNIT), default=0.75, help="fraction of the batch on the diagonal [0, 1]")
    ob.add_argument(
        "--reduction",
        choices=("mean", "sum_of_means"),
        default="mean",
        help="mean over all samples (3:1 at eta=0.75) or the sum of the two branch means",
    )
    ob.add_argument(
        "--backend",
        choices=("auto", "jvp", "dual", "tangent", "fd"),
        default="auto",
        help="derivative backend of the JVP objectives",
    )
    ob.add_argument(
        "--fd-step",
        type=positive_float,
        default=None,
        help="central-difference step in time units for --backend fd (default: the network's own, "
        "0.1 / its time scale: 1e-4 for the UNet's 1000 t embedding, else 5e-3)",
    )
    ob.add_argument(
        "--learn-loss-weight",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="learned log-variance loss weight w(s, t) (default: on for images, off for 2-D)",
    )
    _add_network_flags(tr.add_argument_group("network (with --init-from: the checkpoint's)"))
    _add_run_flags(tr.add_argument_group("data, files and evaluation"))
    return tr


def _add_network_flags(nw: Any) -> None:
    nw.add_argument(
        "--sigma",
        type=positive_float,
        default=None,
        help="noise std at t = 0 (default: the data std for 2-D sets, a mixture's own sigma, 0.5 for images)",
    )
    nw.add_argument("--net", choices=("mlp", "unet"), default=None, help="network (default mlp 2-D, unet images)")
    nw.add_argument("--width", type=positive_int, default=None, help="MLP width (default 512)")
    nw.add_argument("--depth", type=positive_int, default=None, help="MLP hidden layers (default 4)")
    nw.add_argument("--activation", choices=("gelu", "silu", "tanh"), default=None, help="MLP activation (gelu)")
    nw.add_argument("--channels", type=positive_int, default=None, help="UNet base channels (default 64)")
    nw.add_argument("--channel-mults", type=int_list, default=None, help="UNet width multipliers (default 1,2,2)")
    nw.add_argument("--res-blocks", type=positive_int, default=None, help="UNet residual blocks per level (2)")
    nw.add_argument("--attn-levels", type=int_list, default=None, help="UNet levels with attention, e.g. 2 (none)")
    nw.add_argument("--dropout", type=range_type(UNIT), default=None, help="UNet dropout, diagonal branch only (0)")


def _add_run_flags(rn: Any) -> None:
    rn.add_argument("--data-root", default=None, help="folder of the image files (default: $FLOWMAPS_DATA, ...)")
    rn.add_argument("--train-subset", type=nonnegative_int, default=0, help="train on the first N images only")
    rn.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's network (folder or Hub id; the loss weight starts afresh)",
    )
    rn.add_argument("--note", default=None, help="a sentence for the model card's notes")
    rn.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default on a CPU: 1 for 2-D data, torch's own choice for images)",
    )
    rn.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TF32 matmuls on CUDA (default: on for images unless --backend fd, whose differences "
        "TF32's 10-bit mantissa would swamp)",
    )
    rn.add_argument("--log", default=None, help="JSONL log file (default: <out>/log.jsonl)")
    rn.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help=f"continue from a trainer state (default <out>/{TRAINER_STATE})",
    )
    rn.add_argument(
        "--eval-n",
        type=nonnegative_int,
        default=None,
        help="samples for the evaluation in the model card, 0 skips it (default 64000 2-D, 10000 images)",
    )
    rn.add_argument("--eval-steps", type=step_list, default=list(DEFAULT_EVAL_STEPS), help="e.g. 1,2,4,8,16")
    rn.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store the weights in fp16 (default: on for images)",
    )
    rn.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------------- defaults and configs
def fill_defaults(args: argparse.Namespace) -> None:
    """Fill the preset's values and the data-dependent defaults (:data:`DATA_DEFAULTS`) where no flag was given.

    With ``--data FILE.csv`` the file is read here (:func:`flowmaps.data.point_cloud.read_points_file`)
    into ``args.points``, a :class:`~flowmaps.data.point_cloud.PointCloud`; the default sigma is its std.

    Raises:
        ValueError: ``--preset quick`` with an image set (the preset is a 2-D CPU recipe); a network
            option with ``--init-from``; ``--fd-step`` without ``--backend fd``; a missing, too large
            or malformed CSV file (the message names the file and the line).
    """
    images = is_image_set(args.data)
    args.points = None
    if is_csv_data(args.data):
        try:
            args.points = read_points_file(args.data)
        except ValueError as err:
            raise ValueError(f"--data {err}") from None
    if images and args.preset != "default":
        raise ValueError(f"--preset {args.preset} is a recipe for the 2-D sets; for {args.data} leave it out")
    if args.fd_step is not None and args.backend != "fd":
        raise ValueError(f"--fd-step is the step of --backend fd; got --backend {args.backend}")
    if args.init_from is not None:
        given = [name for name in ARCHITECTURE if getattr(args, name) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"--init-from takes the network from the checkpoint; leave out {flags}")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    fallback = {
        "activation": "gelu",
        "channels": 64,
        "channel_mults": [1, 2, 2],
        "res_blocks": 2,
        "attn_levels": [],
        "dropout": 0.0,
    }
    for key, value in {**fallback, **CLI_DEFAULTS, **DATA_DEFAULTS["images" if images else "2-D"]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.sigma is None and args.points is not None:
        args.sigma = args.points.std()
    elif args.sigma is None:
        from flowmaps.data.named import base_sigma

        args.sigma = base_sigma(args.data)
    if args.tf32 is None:
        args.tf32 = images and args.backend != "fd"
    for f in config_fields():  # the rest: TrainConfig's own defaults
        if getattr(args, f.name) is None:
            setattr(args, f.name, f.default)


def model_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON model config (see flowmaps.registry) described by the train options.

    Raises:
        ValueError: an MLP for images or a UNet for points.
    """
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


def train_config(args: argparse.Namespace, out: Path, device: torch.device) -> TrainConfig:
    """The :class:`TrainConfig` of the flags after :func:`fill_defaults` (a flag given wins, then the
    preset, the data defaults, :data:`CLI_DEFAULTS` and TrainConfig's own default); 0 for "off" becomes None.

    Raises:
        ValueError: a combination TrainConfig refuses (its message names the field).
    """
    values = {f.name: None if getattr(args, f.name) is OFF else getattr(args, f.name) for f in config_fields()}
    values.update(
        device=str(device),
        checkpoint_path=str(out / TRAINER_STATE),
        log_path=args.log if args.log is not None else str(out / "log.jsonl"),
    )
    return TrainConfig(**values)


def make_data_sampler(
    data: str, device: torch.device, root: str | None = None, subset: int = 0, points: Any = None
) -> Callable[[int, torch.Generator], Tensor]:
    """data_sampler(n, generator) -> x1 of shape (n, *D) on ``device`` (the data end, t = 1).

    Images: the training split (its first ``subset`` images if > 0) sits on ``device`` and batches
    are drawn with replacement; ``points`` (a PointCloud, from ``--data FILE.csv``): its points sit
    on ``device`` and are drawn with replacement; 2-D sets: fresh samples from the set's sampler.
    """
    if points is not None:
        from flowmaps.data.point_cloud import MinibatchSampler

        return MinibatchSampler(points.points.to(device), 1)
    if is_image_set(data):
        from flowmaps.data.images import image_batch_sampler, load_fashion_mnist

        images, _ = load_fashion_mnist("train", root=root)
        if subset:
            images = images[:subset]
        return image_batch_sampler(images.to(device))

    from flowmaps.data.named import sample_points

    def toy_sampler(n: int, g: torch.Generator) -> Tensor:
        if g.device.type == "cpu":
            return sample_points(data, n, g)
        # 2-D samplers draw on the CPU: derive a CPU stream from the device generator.
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
        return sample_points(data, n, torch.Generator().manual_seed(seed))

    return toy_sampler


def world_size() -> int:
    """WORLD_SIZE from torchrun's environment (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
