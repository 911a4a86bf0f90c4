"""Evaluate Fashion-MNIST flow maps: FID against steps, the ODE baseline, time per image.

Time convention: t = 0 is noise, t = 1 is data.

One command gives the results table of the README (docs/image_results.md):

    python -m bench.eval_images checkpoints/fmnist-* --device cuda      # FID + GPU timing
    python -m bench.eval_images checkpoints/fmnist-* --timing-only       # adds CPU timing
    python -m bench.eval_images checkpoints/fmnist-* --table-only        # table from metrics.json

For each checkpoint: flow-map sampling at N = 1, 2, 4, 8, 16 (uniform grid) and the Heun ODE
solve of the model's own velocity v_{t,t} at 8 ... 128 evaluations, all from the same noise,
scored by FID and KID with our own Fashion-MNIST feature network (checkpoints/fid-classifier)
against the test split. Results are merged into <checkpoint>/metrics.json and the model card.
``--grids uniform,cosine`` adds rows on other time grids (flowmaps.sampling.make_grid; a grid
that equals the uniform one at that N, such as cosine at N = 1 and 2, is not scored twice).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flowmaps.fid import (
    features,
    fid_from_features,
    kid_from_features,
    load_feature_network,
    reference_statistics,
)
from flowmaps.hub import from_pretrained, write_model_card
from flowmaps.metrics import mean_sd
from flowmaps.sampling import GRID_KINDS, flowmap_sample, make_grid, ode_solve

STEPS = (1, 2, 4, 8, 16)
NFES = (8, 16, 32, 64, 128)


def sampler_grid(kind: str, n: int, grid: str = "uniform") -> torch.Tensor:
    """The times of a row: n flow-map steps ("map") or the n // 2 Heun steps of n evaluations
    ("heun") on the named grid (t = 0 noise, t = 1 data)."""
    return make_grid(grid, n if kind == "map" else n // 2)


def row_key(kind: str, n: int, grid: str = "uniform") -> str:
    """metrics.json key of a row: "map-4", "heun-128" on the uniform grid, "map-cosine-4" on others."""
    return f"{kind}-{n}" if grid == "uniform" else f"{kind}-{grid}-{n}"


def row_label(kind: str, grid: str = "uniform") -> str:
    label = "flow map" if kind == "map" else "Heun ODE"
    return label if grid == "uniform" else f"{label}, {grid} grid"


def row_plan(steps: list[int], nfes: list[int], grids: list[str]) -> list[tuple[str, int, str]]:
    """The (kind, n, grid) rows to score: flow-map rows at each N and Heun rows at each NFE, on
    each grid; a row whose times equal the uniform grid's is kept only under "uniform"."""
    rows = []
    for grid in grids:
        for kind, counts in (("map", steps), ("heun", nfes)):
            for n in counts:
                same = torch.allclose(sampler_grid(kind, n, grid), sampler_grid(kind, n), rtol=0.0, atol=1e-12)
                if grid == "uniform" or not same:
                    rows.append((kind, n, grid))
    return rows


def generate(model, x0: torch.Tensor, kind: str, n: int, batch: int, grid: str = "uniform") -> torch.Tensor:
    """Samples from noise x0 by flow-map jumps ("map", n steps) or Heun ("heun", n evaluations)."""
    times = sampler_grid(kind, n, grid)
    out = []
    for chunk in x0.split(batch):
        if kind == "map":
            out.append(flowmap_sample(model, chunk, times).x)
        else:
            out.append(ode_solve(model.velocity, chunk, method="heun", grid=times).x)
    return torch.cat(out).clamp(-1, 1)


def time_per_image(
    model, device: torch.device, kind: str, n: int, batch: int, repeats: int = 3, grid: str = "uniform"
) -> float:
    x0 = model.sigma * torch.randn(batch, 1, 28, 28, device=device)
    generate(model, x0, kind, n, batch, grid)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model, x0, kind, n, batch, grid)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / batch


def evaluate(folder: Path, args, device: torch.device, net, ref) -> dict:
    model, config = from_pretrained(folder, device=device)
    model.eval()
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = row_plan(args.steps, args.nfes, args.grids)
    seeds = args.seeds or [args.seed]
    noises = [
        (model.sigma * torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))).to(device)
        for seed in seeds
    ]
    for kind, n, grid in rows:
        key = row_key(kind, n, grid)
        entry = metrics.setdefault(key, {"sampler": row_label(kind, grid), "nfe": n})
        if not args.timing_only:
            fids, kids = [], []
            for x0 in noises:
                with torch.no_grad():
                    samples = generate(model, x0, kind, n, args.batch, grid)
                feats = features(samples, net, batch_size=1000, device=device)
                fids.append(fid_from_features(feats, ref.features))
                kid_mean, _ = kid_from_features(feats, ref.features, num_subsets=50, subset_size=1000)
                kids.append(1000 * kid_mean)
            entry.pop("noise_seed", None)
            fid, fid_sd = mean_sd(fids)
            entry["fid"] = round(fid, 3)
            entry["fid_sd"] = round(fid_sd, 3) if len(fids) > 1 else None
            entry["fid_by_seed"] = {str(sd): round(f, 3) for sd, f in zip(seeds, fids)}
            entry["kid_x1000"] = round(statistics.fmean(kids), 3)
            entry["fid_samples"] = args.n
            entry["noise_seeds"] = seeds
        if not args.no_timing:
            label = "gpu" if device.type == "cuda" else "cpu"
            with torch.no_grad():
                ms = 1000 * time_per_image(model, device, kind, n, args.timing_batch, grid=grid)
            entry[f"ms_per_image_{label}"] = round(ms, 4)
            entry[f"hardware_{label}"] = hw
        print(folder.name, key, json.dumps(entry), flush=True)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    if config.get("card"):
        write_model_card(folder)  # the card from config.json and the metrics.json just written
    return metrics


def equal_fid_lines(results: dict[str, dict]) -> list[str]:
    """For each flow-map row: the fewest-NFE Heun solve of the same model's velocity that does at
    least as well (FID <= the map's), and the ratio of their GPU times per image."""
    rows = []
    for name, metrics in results.items():
        maps = [e for e in metrics.values() if e.get("sampler") == "flow map" and "fid" in e]
        odes = sorted(
            (e for e in metrics.values() if e.get("sampler") == "Heun ODE" and "fid" in e), key=lambda e: e["nfe"]
        )
        for m in maps:
            match = next((o for o in odes if o["fid"] <= m["fid"]), None)
            if match is None:
                rows.append(
                    f"| {name} | {m['nfe']} | {m['fid']} | none up to {odes[-1]['nfe'] if odes else '-'} NFE | | |"
                )
                continue
            speed = ""
            if m.get("ms_per_image_gpu") and match.get("ms_per_image_gpu"):
                speed = f"{match['ms_per_image_gpu'] / m['ms_per_image_gpu']:.1f}x"
            calls = f"{match['nfe'] / m['nfe']:g}x"
            rows.append(f"| {name} | {m['nfe']} | {m['fid']} | {match['nfe']} | {match['fid']} | {calls} | {speed} |")
    if not rows:
        return []
    return [
        "## Flow map against the ODE at equal FID",
        "",
        "For each flow-map row, the fewest Heun NFE (of those scored) at which the ODE solve of the same",
        "model's velocity reaches an FID at least as good, and how many times longer it takes per image",
        "on the GPU (timed on batches of 64, which are launch-bound and noisy: the ratio of network calls",
        "is the steadier figure).",
        "",
        "| model | flow-map N | FID | Heun NFE needed | its FID | network calls, ODE / map | GPU time, ODE / map |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def write_table(results: dict[str, dict], path: Path) -> str:
    lines = [
        "# Fashion-MNIST results",
        "",
        "FID and KID (x1000) against the Fashion-MNIST test split with our own feature network",
        "(checkpoints/fid-classifier), from the same noise for every row; flow-map sampling on a",
        "uniform grid of N steps, and the Heun solve of each model's own velocity v_{t,t} at the given",
        'number of network evaluations (NFE); rows marked "cosine grid" use that grid instead',
        "(`--grids uniform,cosine`). Made by `python -m bench.eval_images checkpoints/fmnist-*`",
        "on the GPU, then `--timing-only --device cpu --timing-batch 16` for the CPU column. Time per image is",
        "the best of 3 runs over a batch (64 images on the GPU, where such small batches are launch-bound and",
        "noisy; 16 on 2 CPU threads). An FID written as mean ± sd (k seeds) is over k noise seeds (`--seeds`);",
        "a bare FID is one noise seed (0). Rows without FID were not scored within the GPU budget. Models scored",
        "on different GPUs (see Hardware) are gathered by `--table-only` from each checkpoint's metrics.json.",
        "How each model was trained: docs/gpu_runs.md and its model card.",
        "",
        "| model | sampler | NFE | FID | KID x1000 | samples | ms/image GPU | ms/image CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, metrics in results.items():
        for entry in metrics.values():
            lines.append(
                f"| {name} | {entry['sampler']} | {entry['nfe']} | {_fid_cell(entry)} | "
                f"{entry.get('kid_x1000', '')} | {entry.get('fid_samples', '')} | "
                f"{entry.get('ms_per_image_gpu', '')} | {entry.get('ms_per_image_cpu', '')} |"
            )
    hw = {e.get(k) for m in results.values() for e in m.values() for k in ("hardware_gpu", "hardware_cpu")}
    lines += ["", "Hardware: " + "; ".join(sorted(h for h in hw if h)), ""]
    lines += equal_fid_lines(results)
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def _fid_cell(entry: dict) -> str:
    """FID as "mean ± sd (k seeds)" when several noise seeds were scored, else the single value."""
    if "fid" not in entry:
        return ""
    if entry.get("fid_sd") is not None:
        return f"{entry['fid']} ± {entry['fid_sd']} ({len(entry.get('noise_seeds', []))} seeds)"
    return f"{entry['fid']}"


def _items(text: str) -> list[str]:
    """The non-empty entries of a comma-separated option ("" gives none)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders")
    p.add_argument("--n", type=int, default=5000, help="samples per FID")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--timing-batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="noise seed (when --seeds is not given)")
    p.add_argument(
        "--seeds",
        type=lambda v: [int(x) for x in _items(v)],
        default=None,
        help="noise seeds, e.g. 0,1,2: each row's FID is the mean over them, with its sd",
    )
    p.add_argument("--steps", type=lambda v: [int(x) for x in _items(v)], default=list(STEPS))
    p.add_argument("--nfes", type=lambda v: [int(x) for x in _items(v)], default=list(NFES))
    p.add_argument(
        "--grids",
        type=lambda v: [x.lower() for x in _items(v)],
        default=["uniform"],
        help="time grids of the rows, e.g. uniform,cosine (flowmaps.sampling.GRID_KINDS)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--classifier", default="checkpoints/fid-classifier")
    p.add_argument("--timing-only", action="store_true", help="only measure time per image")
    p.add_argument("--no-timing", action="store_true", help="keep the stored times (e.g. while the GPU is shared)")
    p.add_argument("--table", default="docs/image_results.md")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="evaluate nothing: rebuild the table from each checkpoint's metrics.json (runs on several machines)",
    )
    args = p.parse_args(argv)
    unknown = [g for g in args.grids if g not in GRID_KINDS]
    if unknown or not args.grids:
        p.error(f"--grids: unknown grid {', '.join(unknown) or '(none given)'}; choose from {', '.join(GRID_KINDS)}")
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = ref = None
    if not (args.timing_only or args.table_only):
        net = load_feature_network(args.classifier, device=device)
        ref = reference_statistics(args.classifier)
    results = {}
    for folder in map(Path, args.checkpoints):
        if not (folder / "config.json").exists():
            continue
        name = folder.parent.name if folder.name == "model" else folder.name
        if args.table_only:
            path = folder / "metrics.json"
            results[name] = json.loads(path.read_text()) if path.exists() else {}
        else:
            results[name] = evaluate(folder, args, device, net, ref)
    print(write_table(results, Path(args.table)))
    return results


if __name__ == "__main__":
    main()
