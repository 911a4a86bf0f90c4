"""Load test of the app: many simultaneous users, each training, stopping and sampling.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Launches ``python app.py`` as its own process (so its memory is measured alone), then runs
``--clients`` gradio_client users at once, each in a thread:

- two "twin" users train the same data with the same seed and settings for a fixed number of
  steps (to the end): under load their models must come out bit-identical (the same trajectory
  plot), which shows that nothing leaks between sessions;
- every other user trains its own data set and seed with a large step target and presses Stop
  after ``--train-seconds`` of training: its run must end "stopped", and only after its own
  Stop (a Stop in one session leaves the others training);
- then every user samples its session's model (``/trajectories``): the non-twins all differ.

Meanwhile a probe user calls the cheap ``/train_stop`` endpoint (nothing to stop in its own
session) and a plain HTTP GET of the page config, to measure the server's latency under load,
and the server's resident memory is read from /proc (peak = VmHWM). Queued users' positions
are read from ``job.status()``.

Usage::

    python -m bench.load_test [--clients 8] [--train-seconds 2] [--docs docs/reliability.md]

With ``--docs`` the figures replace the section between ``<!-- load-test:begin -->`` and
``<!-- load-test:end -->`` of that file.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

LSD = "LSD (Lagrangian)"
DATA = ("checkerboard", "two_moons", "rings", "spirals", "swiss_roll", "pinwheel", "eight_gaussians")
TWIN_STEPS = 150
BEGIN, END = "<!-- load-test:begin -->", "<!-- load-test:end -->"


# ------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    tmp: tempfile.TemporaryDirectory

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the server process in MB, from /proc (0 where unavailable)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0, 0.0
        vals = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = float(rest.split()[0]) / 1024
        return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)

    def log_text(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        try:
            return (Path(self.tmp.name) / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def launch(
    train_concurrency: int = 2, live_seconds: float = 60.0, timeout: float = 180.0, env: dict[str, str] | None = None
) -> Server:
    """Start ``python app.py`` on a free port with an empty checkpoint folder; wait for HTTP 200.

    ``env`` adds or overrides environment variables of the server (e.g. FLOWMAPS_IDLE_SECONDS)."""
    tmp = tempfile.TemporaryDirectory(prefix="flowmaps-load-")
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "FLOWMAPS_CHECKPOINTS": str(Path(tmp.name) / "checkpoints"),
        "FLOWMAPS_APP_CACHE": str(Path(tmp.name) / "cache"),
        "FLOWMAPS_TRAIN_CONCURRENCY": str(train_concurrency),
        "FLOWMAPS_LIVE_SECONDS": str(live_seconds),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    log = open(Path(tmp.name) / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}: {(Path(tmp.name) / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("the app did not answer in time")
        time.sleep(0.2)
    return Server(proc, url, tmp)


# ------------------------------------------------------------------------------ the users
@dataclass
class User:
    index: int
    data: str
    seed: int
    twin: bool
    steps: int
    ranks: list[int] = field(default_factory=list)  # queue positions seen while waiting
    queued_s: float = 0.0  # submit -> first update
    arrivals: list[float] = field(default_factory=list)  # times of streamed updates
    stop_at: float | None = None  # when this user pressed Stop
    ended_at: float = 0.0
    final_status: str = ""
    trajectory_plot: str = ""
    error: str = ""


def _user(url: str, user: User, train_seconds: float, t0: float) -> None:
    from gradio_client import Client
    from gradio_client.utils import Status

    try:
        client = Client(url, verbose=False)
        args = (user.data, None, None, LSD, user.steps, 64, 3e-3, 0.75, 16, 1, user.seed)
        submitted = time.perf_counter()
        job = client.submit(*args, api_name="/train_start")
        started = None
        while not job.done():
            st = job.status()
            if st.code == Status.IN_QUEUE and st.rank is not None:
                user.ranks.append(int(st.rank))
            n = len(job.outputs())
            while len(user.arrivals) < n:
                user.arrivals.append(time.perf_counter() - t0)
            if started is None and n >= 1:
                started = time.perf_counter()
                user.queued_s = started - submitted
            if not user.twin and started is not None and user.stop_at is None and n >= 2:
                if time.perf_counter() - started >= train_seconds:
                    user.stop_at = time.perf_counter() - t0
                    client.predict(api_name="/train_stop")
            time.sleep(0.05)
        job.result(timeout=120)
        user.ended_at = time.perf_counter() - t0
        n = len(job.outputs())
        while len(user.arrivals) < n:
            user.arrivals.append(user.ended_at)
        user.final_status = job.outputs()[-1][3]
        fig, _info, _err = client.predict("__session__", "uniform", 4, "", 8, 0, api_name="/trajectories")
        user.trajectory_plot = fig["plot"]
    except Exception as err:  # reported, and the test fails on it
        user.error = f"{type(err).__name__}: {err}"


def _probe(url: str, stop: threading.Event, api_ms: list[float], http_ms: list[float]) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    while not stop.is_set():
        t = time.perf_counter()
        answer = client.predict(api_name="/train_stop")
        api_ms.append(1000 * (time.perf_counter() - t))
        assert "nothing is training" in answer, answer
        t = time.perf_counter()
        with urllib.request.urlopen(url + "config", timeout=30) as r:
            r.read()
        http_ms.append(1000 * (time.perf_counter() - t))
        time.sleep(0.1)


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    s = sorted(xs)
    return {
        "n": len(s),
        "p50": statistics.median(s),
        "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "max": s[-1],
    }


def run_load(server: Server, clients: int = 8, train_seconds: float = 2.0) -> dict[str, Any]:
    """Run ``clients`` users at once against ``server``; return the users and the figures."""
    users = []
    for i in range(clients):
        twin = i < 2
        users.append(
            User(
                index=i,
                data="checkerboard" if twin else DATA[(i - 1) % len(DATA)],
                seed=7 if twin else 100 + i,
                twin=twin,
                steps=TWIN_STEPS if twin else 20_000,
            )
        )
    rss_before, _ = server.memory_mb()
    api_ms: list[float] = []
    http_ms: list[float] = []
    stop = threading.Event()
    rss_samples: list[float] = []

    def sample_memory() -> None:
        while not stop.is_set():
            rss_samples.append(server.memory_mb()[0])
            time.sleep(0.2)

    probe = threading.Thread(target=_probe, args=(server.url, stop, api_ms, http_ms), daemon=True)
    mem = threading.Thread(target=sample_memory, daemon=True)
    probe.start()
    mem.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_user, args=(server.url, u, train_seconds, t0), daemon=True) for u in users]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    wall = time.perf_counter() - t0
    stop.set()
    probe.join(timeout=30)
    mem.join(timeout=5)
    rss_after, rss_peak = server.memory_mb()
    return {
        "users": users,
        "clients": clients,
        "train_seconds": train_seconds,
        "wall_s": wall,
        "api_ms": percentiles(api_ms),
        "http_ms": percentiles(http_ms),
        "rss_before_mb": rss_before,
        "rss_max_sampled_mb": max(rss_samples, default=rss_after),
        "rss_after_mb": rss_after,
        "rss_peak_mb": rss_peak,
        "max_rank": max((r for u in users for r in u.ranks), default=None),
        "queued_users": sum(1 for u in users if u.ranks),
    }


# ------------------------------------------------------------------------------ checks and report
def check(result: dict[str, Any]) -> list[str]:
    """What went wrong (empty when every session kept its own results); see the module docstring."""
    problems = []
    users: list[User] = result["users"]
    for u in users:
        if u.error:
            problems.append(f"user {u.index}: {u.error}")
            continue
        if u.twin:
            if "**done**" not in u.final_status or f"step {TWIN_STEPS}" not in u.final_status:
                problems.append(f"twin {u.index} did not finish its {TWIN_STEPS} steps: {u.final_status!r}")
        else:
            if "**stopped**" not in u.final_status:
                problems.append(f"user {u.index} ended {u.final_status!r}, not by its own Stop")
            if u.stop_at is None or u.ended_at < u.stop_at:
                problems.append(f"user {u.index} ended at {u.ended_at:.1f} s before its own Stop ({u.stop_at})")
        if u.data not in u.final_status:
            problems.append(f"user {u.index}'s status names another data set: {u.final_status!r}")
    ok = [u for u in users if not u.error]
    twins = [u for u in ok if u.twin]
    if len(twins) == 2 and twins[0].trajectory_plot != twins[1].trajectory_plot:
        problems.append("the twin sessions (same data, seed, settings) gave different models")
    plots = [u.trajectory_plot for u in ok if not u.twin] + [twins[0].trajectory_plot] if twins else []
    if len(set(plots)) != len(plots):
        problems.append("two sessions with different data or seeds gave the same model")
    return problems


def report(result: dict[str, Any]) -> str:
    """A Markdown summary of one load run."""
    a, h = result["api_ms"], result["http_ms"]
    users: list[User] = result["users"]
    lines = [
        f"Load test: {result['clients']} simultaneous gradio_client users against `python app.py` "
        f"(2 live-training slots, others queue), on {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"{result['wall_s']:.1f} s wall.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| users / stops / twins | {len(users)} / {sum(1 for u in users if not u.twin)} after "
        f"{result['train_seconds']:g} s of training each / 2 with the same seed, {TWIN_STEPS} steps |",
        f"| `/train_stop` latency while loaded (n = {a['n']}) | p50 {a['p50']:.0f} ms, p95 {a['p95']:.0f} ms, "
        f"max {a['max']:.0f} ms |",
        f"| HTTP GET `/config` latency (n = {h['n']}) | p50 {h['p50']:.0f} ms, p95 {h['p95']:.0f} ms, "
        f"max {h['max']:.0f} ms |",
        f"| server RSS before / peak / after | {result['rss_before_mb']:.0f} / {result['rss_peak_mb']:.0f} / "
        f"{result['rss_after_mb']:.0f} MB |",
        f"| users who saw a queue position | {result['queued_users']} (deepest position {result['max_rank']}) |",
        f"| wait for the first update (min / median / max) | "
        f"{min(u.queued_s for u in users):.1f} / {statistics.median(u.queued_s for u in users):.1f} / "
        f"{max(u.queued_s for u in users):.1f} s |",
    ]
    problems = check(result)
    lines += [
        "",
        "Result: " + ("every session kept its own results; nothing failed." if not problems else "; ".join(problems)),
    ]
    return "\n".join(lines)


def write_docs(path: Path, text: str, command: str) -> None:
    body = f"{BEGIN}\n{text}\n\nReproduce: `{command}`\n{END}"
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + body + old[old.index(END) + len(END) :]
    else:
        new = old + ("\n" if old else "") + body + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--train-seconds", type=float, default=2.0)
    ap.add_argument("--train-concurrency", type=int, default=2)
    ap.add_argument("--docs", type=Path, default=None, help="write the figures into this Markdown file")
    args = ap.parse_args(argv)
    if args.clients < 3:
        ap.error("--clients must be at least 3 (two twins and one user who stops)")
    server = launch(train_concurrency=args.train_concurrency)
    try:
        result = run_load(server, args.clients, args.train_seconds)
    finally:
        server.close()
    text = report(result)
    print(text)
    if args.docs is not None:
        cmd = f"python -m bench.load_test --clients {args.clients} --train-seconds {args.train_seconds:g}"
        cmd += f" --docs {args.docs}"
        write_docs(args.docs, text, cmd)
    return 0 if not check(result) else 1


if __name__ == "__main__":
    sys.exit(main())
