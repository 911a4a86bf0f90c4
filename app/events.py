"""The shared plumbing of every tab's events: input checks on components, errors, sessions.

A user's mistake (an :class:`app.validation.InputError`) names the field and what to change and
is logged as one line at INFO without a traceback. Where an event has gradio's validator
(:class:`InputCheck`: the live, race, "Flow map vs ODE" and Images tabs), the message is shown
beside the field and the event does not run (gradio_client: ``ValidationError``); the plotting
tabs' events answer a mistake that reaches them (no validator, or one that ran on other values)
in their text and keep their plots (:func:`keep_plots`); elsewhere, and for a full Space, it is
a ``gr.Error``. A fault of the app becomes a short message and one traceback in the server log. Events that
use a visitor's model run through :func:`visiting`, which marks the session busy and returns
it as the last output (restarting its time to live).

Time convention (everywhere): t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from app.checked import component_class
from app.live import VALIDATING, LiveSession
from app.sessions import SessionClosed, Sessions, SpaceFull
from app.validation import InputError, parse_float

log = logging.getLogger("flowmaps.app")


# ------------------------------------------------------------------------------ errors
def input_error(message: str, title: str = "Check this input", action: str = "input") -> gr.Error:
    """The page's message for a user's mistake: shown to the user, one line in the server log
    (at INFO), and no traceback (gradio prints one for a gr.Error unless told not to)."""
    log.info("%s refused: %s", action, message.splitlines()[0][:200])
    return gr.Error(message, title=title, print_exception=False)


# ------------------------------------------------------------------------------ components
class Refused:
    """A value that an input's own check refused, carried to the event instead of raised.

    Where an event has a validator (:class:`InputCheck`), gradio preprocesses the inputs for the
    validator too, and answers an exception raised there with a bare HTTP 400 (a toast and a red
    badge in the page; an ``httpx`` error without the message for gradio_client). A refused value
    therefore reaches the validator as this object, whose ``message`` names the field; the
    validator shows it beside that field, and an event that still receives one (an API call on
    gradio's direct route, which runs no validator) raises it as an :class:`InputError`.
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Refused({self.message!r})"


def _refuse(component: Any, err: InputError) -> Refused:
    """The answer to a value ``component``'s check refused: a :class:`Refused` where an
    :class:`InputCheck` validates the component's events, else the page's message, raised."""
    if getattr(component, "refused_to_validator", False):
        return Refused(str(err))
    raise input_error(str(err)) from None


def refusing(component: Any, check) -> Any:
    """``component``'s preprocess through ``check(payload)``, which raises :class:`InputError`
    naming the field: raised as the page's message (:func:`input_error`), or handed on as a
    :class:`Refused` once an :class:`InputCheck` validates the component's events.

    Set on an instance, this check holds only while no event updates the component (see
    :func:`_checked_class`); app/drawing.py's pad is shown and hidden through its column for that reason."""

    @functools.wraps(check)  # named as the check it runs
    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except InputError as err:
            return _refuse(component, err)

    return preprocess


@functools.cache
def _checked_class(base: type, check, validated: bool) -> type:
    """``base`` (a gradio component class) whose preprocess is ``check(component, payload)``.

    ``check`` raises :class:`InputError` naming the field; the refusal is answered as
    :func:`refusing` does, a :class:`Refused` when ``validated`` (the component's events have an
    :class:`InputCheck`). The page draws it as ``base`` (:func:`app.checked.component_class`).

    A class rather than an instance's attribute, because gradio answers an event that updates a
    component (an example's click, the page's load refreshing a dropdown's choices) by giving
    that browser session a fresh ``block.__class__(**constructor args)`` (gradio/blocks.py,
    postprocess_data) and preprocesses the session's inputs with that copy: a check set on the
    instance is lost there, one of its class is kept, and reads the copy's own label, range and
    choices. (Lessons whose click returned plain values instead of updates would be needed for
    each gr.Examples, and would leave the page's load, which must update the choices, unchecked.)
    """

    def preprocess(self, payload: Any) -> Any:
        try:
            return check(self, payload)
        except InputError as err:
            return _refuse(self, err)

    attrs = {
        "__doc__": f"gr.{base.__name__} whose preprocess is {check.__name__} (app/events.py).",
        "field_check": staticmethod(check),
        "refused_to_validator": validated,
        "preprocess": preprocess,
    }
    return component_class(base, f"Checked{base.__name__}" + ("ForValidator" if validated else ""), attrs)


def _check_by_class(component: Any, check, validated: bool = False) -> Any:
    """Give ``component`` (built) the checked class of its gradio class (:func:`_checked_class`)."""
    base = getattr(type(component), "gradio_class", type(component))
    component.__class__ = _checked_class(base, check, validated)
    return component


def _slider_value(slider: gr.Slider, payload: Any) -> float:
    """The slider's value in its range; on a slider of whole steps, a whole number (the page
    keeps a typed 2.5 in the box while its knob shows 3, so the user must be told)."""
    name = slider.label or "value"
    value = parse_float(payload, name, slider.minimum, slider.maximum)
    step = getattr(slider, "step", None)
    if step is not None and float(step).is_integer() and not float(value).is_integer():
        raise InputError(f"{name}: {value:g} is not a whole number; type a whole number, e.g. {round(value)}")
    return value


def _clamp_note(slider: gr.Slider, typed: Any) -> str:
    """What to say under the slider once its number box loses focus, given the number ``typed`` there.

    gradio's slider clamps a typed number into its range on blur, without a word, and sends the
    clamped value with the next event; so an out-of-range number is named, with the value the
    slider kept (the same clamp as the page's), and so is a fraction on a slider of whole steps
    (the page keeps it in the box). An empty string when there is nothing to say."""
    try:
        _slider_value(slider, typed)
    except InputError as err:
        if "whole number" in str(err):  # in range but between steps: the page does not change it
            return str(err)
        number = float(typed) if isinstance(typed, int | float) and not isinstance(typed, bool) else 0.0
        kept = min(max(number, slider.minimum), slider.maximum)  # the page's own clamp (null counts as 0)
        why = f"{slider.label}: the box was left empty" if typed is None else str(err)
        return f"{why}; the slider set it to {kept:g}"
    return ""


def slider_value_up_to(top: float):
    """A check like :func:`_slider_value` that takes values up to ``top`` whatever the slider's
    maximum: for a slider whose range in the page follows another field (the eta slider's top is
    0.95 for a flow-map method, 1 for Flow matching), the callback's own check having the last word
    (app/validation.py refuses eta 1 for a flow-map method, naming the method)."""

    def value_up_to(slider: gr.Slider, payload: Any) -> float:
        name = slider.label or "value"
        return parse_float(payload, name, slider.minimum, max(float(slider.maximum), top))

    value_up_to.__name__ = f"slider_value_up_to_{top:g}"
    return value_up_to


def NamedSlider(*args: Any, check=_slider_value, **kwargs: Any) -> gr.Slider:
    """A gr.Slider whose out-of-range error names the field and the allowed range.

    gr.Slider refuses an out-of-range value from an API client before the callback runs, with a
    message that does not say which field; this one says it (app/validation.py's wording). In the
    page, gradio clamps a number typed into the slider's box on blur without telling the user;
    this one then names the typed value and the range in a note just under the slider (its
    ``note`` attribute, a gr.Markdown with ``elem_id`` "<slider's elem_id>-note", hidden while
    there is nothing to say; :func:`_clamp_note`). ``check`` replaces the range check of a value
    sent by an event (e.g. :func:`slider_value_up_to`). The slider's release event carries the typed
    number, its value the clamped one.

    The check is the slider's class (:func:`_checked_class`), so a session's copy of the slider
    (made by gradio when an event updates it, e.g. a lesson's click) keeps it. The note is a
    separate element, so that the release event leaves the slider alone. Must be built inside
    ``gr.Blocks`` (it listens to its release).
    """
    slider = _checked_class(gr.Slider, check, False)(*args, **kwargs)
    note_id = f"{slider.elem_id}-note" if slider.elem_id else None
    slider.note = gr.Markdown("", visible=False, elem_id=note_id, elem_classes=["slider-note"])
    # The note goes where the slider goes: into the box in which gradio groups consecutive form
    # fields (an element of another kind would end that box there and sit outside it).
    slider.note.get_expected_parent = slider.get_expected_parent

    def note(evt: gr.EventData) -> dict:
        text = _clamp_note(slider, getattr(evt, "_data", None))  # the typed number, before the clamp
        return gr.update(value=text, visible=bool(text))

    slider.release(note, None, slider.note, queue=False, show_progress="hidden", api_visibility="private")
    return slider


def _gradio_check(component: Any, payload: Any) -> Any:
    """gradio's own preprocess of ``component`` (a checked class's), its errors named after the field."""
    try:
        return type(component).gradio_class.preprocess(component, payload)
    except Exception as err:
        message = getattr(err, "message", None) or str(err)
        raise InputError(f"{component.label or 'input'}: {message}") from None


def named(component: Any) -> Any:
    """Prefix gradio's own input errors (e.g. a value not among a dropdown's choices) with the field.

    The check is the component's class (:func:`_checked_class`), so it holds for a session's copy
    of it too (gradio makes one when an event updates the component: a lesson's click, the
    page's load refreshing the model choices)."""
    return _check_by_class(component, _gradio_check)


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
        f"{action} failed ({type(err).__name__}: {str(err)[:300]}). This is a fault of the app, not of your "
        "input, and the app is still running: try again, or reload the page if it fails again.",
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
            f"**Check this input.** {plain(str(err))}\n\n_The plots show the last good result._"
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


# ------------------------------------------------------------------------------ validators
def raise_refused(values: tuple) -> None:
    """Raise the first :class:`Refused` among an event's input values as an InputError."""
    for value in values:
        if isinstance(value, Refused):
            raise InputError(value.message)


#: The page script that tells the two note scripts (:data:`FIELD_NOTE_JS` and
#: app/tabs/train.RUN_NOTE_JS) of the two page events both of them answer, so that the page patches
#: ``fetch`` and listens to clicks once: ``flowmaps:refused`` on ``document`` when the validator
#: refuses a click (an HTTP 422 answer to the page's fetch), and ``flowmaps:button`` at every
#: button's click, before the button's own handlers (the capture phase), whose ``detail.action``
#: is true for an action's button and false for a tab's.
PAGE_EVENTS_JS = """() => {
  const nativeFetch = window.fetch;
  window.fetch = function (...args) {
    return nativeFetch.apply(this, args).then((response) => {
      if (response.status === 422) document.dispatchEvent(new CustomEvent('flowmaps:refused'));
      return response;
    });
  };
  document.addEventListener('click', (ev) => {
    const t = ev.target && ev.target.closest ? ev.target : null;
    if (!t || !t.closest('button')) return;
    document.dispatchEvent(new CustomEvent('flowmaps:button', {detail: {action: !t.closest('[role=tab]')}}));
  }, true);
}"""


#: The page script that keeps a field's refusal in view (gradio 6.31's page drops it too soon).
#:
#: :class:`InputCheck`'s refusal is gradio's validation message, drawn in the field's loading
#: status. gradio's page rewrites the loading status of every component that took part in an
#: earlier event whenever a later event of the page updates (Blocks' ``update_loading_stati_state``),
#: and the rewrite carries no message: a refusal beside the Data set after a Load, or beside the
#: steps slider while the draw's follow-up event lands, vanished within a second, before a visitor
#: could read it (and on a loaded machine before a test could). This script remembers each
#: field's message and, once gradio's element is gone, shows the same text in an element of its
#: own at the top of the field (``.field-note``, also of class ``validation-error``, so it reads
#: and is found as gradio's). It lets the note go when the visitor edits that field (an ``input``
#: or ``change`` event inside it, or a dropdown choice picked with the mouse) or clicks any button
#: (a new try: the validator speaks again if the field is still wrong); a message still shown by
#: gradio at that edit or click is not pinned again until gradio has dropped or changed it. gradio
#: keeps its own message after the field is edited, above a value it no longer describes, or after
#: another button's action made it untrue (a race refused as "a run is going", then that run
#: stopped), until the field's next event: such a message (of a field edited since, or of any
#: field at a click on an action's button, not a tab's) is hidden (``data-edited`` on the field)
#: until the validator next refuses a click (an HTTP 422 answer to the page's fetch; both this
#: and the clicks come through :data:`PAGE_EVENTS_JS`, which the page loads first). The
#: live tab's ``run-message`` has its own note (app/tabs/train.RUN_NOTE_JS). A new message beside a
#: field that lies outside the window (a refused Start whose reason sits beside the learning rate,
#: below the fold) scrolls that field to the middle of the window, the first such field only.
FIELD_NOTE_JS = """() => {
  const pins = new Map(), stale = new Map();
  // gradio's own message, not this script's, nor the refused input (gradio gives it the class too)
  const GRADIO_MESSAGE = '.validation-error:not(.field-note):not(input):not(textarea)';
  const field = (el) => (el && el.closest ? el.closest('.block[id]') : null);
  const ownNote = (block) => block.querySelector(':scope > .field-note');
  const drop = (id) => {
    pins.delete(id);
    const block = document.getElementById(id);
    const note = block && ownNote(block);
    if (note) note.remove();
  };
  // a refusal beside a field out of sight (below the fold, under the button pressed) is brought
  // into view, the first one on the page; a message seen before is not scrolled to again
  const reveal = (block) => {
    const box = block.getBoundingClientRect();
    if (box.height && (box.top < 0 || box.bottom > window.innerHeight)) block.scrollIntoView({block: 'center'});
  };
  const look = () => {
    const now = new Map();
    for (const err of document.querySelectorAll('.block[id] ' + GRADIO_MESSAGE)) {
      const block = field(err), text = err.textContent.trim();
      if (block && block.id !== 'run-message' && text) now.set(block.id, text);
    }
    for (const [id, text] of stale) if (now.get(id) !== text) stale.delete(id);
    let fresh = null;
    for (const [id, text] of now) {
      if (stale.get(id) === text) continue;
      if (pins.get(id) !== text && !fresh) fresh = document.getElementById(id);
      pins.set(id, text);
    }
    if (fresh) reveal(fresh);
    for (const [id, text] of pins) {
      const block = document.getElementById(id);
      if (!block) continue;
      let note = ownNote(block);
      if (now.has(id)) { if (note) note.remove(); continue; }
      if (!note) {
        note = document.createElement('div');
        note.className = 'validation-error field-note';
        note.setAttribute('role', 'alert');
        block.prepend(note);
      }
      if (note.textContent !== text) note.textContent = text;
    }
  };
  // gradio's own text, still shown when the visitor moves on, is stale: not pinned again
  const moveOn = (block) => {
    drop(block.id);
    const err = block.querySelector(GRADIO_MESSAGE);
    if (err) stale.set(block.id, err.textContent.trim());
  };
  // an edited field's message is about the value it no longer holds: hidden (gradio keeps it
  // until the field's next event) until the validator next refuses something (HTTP 422)
  const edit = (block) => { moveOn(block); block.setAttribute('data-edited', ''); };
  document.addEventListener('flowmaps:refused', () => {  // PAGE_EVENTS_JS
    for (const block of document.querySelectorAll('.block[data-edited]')) block.removeAttribute('data-edited');
  });
  const edited = (ev) => { const block = field(ev.target); if (block) edit(block); };
  document.addEventListener('input', edited, true);
  document.addEventListener('change', edited, true);
  document.addEventListener('mousedown', (ev) => {  // a dropdown's choice picked with the mouse edits its field
    const t = ev.target && ev.target.closest ? ev.target : null;
    const block = t && t.closest('[role=option]') ? field(t) || field(document.activeElement) : null;
    if (block) edit(block);
  }, true);
  document.addEventListener('flowmaps:button', (ev) => {  // PAGE_EVENTS_JS: any button's click
    for (const id of [...pins.keys()]) drop(id);
    // an action's button (not a tab's): every message so far answered an earlier try, hidden
    // until the validator answers this one (e.g. "a run is going" after that run was stopped)
    for (const err of document.querySelectorAll('.block[id] ' + GRADIO_MESSAGE)) {
      const block = field(err);
      if (ev.detail.action) edit(block);
      else moveOn(block);
    }
  });
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


class InputCheck:
    """gradio's validator for one event: the callback's own input checks, run before it is queued.

    ``check(session, *values)`` (``check(*values)`` for an event without the session) is the
    check the callback itself runs first (the same function, so each rule and message is written
    once, in app/validation.py): it raises :class:`InputError` with a message that starts with
    the field's name. As the event's ``validator=``, a refusal is shown beside that field (the
    component in ``fields`` under the message's leading name; a message that names no input,
    e.g. "nothing to continue", beside ``anchor``), the event is not run, so its plots and
    progress bar keep what they show, and one line is logged at INFO. gradio_client gets an
    HTTP 422 and raises ``ValidationError`` with the message. The callback still runs its check
    (an API call on gradio's direct route, or a session that changed since, meets it there as a
    ``gr.Error``).

    Args:
        sessions: the app's :class:`app.sessions.Sessions` (a freed session is refused here
            too); None for an event without the session, whose ``inputs`` are the fields only.
        inputs: the event's inputs, the session's ``gr.State`` first (unless ``sessions`` is None).
        check: as above; its return value is ignored.
        fields: field name at the start of a message -> the input that shows it (fields of
            components that are not among ``inputs`` are left out).
        anchor: the input beside which a message naming no input is shown.
        action: what the event does, for the log line (e.g. "Training").
        echo: show every message beside ``anchor`` too (the live tab, whose anchor sits next to
            its buttons while the field may be scrolled out of view).
        claims: an accepted event claims the session (:meth:`app.live.LiveSession.claim`, under
            ``action``) until its callback takes it, and the check runs with ``VALIDATING`` set,
            so that the checks of the session's other actions (``session.claimed``) refuse here,
            beside the buttons, rather than in a callback that would find the session taken.
    """

    def __init__(
        self,
        sessions: Sessions | None,
        inputs: list[Any],
        check,
        fields: dict[str, Any],
        anchor: Any,
        action: str,
        echo: bool = True,
        claims: bool = False,
    ):
        self.sessions, self.inputs, self.check, self.action, self.echo = sessions, list(inputs), check, action, echo
        self.claims = claims
        where = {id(comp): i for i, comp in enumerate(self.inputs)}
        self.position = {name: where[id(comp)] for name, comp in fields.items() if id(comp) in where}
        self.anchor = where[id(anchor)]
        for comp in self.inputs:  # their own refusals now come here (see Refused)
            if hasattr(type(comp), "field_check"):  # by class, kept by a session's copy too
                _check_by_class(comp, type(comp).field_check, validated=True)
            else:
                comp.refused_to_validator = True

    def _run_check(self, values: tuple) -> None:
        if self.sessions is None:
            self.check(*values)
            return
        session = values[0] if isinstance(values[0], LiveSession) else LiveSession()  # the event replaces it
        if session.closed:
            raise SessionClosed(self.sessions.closed_message())
        validating = VALIDATING.set(True)
        try:
            self.check(session, *values[1:])
        finally:
            VALIDATING.reset(validating)
        if self.claims:
            session.claim(self.action)

    def __call__(self, *values: Any) -> list[dict] | dict:
        at, message = None, ""
        try:
            for i, value in enumerate(values):
                if isinstance(value, Refused):
                    at, message = i, value.message
                    break
            else:
                self._run_check(values)
        except InputError as err:
            message = str(err)
            at = self.position.get(message.split(": ", 1)[0], self.anchor)
        except Exception:  # a fault of the app, not of the input: the event meets it and reports it
            pass
        if at is None:
            return self._answer([gr.validate(True, "") for _ in values])
        log.info("%s refused: %s", self.action, message.splitlines()[0][:200])
        # also beside the anchor where it sits next to the button: the field may be scrolled out of
        # view (the live tab's settings sit below Start on a laptop screen)
        shown = {at, self.anchor} if self.echo else {at}
        return self._answer([gr.validate(i not in shown, message if i in shown else "") for i in range(len(values))])

    @staticmethod
    def _answer(results: list[dict]) -> list[dict] | dict:
        """gradio wraps the return value of a function with one output in a list of one; an event
        with one input gets its one result bare, else gradio reads a list in a list and passes it."""
        return results[0] if len(results) == 1 else results


# ------------------------------------------------------------------------------ visitors
def _with_state(out: Any, session: LiveSession) -> Any:
    """A handler's outputs followed by the session (the event's last output, the page's gr.State).

    A handler with no output of its own (its event's only output is the state) returns None or
    ``()``: the event then returns the session itself, since gradio stores whatever an event of
    one output returns, a 1-tuple included, in that output. A handler whose one output should be
    cleared returns ``gr.update(value=None)``, not None."""
    if out is None or (isinstance(out, tuple) and not out):
        return session
    return (*out, session) if isinstance(out, tuple) else (out, session)


def _own_session(value: Any) -> LiveSession:
    """The page's gr.State value as a session: a fresh one (logged as a fault of the app) where the
    state holds anything else, so that one wrong write cannot break every later click of the page."""
    if isinstance(value, LiveSession):
        return value
    log.error("the page's session state held a %s, not a session: a fresh session replaces it", type(value).__name__)
    return LiveSession()


def visiting(sessions: Sessions, fn, action: str):
    """The event of ``fn(session, *inputs)``: the same outputs plus the session (for the page's
    gr.State, whose time to live restarts whenever an event writes it), run while the session
    is marked busy (an idle expiry then leaves it alone) and recorded under the visitor's
    browser-session hash (the unload event frees it by that hash). Errors as :func:`guarded`.
    ``fn`` returns its own outputs, None or ``()`` where the session is the event's only output
    (:func:`_with_state`); a state that holds no session gets a fresh one (:func:`_own_session`).
    A session freed already is refused with a message, and so is an input its own check refused
    (a :class:`Refused` value, met here when no validator ran)."""

    def using(session: LiveSession, request: Any):
        return sessions.using(session, getattr(request, "session_hash", None))

    if inspect.isgeneratorfunction(fn):

        def event(request: gr.Request, session, *args):
            session = _own_session(session)
            raise_refused(args)
            with using(session, request):
                for out in fn(session, *args):
                    yield _with_state(out, session)

    else:

        def event(request: gr.Request, session, *args):
            session = _own_session(session)
            raise_refused(args)
            with using(session, request):
                return _with_state(fn(session, *args), session)

    event.__name__, event.__doc__ = fn.__name__, fn.__doc__
    return guarded(action)(event)


def with_optional_last(event, fn):
    """``event`` (a :func:`visiting` event of ``fn``) with the signature ``(request, <fn's
    parameters>)``, so that gradio_client reads the defaults of ``fn``'s trailing parameters (e.g.
    an input that only shows the validator's message) and an API caller may leave them out."""
    P = inspect.Parameter
    params = [P("request", P.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
    params += [p.replace(annotation=P.empty) for p in inspect.signature(fn).parameters.values()]
    event.__signature__ = inspect.Signature(params)
    return event


def plain(text: str) -> str:
    """Text shown as Markdown without markup surprises (underscores, stars, carets stay literal)."""
    for ch in "\\_*^[]`":
        text = text.replace(ch, "\\" + ch)
    return text
