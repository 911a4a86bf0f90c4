"""The "Race the families" tab: LSD, ESD, PSD-M and flow matching trained on one budget, side by
side (the race itself is app/race.py); a race is a run of the visitor's session.

Element ids: ``race-data``, ``race-families``, ``race-steps``, ``race-seed``, ``race-start``,
``race-stop``, ``race-progress``, ``race-status``, ``race-table``, ``race-samples``.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from app import plots
from app.config import Limits
from app.datasets import toy_source
from app.events import InputCheck, NamedSlider, named, visiting
from app.race import (
    CHUNK_STEPS,
    RACE_DATA,
    RACE_DEFAULTS,
    RACE_LABELS,
    Race,
    RaceSnapshot,
    metric_name,
    parse_methods,
    race_figure,
    table_markdown,
    winner_sentence,
)
from app.tabs.train_callbacks import busy_message
from app.validation import InputError, TrainSettings, parse_int, parse_seed


# ------------------------------------------------------------------------------ the page's handlers
class RaceHandlers:
    """The race's events for one app: a race is a run of the visitor's session (its run lock, its
    Stop flag, its share of live-training time), so a race and a live training never run at once
    in one session, and closing the tab stops the race.

    Args:
        limits: the app's :class:`app.config.Limits` (per-run and per-session time caps, steps).
        sessions: the app's :class:`app.sessions.Sessions` (admits the session, as a model is built).
    """

    def __init__(self, limits, sessions) -> None:
        self.limits = limits
        self.sessions = sessions

    def _cap(self, session) -> float:
        left = self.limits.session_seconds - session.used_seconds
        if left <= 1.0:
            raise InputError(
                f"this session has used its {self.limits.session_seconds:.0f} s of live training; "
                "reload the page for a new session"
            )
        return max(1.0, min(self.limits.live_seconds, left))

    def check(self, session, data_choice, methods, steps, seed) -> tuple:
        """The race's input checks, also its validator in the page (app/events.InputCheck):
        families, data set, steps, seed, the session's time, an idle session. Returns (families,
        steps, seed).

        Raises:
            InputError: naming the first field that is wrong and what to change.
        """
        picked = parse_methods(methods)
        if not isinstance(data_choice, str) or data_choice not in RACE_DATA:
            raise InputError(f"data set: {data_choice!r} is not one of {', '.join(RACE_DATA)}")
        n_steps = parse_int(steps, "steps per family", 1, self.limits.max_steps)
        seed_v = parse_seed(seed)
        self._cap(session)
        if session.running:
            raise InputError(busy_message(session, "race"))
        return picked, n_steps, seed_v

    def start(self, session, data_choice, methods, steps, seed, chunk: int = CHUNK_STEPS, settings=None):
        """Race the picked families on ``data_choice``; yields (figure, table, sentence, progress)."""
        picked, n_steps, seed_v = self.check(session, data_choice, methods, steps, seed)
        base = settings or RACE_DEFAULTS
        s = TrainSettings(**{**base.as_dict(), "steps": n_steps, "seed": seed_v})
        cap = self._cap(session)
        self.sessions.admit(session)
        if not session.run_lock.acquire(blocking=False):
            raise InputError(busy_message(session, "race"))
        session.run_kind = "race"
        try:
            session.stop_event.clear()
            data = toy_source(data_choice)
            race = Race(data, picked, s)
            metric = metric_name(data)
            t_prev = time.perf_counter()
            for snap in race.run(session.stop_event, cap, chunk=chunk):
                now = time.perf_counter()
                session.used_seconds += now - t_prev
                t_prev = now
                yield self.render(race, snap, metric, cap)
        finally:
            session.run_kind = ""
            session.run_lock.release()

    def render(self, race: Race, snap: RaceSnapshot, metric: str, cap: float) -> tuple:
        fig = race_figure(snap, race.view_data)
        table = table_markdown(snap, metric)
        # the bar counts steps per family: the slowest family still racing (all have the same between rounds)
        racing = [s for m, s in snap.steps.items() if m not in snap.diverged] or list(snap.steps.values())
        done = min(racing)
        final = snap.state not in ("starting", "racing")
        if final:
            sentence = f"**{snap.state}** · " + winner_sentence(
                snap.table, metric, snap.steps, snap.floor, snap.diverged, snap.floor_sd
            )
            if snap.state == "time cap reached":  # say what the scores are and what to change
                speed = done / snap.elapsed if snap.elapsed > 0 else 0.0
                need = (
                    f", and {snap.target:,} steps at that speed need about {snap.target / speed:.0f} s" if speed else ""
                )
                sentence += (
                    f" The {cap:.0f} s cap stopped the race at {done:,} of {snap.target:,} steps per family "
                    f"({speed:.0f} steps/s per family on this machine now{need}), so these models are less "
                    "trained than the lesson assumes; fewer families or steps, or a quieter moment, let it finish."
                )
        else:
            sentence = f"**{snap.state}** · the table refreshes every few seconds"
        rate = done / snap.elapsed if snap.elapsed > 0 else 0.0
        families = f" per family, {len(race.methods)} famil{'y' if len(race.methods) == 1 else 'ies'}"
        # a race stopped between rounds: the bar gives every family's steps, as the sentence does
        top = max(racing) if final else None
        bar = plots.progress_html(
            done, snap.target, snap.elapsed, cap, rate, snap.state, top_step=top, rate_note=families
        )
        return fig, table, sentence, bar

    def stop(self, session) -> tuple:
        """Ask this session's race to end (it ends at its next step and shows its last table)."""
        if session.running:
            session.stop_event.set()
        return ()


# ------------------------------------------------------------------------------ the tab
EXAMPLES = [
    ["checkerboard", list(RACE_LABELS.values()), 1500, 0],
    ["eight_gaussians", list(RACE_LABELS.values()), 1500, 0],
    ["two_moons", ["LSD", "PSD-M", "FM (Euler)"], 1500, 0],
]


def build_race_tab(fm: Any, session: gr.State, lim: Limits) -> None:
    """The "Race the families" tab, inside ``gr.Tabs``; its handlers become ``fm.race``."""
    handlers = RaceHandlers(lim, fm.sessions)
    fm.race = handlers
    with gr.Tab("Race the families", id="race", elem_id="tab-race"):
        gr.Markdown(
            "LSD, ESD, PSD-M and flow matching learn the same data from the same seed, with the same network "
            "(64 x 4), batch, learning rate and number of steps, trained in turn on one CPU thread. The table "
            "scores each at N = 1, 2, 4, 8 steps as it trains: the paper's Table 1 in miniature. Flow matching "
            "learns only the velocity, so its N steps are N Euler steps of the ODE."
        )
        with gr.Row():
            r_data = named(gr.Dropdown(list(RACE_DATA), value="checkerboard", label="data set", elem_id="race-data"))
            r_methods = named(
                gr.CheckboxGroup(
                    list(RACE_LABELS.values()),
                    value=list(RACE_LABELS.values()),
                    label="families",
                    elem_id="race-families",
                )
            )
            r_steps = NamedSlider(
                100, min(lim.max_steps, 8000), value=1500, step=100, label="steps per family", elem_id="race-steps"
            )
            r_seed = named(gr.Number(value=0, label="seed", elem_id="race-seed"))
        with gr.Row():
            r_go = gr.Button("Race", variant="primary", elem_id="race-start")
            r_stop = gr.Button("Stop", elem_id="race-stop")
        r_bar = gr.HTML(elem_id="race-progress")
        r_sentence = gr.Markdown(elem_id="race-status")
        r_table = gr.Markdown(elem_id="race-table")
        r_fig = gr.Plot(
            plots.empty_figure("press Race: each family's samples at N = 1, 2, 4, 8 appear here"),
            label="samples at N = 1, 2, 4, 8",
            show_label=False,
            elem_id="race-samples",
        )
        gr.Examples(
            EXAMPLES,
            [r_data, r_methods, r_steps, r_seed],
            label="lessons (click, then press Race)",
            elem_id="race-examples",
        )
        inputs = [session, r_data, r_methods, r_steps, r_seed]
        fields = {"data set": r_data, "families": r_methods, "steps per family": r_steps, "seed": r_seed}
        r_go.click(
            visiting(fm.sessions, handlers.start, "race"),
            inputs,
            [r_fig, r_table, r_sentence, r_bar, session],
            concurrency_limit=lim.train_concurrency,
            concurrency_id="train",
            # a mistake beside its field (one that names no input beside the families); the race keeps its view
            validator=InputCheck(fm.sessions, inputs, handlers.check, fields, r_methods, "race"),
        )
        r_stop.click(visiting(fm.sessions, handlers.stop, "stop"), [session], [session], concurrency_limit=None)
