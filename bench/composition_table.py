"""Markdown table of bench/composition.py results: mean and spread (min-max) over seeds per variant.

python -m bench.composition_table runs/composition.jsonl [--weights ema|raw]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

NS = (1, 2, 4, 8, 16)


def cell(values: list[float]) -> str:
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.4f}"
    return f"{m:.4f} ({min(values):.4f}-{max(values):.4f})"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--weights", default="ema", choices=("ema", "raw"))
    args = ap.parse_args(argv)
    rows = defaultdict(list)
    for path in args.files:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                rows[r["variant"]].append(r)
    head = ["variant", "seeds", "steps"] + [f"N = {n}" for n in NS] + ["ODE (RK4 64)", "X_{0,1/2}", "X_{1/2,1}"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + " |")
    for name, rs in rows.items():
        e = [r[args.weights] for r in rs]
        cells = [name, ",".join(str(r["seed"]) for r in rs), str(rs[0]["steps"])]
        cells += [cell([x[f"N{n}"] for x in e]) for n in NS]
        cells += [cell([x["ode"] for x in e]), cell([x["local2"][0] for x in e]), cell([x["local2"][1] for x in e])]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
