"""Soak test of the app: visitors arrive in waves, train, evaluate and leave; their memory must come back.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Launches ``python app.py`` as its own process on loopback (bench/load_test.py's ``launch``) with
a short idle time (FLOWMAPS_IDLE_SECONDS) and heartbeat (GRADIO_HEARTBEAT_INTERVAL), then sends
``--waves`` waves of ``--per-wave`` gradio_client visitors. Each visitor, in its own thread:

- trains a fresh model of its own (``/train_start``: its own data set and seed, a few steps);
- evaluates it: ``/quality`` (the steps-against-quality curves of its session's model, cached
  under the session's token) for visitors 0, 5, 10 ... of each wave, ``/trajectories``
  (flow-map jumps and ODE paths) for the others;
- leaves: even visitors close their client (as a closed tab: the heartbeat stops and the page's
  unload event frees the session), odd ones just stop sending requests (the session's state
  outlives its time to live and gradio's delete callback frees it). A visitor that closes its
  tab may be freed as idle first, when it waited longer than the idle time for its wave.

The next wave arrives once the previous one has left. The server's resident memory (RSS, from
/proc) is read after the first wave has arrived (trained and evaluated), after each departure,
and once every session is freed (the server logs one line per freed session). Checked: every
visitor's run ends "done" on its own data set; no two visitors see the same quality numbers or
trajectories (they all train different models, so equal numbers would be another session's
cached result); every session is freed once; the final RSS is within ``--rss-margin`` MB of the
first wave's.

Usage::

    python -m bench.soak_test [--waves 4] [--per-wave 10] [--docs docs/reliability.md]

With ``--docs`` the figures replace the section between ``<!-- soak-test:begin -->`` and
``<!-- soak-test:end -->`` of that file.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

LSD = "LSD (Lagrangian)"
DATA = ("checkerboard", "two_moons", "rings", "spirals", "swiss_roll", "pinwheel", "eight_gaussians")
BEGIN, END = "<!-- soak-test:begin -->", "<!-- soak-test:end -->"
FREED = re.compile(r"session \d+ freed \((tab closed|idle)\)")


def _load_test():
    from bench import load_test

    return load_test


@dataclass
class Settings:
    """What each visitor trains, and the server's shortened times."""

    steps: int = 20
    batch: int = 256
    width: int = 256
    depth: int = 3
    samples: int = 500  # per point of the quality curves
    idle_seconds: float = 20.0  # longer than a loaded machine keeps a visitor between its calls
    heartbeat_seconds: float = 1.0


@dataclass
class Visitor:
    index: int
    wave: int
    data: str
    seed: int
    closes_tab: bool
    quality: bool
    status: str = ""
    table: str = ""
    metrics: tuple[str, ...] = ()
    trajectories: str = ""
    seconds: tuple[float, float, float] = (0.0, 0.0, 0.0)  # connect, train, evaluate (wall, with queueing)
    error: str = ""
    client: Any = field(default=None, repr=False)


def metric_column(table: str) -> tuple[str, ...]:
    """The metric column of the quality table (the timings vary from run to run; the metrics do not)."""
    rows = [r.split("|") for r in table.splitlines() if r.startswith("| this session")]
    return tuple(r[4].strip() for r in rows if len(r) > 4)


def _visit(url: str, v: Visitor, s: Settings) -> None:
    from gradio_client import Client

    try:
        t0 = time.perf_counter()
        v.client = Client(url, verbose=False)
        t1 = time.perf_counter()
        args = (v.data, None, None, LSD, s.steps, s.batch, 3e-3, 0.75, s.width, s.depth, v.seed)
        out = v.client.predict(*args, api_name="/train_start")
        v.status = out[3]
        t2 = time.perf_counter()
        if v.quality:
            _plot, v.table, _summary, msg = v.client.predict("__session__", s.samples, api_name="/quality")
            if msg:  # an input refused: the page keeps its last plot and says why here
                raise RuntimeError(msg)
            v.metrics = metric_column(v.table)
        else:
            fig, _info, _err = v.client.predict("__session__", "uniform", 4, "", 8, 0, api_name="/trajectories")
            v.trajectories = fig["plot"]
        v.seconds = (t1 - t0, t2 - t1, time.perf_counter() - t2)
    except Exception as err:  # reported, and the test fails on it
        v.error = f"{type(err).__name__}: {str(err)[:300]}"


def _leave(v: Visitor) -> None:
    if v.closes_tab and v.client is not None:
        v.client.close()  # the heartbeat stops: gradio runs the page's unload event


def freed_sessions(server) -> dict[str, int]:
    counts = {"tab closed": 0, "idle": 0}
    for why in FREED.findall(server.log_text()):
        counts[why] += 1
    return counts


def run_soak(server, waves: int = 4, per_wave: int = 10, settings: Settings | None = None) -> dict[str, Any]:
    """Send the waves of visitors to ``server``; return the visitors and the memory figures."""
    s = settings or Settings()
    visitors: list[Visitor] = []
    rss: dict[str, float] = {"start": server.memory_mb()[0]}
    times: dict[str, float] = {"start": 0.0}
    t0 = time.perf_counter()
    for w in range(waves):
        wave = [
            Visitor(
                index=w * per_wave + i,
                wave=w,
                data=DATA[(w * per_wave + i) % len(DATA)],
                seed=1000 + w * per_wave + i,
                closes_tab=i % 2 == 0,
                quality=i % 5 == 0,
            )
            for i in range(per_wave)
        ]
        threads = [threading.Thread(target=_visit, args=(server.url, v, s), daemon=True) for v in wave]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
        rss[f"wave {w + 1} arrived"] = server.memory_mb()[0]
        times[f"wave {w + 1} arrived"] = time.perf_counter() - t0
        for v in wave:
            _leave(v)
        visitors += wave
    # Every session must be freed: the closed tabs within a few heartbeats, the idle ones once
    # their time to live has passed (gradio sweeps expired state every second).
    deadline = time.perf_counter() + s.idle_seconds + 20 * s.heartbeat_seconds + 15
    while time.perf_counter() < deadline and sum(freed_sessions(server).values()) < len(visitors):
        time.sleep(0.5)
    time.sleep(2.0)  # the app's memory trim runs a second after the last departure
    rss["all left"] = server.memory_mb()[0]
    wall = times["all left"] = time.perf_counter() - t0
    for v in visitors:  # the idle visitors' clients (their heartbeats) end only now
        if v.client is not None and not v.closes_tab:
            v.client.close()
    return {
        "visitors": visitors,
        "waves": waves,
        "per_wave": per_wave,
        "settings": s,
        "rss": rss,
        "times": times,
        "rss_peak_mb": server.memory_mb()[1],
        "freed": freed_sessions(server),
        "wall_s": wall,
    }


def check(result: dict[str, Any], rss_margin_mb: float = 100.0) -> list[str]:
    """What went wrong (empty when all is well); see the module docstring."""
    problems = []
    visitors: list[Visitor] = result["visitors"]
    s: Settings = result["settings"]
    for v in visitors:
        if v.error:
            problems.append(f"visitor {v.index}: {v.error}")
            continue
        if "**done**" not in v.status or v.data not in v.status or f"step {s.steps}" not in v.status:
            problems.append(f"visitor {v.index} ({v.data}) saw {v.status.splitlines()[0] if v.status else v.status!r}")
        if v.quality and not v.metrics:
            problems.append(f"visitor {v.index}: no quality numbers for this session in {v.table[:200]!r}")
        if not v.quality and not v.trajectories:
            problems.append(f"visitor {v.index}: no trajectories")
    seen: dict[Any, int] = {}
    for v in visitors:
        result_seen = v.metrics if v.quality else v.trajectories
        if result_seen and result_seen in seen:
            what = "quality numbers" if v.quality else "trajectories"
            problems.append(f"visitor {v.index} saw the same {what} as visitor {seen[result_seen]}")
        seen.setdefault(result_seen, v.index)
    freed = result["freed"]
    idle = sum(1 for v in visitors if not v.closes_tab)
    total = freed["tab closed"] + freed["idle"]
    if total != len(visitors) or freed["idle"] < idle or freed["tab closed"] < 1:
        problems.append(
            f"sessions freed: {total} of {len(visitors)} ({freed['tab closed']} on a closed tab, "
            f"{freed['idle']} idle; {idle} visitors went idle without closing)"
        )
    rss = result["rss"]
    first, last = rss["wave 1 arrived"], rss["all left"]
    if not last <= first + rss_margin_mb:
        problems.append(f"RSS after everyone left is {last:.0f} MB, above {first:.0f} + {rss_margin_mb:.0f} MB")
    return problems


def report(result: dict[str, Any], rss_margin_mb: float = 100.0) -> str:
    """A Markdown summary of one soak run."""
    s: Settings = result["settings"]
    rss = result["rss"]
    n = len(result["visitors"])
    lines = [
        f"Soak test: {n} gradio_client visitors in {result['waves']} waves of {result['per_wave']} against "
        f"`python app.py` on loopback, on {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"{result['wall_s']:.0f} s wall. Each trains its own model ({s.steps} steps, MLP {s.width} x {s.depth}, "
        f"batch {s.batch}), evaluates it (`/quality` at {s.samples} samples per point for "
        f"{sum(v.quality for v in result['visitors'])} of them, `/trajectories` for the others) and leaves: "
        f"half close their tab (client closed), half go idle (idle time {s.idle_seconds:g} s, heartbeat "
        f"{s.heartbeat_seconds:g} s).",
        "",
        "| moment | time (s) | server RSS (MB) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {result['times'].get(k, 0.0):.0f} | {v:.0f} |" for k, v in rss.items()]
    lines.append(f"| peak | | {result['rss_peak_mb']:.0f} |")
    freed = result["freed"]
    lines += [
        "",
        f"Sessions freed: {freed['tab closed']} on a closed tab, {freed['idle']} after the idle time. "
        f"RSS after everyone left minus RSS after the first wave arrived: "
        f"{rss['all left'] - rss['wave 1 arrived']:+.0f} MB (the bound is +{rss_margin_mb:.0f} MB).",
    ]
    problems = check(result, rss_margin_mb)
    lines += [
        "",
        "Result: "
        + (
            "every visitor saw only its own results and every session was freed."
            if not problems
            else "; ".join(problems)
        ),
    ]
    return "\n".join(lines)


def launch(settings: Settings | None = None):
    """``python app.py`` with the shortened idle time and heartbeat of ``settings``."""
    s = settings or Settings()
    env = {
        "FLOWMAPS_IDLE_SECONDS": str(s.idle_seconds),
        "GRADIO_HEARTBEAT_INTERVAL": str(s.heartbeat_seconds),
        "FLOWMAPS_LOG_LEVEL": "INFO",
    }
    return _load_test().launch(train_concurrency=2, env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--waves", type=int, default=4)
    ap.add_argument("--per-wave", type=int, default=10)
    ap.add_argument("--width", type=int, default=Settings.width)
    ap.add_argument("--idle-seconds", type=float, default=Settings.idle_seconds)
    ap.add_argument("--rss-margin", type=float, default=100.0, help="MB")
    ap.add_argument("--docs", type=Path, default=None, help="write the figures into this Markdown file")
    args = ap.parse_args(argv)
    s = Settings(width=args.width, idle_seconds=args.idle_seconds)
    server = launch(s)
    try:
        result = run_soak(server, args.waves, args.per_wave, s)
    finally:
        server.close()
    text = report(result, args.rss_margin)
    print(text)
    if args.docs is not None:
        cmd = f"python -m bench.soak_test --waves {args.waves} --per-wave {args.per_wave} --docs {args.docs}"
        body = f"{BEGIN}\n{text}\n\nReproduce: `{cmd}`\n{END}"
        old = args.docs.read_text() if args.docs.is_file() else ""
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + body + old[old.index(END) + len(END) :]
        else:
            new = old + ("\n" if old else "") + body + "\n"
        args.docs.write_text(new)
    return 0 if not check(result, args.rss_margin) else 1


if __name__ == "__main__":
    sys.exit(main())
