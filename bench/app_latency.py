"""App latency on this machine: start-up, first live plot, and a shipped model at one step.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Measures, each over ``--repeats`` runs:

1. **start-up**: seconds from launching ``python app.py`` (a fresh process) until the page
   answers HTTP 200;
2. **first live update**: seconds from submitting ``/train_start`` with the default settings
   (gradio_client, a fresh session) until the first streamed update arrives, and until the
   second one (the first after training steps);
3. **shipped LSD checkerboard at one step**: the paper's histogram KL of 64,000 one-step samples
   of ``checkpoints/checkerboard-lsd`` (if shipped), with the floor of exact samples.

Prints a Markdown table and writes it to ``bench/out/app_latency.md``.

With ``--browser`` it measures instead, in headless chromium (Debian's, driven by playwright)
against one ``python app.py``, at two loads: as found, and with ``--busy`` more processes that
spin a core each (the browser shares the machine, as on a laptop):

4. **first sample plot**: seconds from the click on Start until plotly has drawn the sample
   panels (SVG points in the page);
5. **Stop answered**: seconds from the click on Stop until the status line reads
   "stopped ... step N" (the run's final state), about 2 s after the first plot.

Each repeat reloads the page (a fresh session). Writes ``bench/out/app_latency_browser.md``.

Usage::

    python -m bench.app_latency [--repeats 3] [--port 7899]
    python -m bench.app_latency --browser [--repeats 3] [--busy 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def wait_http(url: str, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_app(port: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{port}/", timeout=180)
    return proc, time.perf_counter() - t0


def first_updates(port: int) -> tuple[float, float]:
    from gradio_client import Client

    from app.validation import METHOD_LABELS, TrainSettings

    d = TrainSettings()
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    t0 = time.perf_counter()
    job = client.submit(
        "checkerboard",
        None,
        None,
        METHOD_LABELS[d.method],
        d.steps,
        d.batch,
        d.lr,
        d.eta,
        d.width,
        d.depth,
        d.seed,
        api_name="/train_start",
    )
    times = []
    while len(times) < 2:
        n = len(job.outputs())
        while len(times) < n:
            times.append(time.perf_counter() - t0)
        if job.done():
            break
        time.sleep(0.01)
    client.predict(api_name="/train_stop")
    job.result(timeout=60)
    return times[0], times[1] if len(times) > 1 else float("nan")


def shipped_kl() -> str:
    """The paper's KL of 64,000 one-step samples of the shipped LSD checkerboard model.

    Reported with empty bins counted as 0.5 samples (as the model cards do): one empty target
    bin makes the strict estimator infinite though the board is drawn well.
    """
    import torch

    from flowmaps.hub import from_pretrained
    from flowmaps.metrics import checkerboard_kl
    from flowmaps.sampling import flowmap_sample

    folder = ROOT / "checkpoints" / "checkerboard-lsd"
    if not folder.is_dir():
        return "not shipped"
    model, _ = from_pretrained(folder)
    x0 = model.sigma * torch.randn(64_000, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        flowmap_sample(model, x0[:1024], [0.0, 1.0])  # warm
        t0 = time.perf_counter()
        x = flowmap_sample(model, x0, [0.0, 1.0]).x
        ms = 1000 * (time.perf_counter() - t0)
    strict = checkerboard_kl(x)
    res = checkerboard_kl(x, eps=0.5, floor=True)
    return (
        f"{res} with empty bins counted as 0.5 ({strict.empty_bins} empty target bins, strict KL "
        f"{strict.kl:.4g}; {100 * strict.outside:.1f}% of samples outside [-1, 1]^2); "
        f"sampling took {ms:.0f} ms on {torch.get_num_threads()} threads"
    )


POINTS_JS = "el => el.querySelectorAll('.scatterlayer path.point').length"
STATUS_JS = "() => document.querySelector('#live-status').innerText"


def busy_loops(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (a pure-Python loop)."""
    return [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(n)]


def browser_round(page, url: str) -> tuple[float, float]:
    """(Start until the first sample plot, Stop until "stopped ... step N"), in seconds."""
    page.goto(url)
    page.wait_for_selector("#btn-start")
    samples = page.locator("#plot-samples")
    t0 = time.perf_counter()
    page.click("#btn-start")
    page.wait_for_function(f"el => ({POINTS_JS})(el) > 0", arg=samples.element_handle(), timeout=120_000)
    first = time.perf_counter() - t0
    page.wait_for_timeout(2000)
    t0 = time.perf_counter()
    page.click("#btn-stop")
    page.wait_for_function(f"() => /stopped.*step \\d+/.test(({STATUS_JS})())", timeout=120_000)
    stop = time.perf_counter() - t0
    return first, stop


def browser_main(args) -> None:
    from playwright.sync_api import sync_playwright

    proc, _ = start_app(args.port)
    url = f"http://127.0.0.1:{args.port}/"
    rows = []
    try:
        time.sleep(8.0)  # the warm-up thread
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            for busy in (0, args.busy):
                loops = busy_loops(busy)
                try:
                    if busy:
                        time.sleep(args.settle)  # let the 1-minute load average rise
                    firsts, stops, loads = [], [], []
                    for _ in range(args.repeats):
                        loads.append(os.getloadavg()[0])
                        f, s = browser_round(page, url)
                        firsts.append(f)
                        stops.append(s)
                        print(f"busy {busy}: load {loads[-1]:.1f}, first plot {f:.2f} s, Stop {s:.2f} s", flush=True)
                    rows.append((busy, loads, firsts, stops))
                finally:
                    for p in loops:
                        p.kill()
                        p.wait()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def fmt(v: list[float]) -> str:
        return f"{statistics.median(v):.2f} ({min(v):.2f} to {max(v):.2f})"

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; headless chromium "
        f"on the same machine, viewport 1280 x 720; {args.repeats} rounds per row.",
        "",
        "| extra busy processes | load average (1 min) | Start until the first sample plot, s | "
        'Stop until "stopped · step N", s |',
        "| --- | --- | --- | --- |",
    ]
    for busy, loads, firsts, stops in rows:
        lines.append(f"| {busy} | {min(loads):.1f} to {max(loads):.1f} | {fmt(firsts)} | {fmt(stops)} |")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_latency_browser.md").write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=7899)
    ap.add_argument("--browser", action="store_true", help="first plot and Stop latency in headless chromium")
    ap.add_argument("--busy", type=int, default=2, help="with --browser: busy-loop processes of the loaded rows")
    ap.add_argument("--settle", type=float, default=45.0, help="with --browser: seconds of load before measuring")
    args = ap.parse_args()
    if args.browser:
        browser_main(args)
        return
    starts, firsts, seconds = [], [], []
    for _ in range(args.repeats):
        proc, t_start = start_app(args.port)
        try:
            time.sleep(8.0)  # let the warm-up thread finish, as a user reading the page would
            f1, f2 = first_updates(args.port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        starts.append(t_start)
        firsts.append(f1)
        seconds.append(f2)
        print(f"start-up {t_start:.2f} s, first update {f1:.2f} s, second {f2:.2f} s", flush=True)

    def fmt(v: list[float]) -> str:
        return f"{statistics.median(v):.2f} (min {min(v):.2f}, max {max(v):.2f})"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at the end {load:.1f}, {args.repeats} runs.",
        "",
        "| measure | seconds (median) |",
        "| --- | --- |",
        f"| `python app.py` until the page answers | {fmt(starts)} |",
        f"| Start (default settings) until the first live plot | {fmt(firsts)} |",
        f"| Start until the first plot after training steps | {fmt(seconds)} |",
        "",
        f"Shipped checkerboard-lsd, 1 step, 64,000 samples: {shipped_kl()}.",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_latency.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
