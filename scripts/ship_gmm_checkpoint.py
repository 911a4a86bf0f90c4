"""Ship a CLI-trained 2-D mixture checkpoint for the app: clean config, exact-map error, model card.

The app's "Flow map vs ODE" tab opens on this model: its data are a Gaussian mixture, whose exact
flow map (an adaptive float64 solve of the exact velocity) gives the error heat map, drawn with
the tab's first Draw trajectories.

    PYTHONPATH=. python -m flowmaps train --data eight_gaussians --method lsd --width 256 --depth 3 \\
        --steps 6000 --batch-size 1024 --seed 0 --device cpu --max-seconds 420 --eval-n 0 --out RUN
    PYTHONPATH=. python scripts/ship_gmm_checkpoint.py RUN checkpoints/eight_gaussians-lsd --hardware "..."

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from flowmaps.data.gmm import gmm_preset
from flowmaps.hub import from_pretrained, save_pretrained
from flowmaps.metrics import flowmap_error_grid
from flowmaps.sampling import flowmap_sample, make_grid


def exact_map_errors(model, data: str, n: int = 4096, seed: int = 0) -> dict[str, float]:
    """Mean squared distance to the exact map: N-step samples against X_{0,1}(x0), and the mean of
    the (s, t) heat map the app draws (9 x 9 times, s < t)."""
    gmm = gmm_preset(data)
    x0 = gmm.sigma * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = gmm.exact_flow_map(x0, 0.0, 1.0)
    out = {}
    with torch.no_grad():
        for steps in (1, 2, 4, 8):
            x = flowmap_sample(model, x0.float(), make_grid("uniform", steps)).x.double()
            out[f"N = {steps}"] = float(((x - exact) ** 2).sum(1).mean())
    s_vals = [i / 9 for i in range(9)]
    t_vals = [(i + 1) / 9 for i in range(9)]
    grid = flowmap_error_grid(model, gmm, s_vals, t_vals, n=256, generator=torch.Generator().manual_seed(seed))
    out["(s, t) heat map mean"] = float(grid[~torch.isnan(grid)].mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="folder written by `flowmaps train`")
    ap.add_argument("out", type=Path, help="checkpoint folder to write")
    ap.add_argument("--hardware", default=f"CPU ({platform.machine()}), 1 thread")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, run_cfg = from_pretrained(args.run)
    log = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = int(max(e.get("step", 0) for e in log))
    seconds = float(max(e.get("time", 0.0) for e in log))
    train = run_cfg.get("train", {})
    data = run_cfg["data"]
    errors = exact_map_errors(model, data)
    training = {
        "batch_size": train.get("batch_size"),
        "lr": train.get("lr"),
        "ema_decay": train.get("ema_decay"),
        "grad_clip": train.get("grad_clip"),
        "eta": run_cfg.get("objective", {}).get("eta"),
        "seed": train.get("seed"),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "optimizer": train.get("optimizer", "RAdam"),
    }
    config = {
        "data": data,
        "method": run_cfg["method"],
        "net": run_cfg["net"],
        "sigma": run_cfg["sigma"],
        "training": training,
        "metrics": {"exact_map_mse": errors},
    }
    net = run_cfg["net"]
    card = {
        "title": f"{data.replace('_', ' ').capitalize()} {run_cfg['method'].upper()} flow map (small, CPU)",
        "summary": (
            "Trained on a Gaussian mixture, whose exact flow map is known: the app's 'Flow map vs ODE' tab opens "
            "on it, and its first Draw trajectories draws the flow-map error heat map against the exact map."
        ),
        "data": f"{data} (flowmaps.data.gmm preset; sigma = data std = {run_cfg['sigma']:.4f})",
        "network": f"MLP {net['width']}x{net['depth']}, {net.get('activation', 'gelu').upper()}, input [s, t, x / sigma]",  # noqa: E501
        "method": run_cfg["method"],
        "steps": steps,
        "wall_time": seconds,
        "hardware": f"{args.hardware}, torch {torch.__version__}",
        "metrics": {k: {"mean squared distance to the exact map": round(v, 5)} for k, v in errors.items()},
        "notes": (
            f"Budget: batch {training['batch_size']}, {steps} steps, lr {training['lr']} (constant), "
            f"EMA {training['ema_decay']}, clip {training['grad_clip']}, eta {training['eta']}, seed "
            f"{training['seed']}. Exact-map error: E|X(x0) - X_exact_{{0,1}}(x0)|^2 over 4,096 noise samples "
            "(seed 0) for N uniform jumps; the heat map mean is E_{x ~ p_s}|X_{s,t}(x) - X_exact_{s,t}(x)|^2 "
            "averaged over the app's 9 x 9 (s, t) pairs with s < t (256 points each). The exact map is an "
            "adaptive float64 solve of the mixture's exact velocity (rtol 1e-7). Command: "
            f"`python -m flowmaps train --data {data} --method {run_cfg['method']} --width {net['width']} "
            f"--depth {net['depth']} --steps 6000 --batch-size {training['batch_size']} --seed 0 --device cpu "
            "--max-seconds 420`, then `python scripts/ship_gmm_checkpoint.py`."
        ),
    }
    save_pretrained(model, args.out, config, card=card)
    print(json.dumps(errors, indent=1))


if __name__ == "__main__":
    main()
