"""``flowmaps sample``: draw samples with N-step flow-map sampling and write them as .npy or .png.

Time convention: t = 0 is noise, t = 1 is data; one flow-map jump per step of the grid.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowmaps.cli.options import grid_spec, output_file_problem, positive_int, print_error, seed_type, step_list
from flowmaps.evaluation import generate, grid_text, grids_for, sample_shape
from flowmaps.utils import atomic_write, resolve_device


def add_parser(sub: Any) -> None:
    """The ``sample`` sub-command's options."""
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
    sa.add_argument("--seed", type=seed_type, default=0)
    sa.add_argument("--device", default="auto")
    sa.add_argument("--out", required=True, help="output: .npy (array (K, n, *D), one row per grid) or .png")
    sa.set_defaults(run=cmd_sample)


def device_or_exit(name: str) -> torch.device:
    """``--device`` as a torch device; a bad one exits with status 2 and the reason."""
    try:
        return resolve_device(name)
    except ValueError as err:
        raise SystemExit(f"flowmaps: error: --device: {err}") from None


def load_or_report(
    checkpoint: str, device: torch.device, command: str = "sample"
) -> tuple[nn.Module, dict[str, Any]] | None:
    """``from_pretrained(checkpoint)``, or None after printing why it cannot be loaded (the caller
    exits with status 2: a --checkpoint that names no model is a bad argument)."""
    from flowmaps.hub import from_pretrained

    try:
        return from_pretrained(checkpoint, device=device)
    except (FileNotFoundError, ValueError) as err:
        print_error(f"--checkpoint: {err}", command)
        return None


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample on each grid and write the samples; returns the exit status."""
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        return print_error(f"--out must end in .npy or .png, got {args.out!r}", "sample")
    if problem := output_file_problem(out, "--out"):
        return print_error(problem, "sample")
    device = device_or_exit(args.device)
    loaded = load_or_report(args.checkpoint, device)
    if loaded is None:
        return 2
    model, config = loaded
    shape = sample_shape(config)
    grids = grids_for(args.grid, args.steps)
    samples = []
    for grid in grids:
        start = time.perf_counter()
        chunk = 500 if len(shape) > 1 else 16_384
        samples.append(generate(model, args.n, shape, grid, args.seed, device, chunk=chunk))
        print(f"N={grid.numel() - 1}: grid {grid_text(grid)}, {time.perf_counter() - start:.2f} s")
    if out.suffix.lower() == ".npy":
        array = torch.stack(samples).float().numpy()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, array)

        atomic_write(out, write)
        print(f"wrote {out}: array of shape {tuple(array.shape)} (grids, samples, *D)")
    else:
        from flowmaps.figures import write_samples_png

        write_samples_png(out, samples, grids)
        print(f"wrote {out}")
    return 0
