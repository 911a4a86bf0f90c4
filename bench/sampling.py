"""Sampling cost of the Fashion-MNIST models: time per image against the number of steps N.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

For every checkpoint folder under ``checkpoints/`` whose config.json names the "unet" network, time
(a) the N-step flow map on a uniform grid, N in 1, 2, 4, 8, 16, 32, 64 (one network call per step)
and (b) the ODE solve of the model's own velocity v_{t,t} with Euler and Heun at several NFE
(network evaluations), all from the same noise, in eval mode under no_grad. Reported: ms per
image (median over repeats of a batch, synchronised on GPU). If :mod:`flowmaps.fid` and its
classifier checkpoint exist, ``--fid-samples K`` adds an FID column (K samples against the
Fashion-MNIST test statistics) so that the flow map and the ODE can be compared at equal FID.
Without any UNet checkpoint the script says so and writes nothing.

Usage::

    python -m bench.sampling --device cpu
    python -m bench.sampling --device cuda --fid-samples 10000
    python -m bench.sampling --quick          # smoke run on a tiny random UNet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    ROOT,
    add_common_args,
    machine_info,
    machine_line,
    md_table,
    output_paths,
    print_table,
    setup,
    time_fn,
    update_docs,
    write_json,
)
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve

NAME = "sampling"
FLOWMAP_N = (1, 2, 4, 8, 16, 32, 64)
ODE_NFE = {"euler": (8, 16, 32, 64), "heun": (8, 16, 32, 64)}  # heun: 2 evaluations a step


def unet_checkpoints(root: Path) -> list[Path]:
    """Folders under root whose config.json has net name "unet"."""
    found = []
    if not root.is_dir():
        return found
    for cfg in sorted(root.glob("*/config.json")):
        try:
            net = json.loads(cfg.read_text()).get("net", {})
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(net, dict) and net.get("name") == "unet":
            found.append(cfg.parent)
    return found


def _fid_tools(args: argparse.Namespace):
    """(fid function, reference stats) if FID is available and asked for, else None with a reason."""
    if args.fid_samples <= 0:
        return None, "FID off (--fid-samples 0)"
    try:
        from flowmaps import fid as fidmod

        net = fidmod.load_feature_network(device=args.device)
        ref = fidmod.reference_statistics(net)
        return (lambda x: fidmod.fid(x, ref, net)), ""
    except Exception as err:
        return None, f"FID unavailable ({type(err).__name__}: {str(err)[:120]})"


def _bench_model(name: str, model, device: torch.device, args: argparse.Namespace, fid_fn) -> list[dict[str, Any]]:
    model = model.to(device).eval()
    shape = (int(getattr(model.net, "config", {}).get("in_channels", 1)), 28, 28)
    g = torch.Generator().manual_seed(args.seed)
    x0 = (model.sigma * torch.randn(args.batch, *shape, generator=g)).to(device)
    rows = []
    jobs: list[tuple[str, int, Any]] = []
    for n in args.steps:
        grid = make_grid("uniform", n)
        jobs.append(("flow map", n, lambda x, grid=grid: flowmap_sample(model, x, grid).x))
    for method, nfes in ODE_NFE.items():
        for nfe in nfes:
            n_steps = nfe // 2 if method == "heun" else nfe
            if nfe > args.max_ode_nfe:
                continue
            jobs.append(
                (
                    f"ODE {method}",
                    nfe,
                    lambda x, m=method, k=n_steps: ode_solve(model.velocity, x, method=m, n_steps=k).x,
                )
            )
    for label, nfe, fn in jobs:
        with torch.no_grad():
            res = time_fn(lambda fn=fn: fn(x0), device, warmup=1, repeats=args.repeats)
        row = {"model": name, "sampler": label, "NFE": nfe, "ms/image": 1e3 * res["median"] / args.batch}
        if fid_fn is not None and (label == "flow map" or nfe in (16, 64)):
            xs = []
            gen = torch.Generator().manual_seed(args.seed + 1)
            with torch.no_grad():
                for i in range(0, args.fid_samples, args.batch):
                    b = min(args.batch, args.fid_samples - i)
                    xs.append(fn((model.sigma * torch.randn(b, *shape, generator=gen)).to(device)).clamp(-1, 1).cpu())
            row["FID"] = fid_fn(torch.cat(xs))
        rows.append(row)
        print(
            f"  {name}: {label:10s} NFE {nfe:3d}  {row['ms/image']:.3f} ms/image"
            + (f"  FID {row['FID']:.2f}" if "FID" in row else ""),
            flush=True,
        )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = setup(args)
    results_dir, docs = output_paths(args)
    models: list[tuple[str, Any]] = []
    if args.quick:
        from flowmaps.flowmap import FlowMap
        from flowmaps.nets.unet import UNet

        models.append(
            ("random tiny unet", FlowMap(UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1), sigma=0.5))
        )
        args.steps, args.batch, args.repeats, args.max_ode_nfe = [1, 2], 4, 1, 8
    else:
        from flowmaps.hub import from_pretrained

        for folder in unet_checkpoints(Path(args.checkpoints)):
            model, _ = from_pretrained(str(folder))
            models.append((folder.name, model))
    if not models:
        print(f"no UNet checkpoints under {args.checkpoints}: nothing to time (train the Fashion-MNIST models first)")
        return {"name": NAME, "rows": [], "skipped": "no UNet checkpoints"}
    fid_fn, fid_note = _fid_tools(args) if not args.quick else (None, "")
    if fid_note:
        print(f"  {fid_note}")
    rows = []
    for name, model in models:
        rows += _bench_model(name, model, device, args, fid_fn)
    info = machine_info(device)
    print_table(f"sampling cost on {device.type}", rows)
    payload = {
        "name": NAME,
        "machine": info,
        "rows": rows,
        "batch": args.batch,
        "fid_note": fid_note,
        "quick": args.quick,
    }
    write_json(results_dir, f"{NAME}_{device.type}", payload)
    md = (
        f"## Sampling cost ({device.type.upper()})\n\n"
        f"Fashion-MNIST UNet checkpoints; ms per image at batch {args.batch} (median of {args.repeats}), flow map on\n"
        "a uniform N-step grid against Euler / Heun ODE solves of the model's own velocity at equal NFE.\n"
        + (
            f"FID: {args.fid_samples:,} samples against the test-set statistics of the project's feature net.\n"
            if fid_fn
            else f"{fid_note}.\n"
        )
        + "\n"
        + machine_line(info)
        + "\n\n"
        + md_table(rows)
        + "\n"
    )
    update_docs(docs, f"{NAME}_{device.type}", md)
    return payload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--steps", type=int, nargs="+", default=list(FLOWMAP_N))
    p.add_argument("--batch", type=int, default=None, help="images per timed batch (default 64 CPU, 1000 GPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-ode-nfe", type=int, default=64)
    p.add_argument("--fid-samples", type=int, default=0, help="samples per FID (0: no FID)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.batch is None:
        args.batch = 1000 if args.device == "cuda" else 64
    return run(args)


if __name__ == "__main__":
    main()
