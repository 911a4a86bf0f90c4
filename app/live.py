"""Per-session live training of a 2-D flow map, in short chunks the page can stream.

One :class:`LiveSession` lives in each browser session's ``gr.State``: its own model, trainer
(:class:`flowmaps.training.Trainer`), data, loss history and stop flag, so a Stop in one
session never touches another. Each session has a :attr:`LiveSession.token` unique for the life
of the process (``id()`` is reused once an object is freed), which keys anything cached for it;
:meth:`LiveSession.close` frees it when its visitor leaves (app/sessions.py).
:meth:`LiveSession.run` trains for a number of steps in slices of about ``chunk_seconds`` and
yields a :class:`Snapshot` after each slice.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import contextvars
import copy
import itertools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.datasets import DataSource
from app.live_settings import CONTINUE_FACTOR, live_lr_factor, live_model_config, run_progress
from app.validation import LIVE_EMA, InputError, TrainSettings, method_name
from flowmaps.flowmap import FlowMap
from flowmaps.objectives import make_objective
from flowmaps.registry import build_model
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve
from flowmaps.training import DivergenceError, Trainer

#: Steps shown in the sample panels.
VIEW_STEPS = (1, 2, 4, 8)
#: Points per sample panel (and in the data panel): five panels of SVG points are redrawn at each
#: refresh, so the browser's share of a busy 2-core laptop grows with this (docs/app_latency.md).
VIEW_POINTS = 400
#: Most entries kept in the loss history (older ones are thinned).
MAX_HISTORY = 20_000

#: Serialises seeded model construction: torch's global generator is shared by every thread, so
#: two sessions pressing Start at once would otherwise draw each other's initial weights.
_INIT_LOCK = threading.Lock()

#: Session tokens: never reused while the process lives (next() on a count is atomic under the GIL).
_TOKENS = itertools.count(1)


#: Run states after which nothing more happens until the next Start / Continue / Load.
FINAL_STATES = ("done", "stopped", "time cap reached", "diverged", "loaded")


def diverged_advice(step: int, s: TrainSettings) -> str:
    """What a live run whose guard gave up says to change: a ten-fold lower learning rate and, below
    0.5, a larger eta (a larger share of the batch on the diagonal, which anchors the velocity).

    Measured (docs/live_training.md): LSD on the checkerboard at eta 0.05 diverges within 50 steps at
    the default rate 1e-2 (and also, later, at 5e-3 ... 2e-4 held constant); at 1e-3 with the run's
    decay it trained to its time cap with one rollback; eta 0.5, the default, trains at 1e-2."""
    return (
        f"the model is back at step {step}. To go on, {_changes(s)}, then press Continue, "
        "or press Start for a new model"
    )


def _changes(s: TrainSettings) -> str:
    """The settings to change after the guard acted: a ten-fold lower rate, and eta 0.5 below it."""
    change = [f"lower the learning rate (e.g. ten-fold, to {s.lr / 10:.2g})"]
    if s.eta < 0.5:
        change.append(f"raise eta (now {s.eta:g}; e.g. to 0.5, the default)")
    return " or ".join(change)


def rollback_note(logs: dict[str, Any], rollbacks: int, s: TrainSettings) -> str:
    """The page's note after the guard rejected a step and rolled back (``logs``: the trainer's logs
    of that step, with "recovered" (the reason), "step" (the restored step) and "lr" (the halved
    rate)); ``rollbacks``: how many this run has had. Names the step, the reason, the rate it left
    and, as :func:`diverged_advice`, what to change if it keeps doing so."""
    times = "" if rollbacks == 1 else f" (rollback {rollbacks} of this run)"
    reason = str(logs["recovered"]).split(" (", 1)[0]
    return (
        f"the guard rolled back to step {int(logs['step'])} after a {reason}{times} and halved the learning "
        f"rate to {float(logs['lr']):.2g}; if it keeps doing so, {_changes(s)}"
    )


def make_live_trainer(model: FlowMap, sample: Any, s: TrainSettings, ema_decay: float = LIVE_EMA) -> Trainer:
    """The trainer of a live run (shared with bench/live_cpu.py): the library's Trainer with the
    run's :meth:`app.validation.TrainSettings.train_config` (RAdam at ``s.lr``, whose schedule
    :func:`app.live_settings.live_lr_factor` the caller applies per step, clip 10, EMA
    ``ema_decay``) and the fused objective; ``sample(n, generator)`` draws data batches."""
    return Trainer(model, live_objective(s.method, s.eta), sample, s.train_config(ema_decay))


def build_live_model(s: TrainSettings, sigma: float, data_name: str) -> tuple[dict[str, Any], FlowMap]:
    """(config, model) of a fresh live run (:func:`live_model_config`), its initial weights drawn
    from ``s.seed`` alone: the same settings give the same weights in any thread at any time."""
    config = live_model_config(s, sigma, data_name)
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        return config, build_model(config)


def live_objective(method: str, eta: float):
    """The objective of a live run (the library's objectives fuse their branches on the MLP)."""
    return make_objective(method, eta=eta)


@dataclass
class Snapshot:
    """What the page shows after a slice of training."""

    step: int
    target: int
    elapsed: float
    rate: float
    state: str  # "starting", "training", "done", "stopped", "time cap reached", "diverged"
    panels: list[tuple[str, np.ndarray]]
    history: list[dict[str, float]]  # the session's per-step logs, steps increasing (no rolled-back steps)
    message: str = ""
    start: int = 0  # the trainer's step when this run began (a Continue's runs start past 0)


@dataclass
class _Run:
    """Where one call of :meth:`LiveSession.run` stands: its start, length, cap and schedule."""

    trainer: Trainer  # the run's own reference: a close() mid-run drops the session's
    start_step: int
    steps: int
    max_seconds: float
    base_lr: float
    f0: float  # the schedule's factor at the run's start (:attr:`LiveSession.lr_left`)
    t_begin: float
    progress: float = 0.0
    rollbacks: int = 0  # the guard's rollbacks in this run

    @property
    def target(self) -> int:
        return self.start_step + self.steps


#: Longest a Start, Continue, Load or Stop waits for a stopping run to end (a run sees its stop
#: flag at its next step, then draws its last update).
STOP_WAIT = 10.0

#: How long a claim (:meth:`LiveSession.claim`) holds at most: a claim whose callback never comes
#: (an event dropped before it ran) would otherwise refuse the session's buttons for good. A
#: callback that runs answers its claim (it takes the session, or refuses the click), but it may
#: first wait up to STOP_WAIT for a stopping run, so the claim outlasts that wait: a shorter claim
#: let a second click in the wait pass its validator and be refused by its own callback, as an error.
CLAIM_SECONDS = STOP_WAIT + 5.0

#: True while a page event's validator runs its input check (app/events.InputCheck): a claim
#: refuses the validators of the session's other actions, never the callback that made it.
VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("validating", default=False)


class LiveSession:
    """One browser session's model and training state (see the module docstring)."""

    def __init__(self) -> None:
        self.token = next(_TOKENS)  # unique for the life of the process: keys this session's caches
        self.closed = False  # freed (tab closed or idle): later events are refused
        self.busy = 0  # events using this session right now (app/sessions.py)
        self.last_seen = 0.0  # time.monotonic() when an event last started on this session
        self.visitor = ""  # the browser-session hash of the visitor (app/sessions.py)
        self.busy_lock = threading.Lock()
        self.run_lock = threading.Lock()  # one run at a time per session
        self.run_kind = ""  # while a run holds run_lock: "live" (the live tab) or "race" (the race tab)
        # the action (e.g. "Training") whose validator accepted it and whose callback has not yet
        # taken the session, and until when (time.monotonic()) that claim holds (see claim)
        self.claim_action, self.claim_until = "", 0.0
        self.evaluating = False  # while one of the quality tab's evaluations streams (app/tabs/quality.py)
        self.weights_lock = threading.Lock()  # guards the weights against readers mid-step
        self.stop_event = threading.Event()
        self.trainer: Trainer | None = None
        self.model: FlowMap | None = None  # the model to sample (EMA of the trainer)
        self.config: dict[str, Any] | None = None
        self.data: DataSource | None = None
        self.settings: TrainSettings | None = None
        self.origin = ""
        # the shipped checkpoint this session's model was loaded from and its trained steps (a
        # loaded model's trainer counts this session's steps from 0); "" and 0 for a fresh model
        self.base_name, self.base_steps = "", 0
        # Per-step logs of the run's current path, steps increasing: a rollback drops the entries
        # past the restored step (:meth:`_drop_history_after`); thinned past MAX_HISTORY.
        self.history: list[dict[str, float]] = []
        self.used_seconds = 0.0
        self.version = 0
        self.view_noise: torch.Tensor | None = None
        self.data_view: np.ndarray | None = None
        self.scratch: list[str] = []  # temporary folders of this session (downloads), removed when freed
        # The one record of where this session's training is, written only by the run itself (and
        # by Start / Load before it): the page's status line is derived from it, so a late reply
        # (e.g. Stop's) shows the same final state as the run's last update.
        self.phase = "ready"  # "ready", "starting", "training", or one of FINAL_STATES
        self.phase_step = 0  # the trainer's step at the last update
        self.phase_message = ""  # a note of the run (a recovered or diverged step)
        self.run_note = ""  # a note of the last Continue (e.g. width and depth kept)
        self.finished = threading.Event()  # set when a run has reached a final state
        self.finished.set()
        # the last run's final numbers, written with its final phase (before its panels are drawn):
        # Stop's progress line, the same as the run's own last update that follows it
        self.final_snapshot: Snapshot | None = None
        self.lr_left = 1.0  # rate factor at which the next run starts: where the schedule stands

    # ------------------------------------------------------------------ state
    def __deepcopy__(self, memo):  # gr.State may deep-copy its value: share no locks
        return LiveSession()

    def close(self) -> bool:
        """Stop a run and drop the model, trainer, data and views; later events are refused.

        A run in progress ends at its next step (it sees the stop flag). Returns False if the
        session was closed already."""
        self.stop_event.set()
        with self.weights_lock:
            if self.closed:
                return False
            self.closed = True
            self.trainer = None
            self.model = None
            self.config = None
            self.data = None
            self.settings = None
            self.history = []
            self.view_noise = None
            self.data_view = None
            self.origin = ""
            self.base_name, self.base_steps = "", 0
            self.version += 1
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise InputError("this session has ended and its model was freed: reload the page to start again")

    @property
    def has_model(self) -> bool:
        return self.model is not None

    @property
    def running(self) -> bool:
        return self.run_lock.locked()

    def claim(self, action: str) -> None:
        """Mark the session as taken by ``action`` (e.g. "Training", "Loading the model") from the
        moment its validator accepts it until its callback takes the session (a run's lock, a
        loaded model: :meth:`release_claim`), or for :data:`CLAIM_SECONDS` at most.

        gradio runs an event's validator when the click arrives and its callback later, on a
        worker thread: without the claim, a Load clicked right after Start passed its validator
        (nothing ran yet) and was refused by its own callback once the run had begun, as a
        ``gr.Error``, so the page showed a toast and "Error" over the running run's status line
        instead of the refusal under the buttons. Only validators read the claim (``claimed``)."""
        self.claim_action, self.claim_until = action, time.monotonic() + CLAIM_SECONDS

    def release_claim(self) -> None:
        self.claim_action, self.claim_until = "", 0.0

    @property
    def claimed(self) -> str:
        """The action of a claim that still holds, read inside a validator; "" elsewhere."""
        if VALIDATING.get() and self.claim_action and time.monotonic() < self.claim_until:
            return self.claim_action
        return ""

    @property
    def finishing(self) -> bool:
        """A live run has been asked to stop (Stop pressed: it ends at its next step) or has written
        its final state (stopped, done, time cap) and its stream is drawing its last update: the
        run lock is freed within a few seconds, so a new run or a Load waits for it. (Continue
        pressed 0.3-1 s after Stop, before the run had ended, was refused as "already training:
        press Stop first", and the refusal was wiped by the "stopped" that followed.)"""
        return self.running and self.run_kind == "live" and (self.finished.is_set() or self.stop_event.is_set())

    @property
    def method(self) -> str | None:
        return self.settings.method if self.settings else (self.config or {}).get("method")

    def require_model(self) -> None:
        """Raise :class:`InputError` (what to do) when this session has no model to sample."""
        if self.model is None:
            raise InputError("this session has no model yet: train one in the first tab or load a shipped one")

    def snapshot_model(self) -> FlowMap:
        """A private copy of the current model (EMA weights) for sampling in another tab."""
        return self.snapshot()[0]

    def snapshot(self) -> tuple[FlowMap, int]:
        """A private copy of the current model (EMA weights) and the training steps it has had
        (a loaded checkpoint's own steps plus this session's), read together under the weights
        lock, so that a run going on cannot step between the two."""
        self.require_model()
        with self.weights_lock:
            m = copy.deepcopy(self.model)
            steps = self.base_steps + (self.trainer.global_step if self.trainer is not None else 0)
        return m.eval().requires_grad_(False), steps

    def _set_view(self, data: DataSource, seed: int) -> None:
        g = torch.Generator().manual_seed(seed + 12345)
        self.view_noise = torch.randn(VIEW_POINTS, 2, generator=g)
        self.data_view = data.sample(VIEW_POINTS, generator=g).numpy()

    def _make_trainer(self, model: FlowMap, data: DataSource, s: TrainSettings) -> Trainer:
        return make_live_trainer(model, lambda n, g: data.sample(n, generator=g), s)

    def start_fresh(self, data: DataSource, s: TrainSettings) -> None:
        """A new model (MLP of the chosen width and depth) on ``data``; forgets the old one."""
        config, model = build_live_model(s, data.sigma, data.name)
        with self.weights_lock:
            self._check_open()
            self.trainer = self._make_trainer(model, data, s)
            self.model = self.trainer.ema_model
            self.config = config
            self.data, self.settings = data, s
            self.origin = f"fresh {method_name(s.method)} model (width {s.width}, depth {s.depth})"
            self.base_name, self.base_steps = "", 0
            self.history = []
            self.lr_left = 1.0
            self._set_phase("starting", 0)
            self.version += 1
        self._set_view(data, s.seed)

    def load_pretrained(
        self, name: str, model: FlowMap, config: dict[str, Any], data: DataSource, s: TrainSettings
    ) -> None:
        """Start from a shipped checkpoint: its weights become this session's model (a copy)."""
        fresh = copy.deepcopy(model).float().train().requires_grad_(True)
        method = config.get("method") if isinstance(config.get("method"), str) else s.method
        try:
            make_objective(method)
        except ValueError:
            method = s.method
        s = TrainSettings(**{**s.as_dict(), "method": method})
        with self.weights_lock:
            self._check_open()
            self.trainer = self._make_trainer(fresh, data, s)
            self.model = self.trainer.ema_model
            self.config = {**config, "data": data.name, "method": method}
            self.data, self.settings = data, s
            self.origin = f"shipped checkpoint {name}"
            trained = (config.get("training") or {}).get("steps")
            self.base_name, self.base_steps = name, trained if isinstance(trained, int) and trained > 0 else 0
            self.history = []
            self.lr_left = 0.0  # its own training decayed its rate: a Continue starts at CONTINUE_FACTOR
            self._set_phase("loaded", 0)
            self.version += 1
        self._set_view(data, s.seed)

    def _set_phase(self, phase: str, step: int, message: str = "") -> None:
        self.phase, self.phase_step, self.phase_message = phase, int(step), message
        if phase in FINAL_STATES:
            self.finished.set()
        else:
            self.finished.clear()

    def begin_run(self) -> None:
        """Mark a run as begun (before its model is built), so a Stop waits for its end."""
        self.run_note = ""
        self._set_phase("starting", self.trainer.global_step if self.trainer else 0)

    def end_run(self) -> None:
        """After a run's generator is closed: a run dropped before its final update ends "stopped"."""
        if self.phase not in FINAL_STATES:
            self._set_phase("stopped", self.trainer.global_step if self.trainer else self.phase_step)

    def update_settings(self, s: TrainSettings) -> str:
        """Apply new settings before a Continue; the network's width/depth and data stay."""
        assert self.trainer is not None and self.settings is not None
        notes = []
        old = self.settings
        with self.weights_lock:
            tr = self.trainer
            tr.config.lr = s.lr
            tr.lr_scale = 1.0
            tr.config.batch_size = s.batch
            tr.local_batch_size = s.batch
            if s.method != old.method or s.eta != old.eta:
                tr.objective = live_objective(s.method, s.eta)
        if (s.width, s.depth) != (old.width, old.depth):
            notes.append("Continue keeps the network's width and depth; press Start for a new network")
        self.settings = TrainSettings(**{**s.as_dict(), "width": old.width, "depth": old.depth})
        if self.config is not None:
            self.config["method"] = s.method
        self.run_note = "; ".join(notes)
        return self.run_note

    # ------------------------------------------------------------------ viewing
    def sample_panels(self, steps: tuple[int, ...] = VIEW_STEPS) -> list[tuple[str, np.ndarray]]:
        """Samples from the fixed view noise at each N (flow map; Euler for flow matching)."""
        if self.model is None or self.view_noise is None:
            return []
        fm_only = self.method == "fm"
        out = []
        with self.weights_lock, torch.no_grad():
            x0 = self.view_noise * self.model.sigma
            for n in steps:
                grid = make_grid("uniform", n)
                if fm_only:
                    res = ode_solve(self.model.velocity, x0, method="euler", grid=grid)
                    title = f"Euler ODE, {n} step{'s' if n > 1 else ''}"
                else:
                    res = flowmap_sample(self.model, x0, grid)
                    title = f"flow map, N = {n}"
                out.append((title, res.x.numpy().copy()))
        return out

    # ------------------------------------------------------------------ training
    def run(
        self,
        steps: int,
        max_seconds: float,
        chunk_seconds: float = 1.0,
        first_chunk_seconds: float = 0.3,
    ) -> Iterator[Snapshot]:
        """Train ``steps`` more steps (or until ``max_seconds``, or Stop); yield after each slice.

        The first snapshot comes before any training (the starting samples), the second after a
        short slice, then one about every ``chunk_seconds``. The caller holds ``run_lock``. The
        learning rate is ``lr * f0 * live_lr_factor(p)`` with ``p`` the run's progress
        (:func:`run_progress`: the larger of its steps done and its time cap used, after a grace)
        and ``f0`` where the schedule stood (:attr:`lr_left`: 1 for a fresh model; what a stopped run left; else
        :data:`CONTINUE_FACTOR`), so the rate reaches 0 at the run's end, whether its steps or its
        time cap end it, and a Continue never jumps back up. Each snapshot's state is also written
        to :attr:`phase` (before it is yielded).
        """
        if self.trainer is None:
            raise InputError("no model to train: press Start first")
        tr = self.trainer
        run = _Run(
            trainer=tr,
            start_step=tr.global_step,
            steps=steps,
            max_seconds=max_seconds,
            base_lr=self.settings.lr if self.settings is not None else tr.config.lr,
            f0=self.lr_left if self.lr_left > 1e-6 else CONTINUE_FACTOR,
            t_begin=time.perf_counter(),
        )
        self._set_phase("starting", tr.global_step)
        yield Snapshot(
            tr.global_step, run.target, 0.0, 0.0, "starting", self.sample_panels(), self.history, start=run.start_step
        )
        slice_len = first_chunk_seconds
        recovered = ""
        used_before = self.used_seconds
        while True:
            note, diverged = self._train_slice(run, slice_len)
            recovered = note or recovered
            elapsed = time.perf_counter() - run.t_begin
            # The session's budget spends each run's wall time, the same clock as the run's cap
            # (drawing the sample panels between slices included), so that "83 s of 120 s cap"
            # and "session time left 517 s" add up on the progress line.
            self.used_seconds = used_before + elapsed
            if len(self.history) > MAX_HISTORY:
                self.history = self.history[::2]
            done = max(0, tr.global_step - run.start_step)
            rate = done / elapsed if elapsed > 0 else 0.0
            run.progress = max(run.progress, run_progress(done, steps, elapsed, max_seconds))
            state, note = self._slice_state(run, elapsed, diverged)
            recovered = note or recovered
            final = state != "training"
            if final:
                self.version += 1
                self.lr_left = 0.0 if state in ("done", "time cap reached") else run.f0 * live_lr_factor(run.progress)
                self.final_snapshot = Snapshot(
                    tr.global_step, run.target, elapsed, rate, state, [], [], start=run.start_step
                )
            self._set_phase(state, tr.global_step, recovered)  # a waiting Stop answers now
            panels = self.sample_panels()
            yield Snapshot(
                tr.global_step,
                run.target,
                elapsed,
                rate,
                state,
                panels,
                self.history,
                message=recovered,
                start=run.start_step,
            )
            if final:
                return
            slice_len = chunk_seconds

    def _train_slice(self, run: _Run, slice_len: float) -> tuple[str, DivergenceError | None]:
        """Train until the slice's time, the run's steps or time cap, or Stop; each step at the
        scheduled rate. Returns (a note of the last recovered step or "", the guard's
        DivergenceError if it gave up, else None)."""
        tr = run.trainer
        t_slice = time.perf_counter()
        recovered = ""
        while tr.global_step < run.target and not self.stop_event.is_set():
            elapsed = time.perf_counter() - run.t_begin
            run.progress = run_progress(tr.global_step - run.start_step, run.steps, elapsed, run.max_seconds)
            tr.config.lr = run.base_lr * run.f0 * live_lr_factor(run.progress)
            try:
                with self.weights_lock:
                    logs = tr.step()
            except DivergenceError as err:  # the guard gave up: say so, keep the rolled-back model
                self._drop_history_after(tr.global_step)
                return recovered, err
            if "recovered" in logs:
                self._drop_history_after(tr.global_step)  # the restored step: later ones are gone
                run.rollbacks += 1
                recovered = rollback_note(logs, run.rollbacks, self.settings or TrainSettings())
            else:
                self.history.append(
                    {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
                )
            now = time.perf_counter()
            if now - t_slice >= slice_len or now - run.t_begin >= run.max_seconds:
                break
        return recovered, None

    def _drop_history_after(self, step: int) -> None:
        """Drop the loss history's entries past ``step`` (the step the guard restored): the history
        then holds the run's current path only, its steps increasing, for every reader (today the
        loss plot). Entries are in increasing step, so only a tail goes."""
        while self.history and self.history[-1].get("step", 0) > step:
            self.history.pop()

    def _slice_state(self, run: _Run, elapsed: float, diverged: DivergenceError | None) -> tuple[str, str]:
        """(the run's state after a slice, a note for a divergence or "")."""
        step = run.trainer.global_step
        if diverged is not None:
            return "diverged", f"training diverged at step {diverged.step} ({diverged.reason}); " + diverged_advice(
                step, self.settings or TrainSettings()
            )
        if self.stop_event.is_set():
            return "stopped", ""
        if step >= run.target:
            return "done", ""
        if elapsed >= run.max_seconds:
            return "time cap reached", ""
        return "training", ""
