"""Rewrite the model cards of trained checkerboard models from the scores file of the run that made them.

    python -m bench.probes.recard SCORES.json FOLDER [FOLDER ...]

A card is written by bench/families.py when it scores its models; this writes it again, from the
same per-noise-seed scores, machine record and arguments (the run's ``scores.json``), after the
card's wording changed, or for a family whose last stage ran on its own (``--methods lsd``). Nothing
is re-scored: each FOLDER (a checkerboard-<method> folder) takes the scores of its own method. A
stage chain recorded before ``stage_off_times`` existed gets it filled in: every stage "uniform" but
the last, which takes the run's off-diagonal sampler for that method."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.families import METHODS, rewrite_card


def recard(scores_file: Path, folder: Path) -> None:
    from flowmaps.hub import from_pretrained

    run = json.loads(scores_file.read_text())
    method = folder.name.removeprefix("checkerboard-")
    if method not in run["scores"]:
        raise SystemExit(f"{scores_file} has no scores for {method!r} (it has {sorted(run['scores'])})")
    a = run["args"]
    # the card names the families trained on the same budget: all of them, also for a run of one
    args = argparse.Namespace(**{**a, "methods": list(METHODS)})
    model, config = from_pretrained(folder, device="cpu")
    train = config.setdefault("training", {})
    if "stage_off_times" not in train and method != "fm":  # fm has no off-diagonal sampler
        last = (a.get("off_times_for") or {}).get(method, a.get("off_times", "uniform"))
        train["stage_off_times"] = ["uniform"] * (len(train["stages"]) - 1) + [last]
    rewrite_card(folder, model, config, method, run["scores"][method], args, run["machine"])
    print(f"{folder}: card rewritten")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scores", type=Path)
    p.add_argument("folders", type=Path, nargs="+")
    ns = p.parse_args()
    for f in ns.folders:
        recard(ns.scores, f)
