"""Does the trainer's slow-divergence guard catch ESD drifting away on the checkerboard?

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Trains ESD with :class:`flowmaps.training.Trainer` on the paper's 2-D recipe (MLP 512x4 GELU on
[s, t, x / sigma], eta = 0.75, RAdam lr 1e-3, clip 10, EMA 0.999; batch 65,536 by default), the
fused objective and, on CUDA, a CUDA graph. Every ``--report-every`` steps it prints the running
medians of the loss and gradient norm against the guard's reference (their lowest values) and the
fraction of the EMA model's 1-step samples that land in [-1, 1]^2 (the checkerboard's square).
With ``--no-drift-guard`` the drift guard is off (the NaN / spike guard stays), for comparison.
A :class:`flowmaps.training.DivergenceError` ends the run; the summary says where.

Usage::

    python -m bench.guard_esd --device cuda --max-seconds 200
    python -m bench.guard_esd --device cuda --max-seconds 200 --no-drift-guard
    python -m bench.guard_esd --quick                      # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from flowmaps.data.toy import CHECKERBOARD_CELLS, data_std
from flowmaps.objectives import make_objective
from flowmaps.registry import build_model
from flowmaps.training import DivergenceError, TrainConfig, Trainer


def checkerboard_sampler(device: torch.device):
    """data_sampler(n, generator) drawing the checkerboard (t = 1) on the generator's device."""
    cells = torch.tensor(CHECKERBOARD_CELLS, dtype=torch.float32, device=device)

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, cells.shape[0], (n,), generator=g, device=g.device)
        return -1.0 + 0.5 * (cells[pick] + torch.rand(n, 2, generator=g, device=g.device))

    return sample


@torch.no_grad()
def in_square(model, x0: torch.Tensor) -> float:
    """Fraction of 1-step samples X_{0,1}(x0) inside [-1, 1]^2."""
    n = x0.shape[0]
    x = model.jump(x0, torch.zeros(n, device=x0.device), torch.ones(n, device=x0.device))
    return float(((x.abs() <= 1).all(dim=1)).float().mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--max-seconds", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-every", type=int, default=500)
    p.add_argument("--no-drift-guard", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.width, args.depth, args.steps, args.report_every = 256, 32, 2, 60, 20
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    sigma = data_std("checkerboard")
    model = build_model(
        {
            "net": {"name": "mlp", "dim": 2, "width": args.width, "depth": args.depth, "activation": "gelu"},
            "sigma": sigma,
        }
    )
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        log_every=10**9,
        device=str(device),
        cuda_graph=device.type == "cuda",
        max_seconds=args.max_seconds,
        drift_factor=None if args.no_drift_guard else 10.0,
    )
    trainer = Trainer(model, make_objective("esd"), checkerboard_sampler(device), cfg)
    x0 = sigma * torch.randn(10_000, 2, generator=torch.Generator().manual_seed(1)).to(device)
    rows: list[dict] = []
    events: list[dict] = []
    start = time.perf_counter()

    def report(tr: Trainer, logs: dict) -> None:
        if "recovered" in logs:
            events.append({"after_s": time.perf_counter() - start, "to_step": logs["step"], "why": logs["recovered"]})
            print(f"  rollback to step {logs['step']}: {logs['recovered']}", flush=True)
            return
        if tr.global_step % args.report_every:
            return
        level, ref = tr.guard.level or (float("nan"),) * 2, tr.guard.reference
        row = {
            "step": tr.global_step,
            "s": round(time.perf_counter() - start, 1),
            "loss_median": level[0],
            "grad_median": level[1],
            "loss_ref": ref[0],
            "grad_ref": ref[1],
            "in_square": in_square(tr.ema_model, x0),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    outcome = "finished"
    try:
        trainer.train(callback=report, progress=False)
    except DivergenceError as err:
        outcome = f"DivergenceError at step {err.step}: {err.reason}"
    summary = {
        "outcome": outcome,
        "steps": trainer.global_step,
        "seconds": round(time.perf_counter() - start, 1),
        "drift_rollbacks": trainer.drift_rollbacks,
        "recoveries": trainer.recoveries,
        "final_in_square": in_square(trainer.ema_model, x0),
        "events": events,
        "rows": rows,
        "config": vars(args),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
