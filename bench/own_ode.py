"""Each checkerboard flow map against the flow of its own velocity: is the diagonal or the jump off?

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A self-distilled flow map learns two things with one network: the velocity on the diagonal,
v_{t,t} (trained by flow matching), and the jumps X_{s,t} off it (trained by the family's
distillation term against that velocity). A KL above the paper's row can come from either. This
diagnostic separates them for every shipped ``checkerboard-<method>``:

* **own ODE**: the paper's KL of samples from the model's own probability-flow ODE,
  dx/dt = v_{t,t}(x), solved by dopri5 (rtol 1e-5, atol 1e-6) from the same noise as the jumps. It
  is what the model's diagonal would give with an exact map; the flow-matching baseline's row is
  the reference for a velocity trained by flow matching alone.
* **jump error**: for each segment [a, b] of the uniform grids with 1, 2 and 4 steps, the mean over
  samples of |X_{a,b}(y_a) - y_b|^2 (summed over the two coordinates), where y is the dopri5
  trajectory of the own ODE; beside it the mean squared length of the move, |y_b - y_a|^2, for
  scale. A map that is exact for its own velocity scores 0 whatever its velocity.
* **composed error**: the same for the N-jump sample at t = 1 against y_1, and the share of samples
  that it puts on the other side of a square's edge than the ODE does (on the squares in one, off
  them in the other): an error that is small on average can still blur the edges, where the KL
  looks.

KL: 64,000 samples per noise seed, 50 x 50 bins on [-1, 1]^2, target at the bin centres normalised
to sum 1, empty bins counted as half a sample; every figure is the mean ± sd over the noise seeds.

Usage::

    python -m bench.own_ode --device cuda          # the shipped models, seeds 0-2, writes results and docs
    python -m bench.own_ode --quick                # smoke run on CPU: 2,000 samples, nothing written
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from bench.common import kl_entry, machine_info, machine_line, md_table, print_table, update_docs, write_json
from flowmaps.metrics import bin_index, mean_sd

NAME = "own_ode"
HERE = Path(__file__).resolve().parent
QUARTERS = (0.0, 0.25, 0.5, 0.75, 1.0)
SEGMENTS = ((0.0, 1.0), (0.0, 0.5), (0.5, 1.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def _msd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over samples of the squared distance, summed over coordinates."""
    return float(((a.double() - b.double()) ** 2).sum(dim=1).mean())


def disagreement(jump: torch.Tensor, ode: torch.Tensor) -> dict[str, float]:
    """Share of samples whose jump lands in another bin than the ODE's ("other bin"), and on the other
    side of a square's edge, on the squares in one and off them in the other ("other side")."""
    from flowmaps.data.toy import checkerboard_density

    jump, ode = jump.double().cpu(), ode.double().cpu()
    on_j, on_o = checkerboard_density(jump) > 0, checkerboard_density(ode) > 0
    return {
        "other_bin": float((bin_index(jump) != bin_index(ode)).double().mean()),  # the estimator's 50 x 50 bins
        "other_side": float((on_j != on_o).double().mean()),
    }


def measure(model: Any, x0: torch.Tensor) -> dict[str, Any]:
    """Own-ODE KL, per-segment jump errors and composed errors for one batch of noise ``x0`` (n, 2)."""
    from flowmaps.sampling import flowmap_sample, make_grid, ode_solve

    with torch.no_grad():
        sol = ode_solve(model.velocity, x0, "dopri5", grid=list(QUARTERS), rtol=1e-5, atol=1e-6, return_trajectory=True)
        ys = dict(zip(QUARTERS, sol.trajectory))
        out: dict[str, Any] = {"ode": {**kl_entry(sol.x.float().cpu()), "nfe": sol.nfe}, "segments": {}, "composed": {}}
        for a, b in SEGMENTS:
            jump = model.jump(ys[a], a, b)
            out["segments"][f"{a:g}-{b:g}"] = {"error": _msd(jump, ys[b]), "move": _msd(ys[b], ys[a])}
        for k in (1, 2, 4):
            x = flowmap_sample(model, x0, make_grid("uniform", k)).x
            out["composed"][str(k)] = {
                "error": _msd(x, ys[1.0]),
                **disagreement(x, ys[1.0]),
                **kl_entry(x.float().cpu()),
            }
    return out


def _pm(values: list[float], digits: int = 4) -> str:
    m, sd = mean_sd(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _pm_sci(values: list[float]) -> str:
    """Mean ± sd of small squared distances, in scientific notation."""
    m, sd = mean_sd(values)
    return f"{m:.2e} ± {sd:.1e}"


def summarise(raw: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Two tables: KL of the own ODE beside the jumps, and the jump error per segment."""
    kl_rows, seg_rows = [], []
    order = ("lsd", "esd", "psd-m", "psd-u", "fm")  # a saved file's keys come back sorted
    for method in sorted(raw, key=lambda m: (order.index(m) if m in order else len(order), m)):
        runs = raw[method]
        row = {"model": method, "own ODE (dopri5)": _pm([r["ode"]["kl_eps"] for r in runs])}
        row["NFE"] = f"{sum(r['ode']['nfe'] for r in runs) / len(runs):.0f}"
        if method == "fm":  # flow matching never trained a jump: its network off the diagonal is no map
            kl_rows.append(row)
            continue
        for k in ("1", "2", "4"):
            row[f"jumps N={k}"] = _pm([r["composed"][k]["kl_eps"] for r in runs])
        for k in ("1", "2", "4"):
            row[f"error N={k}"] = _pm_sci([r["composed"][k]["error"] for r in runs])
        for k in ("1", "4"):
            other = [100 * r["composed"][k]["other_side"] for r in runs]
            row[f"other side N={k} (%)"] = _pm(other, 2)
        kl_rows.append(row)
        seg = {"model": method}
        for a, b in SEGMENTS:
            name = f"{a:g}-{b:g}"
            err = _pm_sci([r["segments"][name]["error"] for r in runs])
            move = mean_sd([r["segments"][name]["move"] for r in runs])[0]
            seg[f"[{name.replace('-', ', ')}]"] = f"{err} (move {move:.3f})"
        seg_rows.append(seg)
    return kl_rows, seg_rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default=str(HERE.parent / "checkpoints"), help="folder of checkerboard-<method>")
    p.add_argument("--methods", nargs="+", default=["lsd", "esd", "psd-m", "psd-u", "fm"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="noise seeds")
    p.add_argument("--n", type=int, default=64_000, help="samples per seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--docs", default=str(HERE.parent / "docs" / "benchmarks.md"))
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 samples, two seeds, nothing written")
    p.add_argument("--tables-from", metavar="JSON", help="rebuild the tables and the docs section from saved results")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.results, args.docs = 2000, [0, 1], None, None
    if args.tables_from:
        payload = json.loads(Path(args.tables_from).read_text())
        _write(payload, args.docs)
        return payload
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)

    from flowmaps.hub import from_pretrained

    raw: dict[str, list[dict[str, Any]]] = {}
    for method in args.methods:
        folder = Path(args.checkpoints) / f"checkerboard-{method}"
        if not folder.is_dir():
            print(f"{method}: no checkpoint at {folder}; skipped", flush=True)
            continue
        model, _ = from_pretrained(folder, device=device)
        raw[method] = []
        for seed in args.seeds:
            x0 = model.sigma * torch.randn(args.n, 2, generator=torch.Generator().manual_seed(seed))
            raw[method].append(measure(model, x0.to(device)))
            print(f"{method} seed {seed} done", flush=True)
    info = machine_info(device)
    # the command as a reader would type it: without this machine's output folders
    info["command"] = f"python -m bench.own_ode --device {args.device} --n {args.n} --threads {args.threads}"
    payload = {"name": NAME, "machine": info, "args": {"seeds": args.seeds, "n": args.n}, "runs": raw}
    write_json(Path(args.results) if args.results else None, NAME, payload)
    _write(payload, args.docs)
    return payload


def _write(payload: dict[str, Any], docs: str | None) -> None:
    """Print the two tables of ``payload`` and, with ``docs``, write them as its section."""
    kl_rows, seg_rows = summarise(payload["runs"])
    print_table("own ODE against the jumps: KL (empty bins as half a sample) and error at t = 1", kl_rows)
    print_table("jump error per segment, against the own ODE from the same point (move: |y_b - y_a|^2)", seg_rows)
    if not docs:
        return
    n, seeds = payload["args"]["n"], payload["args"]["seeds"]
    md = (
        "### Each map against its own velocity's flow\n\n"
        "`python -m bench.own_ode` (`--device cuda` on a GPU): every shipped checkerboard model's own "
        "probability-flow ODE (dopri5 on v_{t,t}, rtol 1e-5, atol 1e-6) from the same noise as its jumps. "
        "First table: the paper's KL (empty bins as half a sample) of the ODE's samples and of N uniform "
        "jumps, the mean squared distance at t = 1 between the N-jump sample and the ODE's, and the share of "
        "samples that the N-jump sample puts on the other side of a square's edge than the ODE does. Second "
        "table: one jump X_{a,b} from the ODE's state at a against the ODE's state at b, per segment, with "
        "the mean squared length of the move for scale. The flow-matching model (fm) never trained a jump: "
        "only its ODE is shown. "
        f"{n:,} samples per noise seed (seeds {', '.join(map(str, seeds))}), mean ± sd over the seeds.\n\n"
        + machine_line(payload["machine"])
        + "\n\n"
        + md_table(kl_rows)
        + "\n\n"
        + md_table(seg_rows)
        + "\n"
    )
    update_docs(Path(docs), NAME, md)


if __name__ == "__main__":
    main()
