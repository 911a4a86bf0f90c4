"""Race the families: LSD, ESD, PSD-M and flow matching trained on one budget, side by side.

The paper's Table 1 in miniature, live: the chosen families train on the same data, from the same
seed (same initial weights, same data batches), with the same network, batch, learning-rate
schedule and number of steps, interleaved round robin on one thread (a chunk of steps of each in
turn), so none of them gets more CPU than another. Every refresh samples each one from the same
noise at N = 1, 2, 4, 8 and scores the samples: the checkerboard KL (with the floor of exact
samples on the same estimator) for the checkerboard, the sliced Wasserstein distance to data
samples otherwise. Flow matching learns only the velocity: its "N steps" are N Euler steps of the
probability-flow ODE, where a flow map takes N jumps along the uniform time grid.

Time convention: t = 0 is noise, t = 1 is data.

Nothing here imports gradio (tests/app/test_race.py drives the race directly); the tab's layout and
events are in app/tabs/race.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from app import plots
from app.datasets import CSV, DATA_CHOICES, DRAW, DataSource
from app.live import build_live_model, make_live_trainer
from app.live_settings import live_lr_factor, run_progress
from app.quality import FLOOR_BAND, FLOOR_DRAWS, TIE_WORDS, at_floor_note, band_top, tie_gap, winners
from app.validation import InputError, TrainSettings, method_name
from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor, sliced_wasserstein
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve
from flowmaps.training import DivergenceError

#: The families a race can hold (objective names of flowmaps.objectives.make_objective), in order.
RACE_METHODS = ("lsd", "esd", "psd-m", "fm")
#: Their names in the page.
RACE_LABELS = {"lsd": "LSD", "esd": "ESD", "psd-m": "PSD-M", "fm": "FM (Euler)"}
#: Sampling steps of the table and figure.
RACE_STEPS = (1, 2, 4, 8)
#: Samples scored per family and N (the table), and shown per panel (the figure; the first ones).
EVAL_POINTS = 4000
VIEW_POINTS = 300
#: Directions of the sliced Wasserstein distance (the same ones for every cell of the table).
SW_PROJECTIONS = 64
#: Count given to an empty histogram bin in the checkerboard KL (continuity correction).
KL_EPS = 0.5
#: Training steps of one family before the next one's turn.
CHUNK_STEPS = 20
#: Defaults of the race: the live tab's network and learning rate, a smaller batch (four models share the CPU).
RACE_DEFAULTS = TrainSettings(method="lsd", steps=1500, batch=512, lr=1e-2, eta=0.5, width=64, depth=4, seed=0)
#: Data sets a race can use (the library's toy sets and mixtures; not user points).
RACE_DATA = tuple(k for k in DATA_CHOICES if k not in (DRAW, CSV))


def round_robin(methods: Sequence[str], steps: int, chunk: int = CHUNK_STEPS) -> Iterator[tuple[str, int]]:
    """The race's schedule: ``(method, k)`` items meaning "train ``method`` for ``k`` steps".

    Each round gives every method ``min(chunk, steps left)`` steps in the given order, so after
    every full round all methods have trained the same number of steps, and ``steps`` each at the end.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 step; got {chunk}")
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        for m in methods:
            yield m, k
        done += k


def parse_methods(value: Any) -> tuple[str, ...]:
    """The families picked in the page (labels or objective names), in :data:`RACE_METHODS` order."""
    if isinstance(value, str):
        value = [value]
    if not value:
        raise InputError("families: pick at least one of " + ", ".join(RACE_LABELS.values()))
    names = {v: k for k, v in RACE_LABELS.items()}
    picked = set()
    for v in value:
        key = names.get(v, v)
        if key not in RACE_LABELS:
            raise InputError(f"families: {v!r} is not one of {', '.join(RACE_LABELS.values())}")
        picked.add(key)
    return tuple(m for m in RACE_METHODS if m in picked)


def metric_name(data: DataSource) -> str:
    return "KL" if data.is_checkerboard else "SW"


@dataclass
class RaceSnapshot:
    """What the page shows after a slice of the race.

    Attributes:
        state: "starting", "racing", "done", "stopped" or "time cap reached".
        steps: training steps done by each method.
        target: steps each method trains in the full race.
        elapsed: seconds since the race began.
        table: ``table[method][N]``: the quality number of N-step samples (lower is better).
        floor: the score of exact samples on the same estimator, the mean over
            :data:`app.quality.FLOOR_DRAWS` draws: the checkerboard KL of as many exact samples, or
            the sliced Wasserstein distance between two sets of data samples.
        floor_sd: the standard deviation of those draws: the estimator's own noise at this sample
            count. Two families closer than :data:`app.quality.FLOOR_BAND` of it are a tie.
        samples: ``samples[method][N]``: ``(VIEW_POINTS, 2)`` points shown in the figure.
        diverged: methods whose training diverged (they stop training), with when.
    """

    state: str
    steps: dict[str, int]
    target: int
    elapsed: float
    table: dict[str, dict[int, float]]
    floor: float | None
    samples: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    diverged: dict[str, str] = field(default_factory=dict)
    floor_sd: float | None = None


class Race:
    """The models of one race and their trainers (see the module docstring).

    Args:
        data: the data every model learns.
        methods: objective names, a subset of :data:`RACE_METHODS`.
        settings: the common budget: steps (per method), batch, lr, eta, width, depth, seed.
        eval_points: samples scored per method and N.
    """

    def __init__(
        self, data: DataSource, methods: Sequence[str], settings: TrainSettings, eval_points: int = EVAL_POINTS
    ) -> None:
        if not methods:
            raise InputError("families: pick at least one")
        self.data, self.methods, self.settings = data, tuple(methods), settings
        self.trainers = {}
        self.models = {}
        self.diverged: dict[str, str] = {}  # method -> what its trainer's guard saw when it gave up
        self.targets: dict[str, int] = {}  # method -> completed steps it should have by now
        for m in self.methods:
            s = TrainSettings(**{**settings.as_dict(), "method": m})
            _, model = build_live_model(s, data.sigma, data.name)  # the same initial weights for every family
            # every trainer seeds its generator (data batches, noise, times) from s.seed
            tr = make_live_trainer(model, lambda n, g: data.sample(n, generator=g), s)
            self.trainers[m] = tr
            self.models[m] = tr.ema_model
        g = torch.Generator().manual_seed(settings.seed + 777)
        self.noise = torch.randn(eval_points, 2, generator=g) * data.sigma
        self.reference = data.sample(eval_points, generator=g).double()
        self.view_data = self.reference[:VIEW_POINTS].numpy()
        # the floor and its spread over draws of exact samples: at a few thousand samples one draw
        # of it moves by about as much as the families differ early in a race
        if data.is_checkerboard:
            draws = [checkerboard_kl_floor(n=eval_points, seed=k, eps=KL_EPS) for k in range(FLOOR_DRAWS)]
        else:  # two independent sets of data samples differ by this much: no model can do better
            draws = [self.score(data.sample(eval_points, generator=g).double().numpy()) for _ in range(FLOOR_DRAWS)]
        self.floor, self.floor_sd = float(np.mean(draws)), float(np.std(draws, ddof=1))

    def steps_done(self) -> dict[str, int]:
        return {m: self.trainers[m].global_step for m in self.methods}

    def train(self, method: str, k: int, stop: threading.Event | None = None) -> int:
        """Train ``method`` until it has ``k`` more completed steps than its last call asked for.

        Steps the trainer's guard rolled back are trained again (at most ``4 k + 100`` tries per call;
        a shortfall is made up at the next call), so every family completes the same steps. The
        learning rate follows the live schedule over the race's steps. Ends early if ``stop`` is
        set. A family whose trainer gives up (:class:`~flowmaps.training.DivergenceError`) is
        recorded in :attr:`diverged` and trains no more; its last weights stay in the table.
        Returns the steps tried.
        """
        tr = self.trainers[method]
        self.targets[method] = self.targets.get(method, 0) + k
        tried = 0
        while tr.global_step < self.targets[method] and tried < 4 * k + 100 and method not in self.diverged:
            if stop is not None and stop.is_set():
                break
            tr.config.lr = self.settings.lr * live_lr_factor(run_progress(tr.global_step, self.settings.steps))
            try:
                tr.step()
            except DivergenceError as err:  # this family drops out; the others race on
                self.diverged[method] = f"diverged at step {err.step}"
            tried += 1
        return tried

    def sample(self, method: str, n: int) -> np.ndarray:
        """``(eval_points, 2)`` samples of ``method`` at ``n`` steps from the race's fixed noise (t = 0
        to t = 1): n flow-map jumps on the uniform grid, or n Euler steps of the velocity for "fm"."""
        model = self.models[method]
        grid = make_grid("uniform", n)
        with torch.no_grad():
            if method == "fm":
                res = ode_solve(model.velocity, self.noise, method="euler", grid=grid)
            else:
                res = flowmap_sample(model, self.noise, grid)
        return res.x.double().numpy()

    def score(self, x: np.ndarray) -> float:
        """The quality number of samples ``x`` (lower is better): checkerboard KL or sliced Wasserstein."""
        if not np.isfinite(x).all():
            return float("inf")
        if self.data.is_checkerboard:
            return float(checkerboard_kl(x, eps=KL_EPS).kl)
        g = torch.Generator().manual_seed(4242)  # the same directions for every score
        return sliced_wasserstein(x, self.reference, n_projections=SW_PROJECTIONS, generator=g)

    def evaluate(self) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, np.ndarray]]]:
        """The table (quality per method and N) and the figure's points."""
        table: dict[str, dict[int, float]] = {}
        shown: dict[str, dict[int, np.ndarray]] = {}
        for m in self.methods:
            self.models[m].eval()
            table[m], shown[m] = {}, {}
            for n in RACE_STEPS:
                x = self.sample(m, n)
                table[m][n] = self.score(x)
                shown[m][n] = x[:VIEW_POINTS].astype(np.float32)
        return table, shown

    def run(
        self,
        stop: threading.Event,
        max_seconds: float,
        chunk: int = CHUNK_STEPS,
        refresh_seconds: float = 2.0,
    ) -> Iterator[RaceSnapshot]:
        """Train round robin (:func:`round_robin`) and yield a snapshot before training, between
        rounds about every ``refresh_seconds`` (longer when scoring is slow: at least three times
        the last scoring's time, so scoring takes at most a quarter of the CPU), and at the end (all
        steps done, ``stop`` set, or ``max_seconds`` passed; the time cap is checked between
        rounds, so every method then has the same steps)."""
        t0 = time.perf_counter()
        target = self.settings.steps
        cost = [0.0]

        def snap(state: str) -> RaceSnapshot:
            t = time.perf_counter()
            table, shown = self.evaluate()
            cost[0] = time.perf_counter() - t
            elapsed = time.perf_counter() - t0
            return RaceSnapshot(
                state, self.steps_done(), target, elapsed, table, self.floor, shown, dict(self.diverged), self.floor_sd
            )

        yield snap("starting")
        last = time.perf_counter()
        state = "done"
        rounds = len(self.methods)
        for i, (m, k) in enumerate(round_robin(self.methods, target, chunk)):
            if stop.is_set():
                state = "stopped"
                break
            if i % rounds == 0 and time.perf_counter() - t0 >= max_seconds:
                state = "time cap reached"
                break
            self.train(m, k, stop)
            due = max(refresh_seconds, 3.0 * cost[0])
            last_of_round = i % rounds == rounds - 1
            if last_of_round and time.perf_counter() - last >= due and not stop.is_set():
                yield snap("racing")
                last = time.perf_counter()
        if state == "done":  # make up steps the guard rolled back in the last rounds
            for m in self.methods:
                self.train(m, 0, stop)
        if state == "done" and stop.is_set():
            state = "stopped"
        yield snap(state)


# ------------------------------------------------------------------------------ reading the table
def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "inf"
    return f"{v:.4f}" if abs(v) < 0.1 else f"{v:.3f}"


def winner_sentence(
    table: dict[str, dict[int, float]],
    metric: str,
    steps: dict[str, int],
    floor: float | None = None,
    diverged: dict[str, str] | None = None,
    floor_sd: float | None = None,
) -> str:
    """One sentence saying who won at which N, read from ``table`` (lower is better), with the steps
    each family trained, the floor (``floor`` ± ``floor_sd``: exact samples' score over draws) and
    which ones diverged. Families within FLOOR_BAND floor sds of the lowest are named together as a
    tie (the estimator cannot order them); those of them within that band of the floor are "at the
    floor"."""
    if not table:
        return "No family raced."
    noise = tie_gap(floor_sd)
    top = band_top(floor, floor_sd)
    parts = []
    for n, ms in winners(table, within=noise).items():
        if not ms:
            parts.append(f"N = {n}: none finished with a finite {metric}")
            continue
        names = ", ".join(method_name(m) for m in ms[:-1]) + (" and " if len(ms) > 1 else "") + method_name(ms[-1])
        if len(ms) > 1 and noise > 0:
            scores = ", ".join(_fmt(table[m][n]) for m in ms)
            text = f"N = {n}: {names} ({metric} {scores}: {TIE_WORDS})"
        else:
            text = f"N = {n}: {names} ({metric} {_fmt(table[ms[0]][n])})"
        parts.append(text + at_floor_note([method_name(m) for m in ms], [table[m][n] for m in ms], top))
    counts = sorted(set(steps.values()))
    if len(counts) == 1:
        budget = f"after {counts[0]:,} steps each"
    else:
        budget = "after unequal steps (" + ", ".join(f"{method_name(m)} {s:,}" for m, s in steps.items()) + ")"
    floor_txt = ""
    if floor is not None:
        spread = f" ± {_fmt(floor_sd)} over {FLOOR_DRAWS} draws" if floor_sd is not None else ""
        floor_txt = f"; exact samples score {_fmt(floor)}{spread}"
    for m, why in (diverged or {}).items():
        floor_txt += f"; {method_name(m)} {why}"
    what = "checkerboard KL" if metric == "KL" else "sliced Wasserstein distance to data"
    if len(table) == 1:  # one family: its scores, no winner
        (only,) = table
        parts = [f"N = {n}: {_fmt(v)}" for n, v in sorted(table[only].items())]
        return f"{method_name(only)}'s {what} {budget}{floor_txt}: " + "; ".join(parts) + "."
    return (
        f"Lowest {what} {budget}{floor_txt}: "
        + "; ".join(parts)
        + "."
        + early_note(table, floor)
        + " One training seed each: a rerun with another seed can reorder families that are close."
    )


#: A race whose lowest score at every N is above this many times the floor is early in training:
#: the checkerboard races of docs/race.md (bench.race_cpu) end with LSD, the lowest, at KL 0.53 after
#: 1,500 steps and 0.48 after 3,000 against the floor's 0.22, while the eight-Gaussian and two-moon
#: races reach their floors.
EARLY_FACTOR = 2.0


def early_note(table: dict[str, dict[int, float]], floor: float | None) -> str:
    """A sentence when every family is still far from exact samples' score (the lowest finite score
    over all N above :data:`EARLY_FACTOR` times ``floor``): who leads then is who learns fastest,
    not where each family ends. "" otherwise, or without a positive floor."""
    low = min((v for row in table.values() for v in row.values() if np.isfinite(v)), default=None)
    if low is None or floor is None or floor <= 0 or low <= EARLY_FACTOR * floor:
        return ""
    return (
        f" Every family is still far from exact samples (the lowest score, {_fmt(low)}, is "
        f"{low / floor:.1f} times the floor): this ranks how fast each one learns, not where it ends; "
        "more steps per family show that."
    )


def table_markdown(snap: RaceSnapshot, metric: str) -> str:
    """The live table as Markdown: one row per method, one column per N, the best of each column
    bold (with every family tied with it: closer than FLOOR_BAND floor sds)."""
    best = winners(snap.table, within=tie_gap(snap.floor_sd))
    head = "| family | steps | " + " | ".join(f"N = {n}" for n in RACE_STEPS) + " |"
    rule = "|" + " --- |" * (2 + len(RACE_STEPS))
    rows = [head, rule]
    for m, row in snap.table.items():
        cells = []
        for n in RACE_STEPS:
            v = _fmt(row[n])
            cells.append(f"**{v}**" if m in best.get(n, []) else v)
        done = f"{snap.steps.get(m, 0):,}" + (" (diverged)" if m in snap.diverged else "")
        rows.append(f"| {RACE_LABELS.get(m, m)} | {done} | " + " | ".join(cells) + " |")
    if snap.floor is not None:
        floor = _fmt(snap.floor) + (f" ± {_fmt(snap.floor_sd)}" if snap.floor_sd is not None else "")
        rows.append("| exact samples (floor) | – | " + " | ".join(floor for _ in RACE_STEPS) + " |")
    note = (
        f"{metric} of {EVAL_POINTS:,} samples per cell, lower is better"
        + (f" (empty bins count {KL_EPS})" if metric == "KL" else "")
        + f"; the floor is the mean ± sd of {FLOOR_DRAWS} draws of exact samples. Bold marks the lowest"
        f" of each column, and also every family within {FLOOR_BAND:g} floor sd of it, which ties with it."
        + " FM's N is N Euler steps of its velocity; the others take N flow-map jumps."
    )
    return "\n".join(rows) + "\n\n" + note


def race_figure(snap: RaceSnapshot, data: np.ndarray) -> go.Figure:
    """A light grid of samples: data in the top-left panel, then one row per method and one column
    per N (a few hundred points per panel; square panels on the data's range). SVG scatter, not
    scattergl: WebGL gives each of the up to 17 panels a context of its own, past chromium's limit
    of 16 ("Too many active WebGL contexts", the oldest panel lost), and 5,100 points draw quickly
    as SVG."""
    methods = list(snap.samples)
    if not methods:
        return plots.empty_figure("press Race to start")
    data = np.asarray(data, dtype=np.float64)
    rng = list(plots.axis_range(data))
    cols = 1 + len(RACE_STEPS)
    titles = []
    for r, m in enumerate(methods):
        titles.append("data" if r == 0 else "")
        titles += [f"{RACE_LABELS.get(m, m)}, N = {n}" for n in RACE_STEPS]
    fig = make_subplots(
        rows=len(methods), cols=cols, subplot_titles=titles, horizontal_spacing=0.015, vertical_spacing=0.05
    )

    def points(p: np.ndarray, color: str, row: int, col: int) -> None:
        p = np.nan_to_num(p, nan=1e3, posinf=1e3, neginf=-1e3)
        marker = {"size": 2.5, "color": color}
        trace = go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", showlegend=False, hoverinfo="skip", marker=marker)
        fig.add_trace(trace, row=row, col=col)

    points(data, "#555", 1, 1)
    for r, m in enumerate(methods, start=1):
        for c, n in enumerate(RACE_STEPS, start=2):
            points(snap.samples[m][n], plots.PALETTE[(r - 1) % len(plots.PALETTE)], r, c)
    for r in range(1, len(methods) + 1):
        for c in range(1, cols + 1):
            k = (r - 1) * cols + c
            axis = {"range": rng, "visible": r == 1 or c > 1, "showticklabels": False, "zeroline": False}
            fig.update_xaxes(**axis, showgrid=False, constrain="domain", row=r, col=c)
            fig.update_yaxes(**axis, showgrid=False, scaleanchor=f"x{'' if k == 1 else k}", scaleratio=1, row=r, col=c)
    fig.update_layout(
        height=180 * len(methods) + 56,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 56, "b": 10},  # the first row's titles below plotly's toolbar
        font=plots.FONT,
        uirevision="race",
    )
    fig.update_annotations(font_size=11)
    return fig
