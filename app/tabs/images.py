"""The "Images" tab: rows of images from one noise at N = 1, 2, 4, 8 and the chosen N, plus an
ODE row, from a shipped image checkpoint, with each row's cost and FID.

Element ids: inputs ``img-model``, ``img-steps``, ``img-grid``, ``img-times``, ``img-seed``,
``img-count``, ``img-ode``; button ``btn-images``; outputs ``img-output`` (labelled picture,
one row per N), ``img-info``, ``img-fid``, ``img-none`` (the "no image checkpoints shipped yet"
note). API name: ``/sample_images``.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from app import images as img
from app.checkpoints import KIND_IMAGE
from app.config import Limits
from app.events import InputCheck, NamedSlider, guarded, keep_plots, named, raise_refused
from app.tabs.base import AppBase
from app.validation import GRID_CHOICES, InputError, format_grid, parse_int, parse_seed, parse_time_grid

log = logging.getLogger("flowmaps.app")

NO_IMAGES = (
    "**No image checkpoints shipped yet.** Image flow maps (Fashion-MNIST, a small UNet) are trained on a "
    "GPU and shipped in `checkpoints/`; this tab samples them on the CPU once they are there."
)


class ImageCallbacks(AppBase):
    """The tab's events: the picture, its table and notes, and the FID text."""

    def check_images(self, name, steps, grid_kind, custom, seed, n_images, ode) -> tuple:
        """The tab's input checks, also its validator in the page (app/events.InputCheck): the
        image model, steps, time grid (t = 0 noise, t = 1 data), seed, number of images and ODE
        baseline. Loads nothing. Returns (steps, grid kind, custom grid or None, seed, count).

        Raises:
            InputError: naming the first field that is wrong and what to change.
        """
        names = self.store.names(KIND_IMAGE)
        if not names:
            raise InputError("no image checkpoints shipped yet: the image tab needs a UNet checkpoint in checkpoints/")
        if name not in names:
            raise InputError(f"image model: {name!r} is not one of {', '.join(names)}")
        n = parse_int(steps, "steps", 1, self.limits.max_image_steps)
        kind = str(grid_kind).strip().lower() if grid_kind is not None else ""
        custom_grid = None
        if kind == "custom":
            custom_grid = parse_time_grid("custom", n, custom, max_steps=self.limits.max_image_steps)
        else:
            parse_time_grid(kind, n, None, max_steps=self.limits.max_image_steps)
        sd = parse_seed(seed)
        count = parse_int(n_images, "number of images", 1, self.limits.max_images)
        if ode not in img.ODE_BASELINES:
            raise InputError(f"ODE baseline: {ode!r} is not one of {', '.join(img.ODE_BASELINES)}")
        return n, kind, custom_grid, sd, count

    def sample_images(self, name, steps, grid_kind, custom, seed, n_images, ode, progress=None):
        """Rows of images at N = 1, 2, 4, 8 and the chosen N from one noise, plus an ODE row.
        ``progress(fraction, description)`` (e.g. a ``gr.Progress``) hears the share of the work
        done: loading the model, then each row (:func:`app.images.sample_rows`)."""
        n, kind, custom_grid, sd, count = self.check_images(name, steps, grid_kind, custom, seed, n_images, ode)
        if progress is not None:
            progress(0.0, f"loading {name}")
        model, config = self.store.load(name)
        euler = self.store.info(name).method == "fm"
        grids = img.default_grids(kind, n, custom_grid, euler=euler)
        rows = img.sample_rows(model, config, grids, ode, count, sd, euler=euler, kind=kind, progress=progress)
        picture = img.compose(rows)
        metrics = self.image_metrics(name)
        lines = ["| row | network calls | ms per image (one run) | FID (metrics.json) |", "| --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r.label} | {r.nfe} | {r.ms_per_image:.1f} | {img.row_fid_cell(metrics, r)} |")
        notes = []
        if custom_grid is not None:
            notes.append(
                f"Custom grid: its row takes the {len(custom_grid) - 1} "
                f"step{'' if len(custom_grid) == 2 else 's'} you typed "
                f"({format_grid(custom_grid)}); the Steps N slider applies to the uniform, edm and cosine grids only."
            )
        if euler:
            notes.append(
                "This flow-matching baseline learned only the velocity v<sub>t,t</sub>: its rows are Euler "
                "steps of that velocity, not flow-map jumps."
            )
        notes.append(
            "FID: lower is better; — means not measured for that sampler and grid. "
            + (img.fid_convention(metrics) + " " if img.fid_convention(metrics) else "")
            + "Times: one run each after an untimed warm-up, so a busy CPU shows in them."
        )
        return picture, "\n".join(lines) + "\n\n" + " ".join(notes), self.image_fid(name)

    def image_metrics(self, name: str) -> dict | None:
        """A listed image checkpoint's metrics.json (bench/eval_images.py), else its config's
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


def build_images_tab(fm: ImageCallbacks, lim: Limits) -> tuple[gr.Dropdown, gr.Markdown]:
    """The "Images" tab, inside ``gr.Tabs``; returns its model dropdown and its "none shipped" note
    (both refreshed on load)."""
    with gr.Tab("Images", id="images", elem_id="tab-images"):
        names = fm.checkpoint_choices(KIND_IMAGE)
        none = gr.Markdown(NO_IMAGES, visible=not names, elem_id="img-none")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                model = gr.Dropdown(
                    names, value=fm.default_checkpoint(KIND_IMAGE), label="Image model", elem_id="img-model"
                )
                steps = NamedSlider(
                    1,
                    lim.max_image_steps,
                    value=8,
                    step=1,
                    label="Steps N",
                    info="for the uniform, edm and cosine grids; a custom grid has the steps you type",
                    elem_id="img-steps",
                )
                grid = gr.Dropdown(list(GRID_CHOICES), value="uniform", label="Time grid", elem_id="img-grid")
                times = gr.Textbox(value="0, 0.4, 0.75, 1", label="Custom times (for 'custom')", elem_id="img-times")
                seed = gr.Number(value=0, label="Seed", elem_id="img-seed")
                count = NamedSlider(1, lim.max_images, value=8, step=1, label="Images", elem_id="img-count")
                ode = gr.Dropdown(
                    list(img.ODE_BASELINES), value=img.DEFAULT_ODE, label="ODE baseline", elem_id="img-ode"
                )
                button = gr.Button("Sample", variant="primary", elem_id="btn-images")
            with gr.Column(scale=3):
                gr.Markdown(img.LESSON, elem_id="img-lesson")
                picture = gr.Image(
                    label="Same noise, more steps: one row per N",
                    show_label=False,  # the label's badge would hide the first row's label
                    type="pil",
                    elem_id="img-output",
                    buttons=["download", "fullscreen"],
                )
                info = gr.Markdown(elem_id="img-info")
                fid = gr.Markdown(fm.image_fid(fm.default_checkpoint(KIND_IMAGE)), elem_id="img-fid")
    for comp in (model, grid, seed, ode):
        named(comp)
    inputs = [model, steps, grid, times, seed, count, ode]
    names = ("image model", "steps", "time grid", "custom times", "seed", "number of images", "ODE baseline")
    check = InputCheck(None, inputs, fm.check_images, dict(zip(names, inputs)), model, "Image sampling", echo=False)
    draw = keep_plots(fm.sample_images, 3, 1)

    # the named parameters (not *args): gradio passes the progress tracker at its place in the
    # signature, after the seven inputs; it draws a bar over the outputs with each row's share
    def sample(name, steps, grid_kind, custom, seed, n_images, ode, progress=gr.Progress()):
        args = (name, steps, grid_kind, custom, seed, n_images, ode)
        raise_refused(args)  # a field's own refusal, met here on gradio's direct route (no validator)
        return draw(*args, progress=progress)

    button.click(
        guarded("Image sampling")(sample),
        inputs,
        [picture, info, fid],
        api_name="sample_images",
        concurrency_limit=lim.concurrency,
        # a mistake beside its field (one that names no input beside the model); the picture stays
        validator=check,
    )
    model.change(fm.image_fid, model, fid, api_visibility="undocumented", queue=False)
    return model, none
