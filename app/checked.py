"""Subclasses of gradio component classes that the page still draws as gradio's own components,
made without the typing stub gradio writes beside the module of each new component class.

app/events.py gives the app's checked fields such a class (their preprocess runs the field's
check), so that gradio's per-session copy of a component, built from its class, keeps the check.
"""

from __future__ import annotations

import os
from abc import ABCMeta
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr


class _NoStubMeta(type(gr.Slider)):
    """gradio's ComponentMeta without the typing stub it writes for each new component class.

    ComponentMeta.__new__ (gradio/component_meta.py) wraps a class's own ``__init__``, makes
    listeners of its own ``EVENTS``, and then writes a ``.pyi`` stub of the class beside its
    module (for any subclass, even one that adds nothing): on a Space no file may be written
    beside the app. The classes made here add neither ``__init__`` nor ``EVENTS``, so ABCMeta's
    ``__new__`` is all that ComponentMeta would have done for them."""

    def __new__(mcs, name: str, bases: tuple, attrs: dict):
        if "__init__" in attrs or "EVENTS" in attrs:
            raise TypeError(f"{name}: a component class made here adds no __init__ or EVENTS")
        return ABCMeta.__new__(mcs, name, bases, attrs)


def component_class(base: type, name: str, attrs: dict[str, Any]) -> type:
    """A subclass ``name`` of the gradio component class ``base``, with the methods and class
    attributes ``attrs`` (neither ``__init__`` nor ``EVENTS``) and ``gradio_class`` = ``base``.

    ``is_template`` makes gradio name its blocks after ``base`` for the page (Block.get_block_name),
    as for gradio's own templates (gr.Sketchpad), so the browser draws the component it knows.

    Raises:
        TypeError: ``base`` is a template or a class made here (gradio would name it wrongly),
            or ``attrs`` holds ``__init__`` or ``EVENTS``.
    """
    if hasattr(base, "is_template") or hasattr(base, "gradio_class"):
        raise TypeError(f"{base.__name__}: the page would not draw a subclass of it as {base.__name__}")
    own = {"__module__": __name__, "__qualname__": name, "is_template": True, "gradio_class": base}
    return _NoStubMeta(name, (base,), {**own, **attrs})
