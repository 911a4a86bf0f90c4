"""Time to quality on the checkerboard: wall time for a method to reach the paper's 1-step KL.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

The paper's 2-D recipe: MLP 512x4 GELU on [s, t, x / sigma], sigma = the data std (1/sqrt(3)),
eta = 0.75, RAdam lr 1e-3 (constant for 35k steps, then lr0 / sqrt(k / 35k)), gradient-norm clip 10,
EMA 0.999 (with the trainer's warm-up min(0.999, (1 + k) / (10 + k))); here the batch is 65,536.
Every ``--eval-every`` seconds of training the EMA model's 1-step samples (64,000, fixed noise)
are scored with the paper's histogram KL; training stops when KL <= 0.0864 (the paper's LSD
1-step figure) or after ``--max-seconds``. The KL-vs-time curve and the estimator's floor (the
KL of exact samples) are saved; ``--save DIR`` writes the final EMA model to
``DIR/checkerboard-<method>`` with :func:`flowmaps.hub.save_pretrained` and a model card (steps,
wall time, GPU, the KL at N = 1, 2, 4, 8, 16).

Speed: the objective runs its diagonal rows and its off-diagonal rows in one call of the MLP's
tangent pass (branch fusion, the library's default; the same loss and gradients as separate
calls) and, on CUDA, its forward + backward is captured once in a CUDA graph (data, noise and
times are drawn inside the graph); clipping, RAdam and the EMA run eagerly with foreach kernels.
``--no-graph`` / ``--no-fused`` switch these off.

Usage::

    python -m bench.time_to_quality --device cuda --methods lsd --save checkpoints
    python -m bench.time_to_quality --quick          # CPU smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

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
from flowmaps.data.toy import CHECKERBOARD_CELLS, data_std
from flowmaps.objectives import make_objective
from flowmaps.registry import build_model
from flowmaps.timesampling import OFF_DIAGONAL_KINDS

NAME = "time_to_quality"
PAPER_KL = {"lsd": 0.0864, "esd": 0.0983, "psd-m": 0.1456, "psd-u": 0.1113}
TARGET_KL = 0.0864
KL_STEPS = (1, 2, 4, 8, 16)


#: The off-diagonal time samplers the benchmarks offer: the library's, less the shortcut model's
#: dyadic grid (bench/families.py passes these through to this script).
OFF_TIMES = tuple(k for k in OFF_DIAGONAL_KINDS if k != "dyadic")

#: Training-record keys that flow matching (the diagonal alone) does not have: no eta, no
#: off-diagonal sampler, no branches to combine. Left out of its config and its card.
NOT_FOR_FM = ("eta", "off_diagonal_times", "stage_off_times", "stage_reductions")


def checkerboard_on(device: torch.device):
    """A sampler of the 4x4 checkerboard (data at t = 1) drawing on ``device`` with the default generator.

    Same law as flowmaps.data.toy.sample_toy("checkerboard"): a kept cell uniformly, then a uniform
    point in it. Drawing on the GPU keeps the step free of host work (and capturable in a graph).
    """
    cells = torch.tensor(CHECKERBOARD_CELLS, dtype=torch.float32, device=device)

    def sample(n: int) -> torch.Tensor:
        pick = torch.randint(0, cells.shape[0], (n,), device=device)
        return -1.0 + 0.5 * (cells[pick] + torch.rand(n, 2, device=device))

    return sample


def lr_at(step: int, lr0: float, decay_start: int) -> float:
    """lr0 for step < decay_start, then lr0 / sqrt(step / decay_start) (the paper's schedule)."""
    if decay_start <= 0 or step < decay_start:
        return lr0
    return lr0 / math.sqrt(step / decay_start)


def stage_lr(k: int, frac: float, lr0: float, anneal: float, decay_start: int, previous_steps: int = 0) -> float:
    """The learning rate at step ``k`` of this run (``frac``: the fraction of its budget spent).

    With ``anneal`` < 1 each run (stage) anneals its own lr (:func:`annealed_lr`); otherwise the
    paper's schedule (:func:`lr_at`) at the global step ``previous_steps + k``, so that a run
    continued with ``--init-from`` picks the decay up where the earlier stages left it."""
    if anneal < 1.0:
        return annealed_lr(lr0, frac, anneal)
    return lr_at(previous_steps + k, lr0, decay_start)


def budget_fraction(steps_done: int, budget: int | None, elapsed: float, max_seconds: float) -> float:
    """The fraction of a run's budget spent, which drives its lr anneal.

    With a step budget it is ``steps_done / budget`` alone, so a run's lr at step k does not depend on
    the wall clock and two runs from the same weights and seed repeat; ``max_seconds`` is then only a
    safety cap (a run stopped by it ends before its anneal does). Without a step budget the run is
    timed, and the fraction is ``elapsed / max_seconds``."""
    if budget:
        return min(1.0, steps_done / budget)
    return elapsed / max_seconds


def annealed_lr(lr0: float, frac: float, start: float, floor: float = 0.01) -> float:
    """lr0 until the fraction ``start`` of the time budget, then a cosine down to floor * lr0 at its end."""
    if start >= 1.0 or frac <= start:
        return lr0
    u = min(1.0, (frac - start) / (1.0 - start))
    return lr0 * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * u)))


def train_one(method: str, args: argparse.Namespace, device: torch.device, floor: float) -> dict[str, Any]:
    """Train one method until the KL target or the time cap; return its curve and final table."""
    torch.manual_seed(args.seed)
    sigma = data_std("checkerboard")
    config = {
        "net": {
            "name": "mlp",
            "dim": 2,
            "width": args.width,
            "depth": args.depth,
            "activation": "gelu",
            **({"times": args.times} if args.times != "s_t" else {}),
            **({"init": args.init} if args.init != "default" else {}),
        },
        "sigma": sigma,
        "data": "checkerboard",
        "method": method,
    }
    model = build_model(config).to(device)
    previous: dict[str, Any] = {}
    if args.init_from:  # a later stage: start from the EMA weights of an earlier run of this method
        from flowmaps.hub import from_pretrained

        start, start_cfg = from_pretrained(Path(args.init_from) / f"checkerboard-{method}")
        model.load_state_dict(start.state_dict())
        previous = start_cfg.get("training", {})
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    ema_params = [p for p in ema.parameters()]
    fused = not args.no_fused
    # Without logs no objective reads a value back to the host, so every one can be graphed.
    placement = {"stopgrad": args.esd_stopgrad} if method == "esd" and args.esd_stopgrad != "none" else {}
    common = {"eta": args.eta, "reduction": args.reduction, "return_logs": False, "times": args.off_times}
    partial = method == "esd" and args.esd_transport_grad < 1.0
    if partial:
        from bench.esd_transport import PartialTransportESD

        objective = PartialTransportESD(args.esd_transport_grad, **common)
    else:
        objective = make_objective(method, fuse_branches=fused, **common, **placement)
    opt = torch.optim.RAdam(params, lr=args.lr, foreach=True)
    sample = checkerboard_on(device)
    batch = args.batch

    def forward_backward() -> None:
        objective(model, sample(batch)).loss.backward()

    mode = "eager"
    replay = None
    if device.type == "cuda" and not args.no_graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    opt.zero_grad(set_to_none=True)
                    forward_backward()
            torch.cuda.current_stream().wait_stream(side)
            opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                forward_backward()
            replay, mode = graph.replay, "cuda graph"
        except Exception as err:  # e.g. a plain objective that syncs for its logs
            print(f"  [{method}] CUDA graph capture failed ({type(err).__name__}: {err}); running eagerly", flush=True)
            torch.cuda.synchronize()
            replay = None
            model.zero_grad(set_to_none=True)
    mode += " + fused" if objective.fuse_branches else ""

    def step(k: int, frac: float) -> None:
        if replay is not None:
            replay()  # overwrites the static .grad tensors
        else:
            opt.zero_grad(set_to_none=True)
            forward_backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip, foreach=True)
        lr = stage_lr(k, frac, args.lr, args.anneal, args.lr_decay_start, int(previous.get("steps") or 0))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        decay = min(args.ema, (1.0 + k) / (10.0 + k))
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)

    curve: list[dict[str, Any]] = []
    steps_done, train_s, reached = 0, 0.0, None
    next_eval = args.eval_every
    print(f"  [{method}] {mode}, batch {batch}, width {args.width}x{args.depth}", flush=True)
    budget = args.steps  # a step budget (equal steps for every method) or None (time only)

    def progress(elapsed: float) -> float:
        return budget_fraction(steps_done, budget, elapsed, args.max_seconds)

    while train_s < args.max_seconds and (budget is None or steps_done < budget):
        t0 = time.perf_counter()
        n_chunk = 0
        while n_chunk < args.chunk_steps and (budget is None or steps_done < budget):
            step(steps_done, progress(train_s + time.perf_counter() - t0))
            steps_done += 1
            n_chunk += 1
            if n_chunk % 50 == 0 and time.perf_counter() - t0 + train_s >= next_eval:
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        if train_s >= next_eval or train_s >= args.max_seconds or (budget and steps_done >= budget):
            next_eval = train_s + args.eval_every
            kl = checkerboard_eval(ema, (1,), n=args.n_eval)[1]
            curve.append({"train_seconds": round(train_s, 2), "steps": steps_done, **kl})
            print(
                f"  [{method}] {train_s:7.1f} s  step {steps_done:7d}  "
                f"KL(N=1) {kl['kl']:.4f}  (eps {kl['kl_eps']:.4f})",
                flush=True,
            )
            if kl["kl"] <= args.target:
                reached = {"train_seconds": round(train_s, 2), "steps": steps_done}
                break
    table = checkerboard_eval(ema, KL_STEPS, n=args.n_eval)
    result = {
        "method": method,
        "mode": mode,
        "steps": steps_done,
        "train_seconds": round(train_s, 2),
        "steps_per_second": steps_done / train_s if train_s > 0 else None,
        "reached_target": reached,
        "curve": curve,
        "final_kl": {str(k): v for k, v in table.items()},
        "paper_kl_n1": PAPER_KL.get(method),
        "floor": floor,
    }
    if args.save:
        from flowmaps.hub import save_pretrained

        info = machine_info(device)
        hardware = info.get("gpu") or f"{info['cpu']} ({info['torch_threads']} threads)"
        folder = Path(args.save) / f"checkerboard-{method}"
        train_cfg = {
            "batch_size": batch,
            "lr": args.lr,
            "lr_decay_start": args.lr_decay_start,
            "anneal_from_fraction": args.anneal if args.anneal < 1.0 else None,
            "tf32": bool(args.tf32 and device.type == "cuda"),
            "grad_clip": args.clip,
            "ema_decay": args.ema,
            "eta": args.eta,
            **({"off_diagonal_times": args.off_times} if args.off_times != "uniform" else {}),
            **({"esd_stopgrad": placement["stopgrad"]} if placement else {}),
            **({"esd_transport_grad": args.esd_transport_grad} if partial else {}),
            "optimizer": "RAdam",
            "steps": steps_done + int(previous.get("steps", 0)),
            "train_seconds": round(train_s + float(previous.get("train_seconds", 0.0)), 1),
            "seed": args.seed,
            "stages": [*previous.get("stages", [previous.get("steps")] if previous else []), steps_done],
            # earlier stages without a record ran at lr 1e-3 with training seed 0
            "stage_lrs": [*previous.get("stage_lrs", [1e-3] * len(previous.get("stages", []))), args.lr],
            "stage_seeds": [*previous.get("stage_seeds", [0] * len(previous.get("stages", []))), args.seed],
            # earlier stages without a record drew their off-diagonal (s, t) uniformly on the triangle
            "stage_off_times": [
                *previous.get("stage_off_times", ["uniform"] * len(previous.get("stages", []))),
                args.off_times,
            ],
            # earlier stages without a record averaged over all samples ("mean")
            "stage_reductions": [
                *previous.get("stage_reductions", ["mean"] * len(previous.get("stages", []))),
                args.reduction,
            ],
        }
        if method == "fm":
            for key in NOT_FOR_FM:
                train_cfg.pop(key, None)
        card = {
            "title": f"Checkerboard flow map ({method.upper()})",
            "summary": f"MLP {args.width}x{args.depth} GELU trained with {method.upper()} on the 4x4 checkerboard "
            f"by bench/time_to_quality.py; EMA weights.",
            "data": "checkerboard (4x4 board on [-1, 1]^2, sigma = data std)",
            "network": f"MLP {args.width}x{args.depth}, GELU, input "
            + ("[s, t - s, x / sigma]" if args.times == "s_gap" else "[s, t, x / sigma]"),
            "method": method,
            "steps": steps_done,
            "wall_time": train_s,
            "hardware": f"{hardware}, torch {info['torch']}",
            "metrics": {
                f"N={k}": {"KL": v["kl"], "KL (empty bins as 0.5)": v["kl_eps"], "floor": floor}
                for k, v in table.items()
            },
            "notes": f"KL: the paper's 50x50 histogram estimator on [-1, 1]^2 with {args.n_eval:,} samples; "
            f"the floor is the KL of exact samples on the same estimator. Command: `{info['command']}`",
        }
        save_pretrained(
            ema,
            folder,
            {
                **config,
                "training": train_cfg,
                "metrics": {"checkerboard_kl": {str(k): v["kl"] for k, v in table.items()}},
            },
            card,
        )
        result["saved"] = str(folder)
        print(f"  [{method}] saved {folder}", flush=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = setup(args)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    if args.quick:
        args.width, args.depth, args.batch = 32, 2, 256
        args.max_seconds, args.eval_every, args.n_eval, args.chunk_steps = 1.0, 0.5, 4000, 10
    floor = checkerboard_floor(args.n_eval)
    results_dir, docs = output_paths(args)
    previous = read_json(results_dir, NAME) or {}
    runs = {r["method"]: r for r in previous.get("runs", []) if not previous.get("quick")}
    for method in args.methods:
        runs[method] = train_one(method, args, device, floor)
    info = machine_info(device)
    payload = {
        "name": NAME,
        "machine": info,
        "runs": list(runs.values()),
        "target_kl": args.target,
        "quick": args.quick,
    }
    rows = []
    for r in runs.values():
        fk = r["final_kl"]
        rows.append(
            {
                "method": r["method"],
                "mode": r.get("mode"),
                "steps": r["steps"],
                "train s": r["train_seconds"],
                "steps/s": r.get("steps_per_second"),
                f"s to KL<={args.target}": (r["reached_target"] or {}).get("train_seconds", "not reached"),
                **{f"KL N={k}": fk[str(k)]["kl"] for k in KL_STEPS if str(k) in fk},
                "paper N=1": r.get("paper_kl_n1"),
                "floor": r["floor"],
            }
        )
    print_table("time to quality (checkerboard)", rows)
    write_json(results_dir, NAME, payload)
    curves = []
    for r in runs.values():
        pts = ", ".join(f"{c['train_seconds']:.0f} s: {c['kl']:.4f}" for c in r["curve"])
        curves.append(f"- {r['method']}: {pts}")
    md = (
        "## Time to quality: checkerboard 1-step KL\n\n"
        f"MLP {args.width}x{args.depth} GELU, batch {args.batch}, RAdam lr {args.lr}, clip {args.clip},\n"
        + (
            f"lr cosine-annealed to 1% from {args.anneal:.0%} of the {args.max_seconds:.0f} s budget, "
            if args.anneal < 1.0
            else ""
        )
        + f"TF32 matmuls {'on' if args.tf32 and args.device == 'cuda' else 'off'}, EMA {args.ema}, "
        f"eta {args.eta}; EMA model scored every {args.eval_every:.0f} s of training (64,000 samples, paper's\n"
        f"estimator); stop at KL <= {args.target} (the paper's LSD 1-step figure). `floor`: exact samples on\n"
        "the same estimator. Training seconds exclude the evaluations.\n\n"
        + machine_line(info)
        + "\n\n"
        + md_table(rows)
        + "\n\nKL (N = 1) against training seconds:\n\n"
        + "\n".join(curves)
        + "\n"
    )
    update_docs(docs, NAME, md)
    return payload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, default_device="cuda")
    p.add_argument("--methods", nargs="+", default=["lsd"], choices=("lsd", "esd", "psd-m", "psd-u", "fm"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument(
        "--times",
        choices=("s_t", "s_gap"),
        default="s_t",
        help="the net's time inputs: [s, t] (the paper's 2-D net) or [s, t - s] (its image nets' choice)",
    )
    p.add_argument(
        "--init",
        choices=("default", "he", "lecun"),
        default="default",
        help="the net's starting weights (from scratch only): PyTorch's default, 'he', or 'lecun' (Flax's "
        "Dense default, which the authors' released checkerboard net starts from)",
    )
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay-start", type=int, default=35_000)
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TF32 matmuls on CUDA (the fused step's derivative is an exact tangent pass, not a finite "
        "difference, so TF32 rounding does not corrupt it)",
    )
    p.add_argument(
        "--anneal",
        type=float,
        default=1.0,
        help="cosine-anneal the lr to 1%% of --lr from this fraction of the budget (--steps if given, "
        "else --max-seconds) to its end "
        "(default 1.0: off, the paper's step schedule)",
    )
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--eta", type=float, default=0.75)
    p.add_argument(
        "--reduction",
        choices=("mean", "sum_of_means"),
        default="mean",
        help="mean over all samples (the released code: 3:1 at eta 0.75) or the sum of the two branch means "
        "(the paper's Algorithm 1)",
    )
    p.add_argument(
        "--off-times",
        choices=OFF_TIMES,
        default="uniform",
        help="off-diagonal (s, t): uniform on the triangle s < t (the paper's text), s and t independent "
        "(forward and backward jumps: the authors' released 2-D code), jump length uniform or more pairs late "
        "in time (diagnostics; flowmaps.timesampling.off_diagonal_times)",
    )
    p.add_argument(
        "--esd-stopgrad",
        choices=("none", "teacher"),
        default="none",
        help="ESD's gradient: through the whole residual (none, the esd preset) or only through d/ds X with the "
        "transport term under stop-gradient (teacher: the semigradient of the authors' released 2-D config)",
    )
    p.add_argument(
        "--esd-transport-grad",
        type=float,
        default=1.0,
        help="a diagnostic: the transport term's share of ESD's gradient, 1 (the esd preset) to 0 (the "
        "semigradient); bench/esd_transport.py",
    )
    p.add_argument("--target", type=float, default=TARGET_KL, help="stop at this 1-step KL")
    p.add_argument("--max-seconds", type=float, default=540.0, help="training-time cap per method")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="step budget per method (stop there; with --anneal the anneal follows the steps)",
    )
    p.add_argument("--eval-every", type=float, default=20.0, help="seconds of training between KL checks")
    p.add_argument("--n-eval", type=int, default=64_000, help="samples per KL")
    p.add_argument("--chunk-steps", type=int, default=10_000, help="most steps between clock checks")
    p.add_argument("--no-graph", action="store_true", help="no CUDA graph")
    p.add_argument("--no-fused", action="store_true", help="the two branches in separate network calls")
    p.add_argument("--save", default=None, help="parent folder for checkerboard-<method> checkpoints")
    p.add_argument(
        "--init-from",
        default=None,
        help="parent folder of checkerboard-<method> checkpoints to continue from (the lr schedule restarts)",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick and "--device" not in (argv if argv is not None else sys.argv[1:]):
        args.device = "cpu"
    return run(args)


if __name__ == "__main__":
    main()
