"""``flowmaps evaluate``: sample-quality metrics of a checkpoint at several step counts, over seeds.

Time convention: t = 0 is noise, t = 1 is data. The metrics are those of
:func:`flowmaps.evaluation.evaluate_model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flowmaps.cli.options import (
    grid_spec,
    output_file_problem,
    positive_int,
    print_error,
    seed_list,
    seed_type,
    step_list,
)
from flowmaps.cli.sample import device_or_exit, load_or_report
from flowmaps.evaluation import (
    KL_CONVENTION,
    aggregate_seeds,
    evaluate_model,
    grids_for,
    inf_notes,
    pm_table,
    sample_shape,
)
from flowmaps.utils import text_table

DEFAULT_EVAL_STEPS = (1, 2, 4, 8, 16)


def add_parser(sub: Any) -> None:
    """The ``evaluate`` sub-command's options."""
    ev = sub.add_parser("evaluate", help="print sample-quality metrics at several step counts")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub id owner/name")
    ev.add_argument("--n", type=positive_int, default=None, help="samples (default 64000 2-D, 10000 images)")
    ev.add_argument("--steps", type=step_list, default=list(DEFAULT_EVAL_STEPS), help="e.g. 1,2,4,8,16")
    ev.add_argument("--grid", type=grid_spec, default="uniform", help="uniform, edm or cosine (or explicit times)")
    ev.add_argument("--seed", type=seed_type, default=0, help="noise seed (one run)")
    ev.add_argument(
        "--seeds",
        type=seed_list,
        default=None,
        help="several noise seeds, e.g. 0,1,2: the table shows mean ± sd over them (replaces --seed)",
    )
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", default=None, help="also write the table as JSON to this file")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate on each grid and seed, print the table (mean ± sd over several seeds); returns the exit status."""
    from tqdm.auto import tqdm

    if args.json and (problem := output_file_problem(args.json, "--json")):
        return print_error(problem, "evaluate")
    device = device_or_exit(args.device)
    loaded = load_or_report(args.checkpoint, device, "evaluate")
    if loaded is None:
        return 2
    model, config = loaded
    images = len(sample_shape(config)) > 1
    n = args.n if args.n is not None else (10_000 if images else 64_000)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    grids = grids_for(args.grid, args.steps)
    bar = tqdm(total=len(seeds) * len(grids), desc="evaluate", disable=args.no_progress, dynamic_ncols=True)
    runs = []
    try:
        for seed in seeds:

            def done(row: dict[str, Any], seed: int = seed) -> None:
                bar.set_postfix_str(f"seed {seed}, N = {row['N']} done", refresh=False)
                bar.update(1)

            runs.append(evaluate_model(model, config, n, grids, seed=seed, device=device, on_row=done))
    finally:
        bar.close()
    head = f"{args.checkpoint}: data {config.get('data', '?')}, method {config.get('method', '?')}, n = {n}"
    if len(seeds) > 1:
        rows = aggregate_seeds(runs)
        print(f"{head}, mean ± sd over noise seeds {','.join(map(str, seeds))}")
        print(pm_table(rows))
    else:
        rows = runs[0]
        print(f"{head}, noise seed {seeds[0]}")
        print(text_table(rows, skip=("grid",)))
    if config.get("data") == "checkerboard":
        print(KL_CONVENTION)
        for line in inf_notes(rows, n):
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
