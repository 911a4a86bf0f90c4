"""The paper's Table 1 on the checkerboard: every family trained on one budget, scored beside the paper.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

One command trains LSD, ESD, PSD-M, PSD-U and the flow-matching baseline with the same network
(MLP 512x4 GELU on [s, t, x / sigma]), batch, optimiser, schedule and number of steps (each method
in its own process through ``bench/time_to_quality.py --steps``, spread over the listed GPUs), then
scores every model with the paper's estimator (64,000 samples, 50 x 50 histogram on [-1, 1]^2) at
N = 1, 2, 4, 8, 16 uniform steps, for several noise seeds, and writes the table with the paper's
rows beside it: the mean over seeds, its spread (sample standard deviation), the empty-bin count
and the floor (exact samples on the same estimator, the same seeds).

Estimator convention: KL(target || histogram) with the target's density at the bin centres
normalised to sum 1 over the bins (flowmaps.metrics.checkerboard_kl). The paper does not say how
it treats empty bins; here an empty target bin makes the KL infinite (``inf``), and the column
``KL(eps)`` counts empty bins as half a sample instead.

The flow-matching baseline has no trained off-diagonal, so its rows use its velocity with Euler
at N steps, and an adaptive Dormand-Prince solve (its NFE reported) as its best ODE figure.

Usage (GPU machine)::

    python -m bench.families --device cuda --steps 40000 --gpus 0 1 --save checkpoints
    python -m bench.families --eval-only --save checkpoints        # re-score saved models
    python -m bench.families --quick                               # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import kl_entry, machine_info, machine_line, md_table, print_table, update_docs, write_json
from bench.time_to_quality import NOT_FOR_FM, OFF_TIMES
from flowmaps.metrics import mean_sd

NAME = "families"
METHODS = ("lsd", "esd", "psd-m", "psd-u", "fm")
STEPS_N = (1, 2, 4, 8, 16)
# The paper's Table 1 (arXiv 2505.18825 v2), checkerboard KL at N = 1, 2, 4, 8, 16.
PAPER = {
    "lsd": (0.0864, 0.0765, 0.0708, 0.0699, 0.0710),
    "esd": (0.0983, 0.0921, 0.0834, 0.0816, 0.0751),
    "psd-m": (0.1456, 0.0891, 0.0812, 0.0717, 0.0689),
    "psd-u": (0.1113, 0.1067, 0.0747, 0.0727, 0.0679),
}
HERE = Path(__file__).resolve().parent


def parse_per_method(
    parser: argparse.ArgumentParser, flag: str, items: list[str], convert: Any, rule: str
) -> dict[str, Any]:
    """``["esd=late", ...]`` as ``{"esd": convert("late")}``, for a per-method option ``flag`` (``--off-times-for``,
    ``--lr-for``); ``convert`` returns None for a value it refuses, and a bad item stops the parser with a
    message naming ``rule`` (what the value must be)."""
    out = {}
    for item in items:
        method, _, raw = item.partition("=")
        value = convert(raw)
        if method not in METHODS or value is None:
            parser.error(f"{flag}: {item!r} is not {rule}")
        out[method] = value
    return out


def _off_times_kind(raw: str) -> str | None:
    return raw if raw in OFF_TIMES else None


def _positive(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def _per_method_flag(flag: str, values: dict[str, Any]) -> str:
    """`` --lr-for lsd=1.5625e-05`` for a docs command line; "" when ``values`` is empty."""
    return (
        f" {flag} " + " ".join(f"{m}={v:g}" if isinstance(v, float) else f"{m}={v}" for m, v in values.items())
        if values
        else ""
    )


def stage_lr(args: argparse.Namespace, method: str) -> float:
    """The peak lr this stage trains ``method`` at: its own ``--lr-for`` value, else ``--lr``."""
    return (getattr(args, "lr_for", None) or {}).get(method, args.lr)


def train_all(args: argparse.Namespace) -> dict[str, float]:
    """Start one training process per method (round robin over --gpus) and wait for all."""
    procs, started = [], time.time()
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for i, method in enumerate(args.methods):
        cmd = [
            sys.executable,
            "-m",
            "bench.time_to_quality",
            "--device", args.device,
            "--methods", method,
            "--steps", str(args.steps),
            "--max-seconds", str(args.max_seconds),
            "--target", "0",
            "--anneal", str(args.anneal),
            "--batch", str(args.batch),
            "--width", str(args.width),
            "--depth", str(args.depth),
            "--eval-every", str(args.max_seconds),
            "--n-eval", str(args.n_eval),
            "--save", args.save,
            "--results", str(log_dir / method),
            "--docs", str(log_dir / f"{method}.md"),
            "--seed", str(args.seed),
            "--lr", str(stage_lr(args, method)),
            "--reduction", args.reduction,
            "--off-times", args.off_times_for.get(method, args.off_times),
        ]  # fmt: skip
        if args.quick:
            cmd.append("--quick")
        if args.init_from:
            cmd += ["--init-from", args.init_from]
        env = dict(os.environ)
        if args.gpus:  # one GPU per method, or round robin
            gpus = args.gpus if len(args.gpus) == len(args.methods) else [args.gpus[i % len(args.gpus)]]
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[i] if len(gpus) > 1 else gpus[0])
        out = open(log_dir / f"{method}.log", "w")
        procs.append(
            (method, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent), out)
        )
        print(f"started {method} on GPU {env.get('CUDA_VISIBLE_DEVICES', '-')}", flush=True)
    walls = {}
    for method, proc, out in procs:
        rc = proc.wait()
        out.close()
        walls[method] = time.time() - started
        print(f"{method} finished (exit {rc}) after {walls[method]:.0f} s", flush=True)
        if rc != 0:
            print((log_dir / f"{method}.log").read_text()[-3000:], flush=True)
    return walls


def score(model: Any, method: str, seeds: list[int], n: int, device: torch.device) -> dict[str, Any]:
    """KL at every N for every noise seed; the flow-matching model through its velocity's ODE."""
    from flowmaps.sampling import flowmap_sample, make_grid, ode_solve

    rows: dict[str, list[dict[str, float]]] = {str(k): [] for k in STEPS_N}
    dopri: list[dict[str, float]] = []
    with torch.no_grad():
        for seed in seeds:
            x0 = model.sigma * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
            x0 = x0.to(device)
            for k in STEPS_N:
                grid = make_grid("uniform", k)
                if method == "fm":
                    x = ode_solve(model.velocity, x0, "euler", grid=grid).x
                else:
                    x = flowmap_sample(model, x0, grid).x
                rows[str(k)].append(kl_entry(x.float().cpu()))
            if method == "fm":
                sol = ode_solve(model.velocity, x0, "dopri5", rtol=1e-5, atol=1e-6)
                dopri.append({**kl_entry(sol.x.float().cpu()), "nfe": sol.nfe})
    out: dict[str, Any] = {"per_seed": rows}
    if dopri:
        out["dopri5"] = dopri
    return out


def _relative(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return Path(path).name


def stage_row(method: str, steps: int, sc: dict[str, Any]) -> list[str]:
    """One row of the stage-by-stage table: mean ± sd per N; where an empty target bin makes the
    KL infinite, the KL with empty bins counted as half a sample and the most empty bins."""
    return [method, f"{steps:,}"] + [kl_cell(sc["per_seed"][str(k)]) for k in STEPS_N]


def kl_cell(runs: list[dict[str, Any]]) -> str:
    """One table cell from the per-noise-seed scores of one model at one N: mean ± sd of the
    paper's KL; where an empty target bin makes it infinite on any seed, ``inf`` followed by the KL
    with empty bins counted as half a sample (mean ± sd) and the most empty bins over the seeds."""
    m, sd = mean_sd([r["kl"] for r in runs])
    if m != float("inf"):
        return _fmt(m, sd)
    mh, sdh = mean_sd([r["kl_eps"] for r in runs])
    return f"inf ({mh:.4f} ± {sdh:.4f}; {max(r['empty_bins'] for r in runs)} empty)"


def _fmt(mean: float, sd: float) -> str:
    if mean == float("inf"):
        return "inf"
    return f"{mean:.4f} ± {sd:.4f}"


def summarise(scores: dict[str, Any], floors: list[float], budget: dict[str, Any]) -> tuple[list[dict], str]:
    rows = []
    for method, sc in scores.items():
        row: dict[str, Any] = {"method": method + (" (Euler)" if method == "fm" else "")}
        for k in STEPS_N:
            row[f"N={k}"] = kl_cell(sc["per_seed"][str(k)])
        empties = [r["empty_bins"] for k in STEPS_N for r in sc["per_seed"][str(k)]]
        row["empty bins (max)"] = max(empties)
        row["steps"] = budget.get(method, {}).get("steps")
        row["train s"] = budget.get(method, {}).get("train_seconds")
        rows.append(row)
        if method in PAPER:
            rows.append({"method": f"paper {method}", **{f"N={k}": f"{v:.4f}" for k, v in zip(STEPS_N, PAPER[method])}})
        if "dopri5" in sc:
            m, sd = mean_sd([r["kl"] for r in sc["dopri5"]])
            nfe = statistics.fmean(r["nfe"] for r in sc["dopri5"])
            rows.append({"method": f"fm (dopri5, {nfe:.0f} NFE)", "N=1": _fmt(m, sd)})
    fm, fsd = mean_sd(floors)
    note = f"floor (exact samples, same estimator and seeds): {_fmt(fm, fsd)}"
    return rows, note


def _lrs(train: dict[str, Any]) -> str:
    return "[" + ", ".join(f"{lr:g}" for lr in train.get("stage_lrs") or [train.get("lr", 1e-3)]) + "]"


def _off_times(train: dict[str, Any], last: bool = False) -> Any:
    """Each stage's off-diagonal time sampler (stages without a record: "uniform"), or the last one's."""
    kinds = train.get("stage_off_times") or [train.get("off_diagonal_times", "uniform")]
    return kinds[-1] if last else "[" + ", ".join(kinds) + "]"


def rewrite_card(folder: Path, model: Any, config: dict[str, Any], method: str, sc: dict, args, info) -> None:
    """Config metrics and model card from the multi-seed scores, stating the shared budget."""
    from flowmaps.hub import save_pretrained

    train = config.get("training", {})
    fm = method == "fm"  # a velocity field: no flow-map jumps, no off-diagonal term
    if fm:
        train = {k: v for k, v in train.items() if k not in NOT_FOR_FM}
        config = {**config, "training": train}
    metrics, table = {}, []
    label = "Euler on v_{t,t}" if fm else "flow map"
    for k in STEPS_N:
        kls = [r["kl"] for r in sc["per_seed"][str(k)]]
        m, sd = mean_sd(kls)
        finite = m != float("inf")  # JSON has no inf: an empty target bin is written as null
        metrics[str(k)] = {"mean": m if finite else None, "sd": sd if finite else None, "seeds": args.seeds}
        per_seed = ", ".join(f"{v:.4f}" if v != float("inf") else "inf" for v in kls)  # JSON has no inf
        cell = kl_cell(sc["per_seed"][str(k)])  # where inf: the half-sample KL and the empty bins beside it
        table.append({"sampler": f"{label}, N = {k}", "KL (mean ± sd)": cell, "per seed": per_seed})
    if "dopri5" in sc:
        m, sd = mean_sd([r["kl"] for r in sc["dopri5"]])
        nfe = statistics.fmean(r["nfe"] for r in sc["dopri5"])
        table.append({"sampler": f"dopri5 on v_{{t,t}} ({nfe:.0f} NFE)", "KL (mean ± sd)": _fmt(m, sd)})
        metrics["dopri5"] = {"mean": m, "sd": sd, "nfe": nfe, "seeds": args.seeds}
    config = {k: v for k, v in config.items() if k not in ("metrics", "weights_dtype", "flowmaps_version")}
    if fm:  # a velocity field: its rows are ODE solves (flowmaps.hub.model_index), not flow-map jumps
        ode = {"euler": {k: v for k, v in metrics.items() if k != "dopri5"}}
        if "dopri5" in metrics:
            ode["dopri5"] = metrics["dopri5"]
        config["metrics"] = {"checkerboard_kl_ode": ode}
    else:
        config["metrics"] = {"checkerboard_kl": metrics}
    what = (
        "a flow-matching velocity field (the baseline: only the diagonal v_{t,t} is trained; sample it with an ODE)"
        if fm
        else f"a flow map trained by {method.upper()} self-distillation"
    )
    others = ", ".join(m.upper() for m in args.methods if m != method)
    card = {
        "title": f"Checkerboard {method.upper()}" + (" velocity (baseline)" if fm else " flow map"),
        "summary": f"{what}, on the 4x4 checkerboard. Trained on the same budget as {others}: same network, "
        "batch, optimiser, stages, training seeds and number of steps (bench/families.py); each stage's peak "
        + ("learning rate is in the notes." if fm else "learning rate and off-diagonal time sampler are in the notes."),
        "data": "checkerboard (4x4 board on [-1, 1]^2, squares with i + j even; sigma = data std)",
        "network": f"MLP {args.width}x{args.depth}, GELU, input [s, t, x / sigma]",
        "method": method,
        "steps": train.get("steps"),
        "wall_time": train.get("train_seconds"),
        "hardware": (info.get("gpu") or info.get("cpu")) + f", torch {info['torch']}",
        "metrics": table,
        "notes": "KL: the paper's estimator (64,000 samples, 50 x 50 bins on [-1, 1]^2, target density at bin "
        "centres normalised to sum 1; inf = an empty target bin on at least one seed, then the bracket gives the KL "
        "with empty bins counted as half a sample, mean ± sd, and the most empty bins), mean ± sd over the noise "
        f"seeds listed. Budget: batch {args.batch:,}, {train.get('steps'):,} steps in stages of "
        f"{train.get('stages')}, RAdam at peak lr {_lrs(train)} per stage, each cosine-annealed to 1% of its peak "
        f"over the last {1 - args.anneal:.0%} of the stage, clip 10, EMA 0.999, training seeds "
        f"{train.get('stage_seeds') or [train.get('seed')]} per stage, "
        + (
            "the whole batch on the diagonal (flow matching has no off-diagonal term, so no eta and no "
            "off-diagonal sampler). Command of the last stage: "
            f"`python -m bench.families --device cuda --methods fm --steps {args.steps} --lr {stage_lr(args, 'fm'):g} "
            f"--seed {args.seed} --init-from <previous stage>`."
            if fm
            else f"eta {train.get('eta', 0.75):g}, branches combined per stage as "
            f"{train.get('stage_reductions') or ['mean']} (mean: over all samples, 3:1; sum_of_means: the paper's "
            "Algorithm 1), off-diagonal (s, t) per stage "
            f"{_off_times(train)} (uniform: on the triangle s < t, the paper's; late: the same pushed towards "
            "t = 1, flowmaps.timesampling.off_diagonal_times, not the paper's). Command of the last stage: "
            f"`python -m bench.families --device cuda --methods {method} --steps {args.steps} "
            f"--lr {stage_lr(args, method):g} "
            f"--seed {args.seed} --reduction {args.reduction} --off-times {_off_times(train, last=True)} "
            "--init-from <previous stage>`."
        ),
    }
    save_pretrained(model, folder, config, card)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--steps", type=int, default=40_000, help="the shared step budget")
    p.add_argument("--max-seconds", type=float, default=480.0, help="safety cap on each method's training time")
    p.add_argument("--anneal", type=float, default=0.5, help="cosine lr anneal from this fraction of the steps")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of this stage (RAdam)")
    p.add_argument(
        "--reduction",
        choices=("mean", "sum_of_means"),
        default="mean",
        help="how the two branches are combined: mean over all samples (3:1 at eta 0.75) or sum of branch means",
    )
    p.add_argument(
        "--off-times",
        choices=OFF_TIMES,
        default="uniform",
        help="off-diagonal (s, t): uniform on the triangle s < t, s and t independent (forward and backward "
        "jumps, the authors' released 2-D code), or a diagnostic of flowmaps.timesampling.off_diagonal_times",
    )
    p.add_argument(
        "--off-times-for",
        nargs="*",
        default=[],
        metavar="METHOD=KIND",
        help="a method's own off-diagonal sampler in place of --off-times, e.g. esd=late",
    )
    p.add_argument(
        "--lr-for",
        nargs="*",
        default=[],
        metavar="METHOD=LR",
        help="a method's own peak lr in place of --lr, e.g. lsd=1.5625e-5",
    )
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument(
        "--gpus",
        nargs="*",
        type=int,
        default=[],
        help="GPU indices: one per method, or a list to spread them over round robin",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="noise seeds of the KL estimates")
    p.add_argument("--n-eval", type=int, default=64_000)
    p.add_argument("--seed", type=int, default=0, help="training seed (same for every method)")
    p.add_argument("--save", default="checkpoints", help="parent folder of checkerboard-<method>")
    p.add_argument("--log-dir", default="bench/out/families")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--docs", default=str(HERE.parent / "docs" / "benchmarks.md"))
    p.add_argument("--eval-only", action="store_true", help="score the saved models, do not train")
    p.add_argument("--init-from", default=None, help="continue every method from checkerboard-<method> in this folder")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny sizes, nothing written to docs")
    args = p.parse_args(argv)
    args.off_times_for = parse_per_method(
        p, "--off-times-for", args.off_times_for, _off_times_kind,
        f"METHOD=KIND with METHOD in {METHODS} and KIND in {OFF_TIMES}",
    )  # fmt: skip
    args.lr_for = parse_per_method(
        p, "--lr-for", args.lr_for, _positive, f"METHOD=LR with METHOD in {METHODS} and LR a positive number"
    )
    if args.quick:
        args.device, args.steps, args.n_eval, args.seeds = "cpu", 20, 4000, [0, 1]
        args.width, args.depth, args.batch, args.max_seconds = 32, 2, 256, 30.0
        args.results = args.docs = None
    device = torch.device(args.device)

    walls = {} if args.eval_only else train_all(args)
    from flowmaps.hub import from_pretrained
    from flowmaps.metrics import checkerboard_kl_floor

    scores, budget = {}, {}
    for method in args.methods:
        folder = Path(args.save) / f"checkerboard-{method}"
        if not folder.is_dir():
            print(f"{method}: no checkpoint at {folder}; skipped", flush=True)
            continue
        model, config = from_pretrained(folder, device=device)
        budget[method] = config.get("training", {})
        scores[method] = score(model, method, args.seeds, args.n_eval, device)
        if not args.quick:
            rewrite_card(folder, model.cpu(), config, method, scores[method], args, machine_info(device))
    floors = [checkerboard_kl_floor(args.n_eval, seed) for seed in args.seeds]
    rows, note = summarise(scores, floors, budget)
    print_table("checkerboard KL by family (mean ± sd over noise seeds)", rows)
    print(note)
    info = machine_info(device)
    # paths relative to the repository, so that a saved table names no machine's folders
    shown = {
        k: (_relative(v) if k in ("results", "docs", "save", "log_dir", "init_from") else v)
        for k, v in vars(args).items()
    }
    payload = {"name": NAME, "machine": info, "args": shown, "walls": walls, "scores": scores, "floors": floors}
    if args.results:
        write_json(Path(args.results), NAME, payload)
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.log_dir) / "scores.json").write_text(json.dumps(payload, indent=1))
    if args.docs and not args.quick:
        md = (
            "## Every family on one budget: checkerboard KL\n\n"
            f"MLP {args.width}x{args.depth} GELU, batch {args.batch:,}, {args.steps:,} steps for every method, RAdam "
            f"lr {args.lr:g}"
            + "".join(f" ({m} {lr:g})" for m, lr in args.lr_for.items())
            + f" cosine-annealed to 1% over the last {1 - args.anneal:.0%} of the steps, clip 10, "
            f"EMA 0.999, eta 0.75, branches combined by {args.reduction!r}, training seed {args.seed}. "
            "KL: the paper's estimator (64,000 samples, 50 x 50 bins on [-1, 1]^2, target at bin centres "
            "normalised to sum 1; inf = an empty target bin), mean ± sd over "
            f"noise seeds {', '.join(map(str, args.seeds))}. {note}. Command: "
            f"`python -m bench.families --device cuda --steps {args.steps} --lr {args.lr:g} --seed {args.seed} "
            f"--reduction {args.reduction} --gpus {' '.join(map(str, args.gpus))}"
            + _per_method_flag("--lr-for", args.lr_for)
            + _per_method_flag("--off-times-for", args.off_times_for)
            + (" --init-from <previous stage>" if args.init_from else "")
            + "`.\n\n"
            + machine_line(info)
            + "\n\n"
            + md_table(rows)
            + "\n"
        )
        update_docs(Path(args.docs), NAME, md)
    return payload


if __name__ == "__main__":
    main()
