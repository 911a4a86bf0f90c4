"""Live CPU training as the app runs it: checkerboard 1-step KL after 10, 30 and 60 s on 2 threads.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

The trainer is built the way the app's live view builds it (app/live.py: a fresh MLP on
[s, t, x / sigma] with sigma = the data std, :class:`flowmaps.training.Trainer` with lr decay off,
clip 10, the app's live EMA decay), with the app's default settings (app/validation.py
``TrainSettings``) unless overridden on the command line. Training time is counted without the
evaluations: at 10, 30 and 60 s of training the EMA model's 1-step samples (64,000, fixed noise)
are scored with the paper's histogram KL. Target: KL < 0.25 after 60 s. The app also draws its
sample panels about once a second while training; that cost is not included here.

``--sweep`` runs a small grid of settings (width, batch, lr) one after the other, to choose the
app's defaults; ``--fused`` swaps in :class:`flowmaps.fast.FastObjective` (same loss and gradients).

Usage::

    python bench/live_cpu.py                       # app defaults, 2 threads
    python bench/live_cpu.py --width 256 --batch 1024 --lr 1e-3
    python bench/live_cpu.py --quick               # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    add_common_args,
    checkerboard_eval,
    checkerboard_floor,
    machine_info,
    machine_line,
    md_table,
    output_paths,
    print_table,
    read_json,
    setup,
    update_docs,
    write_json,
)

from flowmaps.data.toy import data_std, sample_toy  # noqa: E402
from flowmaps.fast import FastObjective  # noqa: E402
from flowmaps.objectives import make_objective  # noqa: E402
from flowmaps.registry import build_model  # noqa: E402
from flowmaps.training import TrainConfig, Trainer  # noqa: E402

NAME = "live_cpu"
TARGET = 0.25


def app_defaults() -> dict[str, Any]:
    """The app's live-training defaults (method, batch, lr, eta, width, depth, EMA), or the fallback."""
    try:
        from app.live import LIVE_EMA
        from app.validation import TrainSettings

        s = TrainSettings()
        return {
            "method": s.method,
            "batch": s.batch,
            "lr": s.lr,
            "eta": s.eta,
            "width": s.width,
            "depth": s.depth,
            "ema": LIVE_EMA,
            "source": "app",
        }
    except Exception:  # app not there yet
        return {
            "method": "lsd",
            "batch": 1024,
            "lr": 1e-3,
            "eta": 0.75,
            "width": 256,
            "depth": 3,
            "ema": 0.99,
            "source": "fallback",
        }


def run_one(settings: dict[str, Any], marks: list[float], n_eval: int, fused: bool, seed: int) -> dict[str, Any]:
    """Train one fresh model as the app does; KL(N=1) at each mark (seconds of training)."""
    torch.manual_seed(seed)
    sigma = data_std("checkerboard")
    config = {
        "net": {"name": "mlp", "dim": 2, "width": settings["width"], "depth": settings["depth"]},
        "sigma": sigma,
        "data": "checkerboard",
        "method": settings["method"],
    }
    model = build_model(config)
    cfg = TrainConfig(
        steps=10**9,
        batch_size=settings["batch"],
        lr=settings["lr"],
        lr_decay_start=0,
        grad_clip=10.0,
        ema_decay=settings["ema"],
        seed=seed,
        log_every=10**9,
        device="cpu",
        dtype=settings.get("dtype", "float32"),
        guard_every=50,
    )
    objective = make_objective(settings["method"], eta=settings["eta"])
    if fused:
        objective = FastObjective(objective)
    trainer = Trainer(model, objective, lambda n, g: sample_toy("checkerboard", n, generator=g), cfg)
    out: list[dict[str, Any]] = []
    train_s = 0.0
    for mark in marks:
        t0 = time.perf_counter()
        while train_s + (time.perf_counter() - t0) < mark:
            trainer.step()
        train_s += time.perf_counter() - t0
        kl = checkerboard_eval(trainer.ema_model, (1,), n=n_eval)[1]
        out.append({"seconds": mark, "steps": trainer.global_step, **kl})
        print(
            f"    {mark:5.0f} s  step {trainer.global_step:6d}  KL(N=1) {kl['kl']:.4f} (eps {kl['kl_eps']:.4f})",
            flush=True,
        )
    return {"settings": settings, "fused": fused, "marks": out}


SWEEP = [
    {"width": 128, "batch": 512, "lr": 3e-3},
    {"width": 128, "batch": 1024, "lr": 3e-3},
    {"width": 256, "batch": 512, "lr": 3e-3},
    {"width": 256, "batch": 1024, "lr": 1e-3},
    {"width": 64, "batch": 512, "lr": 3e-3},
]


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup(args)
    base = app_defaults()
    for key in ("method", "batch", "lr", "eta", "width", "depth", "ema"):
        val = getattr(args, key)
        if val is not None:
            base[key] = val
            base["source"] = "command line"
    base["dtype"] = args.dtype
    base["threads"] = args.threads
    marks = [float(m) for m in args.marks]
    n_eval = args.n_eval
    if args.quick:
        marks, n_eval = [0.5, 1.0], 4000
        base.update(width=32, batch=128)
    configs = [base] if not args.sweep else [{**base, **c, "source": "sweep"} for c in SWEEP]
    floor = checkerboard_floor(n_eval)
    results_dir, docs = output_paths(args)
    previous = read_json(results_dir, NAME) or {}
    runs = [] if args.quick or not args.append else list(previous.get("runs", []))
    for c in configs:
        print(f"  {c}", flush=True)
        runs.append({**run_one(c, marks, n_eval, args.fused, args.seed), "load_average": list(_load())})
    info = machine_info("cpu")
    rows = []
    for r in runs:
        s = r["settings"]
        row = {
            "method": s["method"],
            "width": f"{s['width']}x{s['depth']}",
            "batch": s["batch"],
            "lr": s["lr"],
            "ema": s["ema"],
            "threads": s.get("threads"),
            "fused": r["fused"],
            "defaults from": s.get("source"),
        }
        for m in r["marks"]:
            row[f"KL@{m['seconds']:.0f}s"] = m["kl"]
            row[f"steps@{m['seconds']:.0f}s"] = m["steps"]
        row["load"] = r.get("load_average", [None])[0]
        rows.append(row)
    print_table("live CPU training (checkerboard, 1-step KL of the EMA model)", rows)
    payload = {"name": NAME, "machine": info, "runs": runs, "floor": floor, "target": TARGET, "quick": args.quick}
    write_json(results_dir, NAME, payload)
    md = (
        "## Live CPU training (app settings)\n\n"
        f"Checkerboard, trained as the app's live view trains (Trainer, lr constant, clip 10), on\n"
        f"{args.threads} CPU threads; KL of the EMA model's 1-step samples ({n_eval:,}) after the given seconds of\n"
        f"training (evaluations not counted). Target: KL < {TARGET} after 60 s. Floor (exact samples): {floor:.4f}.\n"
        "`load`: the machine's 1-minute load average after the run (2 cores; other work shares them).\n\n"
        + machine_line(info)
        + "\n\n"
        + md_table(rows)
        + "\n"
    )
    update_docs(docs, NAME, md)
    return payload


def _load() -> tuple[float, ...]:
    import os

    return tuple(round(v, 2) for v in os.getloadavg()) if hasattr(os, "getloadavg") else ()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p)
    p.add_argument("--method", default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--marks", nargs="+", default=["10", "30", "60"], help="seconds of training at which to score")
    p.add_argument("--n-eval", type=int, default=64_000)
    p.add_argument("--fused", action="store_true", help="use flowmaps.fast.FastObjective")
    p.add_argument("--sweep", action="store_true", help="run the small settings grid")
    p.add_argument("--append", action="store_true", help="keep earlier runs in the results file")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
