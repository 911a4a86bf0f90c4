"""The shared plumbing of every tab's events: input checks on components, errors, sessions.

A user's mistake (an :class:`app.validation.InputError`, a full Space) becomes a ``gr.Error``
that names the field and what to change, logged as one line at INFO without a traceback; a
fault of the app becomes a short message and one traceback in the server log. Events that
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
import numpy as np

from app.live import LiveSession
from app.sessions import Sessions, SpaceFull
from app.validation import InputError

log = logging.getLogger("flowmaps.app")


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


def NamedSlider(*args: Any, **kwargs: Any) -> gr.Slider:
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


def plain(text: str) -> str:
    """Text shown as Markdown without markup surprises (underscores, stars, carets stay literal)."""
    for ch in "\\_*^[]`":
        text = text.replace(ch, "\\" + ch)
    return text
