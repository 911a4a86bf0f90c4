"""The Gradio page: four tabs over the flowmaps library.

Time convention (everywhere): t = 0 is noise, t = 1 is data.

Stable element ids (``elem_id``), for browser tests and screenshots:

Tabs: ``tab-train``, ``tab-compare``, ``tab-quality``, ``tab-images``.

Train live (2-D)
    inputs  ``data-set`` (dropdown), ``draw-pad`` (sketch pad, shown for "draw"),
            ``csv-upload`` (file, shown for "csv"), ``method``, ``steps``, ``batch``, ``lr``,
            ``eta``, ``width``, ``depth``, ``seed``, ``pretrained`` (shipped 2-D checkpoints)
    buttons ``btn-start``, ``btn-stop``, ``btn-continue``, ``btn-load``, ``btn-download``
    outputs ``live-progress`` (HTML bar), ``live-status`` (Markdown), ``plot-samples`` (data and
            samples at N = 1, 2, 4, 8), ``plot-loss`` (loss per term), ``download-file``
Flow map vs ODE
    inputs  ``cmp-model``, ``cmp-grid``, ``cmp-steps``, ``cmp-times``, ``cmp-points``, ``cmp-seed``
    buttons ``btn-trajectories``
    outputs ``plot-trajectories``, ``cmp-info``, ``plot-error`` (Gaussian mixtures only)
Steps vs quality
    inputs  ``q-model``, ``q-samples``
    buttons ``btn-quality``, ``btn-quality-shipped``
    outputs ``q-lesson``, ``q-message`` (what to change after an input mistake), ``plot-quality``,
            ``q-table`` (inside the closed accordion "The numbers")
Images
    inputs  ``img-model``, ``img-steps``, ``img-grid``, ``img-times``, ``img-seed``, ``img-count``,
            ``img-ode``
    buttons ``btn-images``
    outputs ``img-output`` (labelled picture, one row per N), ``img-info``, ``img-fid``,
            ``img-none`` (the "no image checkpoints shipped yet" note)

API names (gradio_client): ``/train_start``, ``/train_continue``, ``/train_stop``,
``/load_pretrained``, ``/download_model``, ``/trajectories``, ``/quality``, ``/quality_shipped``,
``/sample_images``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from app import compare as cmp  # noqa: E402
from app import images as img  # noqa: E402
from app import plots  # noqa: E402
from app import quality as ql  # noqa: E402
from app.checkpoints import KIND_2D, KIND_IMAGE, CheckpointStore  # noqa: E402
from app.config import AppConfig  # noqa: E402
from app.datasets import CSV, DATA_CHOICES, DRAW, DataSource, points_source, toy_source  # noqa: E402
from app.live import (  # noqa: E402
    CONTINUE_FACTOR,
    FINAL_STATES,
    VIEW_STEPS,
    LiveSession,
    Snapshot,
    refresh_seconds,
    settings_from_checkpoint,
)
from app.race import build_race_tab  # noqa: E402
from app.sessions import MemoryTrimmer, Sessions, SpaceFull  # noqa: E402
from app.validation import (  # noqa: E402
    GRID_CHOICES,
    METHOD_LABELS,
    METHODS,
    InputError,
    TrainSettings,
    cap_decoded_pixels,
    check_image_size,
    format_grid,
    parse_int,
    parse_seed,
    parse_time_grid,
    parse_train_settings,
    points_from_drawing,
    points_from_upload,
)
from flowmaps.data.gmm import GMM_PRESETS  # noqa: E402
from flowmaps.objectives import DESCRIPTIONS  # noqa: E402

log = logging.getLogger("flowmaps.app")

SESSION = "__session__"
SESSION_LABEL = "this session's model (train it in the first tab)"
NO_IMAGES = (
    "**No image checkpoints shipped yet.** Image flow maps (Fashion-MNIST, a small UNet) are trained on a "
    "GPU and shipped in `checkpoints/`; this tab samples them on the CPU once they are there."
)
DEFAULTS = TrainSettings()
#: Longest a Stop waits for the run's final update (a run sees the flag at its next step).
STOP_WAIT = 10.0

INTRO = """
# Flow maps: one network, any number of steps
A **flow map** X<sub>s,t</sub>(x) = x + (t − s) v<sub>s,t</sub>(x) jumps along the probability-flow ODE from
time s to time t in one network call (t = 0 is noise, t = 1 is data). Its diagonal v<sub>t,t</sub> is an ordinary
flow-matching velocity, so the same network also drives an ODE solver. Trained by **self-distillation**
(Boffi, Albergo, Vanden-Eijnden 2025): LSD, ESD and PSD teach the map with its own velocity.
"""

CSS = """
#live-status p, #cmp-info p {margin: 0.2em 0;}
.fm-progress {padding: 2px 4px;}
"""


# ------------------------------------------------------------------------------ errors
def input_error(message: str, title: str = "Check this input", action: str = "input") -> gr.Error:
    """The page's message for a user's mistake: shown to the user, one line in the server log
    (at INFO), and no traceback (gradio prints one for a gr.Error unless told not to)."""
    log.info("%s refused: %s", action, message.splitlines()[0][:200])
    return gr.Error(message, title=title, print_exception=False)


# ------------------------------------------------------------------------------ components
def _named_preprocess(slider: gr.Slider, payload: Any) -> float:
    name = slider.label or "value"
    if payload is None or isinstance(payload, bool):
        raise input_error(f"{name}: expected a number, got {payload!r}")
    try:
        value = float(payload)
    except (TypeError, ValueError):
        raise input_error(f"{name}: {payload!r} is not a number") from None
    if not np.isfinite(value) or value < slider.minimum or value > slider.maximum:
        raise input_error(f"{name}: {payload} is outside the allowed range [{slider.minimum:g}, {slider.maximum:g}]")
    return value


def NamedSlider(*args: Any, **kwargs: Any) -> gr.Slider:  # noqa: N802 - reads like the component it builds
    """A gr.Slider whose out-of-range error names the field and the allowed range.

    gr.Slider refuses an out-of-range value from an API client before the callback runs, with a
    message that does not say which field; this one says it. (An instance attribute rather than a
    subclass: gradio writes a .pyi stub beside any module that subclasses a component.)
    """
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = functools.partial(_named_preprocess, slider)
    return slider


def named(component: Any) -> Any:
    """Prefix gradio's own input errors (e.g. a value not among a dropdown's choices) with the field."""
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except Exception as err:
            message = getattr(err, "message", None) or str(err)
            raise input_error(f"{component.label or 'input'}: {message}") from None

    component.preprocess = preprocess
    return component


# ------------------------------------------------------------------------------ error handling
def _friendly(err: Exception, action: str) -> gr.Error:
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, SpaceFull):
        return input_error(str(err), title="The Space is full", action=action)
    if isinstance(err, InputError):
        return input_error(str(err), action=action)
    log.exception("%s failed", action)  # a fault of the app, not of the input: its traceback, once
    return gr.Error(
        f"{action} failed ({type(err).__name__}: {str(err)[:300]}). The app is still running: try other settings.",
        title="Something went wrong",
        print_exception=False,
    )


def guarded(action: str):
    """Turn InputError into a clear gr.Error, and any other failure into a short message."""

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as err:
                    raise _friendly(err, action) from None

            return gen

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                raise _friendly(err, action) from None

        return call

    return wrap


def keep_plots(fn, n_out: int, message_at: int | None = None):
    """``fn`` whose input mistakes leave the plots as they are.

    On an :class:`InputError` every one of the ``n_out`` outputs is left unchanged (``gr.update()``)
    except the Markdown at ``message_at``, which gets the message, so the last good plot stays
    next to what to change. With ``message_at=None`` the message goes to one more output after
    ``fn``'s own (which a good result clears). One line at INFO in the server log, no traceback.
    Other failures pass through (see :func:`guarded`)."""
    extra = message_at is None

    def answer(err: InputError) -> tuple:
        log.info("%s refused: %s", fn.__name__, str(err).splitlines()[0][:200])
        out: list[Any] = [gr.update() for _ in range(n_out + extra)]
        out[n_out if extra else message_at] = (
            f"**Check this input.** {_plain(str(err))}\n\n_The plots show the last good result._"
        )
        return tuple(out)

    def good(out: Any) -> Any:
        return (*out, "") if extra else out

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                for out in fn(*args, **kwargs):
                    yield good(out)
            except InputError as err:
                yield answer(err)

        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return good(fn(*args, **kwargs))
        except InputError as err:
            return answer(err)

    return call


# ------------------------------------------------------------------------------ visitors
def _with_state(out: Any, session: LiveSession) -> tuple:
    return (*out, session) if isinstance(out, tuple) else (out, session)


def visiting(sessions: Sessions, fn, action: str):
    """The event of ``fn(session, *inputs)``: the same outputs plus the session (for the page's
    gr.State, whose time to live restarts whenever an event writes it), run while the session
    is marked busy (an idle expiry then leaves it alone) and recorded under the visitor's
    browser-session hash (the unload event frees it by that hash). Errors as :func:`guarded`.
    A session freed already is refused with a message."""

    def using(session: LiveSession, request: Any):
        return sessions.using(session, getattr(request, "session_hash", None))

    if inspect.isgeneratorfunction(fn):

        def event(request: gr.Request, session, *args):
            with using(session, request):
                for out in fn(session, *args):
                    yield _with_state(out, session)

    else:

        def event(request: gr.Request, session, *args):
            with using(session, request):
                return _with_state(fn(session, *args), session)

    event.__name__, event.__doc__ = fn.__name__, fn.__doc__
    return guarded(action)(event)


#: Picks the drawing pad's brush once the pad is shown, so that it takes strokes at once (gradio's
#: pad starts with no tool and ignores strokes until one is picked).
PICK_BRUSH_JS = """(choice) => {
  if (choice !== "draw") return;
  let tries = 0;
  const pick = () => {
    const b = document.querySelector('#draw-pad button[aria-label="Brush"]');
    if (b && b.offsetParent !== null) {
      if (!b.classList.contains("highlight")) b.click();  // "highlight": the picked tool
    } else if (++tries < 40) {
      setTimeout(pick, 100);
    }
  };
  pick();
}"""
#: The drawing pad's canvas, in pixels (square).
CANVAS = 320
#: Largest side of an image the pad's value may hold: the canvas at up to 4 device pixels per
#: CSS pixel. Anything larger is refused from its header, before gradio decodes it.
DRAW_MAX_SIDE = 4 * CANVAS
#: Most images in one pad value (background, composite and layers together).
DRAW_MAX_IMAGES = 10
#: Bytes of drawing blobs (the browser's way of sending the pad) held at once between their
#: upload and the event that reads them; the oldest are dropped beyond it.
BLOB_BUDGET = 64 << 20


def _pad_images(pad: gr.ImageEditor, payload: Any) -> list[Any]:
    """The files (paths) or blobs (bytes) of a sketch-pad value, without opening any."""
    pid = getattr(payload, "id", None)
    if pid is not None:
        cached = pad.blob_storage.get(pid)
        items = [cached.background, *cached.layers, cached.composite] if cached is not None else []
    else:
        items = [getattr(payload, "background", None), *(getattr(payload, "layers", None) or [])]
        items.append(getattr(payload, "composite", None))
    return [getattr(it, "path", it) for it in items if it is not None]


def guard_drawing(pad: gr.ImageEditor, max_side: int, max_images: int, budget: int = BLOB_BUDGET) -> gr.ImageEditor:
    """Refuse sketch-pad values whose images exceed what the canvas needs, before they are decoded.

    The pad's own preprocess decodes every image it is sent (background, layers, composite),
    whatever its size: a flat 8000 x 8000 PNG of a few hundred kB costs gigabytes. This reads each
    image's size from its header first and refuses more than ``max_images`` images or any side
    above ``max_side`` with a message. Blobs (the browser's upload path) are checked on arrival,
    and at most ``budget`` bytes of them are held. The checks are instance attributes, so nothing
    may update the pad (gradio would give the session an unchecked copy).
    """
    preprocess, accept_blobs = pad.preprocess, pad.accept_blobs
    refused: dict[str, str] = {}  # blob id -> why its blob was not kept
    lock = threading.Lock()
    need = f"the canvas is {pad.canvas_size[0]} x {pad.canvas_size[1]}"

    def check(payload: Any) -> Any:
        if payload is None:
            return preprocess(payload)
        pid = getattr(payload, "id", None)
        try:
            if pid is not None and pid in refused:
                raise InputError(refused.pop(pid))
            images = _pad_images(pad, payload)
            if len(images) > max_images:
                raise InputError(f"drawing: {len(images)} images in one value; at most {max_images} are accepted")
            for image in images:
                check_image_size(image, "drawing", max_side, max_side, need)
        except InputError as err:
            if pid is not None:
                pad.blob_storage.pop(pid, None)
            raise input_error(str(err), action="Drawing") from None
        return preprocess(payload)

    def guarded_accept(data: Any) -> Any:
        pid = str(data.data.get("id"))
        try:
            check_image_size(data.files[0][1], "drawing", max_side, max_side, need)
        except (InputError, IndexError, TypeError) as err:
            pad.blob_storage.pop(pid, None)
            refused[pid] = str(err) if isinstance(err, InputError) else "drawing: the upload held no image"
            while len(refused) > 256:
                refused.pop(next(iter(refused)))
            log.info("drawing blob refused: %s", refused[pid])
            return None
        with lock:  # the component server runs on several threads
            out = accept_blobs(data)
            store = pad.blob_storage
            entries = list(store.items())  # oldest first
            sizes = [sum(len(b or b"") for b in (v.background, v.composite, *v.layers)) for _, v in entries]
            total = sum(sizes)
            for (k, _), size in zip(entries, sizes):
                if total <= budget or k == pid:
                    break
                total -= size
                store.pop(k, None)
        return out

    guarded_accept._is_server_fn = True  # what gradio's component server looks for
    pad.preprocess = check
    pad.accept_blobs = guarded_accept
    return pad


# ------------------------------------------------------------------------------ the app
class FlowMapsApp:
    """The callbacks of the page, bound to a checkpoint store and limits (testable without a server)."""

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
        return [(self.store.info(n).label, n) for n in self.store.names(kind)]

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
        Gaussian mixture (its exact map gives the error heat map at once), else the default
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

    # ---------------------------------------------------------------- data
    def resolve_data(self, choice: Any, drawing: Any, csv_file: Any) -> DataSource:
        if choice == DRAW:
            return points_source(DRAW, points_from_drawing(drawing))
        if choice == CSV:
            pts = points_from_upload(csv_file, max_rows=self.limits.max_csv_rows, max_bytes=self.limits.max_upload)
            return points_source(CSV, pts)
        if not isinstance(choice, str) or choice not in DATA_CHOICES:
            raise InputError(f"data set: {choice!r} is not one of {', '.join(DATA_CHOICES)}")
        return toy_source(choice)

    def data_of(self, name: str) -> DataSource | None:
        data = self.store.info(name).data
        if data in DATA_CHOICES and data not in (DRAW, CSV):
            return toy_source(data)
        return None

    def resolve_model(self, session: LiveSession, source: Any):
        """(model copy or shared eval model, data source or None, label, cache key or None)."""
        if source in (None, "", SESSION):
            model = session.snapshot_model()
            return model, session.data, "this session", None
        if not isinstance(source, str) or source not in self.store.names(KIND_2D):
            raise InputError(f"model: {source!r} is not this session's model or a shipped 2-D checkpoint")
        model, _ = self.store.load(source)
        info = self.store.info(source)
        return model, self.data_of(source), source, f"{source}@{info.stamp}"

    # ---------------------------------------------------------------- live training
    def status_text(self, session: LiveSession) -> str:
        """The live tab's status line, derived only from the session's run state (``phase``, its
        step and notes), so every reply that shows it (a run's updates, Stop's answer) agrees."""
        phase = session.phase
        name = session.data.name if session.data else ""
        method = (session.method or "").upper()
        text = f"**{phase}** · {method} on {name} · step {session.phase_step}"
        if phase == "done":
            text += " · try the *Flow map vs ODE* and *Steps vs quality* tabs with this model"
        elif phase == "time cap reached":
            text += (
                f" · each run is capped at {self.limits.live_seconds:.0f} s so the CPU is shared; "
                "press Continue to train more"
            )
        elif phase == "stopped":
            text += " · the model keeps what it has learned; press Continue to go on"
        for note in (session.phase_message, session.run_note):
            if note:
                text += f"\n\n{note}"
        return text

    def _figures(self, session: LiveSession, snap) -> tuple:
        data = session.data_view if session.data_view is not None else np.zeros((0, 2))
        rng = plots.axis_range(data) if len(data) else None
        fig_s = plots.samples_figure(data, snap.panels, rng, marker_size=3.5)
        fig_l = plots.loss_figure(snap.history)
        left = max(0.0, self.limits.session_seconds - session.used_seconds)
        bar = plots.progress_html(
            snap.step, snap.target, snap.elapsed, self._run_cap(session, False), snap.rate, snap.state, left
        )
        return fig_s, fig_l, bar, self.status_text(session)

    def _run_cap(self, session: LiveSession, check: bool = True) -> float:
        left = self.limits.session_seconds - session.used_seconds
        if check and left <= 1.0:
            raise InputError(
                f"this session has used its {self.limits.session_seconds:.0f} s of live training; "
                "download the model, or reload the page for a new session"
            )
        return max(1.0, min(self.limits.live_seconds, left))

    def _stream(self, session: LiveSession, steps: int, prepare):
        if not session.run_lock.acquire(blocking=False):
            raise InputError("this session is already training: press Stop first")
        try:
            session.stop_event.clear()
            session.begin_run()
            prepare()
            cap = self._run_cap(session)
            for snap in session.run(steps, cap, chunk_seconds=refresh_seconds()):
                yield self._figures(session, snap)
        finally:
            session.end_run()
            session.run_lock.release()

    def train_start(self, session, data_choice, drawing, csv_file, method, steps, batch, lr, eta, width, depth, seed):
        """Start a fresh model on the chosen data and stream its training."""
        s = parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)
        data = self.resolve_data(data_choice, drawing, csv_file)
        self._run_cap(session)
        self.sessions.admit(session)  # a model is about to be built: one of the Space's slots
        yield from self._stream(session, s.steps, lambda: session.start_fresh(data, s))

    def train_continue(self, session, method, steps, batch, lr, eta, width, depth, seed):
        """Continue training this session's model (new lr / batch / eta / method apply)."""
        if session.trainer is None:
            raise InputError("nothing to continue: press Start first (or load a shipped model)")
        s = parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)
        yield from self._stream(session, s.steps, lambda: session.update_settings(s))

    def train_stop(self, session, wait: float = STOP_WAIT):
        """Stop this session's run (other sessions are not touched) and answer with its final status.

        The run sees the stop flag at its next step and writes its final state; this waits up to
        ``wait`` seconds for it, so the answer is the same line as the run's last update (never a
        "stopping" that arrives after it). With no run, the last run's status stays (e.g. the
        time cap's "press Continue to train more")."""
        if session.running:
            session.stop_event.set()
            if not session.finished.wait(wait):
                return f"**stopping** · step {session.phase_step} · the run ends at its next step"
        if session.phase in FINAL_STATES and session.phase != "loaded" and session.has_model:
            return self.status_text(session)
        return "nothing is training in this session: press Start (or Load a shipped model, then Continue)"

    def load_pretrained(self, session, name, method, steps, batch, lr, eta, width, depth, seed):
        """Load a shipped 2-D checkpoint into this session (an instant, trained model).

        The session adopts the checkpoint's settings (method, width, depth, learning rate, eta,
        batch size; :func:`app.live.settings_from_checkpoint`) and the page's Settings show them,
        so a Continue trains it as it was trained, not at the page's rate. Outputs: the four live
        outputs, then the method label, batch, lr, eta, width and depth."""
        if not isinstance(name, str) or name not in self.store.names(KIND_2D):
            raise InputError(f"shipped model: {name!r} is not a shipped 2-D checkpoint")
        data = self.data_of(name)
        if data is None:
            raise InputError(f"shipped model {name}: its data set is not recorded in its config")
        if session.running:
            raise InputError("this session is training: press Stop first")
        page = parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)
        self.sessions.admit(session)
        model, config = self.store.load(name)
        s = settings_from_checkpoint(config, page, self.limits)
        session.load_pretrained(name, model, config, data, s)
        s = session.settings
        snap = Snapshot(0, 0, 0.0, 0.0, "loaded", session.sample_panels(), [])
        fig_s, fig_l, _, _ = self._figures(session, snap)
        bar = plots.progress_html(0, 0, 0.0, self.limits.live_seconds, 0.0, "loaded")
        status = (
            f"**loaded** {name} ({self.store.info(name).label}); its settings are in *Settings* "
            f"(width {s.width}, depth {s.depth}, learning rate {s.lr:g}); press Continue to train it further "
            f"(from {CONTINUE_FACTOR:g} x that rate, decaying to 0), or explore it in the other tabs"
        )
        return (
            fig_s,
            plots.loss_figure([]),
            bar,
            status,
            METHOD_LABELS.get(s.method, method),
            s.batch,
            s.lr,
            s.eta,
            s.width,
            s.depth,
        )

    def download_model(self, session):
        """This session's model as a zip of a save_pretrained folder."""
        from flowmaps.hub import save_pretrained

        model = session.snapshot_model()
        config = dict(session.config or {})
        name = f"{(session.data.name if session.data else 'model')}-{session.method or 'flowmap'}"
        # gradio copies the returned zip into its own cache, so the folder of the previous
        # download is no longer needed; the last one goes when the session is freed.
        for old in session.scratch:
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix="flowmaps-download-"))
        session.scratch[:] = [str(tmp)]
        weakref.finalize(session, shutil.rmtree, str(tmp), True)  # also if gradio drops the session unclosed
        folder = tmp / name
        steps = session.trainer.global_step if session.trainer else 0
        card = {
            "title": f"flowmaps live model: {name}",
            "summary": f"Trained live in the flowmaps app ({session.origin}).",
            "data": session.data.name if session.data else "?",
            "method": session.method,
            "steps": steps,
            "hardware": "CPU (the app's live trainer)",
        }
        save_pretrained(model, folder, config, card=card)
        archive = tmp / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{name}/{f.name}")
        shutil.rmtree(folder, ignore_errors=True)
        return str(archive)

    # ---------------------------------------------------------------- flow map vs ODE
    def trajectories(self, session, source, grid_kind, steps, custom, n_points, seed):
        """ODE paths and flow-map jumps for a model; plus the error heat map for mixtures."""
        grid = parse_time_grid(grid_kind, steps, custom, max_steps=self.limits.max_grid_steps)
        n = parse_int(n_points, "start points", 1, self.limits.max_trajectory_points)
        sd = parse_seed(seed)
        model, data, label, _ = self.resolve_model(session, source)
        d = cmp.trajectory_data(model, data, grid, n_points=n, seed=sd)
        fig = plots.trajectories_figure(d)
        info = f"**{label}** · grid: {format_grid(grid)}\n\n" + cmp.summary(d)
        if data is not None and data.gmm is not None:
            s_vals, t_vals, err = cmp.error_grid(model, data, seed=sd)
            heat = plots.error_heatmap(s_vals, t_vals, err)
        else:
            heat = plots.empty_figure(
                f"the error heat map needs Gaussian-mixture data ({', '.join(GMM_PRESETS)}), "
                "whose exact flow map is known",
                height=200,
            )
        return fig, info, heat

    # ---------------------------------------------------------------- steps vs quality
    def _quality_stream(self, jobs, n: int, key: str | None, persist: bool):
        if key is not None:
            key += f"-median{ql.REPEATS}"  # results timed otherwise (older caches) are not reused
            cached = self.quality_cache.get(key)
            if cached is not None:
                yield (
                    plots.quality_figure(cached.curves, cached.metric_name, cached.floor, ql.TIME_TITLE),
                    ql.table_markdown(cached),
                )
                return
        res = None
        metric = None
        for model, data, label, flow, ode in jobs:
            if metric is None:
                metric = ql.Metric(data, n)
                res = ql.QualityResult(metric.name, metric.floor, n=n)
            count = 0
            for partial in ql.evaluate(model, data, label, n=n, flow_map=flow, ode=ode, result=res, metric=metric):
                res = partial
                count += 1
                if count % 3 == 0:
                    yield plots.quality_figure(res.curves, res.metric_name, res.floor, ql.TIME_TITLE), "computing..."
        if res is None:
            raise InputError("no model to evaluate")
        if key is not None:
            self.quality_cache.put(key, res, persist)
        yield plots.quality_figure(res.curves, res.metric_name, res.floor, ql.TIME_TITLE), ql.table_markdown(res)

    def quality(self, session, source, n_samples):
        """Metric and wall time against network evaluations, for one model (streams as it computes).

        A session's results are cached under its process-unique token and model version
        (:func:`app.quality.session_key`), read before the model is copied, and not at all while
        the session is training (its model changes under the same version)."""
        n = parse_int(n_samples, "samples", 500, 20_000)
        version, training = session.version, session.running
        model, data, label, key = self.resolve_model(session, source)
        if data is None:
            raise InputError(f"model {label}: its data set is unknown, so there is nothing to compare samples with")
        fm_only = (session.method if source in (None, "", SESSION) else self.store.info(source).method) == "fm"
        if key is None:
            key = None if training else ql.session_key(session.token, version) + f"n{n}"
            persist = False
        else:
            key += f"-n{n}"
            persist = True
        yield from self._quality_stream([(model, data, label, not fm_only, True)], n, key, persist)

    def quality_shipped(self, n_samples):
        """The shipped checkerboard models side by side: flow maps and the ODE on the FM model."""
        n = parse_int(n_samples, "samples", 500, 20_000)
        names = self.checkerboard_models()
        if not names:
            raise InputError("no shipped checkerboard checkpoints found in the checkpoint folder")
        jobs = []
        keys = []
        fm_names = [m for m in names if self.store.info(m).method == "fm"]
        ode_on = fm_names[0] if fm_names else names[0]
        for name in names:
            model, _ = self.store.load(name)
            info = self.store.info(name)
            is_fm = info.method == "fm"
            jobs.append((model, toy_source("checkerboard"), info.name, not is_fm, name == ode_on))
            keys.append(f"{name}@{info.stamp}")
        key = "shipped-" + "+".join(keys) + f"-n{n}"
        yield from self._quality_stream(jobs, n, key, True)

    # ---------------------------------------------------------------- images
    def sample_images(self, name, steps, grid_kind, custom, seed, n_images, ode):
        """Rows of images at N = 1, 2, 4, 8 and the chosen N from one noise, plus an ODE row."""
        names = self.store.names(KIND_IMAGE)
        if not names:
            raise InputError("no image checkpoints shipped yet: the image tab needs a UNet checkpoint in checkpoints/")
        if name not in names:
            raise InputError(f"image model: {name!r} is not one of {', '.join(names)}")
        n = parse_int(steps, "steps", 1, self.limits.max_image_steps)
        count = parse_int(n_images, "number of images", 1, self.limits.max_images)
        sd = parse_seed(seed)
        if ode not in img.ODE_BASELINES:
            raise InputError(f"ODE baseline: {ode!r} is not one of {', '.join(img.ODE_BASELINES)}")
        kind = str(grid_kind).strip().lower() if grid_kind is not None else ""
        custom_grid = None
        if kind == "custom":
            custom_grid = parse_time_grid("custom", n, custom, max_steps=self.limits.max_image_steps)
        else:
            parse_time_grid(kind, n, None, max_steps=self.limits.max_image_steps)
        model, config = self.store.load(name)
        euler = self.store.info(name).method == "fm"
        grids = img.default_grids(kind, n, custom_grid, euler=euler)
        rows = img.sample_rows(model, config, grids, ode, count, sd, euler=euler, kind=kind)
        picture = img.compose(rows)
        metrics = self.image_metrics(name)
        lines = ["| row | network calls | ms per image (one run) | FID (metrics.json) |", "| --- | --- | --- | --- |"]
        for r in rows:
            fid = img.row_fid(metrics, r)
            lines.append(f"| {r.label} | {r.nfe} | {r.ms_per_image:.1f} | {'—' if fid is None else f'{fid:.1f}'} |")
        notes = []
        if custom_grid is not None:
            notes.append(
                f"Custom grid: its row takes the {len(custom_grid) - 1} steps you typed "
                f"({format_grid(custom_grid)}); the Steps N slider applies to the uniform, edm and cosine grids only."
            )
        if euler:
            notes.append(
                "This flow-matching baseline learned only the velocity v<sub>t,t</sub>: its rows are Euler "
                "steps of that velocity, not flow-map jumps."
            )
        notes.append(
            "FID: lower is better; — means not measured for that sampler and grid. Times: one run each after "
            "an untimed warm-up, so a busy CPU shows in them."
        )
        return picture, "\n".join(lines) + "\n\n" + " ".join(notes), self.image_fid(name)

    def image_metrics(self, name: str) -> dict | None:
        """A listed image checkpoint's metrics.json (scripts/eval_images.py), else its config's
        "metrics", else None."""
        info = self.store.info(name)  # listed names only: no user text becomes a path
        path = Path(info.source) / "metrics.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError):
                log.info("could not read %s", path)
        metrics = info.config.get("metrics")
        return metrics if isinstance(metrics, dict) else None

    def image_fid(self, name: Any) -> str:
        """The FID-against-NFE text of an image checkpoint, shown before the first Sample."""
        if not isinstance(name, str) or name not in self.store.names(KIND_IMAGE):
            return ""
        info = self.store.info(name)
        euler = info.method == "fm"
        table = img.fid_markdown(self.image_metrics(name), euler=euler) or img.card_metrics(info.config, info.card)
        head = f"**FID against network calls ({name}; lower is better)**"
        if euler:
            head += " · its flow-map jumps are not listed: a flow-matching model never trained them"
        return head + "\n\n" + table


def warm_up() -> None:
    """Pay the one-time costs of the first Start (the optimizer's first construction imports
    torch's compiler stack, seconds on a small CPU; first figures) off the request path."""
    try:
        from app.datasets import toy_source

        sess = LiveSession()
        sess.start_fresh(toy_source("checkerboard"), TrainSettings(steps=2, batch=32, width=16, depth=1))
        for snap in sess.run(2, max_seconds=30.0, chunk_seconds=0.01, first_chunk_seconds=0.01):
            plots.samples_figure(sess.data_view, snap.panels).to_json()
            plots.loss_figure(snap.history).to_json()
        plots.quality_figure([], "").to_json()
    except Exception:  # a failed warm-up only costs time later
        log.exception("warm-up failed")


# ------------------------------------------------------------------------------ layout
def _plain(text: str) -> str:
    """Text shown as Markdown without markup surprises (underscores, stars, carets stay literal)."""
    for ch in "\\_*^[]`":
        text = text.replace(ch, "\\" + ch)
    return text


#: Captions of a method's loss curve, where it does not behave as a loss usually does.
LOSS_NOTES = {
    "meanflow": (
        "Its *eulerian* term can rise while the samples improve: the term's target is built from the "
        "network's own velocity and time derivative (held fixed in each step), and it grows sharper as the "
        "velocity is learned, so judge MeanFlow by its samples, not by that curve."
    ),
}


def _method_help(label: str) -> str:
    key = METHODS.get(label, "")
    text = _plain(DESCRIPTIONS.get(key, ""))
    return text + ("\n\n" + LOSS_NOTES[key] if key in LOSS_NOTES else "")


def _data_help(choice: str) -> str:
    return _plain(DATA_CHOICES.get(choice, ""))


#: One-click lessons of the "Flow map vs ODE" tab: (label, model, grid, N, custom times, points, seed).
#: One-click lessons of the "Train live" tab: (data set, method), both choices of the tab's dropdowns.
TRAIN_EXAMPLES = (
    ("checkerboard", "LSD (Lagrangian)"),
    ("eight_gaussians", "ESD (Eulerian)"),
    ("two_moons", "PSD-M (progressive, gamma = 1/2)"),
)

COMPARE_EXAMPLES = (
    ("Eight Gaussians: one jump against the exact map", "eight_gaussians-lsd", "uniform", 1, "", 24, 0),
    ("Eight Gaussians: four jumps", "eight_gaussians-lsd", "uniform", 4, "", 24, 0),
    ("Eight Gaussians, ESD: the error heat map over (s, t)", "eight_gaussians-esd", "uniform", 4, "", 24, 0),
    ("Checkerboard: a custom grid that slows near the data", "checkerboard-lsd", "custom", 3, "0, 0.5, 0.9, 1", 24, 0),
)


def _lesson_examples(fm: FlowMapsApp, inputs: list, outputs: list, where: Any) -> None:
    """gr.Examples of :data:`COMPARE_EXAMPLES` whose models are shipped: a click fills the inputs and
    draws (the examples name shipped models only, so no visitor's session is needed)."""
    shipped = set(fm.store.names(KIND_2D))
    rows = [ex for ex in COMPARE_EXAMPLES if ex[1] in shipped]
    if not rows:
        return

    def draw(*args):
        return keep_plots(fm.trajectories, 3, 1)(LiveSession(), *args)

    with where:
        gr.Examples(
            [list(ex[1:]) for ex in rows],
            inputs,
            outputs,
            fn=guarded("Trajectories")(draw),
            cache_examples=False,
            run_on_click=True,
            example_labels=[ex[0] for ex in rows],
            label="One-click lessons",
            elem_id="cmp-examples",
        )


def build_app(config: AppConfig | None = None, warm: bool = True) -> gr.Blocks:
    """Build the page (queue configured); launch it with ``demo.launch(**launch_kwargs())``.

    ``warm`` starts a background thread that pays the first training step's one-time costs, so
    the first Start answers quickly.
    """
    fm = FlowMapsApp(config)
    lim = fm.limits
    heavy = {"concurrency_limit": lim.concurrency}
    cap_decoded_pixels(lim.max_image_pixels)
    # gradio's cache of uploads and returned files: swept every few minutes of files older than
    # the idle time (at least ten minutes), so that uploads cannot fill the disk over a day.
    sweep = (max(60.0, min(lim.idle_seconds, 600.0)), max(600.0, lim.idle_seconds))
    with gr.Blocks(
        title="flowmaps: flow maps by self-distillation", analytics_enabled=False, delete_cache=sweep
    ) as demo:
        # Each visitor's model lives here. Every event returns it as an output, which (re)starts its
        # time to live: an idle session is freed after lim.idle_seconds (fm.sessions.expire); a
        # closed tab frees it at once through the unload event below.
        session = gr.State(LiveSession, time_to_live=lim.idle_seconds, delete_callback=fm.sessions.expire)
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tabs"):
            # ------------------------------------------------------------ tab 1
            with gr.Tab("Train live (2-D)", id="train", elem_id="tab-train"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        data_dd = gr.Dropdown(
                            list(DATA_CHOICES), value="checkerboard", label="Data set", elem_id="data-set"
                        )
                        data_md = gr.Markdown(_data_help("checkerboard"), elem_id="data-help")
                        # The pad is shown and hidden through its column: an update of the pad
                        # itself would give each session a fresh copy without guard_drawing's checks.
                        with gr.Column(visible=False, min_width=0) as draw_box:
                            draw = gr.Sketchpad(
                                label="Draw your data, then press Start",
                                type="numpy",
                                canvas_size=(CANVAS, CANVAS),
                                elem_id="draw-pad",
                                brush=gr.Brush(default_size=10, colors=["#000000"], color_mode="fixed"),
                            )
                            guard_drawing(draw, DRAW_MAX_SIDE, DRAW_MAX_IMAGES)
                        csv = gr.File(
                            label=f"CSV of x, y rows (at most {lim.max_csv_rows} rows, {lim.max_upload})",
                            file_types=[".csv", ".txt"],
                            visible=False,
                            elem_id="csv-upload",
                        )
                        method = gr.Dropdown(list(METHODS), value="LSD (Lagrangian)", label="Method", elem_id="method")
                        method_md = gr.Markdown(_method_help("LSD (Lagrangian)"), elem_id="method-help")
                        # above the Settings: on a 1280 x 720 screen they stay in view with the plots
                        with gr.Row():
                            start = gr.Button("Start", variant="primary", elem_id="btn-start")
                            stop = gr.Button("Stop", variant="stop", elem_id="btn-stop")
                            cont = gr.Button("Continue", elem_id="btn-continue")
                        gr.Examples(
                            [list(ex) for ex in TRAIN_EXAMPLES],
                            [data_dd, method],
                            label="One-click lessons: fill the data set and method, then press Start",
                            elem_id="train-examples",
                        )
                        with gr.Accordion("Settings", open=True):
                            steps = NamedSlider(
                                10, lim.max_steps, value=DEFAULTS.steps, step=10, label="Steps per run", elem_id="steps"
                            )
                            batch = NamedSlider(
                                lim.min_batch,
                                lim.max_batch,
                                value=DEFAULTS.batch,
                                step=16,
                                label="Batch size",
                                elem_id="batch",
                            )
                            lr = gr.Number(
                                value=DEFAULTS.lr,
                                label=f"Learning rate ({lim.min_lr:g} to {lim.max_lr:g})",
                                info=(
                                    "the rate at the start of a fresh run: it falls linearly to 0 over the "
                                    "run's steps or its time cap, whichever ends it first; Continue resumes "
                                    "the fall where the last run left it"
                                ),
                                elem_id="lr",
                            )
                            eta = NamedSlider(
                                0.05,
                                1.0,
                                value=DEFAULTS.eta,
                                step=0.05,
                                label="eta: fraction of the batch on the diagonal",
                                elem_id="eta",
                            )
                            width = NamedSlider(
                                lim.min_width,
                                lim.max_width,
                                value=DEFAULTS.width,
                                step=16,
                                label="Width of the MLP",
                                elem_id="width",
                            )
                            depth = NamedSlider(
                                1, lim.max_depth, value=DEFAULTS.depth, step=1, label="Hidden layers", elem_id="depth"
                            )
                            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                        with gr.Row():
                            pre_choices = fm.checkpoint_choices(KIND_2D)
                            pretrained = gr.Dropdown(
                                pre_choices,
                                value=fm.default_checkpoint(KIND_2D, DEFAULTS.method),
                                label="Start from a shipped model",
                                elem_id="pretrained",
                                scale=3,
                            )
                            load = gr.Button("Load", elem_id="btn-load", scale=1)
                        with gr.Row():
                            download = gr.Button("Download model (zip)", elem_id="btn-download")
                        download_file = gr.File(label="Checkpoint", interactive=False, elem_id="download-file")
                    with gr.Column(scale=3):
                        progress = gr.HTML(
                            plots.progress_html(0, DEFAULTS.steps, 0, lim.live_seconds, 0, "ready"),
                            elem_id="live-progress",
                        )
                        status = gr.Markdown(
                            "Press **Start**: the samples and the loss appear within a second "
                            "and refresh every 1 to 3 s (less often while the CPU is busy).",
                            elem_id="live-status",
                        )
                        samples_plot = gr.Plot(
                            plots.empty_figure("data and samples at N = 1, 2, 4, 8 appear here"),
                            label="Data and flow-map samples at N = " + ", ".join(map(str, VIEW_STEPS)),
                            elem_id="plot-samples",
                        )
                        loss_plot = gr.Plot(plots.loss_figure([]), label="Loss per term", elem_id="plot-loss")
                        gr.Markdown(
                            "Every panel starts from the same noise. **N** is the number of flow-map jumps on a "
                            "uniform grid, one network call each. Flow matching alone learns only the diagonal "
                            "(the velocity), so for it the panels show Euler steps of the ODE instead. Live runs "
                            f"use an EMA of 0.99 and are capped at {lim.live_seconds:.0f} s each "
                            f"({lim.session_seconds:.0f} s per session)."
                        )

            # ------------------------------------------------------------ tab 2
            with gr.Tab("Flow map vs ODE", id="compare", elem_id="tab-compare"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        choices = fm.model_choices()
                        cmp_model = gr.Dropdown(
                            choices, value=fm.default_mixture_model() or SESSION, label="Model", elem_id="cmp-model"
                        )
                        cmp_grid = gr.Dropdown(
                            list(GRID_CHOICES), value="uniform", label="Time grid", elem_id="cmp-grid"
                        )
                        cmp_steps = NamedSlider(1, 16, value=4, step=1, label="Flow-map steps N", elem_id="cmp-steps")
                        cmp_times = gr.Textbox(
                            value="0, 0.4, 0.75, 1", label="Custom times (for 'custom')", elem_id="cmp-times"
                        )
                        cmp_points = NamedSlider(
                            1, lim.max_trajectory_points, value=24, step=1, label="Start points", elem_id="cmp-points"
                        )
                        cmp_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="cmp-seed")
                        cmp_btn = gr.Button("Draw trajectories", variant="primary", elem_id="btn-trajectories")
                        cmp_examples = gr.Column(min_width=0)  # the one-click lessons (filled below)
                        gr.Markdown(
                            "Blue: paths of the ODE dx/dt = v<sub>t,t</sub>(x) of the learned velocity (adaptive "
                            "Dormand-Prince). Dashed black: the exact velocity (Gaussian mixtures). Orange: the N "
                            "flow-map jumps, each marker one network call. Move the slider: the red crosses are "
                            "one jump X<sub>0,τ</sub>(x<sub>0</sub>), the blue dots the ODE at τ."
                        )
                    with gr.Column(scale=3):
                        traj_plot = gr.Plot(
                            plots.empty_figure("press Draw trajectories"),
                            label="Flow map vs ODE",
                            show_label=False,
                            elem_id="plot-trajectories",
                        )
                        cmp_info = gr.Markdown(elem_id="cmp-info")
                        err_plot = gr.Plot(
                            plots.empty_figure("flow-map error over (s, t): Gaussian mixtures only", height=200),
                            label="Flow-map error (Gaussian mixtures)",
                            elem_id="plot-error",
                        )

            # ------------------------------------------------------------ tab 3
            with gr.Tab("Steps vs quality", id="quality", elem_id="tab-quality"):
                gr.Markdown(ql.LESSON, elem_id="q-lesson")
                with gr.Row():
                    q_model = gr.Dropdown(
                        fm.model_choices(),
                        value=fm.default_checkpoint(KIND_2D, DEFAULTS.method) or SESSION,
                        label="Model",
                        elem_id="q-model",
                        scale=3,
                    )
                    q_samples = NamedSlider(
                        500, 20_000, value=3000, step=500, label="Samples per point", elem_id="q-samples", scale=2
                    )
                with gr.Row():
                    q_btn = gr.Button("Evaluate this model", variant="primary", elem_id="btn-quality")
                    q_ship = gr.Button(
                        "Compare the shipped checkerboard models (LSD, ESD, PSD-M, PSD-U, FM; one training budget)",
                        elem_id="btn-quality-shipped",
                    )
                q_msg = gr.Markdown(elem_id="q-message")
                q_plot = gr.Plot(
                    plots.quality_figure([], ""),
                    label="Quality and time against network evaluations",
                    show_label=False,
                    elem_id="plot-quality",
                )
                with gr.Accordion("The numbers", open=False):
                    q_table = gr.Markdown(elem_id="q-table")

            # ------------------------------------------------------------ tab 4
            with gr.Tab("Images", id="images", elem_id="tab-images"):
                img_names = fm.checkpoint_choices(KIND_IMAGE)
                img_none = gr.Markdown(NO_IMAGES, visible=not img_names, elem_id="img-none")
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        img_model = gr.Dropdown(
                            img_names,
                            value=fm.default_checkpoint(KIND_IMAGE),
                            label="Image model",
                            elem_id="img-model",
                        )
                        img_steps = NamedSlider(
                            1,
                            lim.max_image_steps,
                            value=8,
                            step=1,
                            label="Steps N",
                            info="for the uniform, edm and cosine grids; a custom grid has the steps you type",
                            elem_id="img-steps",
                        )
                        img_grid = gr.Dropdown(
                            list(GRID_CHOICES), value="uniform", label="Time grid", elem_id="img-grid"
                        )
                        img_times = gr.Textbox(
                            value="0, 0.4, 0.75, 1", label="Custom times (for 'custom')", elem_id="img-times"
                        )
                        img_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="img-seed")
                        img_count = NamedSlider(1, lim.max_images, value=8, step=1, label="Images", elem_id="img-count")
                        img_ode = gr.Dropdown(
                            list(img.ODE_BASELINES), value=img.DEFAULT_ODE, label="ODE baseline", elem_id="img-ode"
                        )
                        img_btn = gr.Button("Sample", variant="primary", elem_id="btn-images")
                    with gr.Column(scale=3):
                        gr.Markdown(img.LESSON, elem_id="img-lesson")
                        img_out = gr.Image(
                            label="Same noise, more steps: one row per N",
                            show_label=False,  # the label's badge would hide the first row's label
                            type="pil",
                            elem_id="img-output",
                            buttons=["download", "fullscreen"],
                        )
                        img_info = gr.Markdown(elem_id="img-info")
                        img_fid = gr.Markdown(fm.image_fid(fm.default_checkpoint(KIND_IMAGE)), elem_id="img-fid")

            # ------------------------------------------------------------ tab 5 (app/race.py)
            build_race_tab(fm, session, lim)

        # ---------------------------------------------------------------- events
        settings = [method, steps, batch, lr, eta, width, depth, seed]
        for comp in (
            data_dd,
            method,
            lr,
            seed,
            pretrained,
            cmp_model,
            cmp_grid,
            cmp_seed,
            q_model,
            img_model,
            img_grid,
            img_seed,
            img_ode,
        ):
            named(comp)
        live_out = [samples_plot, loss_plot, progress, status]

        def on_data(choice):
            return (gr.update(visible=choice == DRAW), gr.update(visible=choice == CSV), _data_help(choice))

        data_dd.change(on_data, data_dd, [draw_box, csv, data_md], api_visibility="undocumented", queue=False).then(
            None, data_dd, None, js=PICK_BRUSH_JS, queue=False
        )
        method.change(_method_help, method, method_md, api_visibility="undocumented", queue=False)

        visit = functools.partial(visiting, fm.sessions)
        start.click(
            visit(fm.train_start, "Training"),
            [session, data_dd, draw, csv, *settings],
            [*live_out, session],
            api_name="train_start",
            concurrency_limit=lim.train_concurrency,
            concurrency_id="train",
            show_progress="minimal",
            show_progress_on=progress,  # a queued user sees their place on the progress bar
        )
        cont.click(
            visit(fm.train_continue, "Training"),
            [session, *settings],
            [*live_out, session],
            api_name="train_continue",
            concurrency_limit=lim.train_concurrency,
            concurrency_id="train",
            show_progress="minimal",
            show_progress_on=progress,  # a queued user sees their place on the progress bar
        )
        stop.click(
            visit(fm.train_stop, "Stop"),
            session,
            [status, session],
            api_name="train_stop",
            concurrency_limit=None,
            show_progress="hidden",
        )
        load.click(
            visit(fm.load_pretrained, "Loading the model"),
            [session, pretrained, *settings],
            [*live_out, method, batch, lr, eta, width, depth, session],
            api_name="load_pretrained",
            **heavy,
        )
        download.click(
            visit(fm.download_model, "Download"), session, [download_file, session], api_name="download_model", **heavy
        )
        cmp_btn.click(
            visit(keep_plots(fm.trajectories, 3, 1), "Trajectories"),
            [session, cmp_model, cmp_grid, cmp_steps, cmp_times, cmp_points, cmp_seed],
            [traj_plot, cmp_info, err_plot, session],
            api_name="trajectories",
            **heavy,
        )
        q_btn.click(
            visit(keep_plots(fm.quality, 2), "Evaluation"),
            [session, q_model, q_samples],
            [q_plot, q_table, q_msg, session],
            api_name="quality",
            concurrency_limit=1,
            concurrency_id="quality",
        )
        q_ship.click(
            guarded("Evaluation")(keep_plots(fm.quality_shipped, 2)),
            q_samples,
            [q_plot, q_table, q_msg],
            api_name="quality_shipped",
            concurrency_limit=1,
            concurrency_id="quality",
        )
        img_btn.click(
            guarded("Image sampling")(keep_plots(fm.sample_images, 3, 1)),
            [img_model, img_steps, img_grid, img_times, img_seed, img_count, img_ode],
            [img_out, img_info, img_fid],
            api_name="sample_images",
            **heavy,
        )

        img_model.change(fm.image_fid, img_model, img_fid, api_visibility="undocumented", queue=False)
        cmp_inputs = [cmp_model, cmp_grid, cmp_steps, cmp_times, cmp_points, cmp_seed]
        _lesson_examples(fm, cmp_inputs, [traj_plot, cmp_info, err_plot], cmp_examples)

        def refresh():
            two_d = fm.checkpoint_choices(KIND_2D)
            models = fm.model_choices()
            images = fm.checkpoint_choices(KIND_IMAGE)
            return (
                gr.update(choices=two_d),
                gr.update(choices=models),
                gr.update(choices=models),
                gr.update(choices=images, value=fm.default_checkpoint(KIND_IMAGE)),  # as built, not the first name
                gr.update(visible=not images),
            )

        demo.load(
            refresh,
            None,
            [pretrained, cmp_model, q_model, img_model, img_none],
            api_visibility="undocumented",
            queue=False,
        )

        def leave(request: gr.Request):
            """The visitor's tab closed or reloaded: free its session now."""
            fm.sessions.leave(getattr(request, "session_hash", None))

        demo.unload(leave)
    for warning in fm.store.warnings:
        log.warning("%s", warning)
    demo.queue(default_concurrency_limit=lim.concurrency, max_size=lim.queue_size)
    if warm:
        threading.Thread(target=warm_up, name="flowmaps-warm-up", daemon=True).start()
    demo.flowmaps = fm  # the callbacks, for tests and benchmarks
    return demo


def launch_kwargs(config: AppConfig | None = None) -> dict[str, Any]:
    """Keyword arguments of ``demo.launch`` that belong to the app (upload cap, style, sessions kept)."""
    cfg = config or AppConfig.from_env()
    return {
        "max_file_size": cfg.limits.max_upload,
        "css": CSS,
        "show_error": False,
        # gradio keeps each browser session's last outputs (plots) until it has this many sessions;
        # its default of 10,000 would let a day of visitors pile up.
        "state_session_capacity": max(200, 8 * cfg.limits.max_sessions),
    }
