"""The app's "Race the families" view without a browser: one race through its handler, timed.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Runs app/race.py's :class:`RaceHandlers` as the page does (the race defaults: 64 x 4 MLP, batch
512, lr 1e-2 decaying linearly to 0, eta 0.5, round robin in chunks of 20 steps on one thread) and
prints the final table, the winner sentence, the wall time, how many table refreshes the page
would have drawn, and the load average before and after. The app caps a race at
``FLOWMAPS_LIVE_SECONDS`` (120 s); here the cap is ``--cap``.

Usage::

    python -m bench.race_cpu                                  # checkerboard, 1,500 steps each
    python -m bench.race_cpu --data eight_gaussians --steps 3000
    python -m bench.race_cpu --quick                          # smoke run
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch

from app.config import Limits
from app.live import LiveSession
from app.race import RACE_DATA, RACE_LABELS
from app.sessions import Sessions
from app.tabs.race import RaceHandlers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="checkerboard", choices=RACE_DATA)
    ap.add_argument("--steps", type=int, default=1500, help="training steps per family")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(RACE_LABELS.values()), help="comma-separated labels")
    ap.add_argument("--cap", type=float, default=600.0, help="wall-time cap of the race in seconds")
    ap.add_argument("--quick", action="store_true", help="100 steps: a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the race is one thread of work, as in the app
    steps = 100 if args.quick else args.steps
    handlers = RaceHandlers(Limits(live_seconds=args.cap, session_seconds=args.cap + 60), Sessions(4, 60.0))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    refreshes = 0
    outs = handlers.start(LiveSession(), args.data, args.families.split(","), steps, args.seed)
    last = None
    for last in outs:  # noqa: B007 - the last update is the race's result
        refreshes += 1
    _fig, table, sentence, _bar = last
    wall = time.perf_counter() - t0
    print(table)
    print()
    print(sentence)
    print(
        f"\n{args.data}, {steps} steps per family, seed {args.seed}: {wall:.1f} s wall, {refreshes} updates, "
        f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
