"""CPU that the app's server spends with no visitor: gradio's own idle polling, and the app's setting.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data (nothing here samples).

Builds the page as ``python app.py`` does (without the warm-up thread), launches it in this process,
waits ``--settle`` seconds, then reads this process's CPU time (every thread) over ``--seconds`` with
no browser connected, once per setting of the queue's two idle sleeps:

- ``gradio``: gradio's own (a poll for new events every 1 ms, for progress every 10 ms, off Windows);
- ``app``: what :func:`app.ui.slow_idle_polling` makes of them, as ``python app.py`` calls it.

The settings alternate over ``--repeats`` rounds, so a change of load on the machine hits both.
Prints a Markdown table (CPU as a percentage of one core, mean ± sd over the rounds) and writes
bench/results/idle_cpu.json and the "idle_cpu" section of docs/app_latency.md.

Usage::

    python -m bench.idle_cpu [--seconds 20] [--repeats 3]
    python -m bench.idle_cpu --quick      # a smoke run: 2 s per setting, one round, nothing written
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench.common import machine_info, machine_line, md_table, print_table, update_docs, write_json
from flowmaps.metrics import mean_sd

HERE = Path(__file__).resolve().parent
#: gradio's idle sleeps off Windows (gradio.queueing.Queue.__init__), seconds.
GRADIO_SLEEPS = {"sleep_when_free": 0.001, "progress_update_sleep_when_free": 0.01}


def idle_share(seconds: float) -> float:
    """This process's CPU time over ``seconds`` of wall time, as a fraction of one core."""
    c0, t0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per setting and round")
    p.add_argument("--settle", type=float, default=10.0, help="seconds after launch before measuring")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the two settings")
    p.add_argument("--port", type=int, default=7898)
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--docs", default=str(HERE.parent / "docs" / "app_latency.md"))
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s per setting, one round, nothing written")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.settle, args.repeats, args.results, args.docs = 2.0, 1.0, 1, None, None

    from app.ui import build_app, slow_idle_polling

    demo = build_app(warm=False)
    demo.launch(server_port=args.port, prevent_thread_lock=True, quiet=True)
    queue = demo._queue

    def gradios_own() -> None:
        for attr, value in GRADIO_SLEEPS.items():
            setattr(queue, attr, value)

    def the_apps() -> None:  # from gradio's own, as build_app does
        gradios_own()
        slow_idle_polling(demo)

    settings = {"gradio": gradios_own, "app": the_apps}
    shares: dict[str, list[float]] = {name: [] for name in settings}
    in_effect: dict[str, list[float]] = {}  # the sleeps each setting left on the queue, seconds
    try:
        time.sleep(args.settle)
        for _ in range(args.repeats):
            for name, apply in settings.items():
                apply()
                in_effect[name] = [getattr(queue, attr) for attr in GRADIO_SLEEPS]
                time.sleep(0.5)  # let the loops take up the new sleeps
                shares[name].append(100.0 * idle_share(args.seconds))
    finally:
        demo.close()
    rows = []
    for name in settings:
        mean, sd = mean_sd(shares[name])
        polls = ", ".join(f"{1000 * v:g} ms" for v in in_effect[name])
        rows.append(
            {
                "setting": name,
                "idle sleeps (event, progress)": polls,
                "CPU, % of one core": f"{mean:.1f} ± {sd:.1f}",
                "rounds": ", ".join(f"{v:.1f}" for v in shares[name]),
            }
        )
    print_table("idle server CPU", rows)
    info = machine_info("cpu")
    if args.results:
        write_json(Path(args.results), "idle_cpu", {"machine": info, "args": vars(args), "shares": shares})
    if args.docs:
        update_docs(
            Path(args.docs),
            "idle_cpu",
            "## The idle server\n\n"
            "`python -m bench.idle_cpu`: the page built as `python app.py` builds it, launched with no "
            f"browser connected; its process's CPU time over {args.seconds:g} s per setting, "
            f"{args.repeats} alternating rounds (mean ± sd, each round in the last column).\n\n"
            + machine_line(info)
            + "\n\n"
            + md_table(rows)
            + "\n",
        )
    return {"shares": shares}


if __name__ == "__main__":
    main()
