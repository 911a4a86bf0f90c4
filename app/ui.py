"""The Gradio page: five tabs over the flowmaps library, one module each (app/tabs/).

Time convention (everywhere): t = 0 is noise, t = 1 is data.

Stable element ids (``elem_id``), for browser tests and screenshots:

Tabs: ``tab-train``, ``tab-compare``, ``tab-quality``, ``tab-images``, ``tab-race``.

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
    outputs ``q-lesson``, ``q-message`` (what to change after an input mistake), ``q-summary``
            (who wins at which N, above the plot), ``plot-quality``, ``q-table`` (inside the
            closed accordion "The numbers")
Images
    inputs  ``img-model``, ``img-steps``, ``img-grid``, ``img-times``, ``img-seed``, ``img-count``,
            ``img-ode``
    buttons ``btn-images``
    outputs ``img-output`` (labelled picture, one row per N), ``img-info``, ``img-fid``,
            ``img-none`` (the "no image checkpoints shipped yet" note)
Race the families
    inputs  ``race-data``, ``race-families``, ``race-steps``, ``race-seed``
    buttons ``race-start``, ``race-stop``
    outputs ``race-progress``, ``race-status``, ``race-table``, ``race-samples``

API names (gradio_client): ``/train_start``, ``/train_continue``, ``/train_stop``,
``/load_pretrained``, ``/download_model``, ``/trajectories``, ``/quality``, ``/quality_shipped``,
``/sample_images``.

This module assembles the tabs, the session state they share, the refresh of the model
choices on load and the freeing of a session when its tab closes; the error and session
plumbing of every event is app/events.py.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from app import plots, server_log
from app.checkpoints import KIND_2D, KIND_IMAGE
from app.config import AppConfig
from app.drawing import cap_decoded_pixels
from app.live import LiveSession
from app.tabs.flowmap_vs_ode import CompareCallbacks, build_compare_tab
from app.tabs.images import ImageCallbacks, build_images_tab
from app.tabs.quality import QualityCallbacks, build_quality_tab
from app.tabs.race import build_race_tab
from app.tabs.train import build_train_tab, page_js
from app.tabs.train_callbacks import TrainCallbacks
from app.validation import TrainSettings, upload_bytes

log = logging.getLogger("flowmaps.app")

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
/* a slider's note (app/events.NamedSlider): in the fields' box, under its slider (beside it in a row) */
.form > .block.slider-note {background: var(--block-background-fill); padding: var(--block-padding);}
.column > .form > .block.slider-note {padding-top: 0;}
.csv-size-note {display: none; margin: var(--spacing-md) var(--block-padding); padding: var(--spacing-md);
  border: 1px solid var(--error-border-color); border-radius: var(--radius-sm); color: var(--error-text-color);
  font-size: var(--text-md);}
/* the live tab's refusals naming no field: gradio's own message element stays hidden, and the page
   script's copy (app/tabs/train.RUN_NOTE_JS) shows under the run buttons, looking like a field's message */
.run-message {display: none !important;}
.run-note, .field-note {padding: var(--spacing-md); border: 1px solid var(--error-border-color);
  border-radius: var(--radius-sm); color: var(--error-text-color); background: var(--error-background-fill);
  font-size: var(--text-md);}
.run-note {margin: 0 var(--block-padding);}
/* a slider's own note under it (app/events.NamedSlider) says what its message above says: one copy in view */
.block:has(.validation-error) + .slider-note {display: none !important;}
/* a field edited since its refusal: gradio's message describes the old value (app/events.FIELD_NOTE_JS);
   gradio also gives the refused input itself the class validation-error (a red frame): that stays */
.block[data-edited] .validation-error:not(input):not(textarea) {display: none !important;}
/* a field's refusal kept by the page script (app/events.FIELD_NOTE_JS) after gradio dropped its own */
.field-note {margin-bottom: var(--spacing-md);}
.slider-note .prose {font-size: var(--block-info-text-size); line-height: var(--line-sm);}
/* gradio lays a field's validation message over the top of the field, over its label: put it above the label */
.block > .wrap:has(> .validation-error) {position: relative !important; inset: auto; margin-bottom: var(--spacing-md);}
.block > .wrap > .validation-error {position: static; align-self: stretch; border: 1px solid var(--error-border-color);
  border-radius: var(--radius-sm);}
"""


class FlowMapsApp(TrainCallbacks, CompareCallbacks, QualityCallbacks, ImageCallbacks):
    """The callbacks of the page, bound to a checkpoint store and limits (testable without a server):
    each tab's callbacks (app/tabs/) over the shared state of :class:`app.tabs.base.AppBase`."""


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


def _refresh_on_load(fm: FlowMapsApp, demo: gr.Blocks, dropdowns: list[Any]) -> None:
    """Re-read the shipped checkpoints' choices when a page loads (a checkpoint added since the
    page was built shows up); ``dropdowns``: the shipped-model, compare, quality and image model
    dropdowns and the images tab's "none shipped" note, in that order."""

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

    demo.load(refresh, None, dropdowns, api_visibility="undocumented", queue=False)


def build_app(config: AppConfig | None = None, warm: bool = True) -> gr.Blocks:
    """Build the page (queue configured); launch it with ``demo.launch(**launch_kwargs())``.

    ``warm`` starts a background thread that pays the first training step's one-time costs, so
    the first Start answers quickly.
    """
    fm = FlowMapsApp(config)
    lim = fm.limits
    server_log.install()  # a visitor's upload cut off by a closed page: one log line, no stack trace
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
            pretrained = build_train_tab(fm, session, lim)
            cmp_model = build_compare_tab(fm, session, lim)
            q_model = build_quality_tab(fm, session, lim)
            img_model, img_none = build_images_tab(fm, lim)
            build_race_tab(fm, session, lim)
        _refresh_on_load(fm, demo, [pretrained, cmp_model, q_model, img_model, img_none])

        def leave(request: gr.Request):
            """The visitor's tab closed or reloaded: free its session now."""
            fm.sessions.leave(getattr(request, "session_hash", None))

        demo.unload(leave)
    for warning in fm.store.warnings:
        log.warning("%s", warning)
    demo.queue(default_concurrency_limit=lim.concurrency, max_size=lim.queue_size)
    slow_idle_polling(demo)
    if warm:
        threading.Thread(target=warm_up, name="flowmaps-warm-up", daemon=True).start()
    demo.flowmaps = fm  # the callbacks, for tests and benchmarks
    return demo


#: Seconds between the gradio queue's polls while it has nothing to do: for a new event to start
#: (``queueing.Queue.sleep_when_free``, 1 ms off Windows) and for progress to send
#: (``progress_update_sleep_when_free``, 10 ms). gradio's own polling kept 8 % of a core busy with
#: no visitor at all on the 2-core development machine (py-spy: the server's event-loop thread in
#: ``Queue.start_processing``), and it goes on beside every live training run. 20 ms is at most
#: 20 ms more before an event starts or a progress bar moves. Measured: docs/app_latency.md,
#: "The idle server".
QUEUE_POLL_SECONDS = 0.02
_POLL_ATTRIBUTES = ("sleep_when_free", "progress_update_sleep_when_free")


def slow_idle_polling(demo: gr.Blocks, seconds: float = QUEUE_POLL_SECONDS) -> bool:
    """Let gradio's queue poll every ``seconds`` (or its own longer interval) while it is idle.

    Sets the queue's two idle sleeps (gradio has no public option for them); returns False, and
    changes nothing, where this gradio's queue lacks either attribute."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not all(isinstance(getattr(queue, a, None), (int, float)) for a in _POLL_ATTRIBUTES):
        log.info("gradio's queue has other idle sleeps than %s: its polling left as it is", _POLL_ATTRIBUTES)
        return False
    for a in _POLL_ATTRIBUTES:
        setattr(queue, a, max(float(getattr(queue, a)), seconds))
    return True


def launch_kwargs(config: AppConfig | None = None) -> dict[str, Any]:
    """Keyword arguments of ``demo.launch`` that belong to the app (upload cap, style, sessions kept)."""
    cfg = config or AppConfig.from_env()
    return {
        # kept as the first line of defence: a file over it never reaches the server; the page's
        # script (app/tabs/train.CSV_SIZE_JS) says what to do beside the CSV box instead of gradio's toast;
        # the same script warns before a reload that would lose a run (RUN_GUARD_JS)
        "max_file_size": cfg.limits.max_upload,
        "js": page_js(upload_bytes(cfg.limits.max_upload), cfg.limits.max_csv_rows),
        "css": CSS,
        "show_error": False,
        # gradio keeps each browser session's last outputs (plots) until it has this many sessions;
        # its default of 10,000 would let a day of visitors pile up.
        "state_session_capacity": max(200, 8 * cfg.limits.max_sessions),
    }
