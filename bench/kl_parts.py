"""Where each checkerboard model's KL comes from: mass off the squares, and the shape at their edges and inside.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

For every shipped ``checkerboard-<method>`` flow map, N-step samples on the uniform time grid
(64,000 per noise seed, the paper's estimator with empty bins counted as half a sample) are split
by :func:`flowmaps.metrics.checkerboard_kl_parts` into

    KL = off target (-log of the mass on the squares) + edge bins + interior bins,

the last two the shape of the samples on the squares (edge bins: those with a neighbour off the
squares or off the grid). Exact samples on the same seeds are the first row: what the estimator
gives a perfect sampler. A positive edge excess with a negative interior one is a map that rounds
or blurs the squares' edges; an off-target excess is mass thrown between the squares.

Usage::

    python -m bench.kl_parts                       # the shipped models, N = 1, 2, 4, seeds 0-2
    python -m bench.kl_parts --steps 1 2 4 8 16 --checkpoints <folder>
    python -m bench.kl_parts --quick               # a smoke run: 4,000 samples, N = 1, nothing written
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from bench.common import machine_info, machine_line, md_table, print_table, update_docs, write_json
from flowmaps.metrics import checkerboard_kl_parts, mean_sd

NAME = "kl_parts"
HERE = Path(__file__).resolve().parent
PARTS = ("kl", "off_target", "edge", "interior")


def _row(label: str, steps: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": label, "N": steps}
    for key in PARTS:
        m, sd = mean_sd([r[key] for r in runs])
        row[key.replace("_", " ")] = f"{m:.4f} ± {sd:.4f}"
    m, _ = mean_sd([r["mass_off_target"] for r in runs])
    row["mass off target"] = f"{m:.2%}"
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default=str(HERE.parent / "checkpoints"), help="folder of checkerboard-<method>")
    p.add_argument("--methods", nargs="+", default=["lsd", "esd", "psd-m", "psd-u"])
    p.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4], help="numbers of uniform jumps N")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="noise seeds")
    p.add_argument("--n", type=int, default=64_000, help="samples per seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--docs", default=str(HERE.parent / "docs" / "benchmarks.md"))
    p.add_argument("--quick", action="store_true", help="smoke run: 4,000 samples, N = 1, two seeds, nothing written")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.seeds, args.results, args.docs = 4000, [1], [0, 1], None, None
    torch.set_num_threads(max(1, args.threads))

    from flowmaps.data.toy import sample_toy
    from flowmaps.hub import from_pretrained
    from flowmaps.sampling import flowmap_sample, make_grid

    exact = [
        checkerboard_kl_parts(sample_toy("checkerboard", args.n, torch.Generator().manual_seed(s), dtype=torch.float64))
        for s in args.seeds
    ]
    rows, raw = [_row("exact samples", "-", exact)], {"exact": exact}
    for method in args.methods:
        folder = Path(args.checkpoints) / f"checkerboard-{method}"
        if not folder.is_dir():
            print(f"{method}: no checkpoint at {folder}; skipped", flush=True)
            continue
        model, config = from_pretrained(folder)
        steps_trained = config.get("training", {}).get("steps")
        for k in args.steps:
            runs = []
            for seed in args.seeds:
                x0 = model.sigma * torch.randn(args.n, 2, generator=torch.Generator().manual_seed(seed))
                with torch.no_grad():
                    x = flowmap_sample(model, x0, make_grid("uniform", k)).x
                runs.append(checkerboard_kl_parts(x))
            raw[f"{method}/N={k}"] = runs
            rows.append(_row(f"{method} ({steps_trained:,} steps)" if steps_trained else method, str(k), runs))
    print_table("checkerboard KL in parts (mean ± sd over noise seeds; empty bins as half a sample)", rows)
    info = machine_info("cpu")
    payload = {"name": NAME, "machine": info, "args": {"steps": args.steps, "seeds": args.seeds, "n": args.n}}
    payload["parts"] = raw
    write_json(Path(args.results) if args.results else None, NAME, payload)
    if args.docs:
        md = (
            "### Where the KL comes from: off the squares, their edges, their insides\n\n"
            f"`python -m bench.kl_parts`: the shipped checkerboard flow maps at N = {', '.join(map(str, args.steps))} "
            f"uniform jumps, {args.n:,} samples per noise seed (seeds {', '.join(map(str, args.seeds))}), the "
            "paper's estimator with empty bins counted as half a sample, split by "
            "`flowmaps.metrics.checkerboard_kl_parts` into off target (-log of the mass on the squares), edge bins "
            "(a neighbour off the squares or off the grid) and interior bins; the three add up to the KL. "
            "Mean ± sd over the seeds.\n\n" + machine_line(info) + "\n\n" + md_table(rows) + "\n"
        )
        update_docs(Path(args.docs), NAME, md)
    return payload


if __name__ == "__main__":
    main()
