"""The "Steps vs quality" tab on a cold cache: how long its two buttons take, and where the time goes.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Builds the app's callbacks on the shipped checkpoints with an empty, throw-away cache folder (as
on a fresh clone) and measures, in this process:

1. **breakdown** (``--breakdown``): one shipped model (``--model``, default ``checkerboard-lsd``),
   point by point: its NFE, the seconds of the run that gives its metric (everything but the timed
   runs), the seconds of its timed runs (read through the ``clock`` that
   :func:`app.quality.evaluate` takes) and the wall time the plot shows for it;
2. **Evaluate this model**: seconds of the ``/quality`` callback on that model, first call;
3. **Compare the shipped checkerboard models**: seconds of the ``/quality_shipped`` callback, first
   call.

Each at ``--samples`` samples per point (the tab's default is 3000). Prints a Markdown table and the
load average before and after; writes the table to ``bench/out/quality_cold.md``.

Usage::

    OMP_NUM_THREADS=1 python -m bench.quality_cold [--samples 3000] [--breakdown] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


class _Clock:
    """``time.perf_counter`` that adds up the seconds between pairs of reads (the timed runs)."""

    def __init__(self) -> None:
        self.reads = 0
        self.timed = 0.0
        self._start = 0.0

    def __call__(self) -> float:
        now = time.perf_counter()
        if self.reads % 2:
            self.timed += now - self._start
        else:
            self._start = now
        self.reads += 1
        return now


def breakdown(model_name: str, n: int) -> list[str]:
    """One Markdown row per evaluated point of ``model_name``: sampler, NFE, metric-run and timed seconds."""
    from app import quality as ql
    from app.datasets import toy_source
    from flowmaps.hub import from_pretrained

    model, _ = from_pretrained(ROOT / "checkpoints" / model_name)
    model.requires_grad_(False)
    clock = _Clock()
    rows = [
        "| sampler | NFE | metric run, s | timed runs, s | plotted wall time, ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    seen = 0
    totals = [0.0, 0.0]
    t0 = time.perf_counter()
    timed0 = 0.0
    for res in ql.evaluate(model, toy_source("checkerboard"), model_name, n=n, clock=clock):
        points = [(c.sampler, nfe, ms) for c in res.curves for nfe, ms in zip(c.nfe, c.ms)]
        now = time.perf_counter()
        wall, timed = now - t0, clock.timed - timed0
        for sampler, nfe, ms in points[seen:]:
            rows.append(f"| {sampler} | {nfe} | {wall - timed:.2f} | {timed:.2f} | {ms:.1f} |")
            totals[0] += wall - timed
            totals[1] += timed
        seen = len(points)
        t0, timed0 = time.perf_counter(), clock.timed
    rows.append(f"| **total** | | **{totals[0]:.1f}** | **{totals[1]:.1f}** | |")
    return rows


def cold_seconds(n: int, model_name: str) -> tuple[float, float]:
    """(seconds of the first /quality call on ``model_name``, of the first /quality_shipped call)."""
    from app.config import AppConfig
    from app.live import LiveSession
    from app.ui import FlowMapsApp

    with tempfile.TemporaryDirectory() as cache:
        fm = FlowMapsApp(AppConfig(checkpoints_dir=ROOT / "checkpoints", cache_dir=Path(cache)))
        for name in fm.checkerboard_models():
            fm.store.load(name)  # loading the weights is not what is measured
        t0 = time.perf_counter()
        for _ in fm.quality(LiveSession(), model_name, n):
            pass
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in fm.quality_shipped(n):
            pass
        return one, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=3000, help="samples per point (the tab's default: 3000)")
    p.add_argument("--model", default="checkerboard-lsd", help="the shipped model of the breakdown and of /quality")
    p.add_argument("--breakdown", action="store_true", help="also time each point of --model")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    import torch

    torch.set_num_threads(max(1, args.threads))
    lines = [f"load average before: {os.getloadavg()[0]:.2f}; torch threads: {torch.get_num_threads()}", ""]
    if args.breakdown:
        lines += [f"Breakdown of {args.model}, {args.samples} samples per point:", ""]
        lines += breakdown(args.model, args.samples) + [""]
    print("\n".join(lines), flush=True)
    shown = len(lines)
    one, shipped = cold_seconds(args.samples, args.model)
    lines += [
        "| button, cold cache | samples per point | seconds |",
        "| --- | --- | --- |",
        f"| Evaluate this model ({args.model}) | {args.samples} | {one:.1f} |",
        f"| Compare the shipped checkerboard models | {args.samples} | {shipped:.1f} |",
        "",
        f"load average after: {os.getloadavg()[0]:.2f}",
    ]
    text = "\n".join(lines)
    print("\n".join(lines[shown:]))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_cold.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
