"""What every tab's callbacks share: the checkpoint store, the visitors' sessions, the model choices.

:class:`AppBase` is bound to an :class:`app.config.AppConfig` and holds no gradio component,
so the callbacks are tested without a server; each tab adds its callbacks as a subclass
(app/tabs/*.py) and :class:`app.ui.FlowMapsApp` joins them.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import shutil
from typing import Any

from app import quality as ql
from app.checkpoints import KIND_2D, CheckpointStore
from app.config import AppConfig
from app.datasets import CSV, DATA_CHOICES, DRAW, DataSource, toy_source
from app.live import LiveSession
from app.sessions import MemoryTrimmer, Sessions
from app.validation import InputError, TrainSettings
from flowmaps.data.gmm import GMM_PRESETS

#: The model dropdowns' value for this session's own model.
SESSION = "__session__"
SESSION_LABEL = "this session's model (trained live)"  # short: a longer one ran under the dropdown's arrow
#: The live tab's settings as the page opens.
DEFAULTS = TrainSettings()


class AppBase:
    """The state every tab's callbacks use (see the module docstring)."""

    def __init__(self, config: AppConfig | None = None) -> None:
        self.config = config or AppConfig.from_env()
        self.limits = self.config.limits
        self.store = CheckpointStore(self.config.checkpoints_dir, self.config.hub_repos, list(DATA_CHOICES))
        self.quality_cache = ql.QualityCache(self.config.cache_dir / "quality")
        # A closed tab frees its session after two heartbeats (30 s by default; gradio's
        # GRADIO_HEARTBEAT_INTERVAL sets it): a browser re-opening a dropped connection keeps it.
        from gradio.utils import get_heartbeat_rate

        self.sessions = Sessions(
            self.limits.max_sessions,
            self.limits.idle_seconds,
            on_close=self.forget_session,
            trimmer=MemoryTrimmer(),
            leave_grace=2.0 * get_heartbeat_rate(),
        )

    def forget_session(self, session: LiveSession) -> None:
        """What the app keeps for a session outside it: cached results and download folders."""
        self.quality_cache.forget(ql.session_prefix(session.token))
        for folder in session.scratch:
            shutil.rmtree(folder, ignore_errors=True)
        session.scratch.clear()

    # ---------------------------------------------------------------- choices
    def checkpoint_choices(self, kind: str) -> list[tuple[str, str]]:
        return [(self.store.info(n).short_label, n) for n in self.store.names(kind)]

    def default_checkpoint(self, kind: str, method: str | None = None) -> str | None:
        """The shipped model a dropdown opens on: the first trained by ``method`` if given, else
        the first flow map (trained by self-distillation, not the flow-matching baseline, since
        the app shows what 1, 2, 4 ... steps buy), else the first model; None if there is none."""
        names = self.store.names(kind)
        same = [n for n in names if method is not None and self.store.info(n).method == method]
        maps = [n for n in names if self.store.info(n).method not in (None, "fm")]
        return (same or maps or names or [None])[0]

    def default_mixture_model(self) -> str | None:
        """The shipped 2-D model the "Flow map vs ODE" tab opens on: a flow map trained on a
        Gaussian mixture (its exact map gives the error heat map on the first Draw), else the default
        2-D model; None if nothing is shipped."""
        names = self.store.names(KIND_2D)
        gmm = [n for n in names if self.store.info(n).data in GMM_PRESETS]
        maps = [n for n in gmm if self.store.info(n).method not in (None, "fm")]
        maps.sort(key=lambda n: self.store.info(n).method != DEFAULTS.method)  # the default method first
        return (maps or gmm or [self.default_checkpoint(KIND_2D, DEFAULTS.method)])[0]

    def model_choices(self) -> list[tuple[str, str]]:
        return [(SESSION_LABEL, SESSION)] + self.checkpoint_choices(KIND_2D)

    def checkerboard_models(self) -> list[str]:
        return [n for n in self.store.names(KIND_2D) if self.store.info(n).data == "checkerboard"]

    def data_of(self, name: str) -> DataSource | None:
        data = self.store.info(name).data
        if data in DATA_CHOICES and data not in (DRAW, CSV):
            return toy_source(data)
        return None

    def check_model(self, session: LiveSession, source: Any) -> None:
        """Raise :class:`InputError` unless ``source`` is this session's model (and it has one) or
        a shipped 2-D checkpoint; loads nothing (a tab's validator runs it before the event)."""
        if source in (None, "", SESSION):
            session.require_model()
        elif not isinstance(source, str) or source not in self.store.names(KIND_2D):
            raise InputError(f"model: {source!r} is not this session's model or a shipped 2-D checkpoint")

    def resolve_model(self, session: LiveSession, source: Any):
        """(model copy or shared eval model, data source or None, label, cache key or None).

        This session's model is labelled with the training step of the copy (``this session, step
        1,200``), so that a result computed while it trains says which weights it shows."""
        self.check_model(session, source)
        if source in (None, "", SESSION):
            model, steps = session.snapshot()
            return model, session.data, f"this session, step {steps:,}", None
        model, _ = self.store.load(source)
        info = self.store.info(source)
        return model, self.data_of(source), source, f"{source}@{info.stamp}"
