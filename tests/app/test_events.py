"""The event plumbing of app/events.py without a server: where gradio's validator shows each
mistake, what a refused component value becomes, and the slider's note after the page clamped a
typed number. (The same paths through a launched server and a browser: test_app.py,
test_space_safety.py, test_browser.py.)

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from gradio.events import EventData
from gradio.queueing import create_validator_fn, process_validation_response
from gradio.state_holder import SessionState

from app.events import InputCheck, NamedSlider, Refused, named
from app.live import LiveSession
from app.sessions import Sessions
from app.validation import InputError, parse_int


def _check(session, data, steps):
    """A callback's own check, as the tabs' check_start: fields named at the start of messages."""
    parse_int(steps, "steps", 1, 10)
    if data == "boom":
        raise RuntimeError("a fault of the app")
    if data != "x":
        raise InputError("nothing to do: pick x first")


@pytest.fixture
def form():
    with gr.Blocks():
        state = gr.State()
        data = named(gr.Dropdown(["x", "y"], value="x", label="Data"))
        steps = NamedSlider(1, 10, value=5, step=1, label="Steps")
        other = gr.Textbox(label="Other")
    inputs = [state, data, steps, other]
    check = InputCheck(Sessions(2, 60.0), inputs, lambda s, d, n, o: _check(s, d, n), {"steps": steps}, data, "Doing")
    return check, data, steps


def _verdict(answer: list[dict]) -> list[tuple[bool, str]]:
    assert all(a["__type__"] == "validate" for a in answer)
    return [(a["is_valid"], a["message"]) for a in answer]


def test_each_mistake_is_shown_beside_its_field_and_logged_once(form, caplog):
    check, _, _ = form
    session = LiveSession()
    assert _verdict(check(session, "x", 3, "")) == [(True, "")] * 4
    with caplog.at_level(logging.INFO, logger="flowmaps.app"):
        steps_wrong = _verdict(check(session, "x", 30, ""))
        no_field = _verdict(check(session, "y", 3, ""))
    # the field the message starts with: the steps slider, position 2 (the session state is 0)
    # ... and beside the anchor too (the input next to the button; position 1, the data dropdown)
    assert [ok for ok, _ in steps_wrong] == [True, False, False, True]
    assert steps_wrong[2][1] == steps_wrong[1][1] == "steps: 30 is outside the allowed range [1, 10]"
    # a message that names no input: beside the anchor (the data dropdown)
    assert no_field[1] == (False, "nothing to do: pick x first") and sum(not ok for ok, _ in no_field) == 1
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO] * 2 and not any(r.exc_info for r in refused)
    assert refused[0].getMessage() == "Doing refused: steps: 30 is outside the allowed range [1, 10]"


def test_a_fault_of_the_app_is_left_to_the_event_and_a_freed_session_is_refused(form):
    check, _, _ = form
    session = LiveSession()
    # not an input mistake: the event meets it and reports it (with its traceback, once)
    assert _verdict(check(session, "boom", 3, "")) == [(True, "")] * 4
    session.close()
    freed = _verdict(check(session, "x", 3, ""))
    assert not freed[1][0] and "reload the page" in freed[1][1]


def test_an_event_without_a_session_is_checked_on_its_fields_and_shows_a_message_once():
    """A plotting tab's validator (no session among its inputs, ``echo=False``): the check gets
    the fields alone; a mistake is shown beside its field only, a message that names no input
    beside the anchor, and a field's own refusal beside that field."""
    seen = []

    def check(data, steps, other):
        seen.append((data, steps, other))
        _check(None, data, steps)

    with gr.Blocks():
        data = named(gr.Dropdown(["x", "y"], value="x", label="Data"))
        steps = NamedSlider(1, 10, value=5, step=1, label="Steps")
        other = gr.Textbox(label="Other")
    check_fields = InputCheck(None, [data, steps, other], check, {"steps": steps}, data, "Drawing", echo=False)
    assert _verdict(check_fields("x", 3, "")) == [(True, "")] * 3 and seen == [("x", 3, "")]
    assert _verdict(check_fields("x", 30, "")) == [
        (True, ""),
        (False, "steps: 30 is outside the allowed range [1, 10]"),
        (True, ""),
    ]
    assert _verdict(check_fields("y", 3, "")) == [(False, "nothing to do: pick x first"), (True, ""), (True, "")]
    refused = _verdict(check_fields("x", steps.preprocess(2.5), ""))
    assert refused[1] == (False, "Steps: 2.5 is not a whole number; type a whole number, e.g. 2")
    assert [ok for ok, _ in refused] == [True, False, True] and len(seen) == 3  # not checked again


def test_a_refused_component_value_reaches_the_validator(form):
    """Before a validator takes them, a slider's and a dropdown's own refusals are raised (a
    gr.Error naming the field); once it does, they arrive there as Refused, beside their field."""
    check, data, steps = form
    assert isinstance(steps.preprocess(99), Refused) and isinstance(data.preprocess("z"), Refused)
    answer = _verdict(check(LiveSession(), data.preprocess("z"), steps.preprocess(99), ""))
    assert not answer[1][0] and answer[1][1].startswith("Data: ") and answer[2] == (True, "")
    with gr.Blocks():
        alone = NamedSlider(1, 10, value=5, label="Alone")
    with pytest.raises(gr.Error, match=r"Alone: 99 is outside the allowed range \[1, 10\]"):
        alone.preprocess(99)
    assert alone.preprocess(7) == 7.0
    # a slider of whole steps refuses a fraction, which the page would keep in its box
    with gr.Blocks():
        layers = NamedSlider(1, 6, value=4, step=1, label="Hidden layers")
        rate = NamedSlider(0.05, 1, value=0.5, step=0.05, label="eta")
    with pytest.raises(gr.Error, match=r"Hidden layers: 2.5 is not a whole number"):
        layers.preprocess(2.5)
    assert layers.preprocess(3) == 3.0 and rate.preprocess(0.55) == 0.55


@pytest.mark.parametrize(
    "typed, note",
    [
        (99, "Steps: 99 is outside the allowed range [1, 10]; the slider set it to 10"),
        (-4, "Steps: -4 is outside the allowed range [1, 10]; the slider set it to 1"),
        (None, "Steps: the box was left empty; the slider set it to 1"),
        (2.5, "Steps: 2.5 is not a whole number; type a whole number, e.g. 2"),
        (7, ""),
    ],
)
def test_a_typed_number_beyond_the_range_is_named_beside_the_slider(typed, note):
    """gradio's slider clamps a typed number on blur; its release event carries the typed number,
    and the note under the slider names it with the value kept (nothing for a number in range)."""
    from app.events import _clamp_note

    with gr.Blocks():
        slider = NamedSlider(1, 10, value=5, step=1, label="Steps", info="counts")
    assert _clamp_note(slider, typed) == note


def _run(demo: gr.Blocks, target: Any, event: str, inputs: list, state: SessionState, data: Any = None) -> dict:
    """Run the page's ``event`` on ``target`` for one session, through gradio's own event path."""
    fn = next(f for f in demo.fns.values() if (target._id, event) in f.targets)
    return asyncio.run(demo.process_api(fn, inputs, state=state, event_data=EventData(target, data)))


def test_a_clamp_note_leaves_the_slider_and_its_check_in_place():
    """gradio answers an update of a component by giving the session a plain copy of it, without
    NamedSlider's check: after a note has been shown, a fraction must still be refused under the
    slider's label. So the note is its own element under the slider, and the slider is never updated."""
    with gr.Blocks() as demo:
        layers = NamedSlider(1, 6, value=4, step=1, label="Hidden layers", info="of the MLP", elem_id="depth")
        used = gr.Number()
        start = gr.Button()
        start.click(lambda n: n, layers, used)
    session = SessionState(demo)
    answer = _run(demo, layers, "release", [], session, data=99)  # 99 typed, the page kept 6
    with pytest.raises(gr.Error) as refused:
        _run(demo, start, "click", [2.5], session)
    assert refused.value.message == "Hidden layers: 2.5 is not a whole number; type a whole number, e.g. 2"
    assert session[layers._id] is layers and layers.info == "of the MLP"  # the session's slider: this one, as built
    assert _run(demo, start, "click", [3], session)["data"] == [3.0]
    # the note: its own element, under the slider (named after it), shown with the message
    note = layers.note
    assert note.elem_id == "depth-note" and not note.visible and note.parent is layers.parent
    assert note.parent.children.index(note) == note.parent.children.index(layers) + 1
    shown = answer["data"][0]
    assert (
        shown["visible"]
        and shown["value"] == "Hidden layers: 99 is outside the allowed range [1, 6]; the slider set it to 6"
    )
    hidden = _run(demo, layers, "release", [], session, data=5)["data"][0]  # a number in range: no note
    assert hidden["visible"] is False and hidden["value"] == ""


def test_a_sessions_copy_of_an_updated_field_keeps_its_check():
    """gradio answers an event that updates a component (a lesson's click fills the fields with
    updates) by giving the session a fresh copy built from the component's class. The checks are
    the class, so the copy keeps them, with the range and choices the update gave it; where a
    validator takes the field's refusals, the copy hands them to it too. The page still draws
    gradio's own components (the blocks' type), and no typing stub is written beside the app."""
    from pathlib import Path

    import app.checked

    with gr.Blocks() as demo:
        state = gr.State()
        layers = NamedSlider(1, 6, value=4, step=1, label="Hidden layers", elem_id="depth")
        data = named(gr.Dropdown(["x", "y"], value="x", label="Data"))
        seed = named(gr.Number(value=0, precision=0, label="Seed"))
        width = NamedSlider(16, 64, value=32, step=16, label="width")
        fill, used, start, go = gr.Button(), gr.Textbox(), gr.Button(), gr.Button()
        fill.click(
            lambda: (gr.update(maximum=8, value=7), gr.update(choices=["x", "z"]), gr.update(value=48)),
            None,
            [layers, data, width],
        )
        start.click(lambda n, d, s: repr((n, d, s)), [layers, data, seed], used)
        check = InputCheck(Sessions(2, 60.0), [state, width], lambda s, w: None, {"width": width}, width, "Going")
        go.click(lambda s, w: w, [state, width], used, validator=check)
    session = SessionState(demo)
    _run(demo, fill, "click", [], session)
    copies = [session[c._id] for c in (layers, data, seed, width)]
    assert [c is o for c, o in zip(copies, (layers, data, seed, width))] == [False, False, True, False]
    assert copies[0].maximum == 8 and copies[1].choices == [("x", "x"), ("z", "z")]  # the session's own
    assert _run(demo, start, "click", [7, "z", 3], session)["data"] == ["(7.0, 'z', 3)"]  # as updated
    for typed, message in [
        (2.5, "Hidden layers: 2.5 is not a whole number; type a whole number, e.g. 2"),
        (9, "Hidden layers: 9 is outside the allowed range [1, 8]"),
    ]:
        with pytest.raises(gr.Error) as refused:
            _run(demo, start, "click", [typed, "x", 0], session)
        assert refused.value.message == message
    with pytest.raises(gr.Error) as refused:
        _run(demo, start, "click", [3, "y", 0], session)
    assert refused.value.message == "Data: Value: y is not in the list of choices: ['x', 'z']"  # as updated
    # the validator shows the copy's refusal beside its field, as the queue runs it before the event
    fn = next(f for f in demo.fns.values() if (go._id, "click") in f.targets)
    answer = asyncio.run(demo.process_api(create_validator_fn(fn), [None, 40.5], state=session))["data"]
    assert _verdict(answer)[1] == (False, "width: 40.5 is not a whole number; type a whole number, e.g. 40")
    # the page draws gradio's own components; the classes add no events and write no stub
    types = {c["props"].get("label"): c["type"] for c in demo.get_config_file()["components"]}
    assert (types["Hidden layers"], types["Data"], types["Seed"], types["width"]) == (
        "slider",
        "dropdown",
        "number",
        "slider",
    )
    assert type(layers).EVENTS is gr.Slider.EVENTS and isinstance(layers, gr.Slider)
    assert not list(Path(app.checked.__file__).parent.glob("**/*.pyi"))


def test_an_event_of_one_input_is_refused_too():
    """gradio wraps the result of a function with one output in a list; the validator of an event
    with one input ("Compare the shipped models": the samples slider alone) must still be read as a
    refusal by the queue, which otherwise finds no verdict in a list in a list and runs the event."""
    with gr.Blocks() as demo:
        samples = NamedSlider(500, 20_000, value=3000, step=500, label="Samples per point")
        out, go = gr.Textbox(), gr.Button()
        check = InputCheck(None, [samples], lambda n: parse_int(n, "samples", 500, 20_000), {}, samples, "Evaluation")
        go.click(lambda n: str(n), [samples], out, validator=check)
    fn = next(f for f in demo.fns.values() if (go._id, "click") in f.targets)
    state = SessionState(demo)
    for typed, message in [(750.5, "Samples per point: 750.5 is not a whole number"), (None, "Samples per point: ")]:
        answer = asyncio.run(demo.process_api(create_validator_fn(fn), [typed], state=state))["data"]
        ok, verdicts = process_validation_response(answer, fn)
        assert ok is False and verdicts[0]["message"].startswith(message), verdicts
    answer = asyncio.run(demo.process_api(create_validator_fn(fn), [1500], state=state))["data"]
    assert process_validation_response(answer, fn)[0] is True


def test_a_handler_without_outputs_leaves_the_session_in_the_state_and_a_bad_state_is_replaced(caplog):
    """A visitor's event returns the session last, for the page's gr.State. A handler with no
    output of its own (a Stop with nothing to stop) returns () or None: the state must still
    hold the session itself (gradio stores what an event of one output returns, a 1-tuple too).
    A state that holds anything else (as that bug left it) gets a fresh session, once, instead of
    every later click failing; a fault of the app is not called an input mistake."""
    from app.events import visiting

    def fail(session):
        raise RuntimeError("the disk is full")

    sessions = Sessions(4, 60.0)
    with gr.Blocks() as demo:
        state = gr.State(LiveSession)
        out = gr.Textbox()
        go, stop, stop_none, boom = gr.Button(), gr.Button(), gr.Button(), gr.Button()
        go.click(visiting(sessions, lambda s: f"session {s.token}", "Going"), state, [out, state])
        stop.click(visiting(sessions, lambda s: (), "Stop"), state, state)
        stop_none.click(visiting(sessions, lambda s: None, "Stop"), state, state)
        boom.click(visiting(sessions, fail, "Drawing"), state, [out, state])
    session = SessionState(demo)
    first = session[state._id]
    for button in (stop, stop_none, go):
        _run(demo, button, "click", [None], session)
        assert session[state._id] is first
    assert _run(demo, go, "click", [None], session)["data"][0] == f"session {first.token}"
    session[state._id] = (first,)  # what a Stop left there before
    with caplog.at_level(logging.INFO, logger="flowmaps.app"):
        said = _run(demo, go, "click", [None], session)["data"][0]
    fresh = session[state._id]
    assert isinstance(fresh, LiveSession) and fresh is not first and said == f"session {fresh.token}"
    assert [r.levelno for r in caplog.records if "not a session" in r.getMessage()] == [logging.ERROR]
    with pytest.raises(gr.Error) as failed:
        _run(demo, boom, "click", [None], session)
    message = failed.value.message
    assert message.startswith("Drawing failed (RuntimeError: the disk is full)") and "fault of the app" in message
    assert "settings" not in message and "try again" in message, message
