"""The flowmaps Gradio app: `python app.py` starts it; `build_app()` builds the page.

Time convention: t = 0 is noise, t = 1 is data. The app imports the flowmaps library; the
library never imports the app.

Without gradio (tested directly): config (limits, env vars), validation (input checks, the
live settings), datasets, checkpoints, live (per-session training), live_settings (a live
run's schedule, a checkpoint's settings), sessions (freeing departed visitors' sessions, the
session cap), plots, compare (flow map against ODE: arrays and figures), quality, images, race.

The page: ui (assembles the tabs, the shared session state, launch options), events (every
event's error and session plumbing), drawing (the drawing pad's guards), and tabs/: one module
per tab, each with its callbacks (a subclass of tabs.base.AppBase) and a ``build_*_tab``
that lays out its components and wires its events: train (+ train_callbacks), flowmap_vs_ode,
quality, images, race.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__all__ = ["build_app", "launch_kwargs"]


def __getattr__(name: str):
    # gradio is imported only when the page is built, so `import app.validation` stays light.
    if name in ("build_app", "launch_kwargs"):
        from app import ui

        return getattr(ui, name)
    raise AttributeError(name)
