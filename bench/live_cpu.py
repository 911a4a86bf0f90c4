"""Live CPU training as the app runs it: checkerboard 1-step KL after 10, 30 and 60 s on 2 threads.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

The model and trainer come from the app's own builders (app/live.py ``live_model_config`` and
``make_live_trainer``: a fresh MLP on [s, t, x / sigma] with sigma = the data std and the "he"
start, RAdam, clip 10, the app's live EMA decay, the fused objective), with the app's default
settings (app/validation.py ``TrainSettings``) unless overridden on the command line. One run is
timed as the app times a Start: ``steps`` steps (the app's default) or the last mark's seconds,
whichever ends it first, with the app's learning-rate schedule over that run (``live_lr_factor``
of ``run_progress``: a straight line from lr to 0 over the run's steps). Training time is counted
without the evaluations: at 10, 30 and 60 s of training the EMA model's 1-step samples (64,000,
fixed noise) are scored with the paper's histogram KL. Target: KL < 0.25 after 60 s. The app also
draws its sample panels about once a second while training; that cost is not included here.

``--sweep`` runs a small grid of settings (width, batch, lr) one after the other;
``--constant-lr`` switches the schedule off (the app before the schedule).

Usage::

    python -m bench.live_cpu                       # app defaults, 2 threads
    python -m bench.live_cpu --width 256 --batch 1024 --lr 1e-3
    python -m bench.live_cpu --constant-lr --eta 0.75 --depth 3   # the old defaults
    python -m bench.live_cpu --quick               # smoke run
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from app.live import make_live_trainer
from app.live_settings import live_lr_factor, live_model_config, run_progress
from app.validation import TrainSettings
from bench.common import (
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
from flowmaps.data.toy import data_std, sample_toy
from flowmaps.registry import build_model

NAME = "live_cpu"
TARGET = 0.25


def app_defaults() -> dict[str, Any]:
    """The app's live-training defaults (method, steps, batch, lr, eta, width, depth, EMA)."""
    from app.validation import LIVE_EMA

    d = TrainSettings()
    return {
        "method": d.method,
        "steps": d.steps,
        "batch": d.batch,
        "lr": d.lr,
        "eta": d.eta,
        "width": d.width,
        "depth": d.depth,
        "ema": LIVE_EMA,
        "schedule": "linear",
        "source": "app",
    }


def run_one(settings: dict[str, Any], marks: list[float], n_eval: int, seed: int) -> dict[str, Any]:
    """Train one fresh model as the app does; KL(N=1) at each mark (seconds of training)."""
    s = TrainSettings(
        method=settings["method"],
        steps=settings["steps"],
        batch=settings["batch"],
        lr=settings["lr"],
        eta=settings["eta"],
        width=settings["width"],
        depth=settings["depth"],
        seed=seed,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(live_model_config(s, data_std("checkerboard"), "checkerboard"))
    trainer = make_live_trainer(
        model, lambda n, g: sample_toy("checkerboard", n, generator=g), s, ema_decay=settings["ema"]
    )
    constant = settings.get("schedule") == "constant"
    out: list[dict[str, Any]] = []
    train_s = 0.0
    for mark in marks:
        t0 = time.perf_counter()
        while train_s + (time.perf_counter() - t0) < mark and trainer.global_step < s.steps:
            if not constant:
                trainer.config.lr = s.lr * live_lr_factor(run_progress(trainer.global_step, s.steps))
            trainer.step()
        train_s += time.perf_counter() - t0
        kl = checkerboard_eval(trainer.ema_model, (1,), n=n_eval)[1]
        out.append(
            {
                "seconds": mark,
                "steps": trainer.global_step,
                "train_s": round(train_s, 2),
                "rollbacks": trainer.recoveries,
                **kl,
            }
        )
        print(
            f"    {mark:5.0f} s  step {trainer.global_step:6d}  KL(N=1) {kl['kl']:.4f} (eps {kl['kl_eps']:.4f})"
            f"  guard rollbacks {trainer.recoveries}",
            flush=True,
        )
    return {"settings": settings, "fused": True, "marks": out}


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
    if args.constant_lr:
        base["schedule"] = "constant"
        base["source"] = "command line"
    for key in ("method", "steps", "batch", "lr", "eta", "width", "depth", "ema"):
        val = getattr(args, key)
        if val is not None:
            base[key] = val
            base["source"] = "command line"
    base["threads"] = args.threads
    marks = [float(m) for m in args.marks]
    n_eval = args.n_eval
    if args.quick:
        marks, n_eval = [0.5, 1.0], 4000
        base.update(width=32, batch=128, depth=2)
    configs = [base] if not args.sweep else [{**base, **c, "source": "sweep"} for c in SWEEP]
    floor = checkerboard_floor(n_eval)
    results_dir, docs = output_paths(args)
    previous = read_json(results_dir, NAME) or {}
    runs = [] if args.quick or not args.append else list(previous.get("runs", []))
    for c in configs:
        print(f"  {c}", flush=True)
        runs.append({**run_one(c, marks, n_eval, args.seed), "load_average": list(_load())})
    info = machine_info("cpu")
    rows = []
    for r in runs:
        s = r["settings"]
        row = {
            "method": s["method"],
            "width": f"{s['width']}x{s['depth']}",
            "batch": s["batch"],
            "lr": s["lr"],
            "lr schedule": s.get("schedule", "constant"),
            "eta": s.get("eta"),
            "steps/run": s.get("steps"),
            "ema": s["ema"],
            "threads": s.get("threads"),
            "defaults from": s.get("source"),
        }
        for m in r["marks"]:
            row[f"KL@{m['seconds']:.0f}s"] = m["kl"]
            row[f"steps@{m['seconds']:.0f}s"] = m["steps"]
        last = r["marks"][-1]
        row[f"KL eps 0.5@{last['seconds']:.0f}s"] = last.get("kl_eps")
        row["load"] = r.get("load_average", [None])[0]
        rows.append(row)
    print_table("live CPU training (checkerboard, 1-step KL of the EMA model)", rows)
    payload = {"name": NAME, "machine": info, "runs": runs, "floor": floor, "target": TARGET, "quick": args.quick}
    write_json(results_dir, NAME, payload)
    md = (
        "## Live CPU training (app settings)\n\n"
        f"Checkerboard, trained as the app's live view trains (its trainer builder; one run of `steps/run`\n"
        f"steps or {max(marks):g} s, whichever ends first, the lr falling linearly to 0 over it), on\n"
        f"{args.threads} CPU threads; KL of the EMA model's 1-step samples ({n_eval:,}) after the given seconds of\n"
        f"training (evaluations not counted; a run that ends early is scored at its end). `KL eps 0.5`:\n"
        f"the same KL with empty target bins counted as half a sample (finite where the strict KL is inf).\n"
        f"Target: KL < {TARGET} after 60 s. Floor (exact samples): {floor:.4f}.\n"
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
    p.add_argument("--steps", type=int, default=None, help="steps per run (the app's 'Steps per run')")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--marks", nargs="+", default=["10", "30", "60"], help="seconds of training at which to score")
    p.add_argument("--n-eval", type=int, default=64_000)
    p.add_argument("--constant-lr", action="store_true", help="no lr schedule (the app before the lr decay)")
    p.add_argument("--sweep", action="store_true", help="run the small settings grid")
    p.add_argument("--append", action="store_true", help="keep earlier runs in the results file")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
