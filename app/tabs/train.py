"""The "Train live (2-D)" tab: pick or draw data, pick a method, and watch a flow map learn.

Element ids: inputs ``data-set``, ``draw-pad`` (shown for "draw"), ``csv-upload`` (shown for
"csv"), ``method``, ``steps``, ``batch``, ``lr``, ``eta``, ``width``, ``depth``, ``seed``,
``pretrained``; buttons ``btn-start``, ``btn-stop``, ``btn-continue``, ``btn-load``,
``btn-download``; outputs ``live-progress``, ``live-status``, ``plot-samples``, ``plot-loss``,
``download-file``; ``run-message`` (under the run buttons: a Start, Continue or Load refusal
that names no field, shown only while it holds one) and ``method-note`` (under Method: a change
of method during a run applies at the next Continue or Start). API names: ``/train_start``,
``/train_continue`` (its CSV file, drawing and message arguments optional), ``/train_stop``,
``/load_pretrained``, ``/download_model``. The callbacks are in app/tabs/train_callbacks.py.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import functools
import inspect
from types import SimpleNamespace

import gradio as gr

from app import plots
from app.checkpoints import KIND_2D
from app.config import Limits
from app.datasets import CSV, DATA_CHOICES, DRAW
from app.drawing import CANVAS, DRAW_MAX_IMAGES, DRAW_MAX_SIDE, PICK_BRUSH_JS, guard_drawing
from app.events import (
    FIELD_NOTE_JS,
    PAGE_EVENTS_JS,
    InputCheck,
    NamedSlider,
    named,
    plain,
    slider_value_up_to,
    visiting,
    with_optional_last,
)
from app.live import VIEW_STEPS, LiveSession
from app.tabs.base import DEFAULTS
from app.tabs.train_callbacks import IDLE_STATUS, LOAD_ACTION, TrainCallbacks
from app.validation import ETA, METHODS, method_name, upload_bytes
from flowmaps.objectives import DESCRIPTIONS

#: Captions of a method's loss curve, where it does not behave as a loss usually does.
LOSS_NOTES = {
    "meanflow": (
        "Its *eulerian* term can rise while the samples improve: the term's target is built from the "
        "network's own velocity and time derivative (held fixed in each step), and it grows sharper as the "
        "velocity is learned, so judge MeanFlow by its samples, not by that curve."
    ),
}

#: One-click lessons of the tab: (data set, method), both choices of the tab's dropdowns.
TRAIN_EXAMPLES = (
    ("checkerboard", "LSD (Lagrangian)"),
    ("eight_gaussians", "ESD (Eulerian)"),
    ("two_moons", "PSD-M (progressive, gamma = 1/2)"),
)


#: In the page: a CSV over the upload limit is stopped before gradio's upload sees it. We keep
#: gradio's own max_file_size (launch_kwargs) rather than raise it and check the size in Python:
#: with it a file over the limit never reaches the server (gradio refuses it in the browser, and
#: its upload route refuses it too, for a client that skips the page), which is what keeps a
#: public Space's memory and disk safe. But its refusal is a toast and an "Error" box that must be
#: cleared; this script, run on page load, catches the file first (change of the box's file input,
#: or a drop on it, in the capture phase), writes what to do beside the box (``csv-size-note``,
#: inside the ``csv-upload`` block so that it hides with it) and resets the input, so the box
#: takes the next file at once. The server never sees the file, so its log says nothing.
CSV_SIZE_JS = """() => {
  const LIMIT = %(limit)d, ROWS = %(rows)d, LIMIT_MB = %(limit_mb)s;
  const noteOf = (box) => {
    let note = box.querySelector('#csv-size-note');
    if (!note) {
      note = document.createElement('div');
      note.id = 'csv-size-note';
      note.className = 'csv-size-note';
      note.setAttribute('role', 'alert');
      box.appendChild(note);
    }
    return note;
  };
  const check = (ev, files) => {
    const box = ev.target && ev.target.closest ? ev.target.closest('#csv-upload') : null;
    if (!box || !files || !files.length) return;
    const note = noteOf(box);
    const big = Array.from(files).find((f) => f.size > LIMIT);
    if (!big) { note.textContent = ''; note.style.display = 'none'; return; }
    ev.stopImmediatePropagation();
    ev.preventDefault();
    if (ev.type === 'change') ev.target.value = '';
    // in MB with one decimal, or in bytes where that would read as the limit itself (2.0 MB of 2 MB)
    let size = `${(big.size / 1048576).toFixed(1)} MB`, limit = `${LIMIT_MB} MB`;
    if (Number((big.size / 1048576).toFixed(1)) <= LIMIT_MB) {
      size = `${big.size.toLocaleString('en-US')} bytes`;
      limit = `${LIMIT_MB} MB (${LIMIT.toLocaleString('en-US')} bytes)`;
    }
    note.textContent = `${big.name} is ${size}; the limit is ${limit}. ` +
      `Subsample it to at most ${ROWS.toLocaleString('en-US')} rows (e.g. keep every second or every tenth row) ` +
      `and upload it again.`;
    note.style.display = 'block';
  };
  document.addEventListener('change', (ev) => check(ev, ev.target && ev.target.files), true);
  document.addEventListener('drop', (ev) => check(ev, ev.dataTransfer && ev.dataTransfer.files), true);
}"""


#: The note under the run buttons that keeps a refusal naming no field in view (``run-note``). Such
#: a refusal is gradio's validation message of ``run-message``, an input of Start, Continue and
#: Load; gradio 6.31's page wipes it at the next status update of any event once one of those
#: events has completed (the element stays in the page's loading-status table, and each update
#: rewrites its status without the message), so a refusal made while a run streams vanished within
#: a second or two. This script copies each new refusal into a plain element of its own, right
#: under ``run-message`` (which the page's CSS keeps hidden), and clears it when it has been
#: answered: at a click on any action's button (a new try; a tab's button is not one), and when the
#: session's state changes kind (the word before " · " in the status line) to one that is not a
#: run's own progress, or a loaded model ("loaded": see the script). A change into "starting" or
#: "training" keeps the note: under load, the first updates of a run started before the refused
#: click reach the page after the refusal (a Load refused 0.3 s after Start was wiped 1 s later
#: when the run's "training" arrived), and a run started after it was started by a click, which
#: cleared the note already. A text still shown by gradio from before a click or a change is not
#: copied back until gradio has blanked it, or until the validator refuses again (an HTTP 422
#: answer to the page's fetch), which may repeat the words.
RUN_NOTE_JS = """() => {
  let shown = '', stale = null, kind = null;
  const RUN_PROGRESS = new Set(['starting', 'training']);  // a run's own progress: no answer to a refusal
  // gradio's message (gradio also gives the refused input the class validation-error)
  const MESSAGE = '#run-message .validation-error:not(input):not(textarea)';
  const note = document.createElement('div');
  note.id = 'run-note';
  note.className = 'run-note';
  note.setAttribute('role', 'alert');
  const place = () => {
    const box = document.querySelector('#run-message');
    if (box && note.previousElementSibling !== box) box.after(note);
  };
  const render = () => { note.textContent = shown; note.style.display = shown ? '' : 'none'; };
  const look = () => {
    place();
    const err = document.querySelector(MESSAGE);
    const text = err ? err.textContent.trim() : '';
    // the status line's own text (not its loading tracker's "processing | 0.4s", which would read
    // as a change of kind whenever another event is pending)
    const status = document.querySelector('#live-status [data-testid="markdown"]');
    const now = status ? status.textContent.trim().split(' · ')[0] : kind;
    // a model that has loaded answers no refusal either: a note shown after the Load's click (which
    // cleared the one before) refused a later click, e.g. Start's "press the button again once it has loaded"
    const keeps = RUN_PROGRESS.has(now) || now === 'loaded' || String(now).startsWith('loaded ');
    if (kind !== null && now !== kind && !keeps) { shown = ''; stale = text || null; }
    kind = now;
    if (!text) stale = null;
    else if (text !== stale && text !== shown) shown = text;
    if (note.textContent !== shown) render();
  };
  // (both events come from app/events.PAGE_EVENTS_JS) a click on an action's button is a new try:
  // what the note said answered the one before
  document.addEventListener('flowmaps:button', (ev) => {
    if (!ev.detail.action) return;
    const err = document.querySelector(MESSAGE);
    shown = '';
    stale = (err && err.textContent.trim()) || null;
    render();
  });
  // the validator's refusal is a fresh answer, even in the words gradio still shows
  document.addEventListener('flowmaps:refused', () => { stale = null; setTimeout(look, 0); });
  render();
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


#: The live tab's page-load script for what a reload or a phone would lose or hide.
#:
#: * A warning before the page is left (``beforeunload``) while it holds a model that trained
#:   (or is training) and was not downloaded since: the session's model lives in the page's
#:   ``gr.State`` and the server frees it when the page goes, so a reload loses the run. The
#:   state follows the status line (``live-status``): a run's text ("starting", "training", or
#:   any at a step above 0) sets it, a loaded shipped model or a fresh page clears it, and so does
#:   a click on the zip's link in the Checkpoint box (``download-file``); a later run sets it
#:   again. gradio's own listener closes the page's connection at that event; while a warning is
#:   due, its aborts are skipped, so that "Stay" keeps the run streaming, and after a "Stay" the
#:   page never aborts a data stream (the client, counting its stream closed, opens a second one,
#:   and one stream's end-of-events message would abort the other's, cancelling its event).
#: * On a narrow window (under ``NARROW_PX``), a Start or Continue that starts a run scrolls the
#:   progress bar (``live-progress``) to the top of the screen: in one column the plots sit far
#:   below the buttons. A refused click changes no status, so its message beside the field stays
#:   in view.
RUN_GUARD_JS = """() => {
  const NARROW_PX = 700;
  let unsaved = false, last = null, scrollOnRun = false;
  const statusText = () => {
    const el = document.querySelector('#live-status');
    return el ? el.textContent.trim() : '';
  };
  const look = () => {
    const text = statusText();
    if (text === last) return;
    last = text;
    const running = /(starting|training) · /.test(text);
    const m = text.match(/step (\\d+)/);
    if (/loaded · /.test(text)) unsaved = false;
    else if (running || (m && Number(m[1]) > 0)) unsaved = true;
    if (running && scrollOnRun) {
      scrollOnRun = false;
      const bar = document.querySelector('#live-progress');
      if (bar) bar.scrollIntoView({block: 'start'});
    }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
  document.addEventListener('click', (ev) => {
    const t = ev.target && ev.target.closest ? ev.target : null;
    if (!t) return;
    if (t.closest('#btn-start, #btn-continue')) { scrollOnRun = window.innerWidth < NARROW_PX; last = null; }
    if (t.closest('#download-file a')) unsaved = false;
  }, true);
  // gradio's own beforeunload listener (added before this one: listeners on the window run in
  // the order they were added, so this script cannot go first) closes the page's client. It
  // aborts the heartbeat, whose end makes the server free the session, and the data stream, whose
  // end makes the server cancel the session's events (the run). While a warning is due, aborts
  // during that event are skipped, so "Stay" keeps the session, its run and the stream. The
  // client now counts its stream as closed, so the next event opens a second one on the same
  // session and the server deals its messages to both (each delivers them to the same page
  // handlers, so nothing is lost). But a stream's end-of-events message makes the client abort
  // its newest stream, which may be another one still carrying an event: the server would cancel
  // that event. So once the page has stayed, data streams are never aborted by the page; each
  // ends when the server closes it, and all go with the page. Data streams are told from the
  // heartbeat by the signal of their request (gradio's client builds each with new Request).
  const streamSignals = new WeakSet();
  const NativeRequest = window.Request;
  window.Request = new Proxy(NativeRequest, {
    construct(target, args, newTarget) {
      const [input, init] = args;
      const url = String(input && input.url ? input.url : input);
      if (init && init.signal && /\\/queue\\/data\\?/.test(url)) streamSignals.add(init.signal);
      return Reflect.construct(target, args, newTarget);
    },
  });
  let stayed = false;
  const abort = AbortController.prototype.abort;
  AbortController.prototype.abort = function (...args) {
    if (unsaved && window.event && window.event.type === 'beforeunload') return undefined;
    if (stayed && streamSignals.has(this.signal)) return undefined;
    return abort.apply(this, args);
  };
  window.addEventListener('beforeunload', (ev) => {
    if (!unsaved) return;
    ev.preventDefault();
    ev.returnValue = 'Leaving or reloading this page ends your training run; download the model first.';
    stayed = true;  // if the page goes, this no longer matters
  }, true);
}"""


def page_js(limit_bytes: int, max_rows: int) -> str:
    """The page-load script of the app (gradio's ``js``): :data:`app.events.PAGE_EVENTS_JS` (the
    note scripts' page events), :data:`CSV_SIZE_JS`, :data:`RUN_GUARD_JS`, :data:`RUN_NOTE_JS` and
    :data:`app.events.FIELD_NOTE_JS`, one after the other."""
    scripts = (PAGE_EVENTS_JS, csv_size_js(limit_bytes, max_rows), RUN_GUARD_JS, RUN_NOTE_JS, FIELD_NOTE_JS)
    return "() => { " + " ".join(f"({js})();" for js in scripts) + " }"


def csv_size_js(limit_bytes: int, max_rows: int) -> str:
    """The page-load script of :data:`CSV_SIZE_JS` for an upload limit of ``limit_bytes`` bytes
    (gradio's max_file_size, binary megabytes) and the app's cap of ``max_rows`` rows."""
    return CSV_SIZE_JS % {"limit": limit_bytes, "rows": max_rows, "limit_mb": f"{limit_bytes / (1 << 20):g}"}


def method_help(label: str) -> str:
    """The description of the method behind a dropdown label, plus its loss-curve note if any."""
    key = METHODS.get(label, "")
    text = plain(DESCRIPTIONS.get(key, ""))
    return text + ("\n\n" + LOSS_NOTES[key] if key in LOSS_NOTES else "")


#: The eta slider's top for a flow-map method (eta 1 leaves no off-diagonal pairs to train the map)
#: and for Flow matching (which trains the diagonal alone: any eta means the same).
ETA_MAX_FLOW_MAP, ETA_MAX_FM = 0.95, 1.0


def eta_range(label: str, eta) -> tuple[dict, dict]:
    """Updates of the eta slider and its note when the Method dropdown shows ``label``: its maximum
    follows the method (:data:`ETA_MAX_FLOW_MAP` for a flow-map method, :data:`ETA_MAX_FM` for Flow
    matching), and a value above it is lowered to it, with a note under the slider saying so."""
    top = ETA_MAX_FM if METHODS.get(label) == "fm" else ETA_MAX_FLOW_MAP
    try:
        value = float(eta)
    except (TypeError, ValueError):  # the slider's own check names a bad value at the next event
        return gr.update(maximum=top), gr.update()
    if value <= top:
        return gr.update(maximum=top), gr.update(value="", visible=False)
    note = (
        f"eta: {value:g} is for Flow matching only (a flow-map method needs off-diagonal pairs, so eta "
        f"below 1); the slider set it to {top:g}"
    )
    return gr.update(maximum=top, value=top), gr.update(value=note, visible=True)


def method_note(session, label) -> dict:
    """The note under the Method dropdown when it is set to ``label``: while ``session`` (the page's
    state) trains live with another method, that the change applies at the next Continue or Start
    (the run under way keeps its method); hidden otherwise."""
    key = METHODS.get(label)
    running = isinstance(session, LiveSession) and session.running and session.run_kind == "live"
    if not running or key is None or key == session.method:
        return gr.update(value="", visible=False)
    text = (
        f"Method: the run under way goes on with {method_name(session.method)}; "
        f"{method_name(key)} applies at the next Continue or Start"
    )
    return gr.update(value=text, visible=True)


#: How an upload may be written; said under the data-set choice, since the upload box's own label
#: is one line that its clear button cuts short once a file is in it.
CSV_FORMAT = "; two numbers per row, with a comma, semicolon, tab or space between them; UTF-8 or UTF-16 text"


def data_help(choice: str) -> str:
    """The description of a data-set choice."""
    return plain(DATA_CHOICES.get(choice, "") + (CSV_FORMAT if choice == CSV else ""))


def _data_inputs(lim: Limits) -> SimpleNamespace:
    c = SimpleNamespace()
    c.data = gr.Dropdown(list(DATA_CHOICES), value="checkerboard", label="Data set", elem_id="data-set")
    c.data_md = gr.Markdown(data_help("checkerboard"), elem_id="data-help")
    # The pad is shown and hidden through its column: an update of the pad
    # itself would give each session a fresh copy without guard_drawing's checks.
    with gr.Column(visible=False, min_width=0) as c.draw_box:
        c.draw = gr.Sketchpad(
            label="Drawing pad",  # short: a longer label ran under the pad's toolbar
            type="numpy",
            canvas_size=(CANVAS, CANVAS),
            elem_id="draw-pad",
            brush=gr.Brush(default_size=10, colors=["#000000"], color_mode="fixed"),
        )
        guard_drawing(c.draw, DRAW_MAX_SIDE, DRAW_MAX_IMAGES)
    c.csv = gr.File(
        label=(
            f"CSV of x, y rows (at most {lim.max_csv_rows:,} rows, {upload_bytes(lim.max_upload) / (1 << 20):g} MB)"
        ),
        # .tsv too: the reader takes tabs (a spreadsheet's tab-separated export was refused by its name)
        file_types=[".csv", ".tsv", ".txt"],
        visible=False,
        elem_id="csv-upload",
    )
    c.method = gr.Dropdown(list(METHODS), value="LSD (Lagrangian)", label="Method", elem_id="method")
    # while a run goes on, a change of Method is said to apply at the next Continue or Start (method_note)
    c.method_note = gr.Markdown("", visible=False, elem_id="method-note", elem_classes=["slider-note"])
    c.method_md = gr.Markdown(method_help("LSD (Lagrangian)"), elem_id="method-help")
    return c


def _settings(lim: Limits) -> SimpleNamespace:
    """The Settings accordion's inputs, in the order of every training event's inputs."""
    c = SimpleNamespace()
    c.steps = NamedSlider(10, lim.max_steps, value=DEFAULTS.steps, step=10, label="Steps per run", elem_id="steps")
    c.batch = NamedSlider(
        lim.min_batch, lim.max_batch, value=DEFAULTS.batch, step=16, label="Batch size", elem_id="batch"
    )
    c.lr = gr.Number(
        value=DEFAULTS.lr,
        label=f"Learning rate ({lim.min_lr:g} to {lim.max_lr:g})",
        info=(
            "the rate at the start of a fresh run: it falls linearly to 0 over the "
            "run's steps or its time cap, whichever ends it first; Continue resumes "
            "the fall where the last run left it"
        ),
        # the arrow keys' step: gradio's default of 1 took 0.01 to 1 (and then -1) at one press, out
        # of the allowed range both ways; the smallest allowed rate moves it by that much. No
        # minimum / maximum here: gradio would then refuse an out-of-range value itself, before the
        # validator, in its own words ("Value -1.0 is less than minimum value 1e-05") and apart from
        # the other fields' messages; an arrow pressed past an end is refused by the validator
        step=lim.min_lr,
        elem_id="lr",
    )
    # its top follows the Method dropdown (eta_range); a value up to 1 reaches the settings' check,
    # which names the method that refuses it (an API call, or a page whose method changed since)
    c.eta = NamedSlider(
        0.05,
        ETA_MAX_FLOW_MAP,
        value=DEFAULTS.eta,
        step=0.05,
        label="eta: fraction of the batch on the diagonal",
        elem_id="eta",
        check=slider_value_up_to(ETA_MAX_FM),
    )
    c.width = NamedSlider(
        lim.min_width, lim.max_width, value=DEFAULTS.width, step=16, label="Width of the MLP", elem_id="width"
    )
    c.depth = NamedSlider(1, lim.max_depth, value=DEFAULTS.depth, step=1, label="Hidden layers", elem_id="depth")
    c.seed = gr.Number(value=0, label="Seed", elem_id="seed")
    return c


def _controls(fm: TrainCallbacks, lim: Limits) -> SimpleNamespace:
    """The left column: data, method, the run buttons, the shipped model and Load, lessons,
    settings, download."""
    c = _data_inputs(lim)
    # above the Settings: on a 1280 x 720 screen they stay in view with the plots
    with gr.Row():
        c.start = gr.Button("Start", variant="primary", elem_id="btn-start")
        c.stop = gr.Button("Stop", variant="stop", elem_id="btn-stop")
        c.cont = gr.Button("Continue", elem_id="btn-continue")
    # where Start, Continue and Load say why they refused when the message names no field (e.g.
    # "already training"): an empty element right under the buttons, shown only while it holds a
    # message (ui.CSS); a message naming a field shows beside that field alone
    c.run_message = gr.Markdown("", elem_id="run-message", elem_classes=["run-message"])
    # the shipped model and its Load just under the run buttons, near the plots Load fills (below
    # the Settings they were a screen away); min widths keep the button beside its dropdown
    with gr.Row(equal_height=True):
        c.pretrained = gr.Dropdown(
            fm.checkpoint_choices(KIND_2D),
            value=fm.default_checkpoint(KIND_2D, DEFAULTS.method),
            label="Start from a shipped model",
            elem_id="pretrained",
            scale=3,
            min_width=150,
        )
        c.load = gr.Button("Load", elem_id="btn-load", scale=1, min_width=64)
    gr.Examples(
        [list(ex) for ex in TRAIN_EXAMPLES],
        [c.data, c.method],
        label="One-click lessons: fill the data set and method, then press Start",
        elem_id="train-examples",
    )
    with gr.Accordion("Settings", open=True):
        c.settings = _settings(lim)
    with gr.Row():
        c.download = gr.Button("Download model (zip)", elem_id="btn-download")
    c.download_file = gr.File(label="Checkpoint", interactive=False, elem_id="download-file")
    return c


def _views(c: SimpleNamespace, lim: Limits) -> None:
    """The right column: progress, status, samples and loss figures."""
    c.progress = gr.HTML(
        plots.progress_html(0, DEFAULTS.steps, 0, lim.live_seconds, 0, "ready"), elem_id="live-progress"
    )
    c.status = gr.Markdown(IDLE_STATUS, elem_id="live-status")
    c.samples_plot = gr.Plot(
        plots.empty_figure("data and samples at N = 1, 2, 4, 8 appear here"),
        label="Data and flow-map samples at N = " + ", ".join(map(str, VIEW_STEPS)),
        elem_id="plot-samples",
    )
    c.loss_plot = gr.Plot(plots.loss_figure([]), label="Loss per term", elem_id="plot-loss")
    gr.Markdown(
        "Every panel starts from the same noise. **N** is the number of flow-map jumps on a "
        "uniform grid, one network call each. Flow matching alone learns only the diagonal "
        "(the velocity), so for it the panels show Euler steps of the ODE instead. Live runs "
        f"use an EMA of 0.99 and are capped at {lim.live_seconds:.0f} s each "
        f"({lim.session_seconds:.0f} s per session)."
    )


def _wire(fm: TrainCallbacks, c: SimpleNamespace, session: gr.State, lim: Limits) -> None:
    """The tab's events; every one that uses the visitor's model returns the session last."""
    s = c.settings
    settings = [c.method, s.steps, s.batch, s.lr, s.eta, s.width, s.depth, s.seed]
    for comp in (c.data, c.method, s.lr, s.seed, c.pretrained):
        named(comp)
    live_out = [c.samples_plot, c.loss_plot, c.progress, c.status]
    heavy = {"concurrency_limit": lim.concurrency}
    train = {
        "concurrency_limit": lim.train_concurrency,
        "concurrency_id": "train",
        "show_progress": "minimal",
        "show_progress_on": c.progress,  # a queued user sees their place on the progress bar
        # gradio's default ("once") silently drops a click while the same event's stream is still
        # open in the page, e.g. Continue clicked the moment Stop answered, while the last
        # Continue's stream was closing; every click is sent, and one on a busy session is
        # answered under the buttons ("already training") by the validator
        "trigger_mode": "multiple",
    }

    def on_data(choice):
        return (gr.update(visible=choice == DRAW), gr.update(visible=choice == CSV), data_help(choice))

    c.data.change(on_data, c.data, [c.draw_box, c.csv, c.data_md], api_visibility="undocumented", queue=False).then(
        None, c.data, None, js=PICK_BRUSH_JS, queue=False
    )
    c.method.change(
        method_help, c.method, c.method_md, api_name="_method_help", api_visibility="undocumented", queue=False
    )
    # the eta slider's range follows the method (Start refuses eta 1 for a flow-map method)
    c.method.change(eta_range, [c.method, s.eta], [s.eta, s.eta.note], api_visibility="private", queue=False)
    c.method.change(
        method_note, [session, c.method], c.method_note, api_visibility="private", queue=False, show_progress="hidden"
    )
    visit = functools.partial(visiting, fm.sessions)
    # A mistake is shown beside its field by gradio's validator running the callback's own check
    # (app/events.InputCheck); one that names no input, in the message element under the buttons.
    # (a drawing's message goes on the data set choice: on the pad it would cover the pad's tools)
    fields = {"data set": c.data, "drawing": c.data, "CSV file": c.csv, "shipped model": c.pretrained}
    fields.update(zip(("method", "steps", "batch size", "learning rate", ETA, "width", "depth", "seed"), settings))
    # the message element is each event's last input, optional for an API caller (with_optional_last)
    start_inputs = [session, c.data, c.draw, c.csv, *settings, c.run_message]
    c.start.click(
        with_optional_last(visit(fm.train_start, "Training"), fm.train_start),
        start_inputs,
        [*live_out, session],
        api_name="train_start",
        validator=InputCheck(
            fm.sessions, start_inputs, fm.check_start, fields, c.run_message, "Training", False, claims=True
        ),
        **train,
    )
    # Continue trains the session's model on its own data: the Data set is an input only so that
    # one that differs from the model's is refused beside it (check_continue), never ignored
    # (and the CSV box: a file other than the one read at Start is refused beside it; the pad: a
    # drawing changed since Start is refused beside Data set, as Start's drawing messages are)
    continue_inputs = [session, c.data, *settings, c.csv, c.draw, c.run_message]
    c.cont.click(
        with_optional_last(visit(fm.train_continue, "Training"), fm.train_continue),
        continue_inputs,
        [*live_out, session],
        api_name="train_continue",
        validator=InputCheck(
            fm.sessions, continue_inputs, fm.check_continue, fields, c.run_message, "Training", False, claims=True
        ),
        **train,
    )
    for button in (c.start, c.cont):  # a new run takes the Method shown: the note has said its piece
        button.click(
            lambda: gr.update(value="", visible=False),
            None,
            c.method_note,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
    c.stop.click(
        visit(fm.train_stop, "Stop"),
        session,
        [c.status, session],
        api_name="train_stop",
        concurrency_limit=None,
        show_progress="hidden",
    ).then(fm.stop_progress, session, c.progress, api_visibility="private", queue=False, show_progress="hidden")
    load_inputs = [session, c.pretrained, *settings, c.run_message]
    c.load.click(
        with_optional_last(visit(fm.load_pretrained, LOAD_ACTION), fm.load_pretrained),
        load_inputs,
        [*live_out, c.data, c.method, s.batch, s.lr, s.eta, s.width, s.depth, session],
        api_name="load_pretrained",
        validator=InputCheck(
            fm.sessions, load_inputs, fm.check_load, fields, c.run_message, LOAD_ACTION, False, claims=True
        ),
        **heavy,
    )
    # the Checkpoint box is an input only so that a refusal ("nothing to download yet") shows in it,
    # under the button, instead of gradio's error toast and badge
    download_inputs = [session, c.download_file]
    download = visit(fm.download_model, "Download")
    # ...and an optional argument for gradio_client (``/download_model`` takes none), which reads
    # a default from the event's signature (visiting's is ``request, session, *args``)
    P = inspect.Parameter
    download.__signature__ = inspect.Signature(
        [
            P("request", P.POSITIONAL_OR_KEYWORD, annotation=gr.Request),
            P("session", P.POSITIONAL_OR_KEYWORD),
            P("shown", P.POSITIONAL_OR_KEYWORD, default=None),
        ]
    )
    c.download.click(
        download,
        download_inputs,
        [c.download_file, session],
        api_name="download_model",
        validator=InputCheck(fm.sessions, download_inputs, fm.check_download, {}, c.download_file, "Download"),
        **heavy,
    )


def build_train_tab(fm: TrainCallbacks, session: gr.State, lim: Limits) -> gr.Dropdown:
    """The "Train live (2-D)" tab, inside ``gr.Tabs``; returns its shipped-model dropdown (the
    page refreshes its choices on load)."""
    with gr.Tab("Train live (2-D)", id="train", elem_id="tab-train"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                c = _controls(fm, lim)
            with gr.Column(scale=3):
                _views(c, lim)
    _wire(fm, c, session, lim)
    return c.pretrained
