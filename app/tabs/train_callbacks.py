"""The "Train live (2-D)" tab's callbacks: start, continue, stop, load and download a session's model.

Each visitor's :class:`app.live.LiveSession` trains in short slices (app/live.py) whose
snapshots stream to the page as four outputs: the samples figure, the loss figure, the
progress bar and the status line. app/tabs/train.py lays out the tab and wires these.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from app import plots
from app.checkpoints import KIND_2D
from app.datasets import CSV, DATA_CHOICES, DRAW, DataSource, points_source, toy_source
from app.live import FINAL_STATES, STOP_WAIT, LiveSession, Snapshot
from app.live_settings import CONTINUE_FACTOR, refresh_seconds, settings_from_checkpoint
from app.tabs.base import AppBase
from app.validation import (
    METHOD_LABELS,
    InputError,
    drawn_mask,
    method_name,
    parse_train_settings,
    points_from_mask,
    points_from_upload,
    upload_path,
)

#: The answer to a run asked for while this session's run of the same tab goes on.
ALREADY_TRAINING = "this session is already training: press Stop first"
#: The live tab's answer while this session races (a race is a run of the session).
RACE_RUNNING = (
    'a race is running in this session, in the "Race the families" tab: stop it there '
    "(its Stop button) or wait for it to end, then press this button again"
)
#: The race tab's answer while this session trains live.
LIVE_RUNNING = (
    'this session is training live, in the "Train live (2-D)" tab: press Stop there '
    "(or wait for the run to end), then press Race again"
)


#: The live tab's answer when a stopped run has not freed the session within ``STOP_WAIT``.
STILL_STOPPING = "the run in this session is still stopping: press the button again in a moment"
#: What Load does, in its log lines and as its claim on the session (app/live.LiveSession.claim).
LOAD_ACTION = "Loading the model"
#: The live tab's answer to Start, Continue or Load while a shipped model is being loaded.
LOADING = "this session is loading a shipped model: press the button again once it has loaded"


def busy_message(session: LiveSession, asker: str) -> str:
    """Why ``asker`` ("live" or "race": the tab whose button was pressed) cannot run now that
    ``session`` runs, or is claimed by an action accepted a moment ago: the run of the other
    tab is named, with where to stop it."""
    if session.claimed == LOAD_ACTION:  # (a run may be finishing: the Load waits for it)
        return LOADING
    if session.finishing and asker == "live" and not session.claimed:  # not ended within STOP_WAIT
        return STILL_STOPPING
    kind = session.run_kind
    if kind == "race" and asker != "race":
        return RACE_RUNNING
    if kind == "live" and asker != "live":
        return LIVE_RUNNING
    return ALREADY_TRAINING


#: Download's answer with no model in the session.
NOTHING_TO_DOWNLOAD = (
    "nothing to download yet: press Start to train a model (or Load a shipped one), then Download (zip)"
)


def upload_identity(csv_file: Any) -> tuple[str, str]:
    """An upload's file name as the visitor chose it (gradio keeps it as the last part of its
    path) and the SHA-256 of its bytes: ("", "") where there is no readable file."""
    try:
        path = upload_path(csv_file)
        return path.name, hashlib.sha256(path.read_bytes()).hexdigest()
    except (InputError, OSError):
        return "", ""


def drawing_identity(drawing: Any) -> str:
    """The SHA-256 of a sketch pad's marked pixels (:func:`app.validation.drawn_mask`: its shape
    and its bits), so the same strokes give the same identity whatever their colour or the pad's
    encoding; "" where the value holds no image (an empty or cleared pad)."""
    try:
        return mask_identity(drawn_mask(drawing))
    except InputError:
        return ""


def mask_identity(mask: np.ndarray | None) -> str:
    """:func:`drawing_identity` of a pad's marked pixels (None: no image, "")."""
    if mask is None:
        return ""
    mask = np.ascontiguousarray(mask, dtype=bool)
    h = hashlib.sha256(np.asarray(mask.shape, dtype=np.int64).tobytes())
    h.update(np.packbits(mask).tobytes())
    return h.hexdigest()


#: The status line while this session has no run to show: on a fresh page, after a Stop with
#: nothing running, and so after any refused Start before a first run (a refusal leaves it as is).
IDLE_STATUS = (
    "nothing is training in this session: press **Start** (the samples and the loss appear within "
    "a second and refresh every 1 to 3 s, less often while the CPU is busy), or Load a shipped "
    "model, then Continue"
)
#: The status line after a Stop with nothing running, once a shipped model has been loaded.
LOADED_IDLE = (
    "nothing is training in this session: {name} is loaded; press **Continue** to train it further, "
    "or **Start** for a new model"
)


class TrainCallbacks(AppBase):
    """The live tab's events (outputs in the order app/tabs/train.py wires them).

    Start, Continue and Load (and their checks) take a last ``message`` argument, unused: the
    element under the run buttons, an input of their events only so that a refusal naming no
    field shows there; it defaults to None for an API caller."""

    def resolve_data(self, choice: Any, drawing: Any, csv_file: Any) -> DataSource:
        if choice == DRAW:
            mask = drawn_mask(drawing)
            return points_source(DRAW, points_from_mask(mask), digest=mask_identity(mask))
        if choice == CSV:
            pts = points_from_upload(csv_file, max_rows=self.limits.max_csv_rows, max_bytes=self.limits.max_upload)
            name, digest = upload_identity(csv_file)
            return points_source(CSV, pts, label=name, digest=digest)
        if not isinstance(choice, str) or choice not in DATA_CHOICES:
            raise InputError(f"data set: {choice!r} is not one of {', '.join(DATA_CHOICES)}")
        return toy_source(choice)

    def status_text(self, session: LiveSession) -> str:
        """The live tab's status line, derived only from the session's run state (``phase``, its
        step and notes), so every reply that shows it (a run's updates, Stop's answer) agrees."""
        phase = session.phase
        name = session.data.shown_name if session.data else ""
        method = method_name(session.method)
        text = f"**{phase}** · {method} on {name} · step {session.phase_step}"
        if session.base_steps and phase != "loaded":  # a loaded model's steps count from 0 here
            text += f" (on top of the {session.base_steps:,} steps of {session.base_name})"
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
        return fig_s, fig_l, self._bar(session, snap), self.status_text(session)

    def _bar(self, session: LiveSession, snap) -> str:
        left = max(0.0, self.limits.session_seconds - session.used_seconds)
        return plots.progress_html(
            snap.step, snap.target, snap.elapsed, self._run_cap(session, False), snap.rate, snap.state, left, snap.start
        )

    def stop_progress(self, session):
        """The progress line after Stop, from the run's final numbers: the same line as the run's own
        last update, which follows once it has drawn its panels (about a second later on a busy CPU;
        a fresh user saw "training: step 121" under a "stopped" status meanwhile). No update while a
        run goes on, or where none has ended (Stop with nothing running, a Load)."""
        snap = session.final_snapshot
        if snap is None or session.phase not in FINAL_STATES or session.phase == "loaded":
            return gr.skip()
        return self._bar(session, snap)

    def _run_cap(self, session: LiveSession, check: bool = True) -> float:
        left = self.limits.session_seconds - session.used_seconds
        if check and left <= 1.0:
            raise InputError(
                f"this session has used its {self.limits.session_seconds:.0f} s of live training; "
                "download the model, or reload the page for a new session"
            )
        return max(1.0, min(self.limits.live_seconds, left))

    def _take_run_lock(self, session: LiveSession) -> None:
        """Acquire ``session.run_lock`` for a live run or a Load, else raise :class:`InputError`.

        A run that has stopped still holds the lock while its stream draws its last update (up to
        about 2 s on a busy CPU): a Start, Continue or Load clicked on reading "stopped" waits for
        it, rather than Stop waiting to answer (measured: Stop's answer went from 0.1-0.2 s to
        0.8-1.8 s when it waited; bench/app_latency.py --browser, docs/app_latency.md)."""
        if not session.run_lock.acquire(timeout=STOP_WAIT if session.finishing else 0.0):
            raise InputError(busy_message(session, "live"))

    def _begin(self, session: LiveSession, checks, action: str):
        """Run ``checks()`` (the callback's own input checks and the Space's admission), then take
        the session's run lock; the claim made by the event's validator is answered either way
        (the run now holds the session, or the click was refused). A generator: where a stopped
        run's stream is still drawing its last update, it first yields a status saying that
        ``action`` ("starting", "continuing") waits for it, the plots and bar left as they are (a
        fresh user read "stopped ... press Continue" for about 2 s after pressing Continue).
        Returns what ``checks`` returns."""
        try:
            out = checks()
            if not session.finishing:
                self._take_run_lock(session)
                return out
            yield (
                gr.skip(),
                gr.skip(),
                gr.skip(),
                (f"**{action}** · waiting a moment for the stopped run to hand the model over"),
            )
            try:
                self._take_run_lock(session)
            except InputError:  # it did not end in time: the status goes back to what the run says
                yield gr.skip(), gr.skip(), gr.skip(), self.status_text(session)
                raise
        finally:
            session.release_claim()
        return out

    def _stream(self, session: LiveSession, steps: int, prepare):
        """Stream a run's updates; the caller took ``session.run_lock`` (:meth:`_begin`)."""
        session.run_kind = "live"
        try:
            session.stop_event.clear()
            session.begin_run()
            prepare()
            cap = self._run_cap(session)
            for snap in session.run(steps, cap, chunk_seconds=refresh_seconds()):
                yield self._figures(session, snap)
        finally:
            session.end_run()
            session.run_kind = ""
            session.run_lock.release()

    def _check_idle(self, session: LiveSession) -> None:
        # a finishing run frees the session at once; a claim is a Start, Continue or Load accepted
        # a moment ago whose callback has not yet taken the session (read by validators only)
        if (session.running and not session.finishing) or session.claimed:
            raise InputError(busy_message(session, "live"))

    def check_start(
        self,
        session,
        data_choice,
        drawing,
        csv_file,
        method,
        steps,
        batch,
        lr,
        eta,
        width,
        depth,
        seed,
        message: Any = None,
    ):
        """Start's input checks, also its validator in the page (app/events.InputCheck): the
        settings, the data and the session's time. Returns (settings, data source).

        Raises:
            InputError: naming the first field that is wrong and what to change.
        """
        s = parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)
        data = self.resolve_data(data_choice, drawing, csv_file)
        self._run_cap(session)
        self._check_idle(session)
        return s, data

    def train_start(
        self,
        session,
        data_choice,
        drawing,
        csv_file,
        method,
        steps,
        batch,
        lr,
        eta,
        width,
        depth,
        seed,
        message: Any = None,
    ):
        """Start a fresh model on the chosen data and stream its training."""

        def checks():
            out = self.check_start(
                session, data_choice, drawing, csv_file, method, steps, batch, lr, eta, width, depth, seed
            )
            self.sessions.admit(session)  # a model is about to be built: one of the Space's slots
            return out

        s, data = yield from self._begin(session, checks, "starting")
        yield from self._stream(session, s.steps, lambda: session.start_fresh(data, s))

    def check_continue(
        self,
        session,
        data_choice,
        method,
        steps,
        batch,
        lr,
        eta,
        width,
        depth,
        seed,
        csv_file=None,
        drawing=None,
        message=None,
    ):
        """Continue's input checks (and its validator): a model to continue, on the data set the
        page shows (``data_choice``, the Data set dropdown), the settings, the session's time.
        Returns the settings (:meth:`_continue_checks` gives them with the renamed-CSV note).

        Continue trains the session's model on the data it was started (or loaded) on, with the
        page's method and settings; so that what it trains is what the page shows, a Data set
        that differs from the model's (e.g. after a one-click lesson, or a change of the
        dropdown) is refused rather than ignored.

        A CSV is read at Start, so ``csv_file`` (the CSV box's file; None for an API caller that
        leaves it out) is compared with the model's: another file is refused like another data set.
        So is a drawing: ``drawing`` (the sketch pad's value; None for an API caller that leaves it
        out) must hold the strokes the run started on (:func:`drawing_identity`).

        Raises:
            InputError: as :meth:`check_start`; "data set: ..." naming both data sets and what to
                click (Start for a new model on the shown one, or the model's data set back);
                "CSV file: ..." naming both files (Start for the new one, or the old one back);
                "drawing: ..." for a pad changed or cleared since Start (Start for the new
                drawing, or Undo back to the old one).
        """
        return self._continue_checks(
            session, data_choice, method, steps, batch, lr, eta, width, depth, seed, csv_file, drawing
        )[0]

    def _continue_checks(
        self, session, data_choice, method, steps, batch, lr, eta, width, depth, seed, csv_file, drawing
    ) -> tuple[Any, str]:
        """:meth:`check_continue`, returning the settings and the note of a CSV box that holds the
        run's points under another file name ("" otherwise), so that the file is hashed once."""
        if session.claimed:  # a Start accepted a moment ago builds the model to continue
            raise InputError(busy_message(session, "live"))
        if session.trainer is None:
            raise InputError("nothing to continue: press Start first (or load a shipped model)")
        have = session.data.name if session.data is not None else ""
        if data_choice != have:
            shown = data_choice if isinstance(data_choice, str) else repr(data_choice)
            learns = session.data.shown_name if session.data is not None else ""
            raise InputError(
                f"data set: the model in this session learns {learns}, but Data set shows {shown}; "
                f"press Start to train a new model on {shown}, or choose {have} in Data set to continue this one"
            )
        renamed = ""
        if have == CSV and csv_file is not None:
            renamed = self._check_same_upload(session.data, csv_file)
        if have == DRAW and drawing is not None:
            self._check_same_drawing(session.data, drawing)
        s = parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)
        self._run_cap(session)
        self._check_idle(session)
        return s, renamed

    def train_continue(
        self,
        session,
        data_choice,
        method,
        steps,
        batch,
        lr,
        eta,
        width,
        depth,
        seed,
        csv_file=None,
        drawing=None,
        message=None,
    ):
        """Continue training this session's model on its own data set, which ``data_choice`` (the
        page's Data set) must name, with the CSV box's file or the pad's drawing it was started on
        (:meth:`check_continue`); new lr / batch / eta / method apply."""
        s, renamed = yield from self._begin(
            session,
            lambda: self._continue_checks(
                session, data_choice, method, steps, batch, lr, eta, width, depth, seed, csv_file, drawing
            ),
            "continuing",
        )

        def prepare():
            session.update_settings(s)
            if renamed:
                session.run_note = "; ".join(n for n in (session.run_note, renamed) if n)

        yield from self._stream(session, s.steps, prepare)

    @staticmethod
    def _check_same_upload(data: DataSource, csv_file: Any) -> str:
        """Refuse a CSV box whose file is not the one ``data`` (a CSV run's) was read from. Returns
        a note for the same points under another file name (the status keeps the name read at
        Start), else ""."""
        name, digest = upload_identity(csv_file)
        if not digest:
            return ""
        if digest == data.digest:
            if not data.label or name == data.label:
                return ""
            return f"{name} holds the same points as {data.label}, so the run on {data.label} continues on them"
        old = data.label or "the file read at Start"
        new = name if name != data.label else f"another file named {name}"
        raise InputError(
            f"CSV file: the model in this session learns {old}, but the CSV box holds {new}; a CSV is "
            f"read at Start: press Start to train a new model on {name}, or upload {old} again to continue this one"
        )

    @staticmethod
    def _check_same_drawing(data: DataSource, drawing: Any) -> None:
        """Refuse a sketch pad whose strokes are not the ones ``data`` (a drawing run's) was read from."""
        try:
            mask = drawn_mask(drawing)
        except InputError:
            mask = None
        if not data.digest or mask_identity(mask) == data.digest:
            return
        if mask is not None and mask.any():
            now, start = "changed", "press Start to train a new model on the new drawing"
        else:
            now, start = "cleared", "draw a shape and press Start to train a new model on it"
        raise InputError(
            f"drawing: the sketch pad was {now} since this run started, and Continue keeps training on "
            f"the run's drawing (read at Start): {start}, or undo the changes on the pad (its Undo "
            "button) to continue this run"
        )

    def train_stop(self, session, wait: float = STOP_WAIT):
        """Stop this session's run (other sessions are not touched) and answer with its final status.

        The run sees the stop flag at its next step and writes its final state; this waits up to
        ``wait`` seconds for it, so the answer is the same line as the run's last update (never a
        "stopping" that arrives after it). A Continue clicked on reading it waits for the stream's
        last update (see ``_stream``). With no run, the last run's status stays (e.g. the time
        cap's "press Continue to train more")."""
        if session.running:
            session.stop_event.set()
            if not session.finished.wait(wait):
                return f"**stopping** · step {session.phase_step} · the run ends at its next step"
        if session.phase in FINAL_STATES and session.phase != "loaded" and session.has_model:
            return self.status_text(session)
        if session.phase == "loaded" and session.has_model:
            return LOADED_IDLE.format(name=session.base_name)
        return IDLE_STATUS

    def check_load(self, session, name, method, steps, batch, lr, eta, width, depth, seed, message: Any = None):
        """Load's input checks (and its validator): a shipped 2-D model with a known data set, an
        idle session, valid settings. Returns (data source, the page's settings).

        Raises:
            InputError: naming the field; while the session runs, the busy message (no field:
                shown under the run buttons) followed by "<name> was not loaded", since the
                shipped-model dropdown keeps showing the model that was not loaded."""
        if not isinstance(name, str) or name not in self.store.names(KIND_2D):
            raise InputError(f"shipped model: {name!r} is not a shipped 2-D checkpoint")
        data = self.data_of(name)
        if data is None:
            raise InputError(f"shipped model {name}: its data set is not recorded in its config")
        try:
            self._check_idle(session)
        except InputError as err:  # the dropdown still shows the model: say that it was not loaded
            raise InputError(f"{err}; {name} was not loaded (the run goes on with its own model)") from None
        return data, parse_train_settings(method, steps, batch, lr, eta, width, depth, seed, self.limits)

    def load_pretrained(self, session, name, method, steps, batch, lr, eta, width, depth, seed, message: Any = None):
        """Load a shipped 2-D checkpoint into this session (an instant, trained model).

        The session adopts the checkpoint's data set and settings (method, width, depth, learning
        rate, eta, batch size; :func:`app.live.settings_from_checkpoint`) and the page's Data set,
        Method and Settings show them, so a Continue trains it on its own data as it was trained,
        not at the page's rate. Outputs: the four live outputs, then the data set, the method
        label, batch, lr, eta, width and depth."""
        try:
            data, page = self.check_load(session, name, method, steps, batch, lr, eta, width, depth, seed)
            if session.finishing:  # a stopped run's stream is drawing its last update: let it end first
                self._take_run_lock(session)
                session.run_lock.release()
            self.sessions.admit(session)
            model, config = self.store.load(name)
            if not isinstance(config.get("method"), str) and self.store.info(name).method:
                # the method the listing names (from the config's training section or the folder name)
                config = {**config, "method": self.store.info(name).method}
            s = settings_from_checkpoint(config, page, self.limits)
            session.load_pretrained(name, model, config, data, s)
            s = session.settings
            snap = Snapshot(0, 0, 0.0, 0.0, "loaded", session.sample_panels(), [])
            fig_s, fig_l, _, _ = self._figures(session, snap)
            trained = (config.get("training") or {}).get("steps")
            bar = plots.loaded_html(self.store.info(name).label, trained if isinstance(trained, int) else None)
            status = (
                f"**loaded** {self.store.info(name).label}; its data set ({data.name}), method and settings "
                "are in *Data set*, *Method* and *Settings* "
                f"(width {s.width}, depth {s.depth}, learning rate {s.lr:g}); press Continue to train it further "
                f"(from {CONTINUE_FACTOR:g} x that rate, decaying to 0), or explore it in the other tabs"
            )
            return (
                fig_s,
                plots.loss_figure([]),
                bar,
                status,
                data.name,
                METHOD_LABELS.get(s.method, method),
                s.batch,
                s.lr,
                s.eta,
                s.width,
                s.depth,
            )
        finally:
            session.release_claim()  # the model is loaded (or was refused): the session is free

    def check_download(self, session, shown: Any = None) -> None:
        """Download's input check (and its validator, whose message shows in the Checkpoint box
        under the button): a model in this session. ``shown`` (the box's current file) is unused.

        Raises:
            InputError: with no model yet, saying to press Start or Load first.
        """
        if not session.has_model:
            raise InputError(NOTHING_TO_DOWNLOAD)

    def download_model(self, session, shown: Any = None):
        """This session's model as a zip of a save_pretrained folder (``shown``, the Checkpoint
        box's current file, is ignored: it is the event's input so that a refusal shows there)."""
        from flowmaps.hub import save_pretrained

        self.check_download(session)
        model = session.snapshot_model()
        config = dict(session.config or {})
        steps = session.trainer.global_step if session.trainer else 0  # this session's
        total = session.base_steps + steps
        # named apart from the shipped checkpoints (checkerboard-lsd, ...): unzipped into checkpoints/,
        # a live model must not replace one of them
        name = f"live-{(session.data.name if session.data else 'model')}-{session.method or 'flowmap'}-step{total}"
        # gradio copies the returned zip into its own cache, so the folder of the previous
        # download is no longer needed; the last one goes when the session is freed.
        for old in session.scratch:
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix="flowmaps-download-"))
        session.scratch[:] = [str(tmp)]
        weakref.finalize(session, shutil.rmtree, str(tmp), True)  # also if gradio drops the session unclosed
        folder = tmp / name
        card = {
            "title": f"flowmaps live model: {name}",
            "summary": f"Trained live in the flowmaps app ({session.origin}).",
            "data": session.data.name if session.data else "?",
            "method": session.method,
            "steps": total,
            "hardware": "CPU (the app's live trainer)",
        }
        # the live run's own recipe (the last Start's or Continue's)
        s = session.settings
        recipe = {} if s is None else {"batch_size": s.batch, "lr": s.lr}
        if session.base_name:
            if steps:  # the weights have moved: the checkpoint's scores and recipe are not theirs
                config["base_model"] = session.base_name
                config.pop("metrics", None)
                config.pop("card", None)
                config["base_training"] = config.pop("training", None)
                config["training"] = {"steps": steps, "base_steps": session.base_steps, "total_steps": total, **recipe}
                card["summary"] = (
                    f"The shipped checkpoint {session.base_name} ({session.base_steps:,} steps), then "
                    f"{steps:,} steps of live training in the flowmaps app (CPU). Not scored: the shipped "
                    "checkpoint's metrics are not carried over, since these weights trained further."
                )
            else:  # unchanged: the checkpoint's own card, recipe and scores hold
                shipped = dict(config.get("card") or {})
                note = f"Downloaded unchanged from the flowmaps app (the shipped checkpoint {session.base_name})."
                card = {
                    **card,
                    **shipped,
                    "title": card["title"],
                    "summary": f"{shipped.get('summary', '')} {note}".strip(),
                }
        elif recipe and "training" not in config:  # trained from scratch here
            config["training"] = {"steps": steps, **recipe, "seed": s.seed}
        save_pretrained(model, folder, config, card=card)
        archive = tmp / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{name}/{f.name}")
        shutil.rmtree(folder, ignore_errors=True)
        return str(archive)
