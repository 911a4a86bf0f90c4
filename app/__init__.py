"""The flowmaps Gradio app: `python app.py` starts it; `build_app()` builds the page.

Time convention: t = 0 is noise, t = 1 is data. The app imports the flowmaps library; the
library never imports the app. Submodules: config (limits, env vars), validation (input
checks), datasets, checkpoints, live (per-session training), sessions (freeing departed
visitors' sessions, the session cap), plots, compare, quality, images, ui (the gr.Blocks).
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
