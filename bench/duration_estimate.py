"""How right is the duration estimate that ``flowmaps train`` prints? One real run, every step timed.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Runs ``flowmaps train`` with the given options and records when each step ends (the times the
estimate itself sees). Replays them through the estimate (:class:`flowmaps.cli.pace.StepClock`)
and through the earlier one (the mean pace of steps 3-22 alone), and compares each line with the
real pace of the steps that were left when it was printed. It also records the
progress bar's rate, to compare the bar's time left with the line's. Prints one JSON object;
writes nothing else (the checkpoint goes to a temporary folder).

Usage::

    python -m bench.duration_estimate --data checkerboard --preset quick --steps 1500
    python -m bench.duration_estimate --data checkerboard --steps 400        # the defaults
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from typing import Any

import tqdm.auto

import flowmaps.cli.train_run as train_run
from flowmaps.cli import main as flowmaps_main
from flowmaps.cli.pace import StepClock


def _replay(stamps: list[tuple[int, float]], start: int, steps: int) -> list[tuple[int, float]]:
    """(step, ms per step) of each line the estimate prints for these step end times."""
    now = [stamps[0][1]]
    clock = StepClock(start, steps, None, clock=lambda: now[0])
    lines = []
    for step, t in stamps:
        now[0] = t
        if (line := clock.tick(step)) is not None:
            lines.append((step, float(re.search(r"([\d.]+) ms per step", line).group(1))))
    return lines


def measure(argv: list[str]) -> dict[str, Any]:
    """Train with ``flowmaps train`` options ``argv``; the estimates against the real pace."""
    stamps: list[tuple[int, float]] = []
    bar_rates: list[tuple[int, float]] = []
    real_tick = train_run.StepClock.tick

    def tick(self: StepClock, step: int) -> str | None:
        stamps.append((step, time.perf_counter()))
        return real_tick(self, step)

    class Bar(tqdm.auto.tqdm):  # records the bar's smoothed rate at each refresh
        def update(self, n: float = 1) -> bool | None:
            out = super().update(n)
            rate = self.format_dict.get("rate")
            if rate:
                bar_rates.append((int(self.n), float(rate)))
            return out

    train_run.StepClock.tick, tqdm_class = tick, tqdm.auto.tqdm
    tqdm.auto.tqdm = Bar
    try:
        with tempfile.TemporaryDirectory() as out:
            status = flowmaps_main(["train", *argv, "--eval-n", "0", "--out", out])
    finally:
        train_run.StepClock.tick, tqdm.auto.tqdm = real_tick, tqdm_class
    if status != 0 or len(stamps) < 3:
        raise SystemExit(f"train exited with status {status} after {len(stamps)} steps")
    steps, end = stamps[-1]
    when = dict(stamps)

    def rest(step: int) -> float:  # the real pace of the steps left after `step`, ms
        return 1000 * (end - when[step]) / (steps - step)

    def bar_ms(step: int) -> float | None:
        rates = [r for n, r in bar_rates if n <= step]
        return round(1000 / rates[-1], 1) if rates else None

    old = 1000 * (when[22] - when[2]) / 20 if 22 < steps else None
    lines = _replay(stamps, stamps[0][0] - 1, steps)
    return {
        "command": "python -m bench.duration_estimate " + " ".join(argv),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": round(os.getloadavg()[0], 2),
        "real_ms_after_warmup": round(1000 * (end - when[2]) / (steps - 2), 2),
        "old_estimate": {"step": 22, "ms": round(old, 1), "rest_ms": round(rest(22), 1)} if old else None,
        "estimates": [{"step": s, "ms": ms, "rest_ms": round(rest(s), 1), "bar_ms": bar_ms(s)} for s, ms in lines],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print the JSON object and return it."""
    result = measure(sys.argv[1:] if argv is None else argv)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
