"""The "Flow map vs ODE" tab: ODE paths of the learned velocity against N flow-map jumps, with a
time slider, and the flow-map error over (s, t) for Gaussian mixtures.

Element ids: inputs ``cmp-model``, ``cmp-grid``, ``cmp-steps``, ``cmp-times``, ``cmp-points``,
``cmp-seed``; button ``btn-trajectories``; outputs ``plot-trajectories``, ``cmp-info``,
``plot-error``; lessons ``cmp-examples``. API name: ``/trajectories``.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from app import compare as cmp
from app import plots
from app.checkpoints import KIND_2D
from app.config import Limits
from app.events import InputCheck, NamedSlider, guarded, keep_plots, named, raise_refused, visiting
from app.live import LiveSession
from app.tabs.base import SESSION, AppBase
from app.validation import GRID_CHOICES, InputError, format_grid, parse_int, parse_seed, parse_time_grid
from flowmaps.data.gmm import GMM_PRESETS

#: One-click lessons of the tab: (label, model, grid, N, custom times, points, seed); custom times
#: "" leave the page's box as it is (the lesson's grid is not "custom").
COMPARE_EXAMPLES = (
    ("Eight Gaussians: one jump against the exact map", "eight_gaussians-lsd", "uniform", 1, "", 24, 0),
    ("Eight Gaussians: four jumps", "eight_gaussians-lsd", "uniform", 4, "", 24, 0),
    ("Eight Gaussians, ESD: the error heat map over (s, t)", "eight_gaussians-esd", "uniform", 4, "", 24, 0),
    ("Checkerboard: a custom grid that slows near the data", "checkerboard-lsd", "custom", 3, "0, 0.5, 0.9, 1", 24, 0),
)


class CompareCallbacks(AppBase):
    """The tab's event: three outputs (figure, info, heat map)."""

    def check_trajectories(self, session, source, grid_kind, steps, custom, n_points, seed) -> tuple:
        """The tab's input checks, also its validator in the page (app/events.InputCheck): the
        time grid (t = 0 noise, t = 1 data), the start points, the seed and the model. Returns
        (grid, points, seed).

        Raises:
            InputError: naming the first field that is wrong and what to change.
        """
        grid = parse_time_grid(grid_kind, steps, custom, max_steps=self.limits.max_grid_steps)
        n = parse_int(n_points, "start points", 1, self.limits.max_trajectory_points)
        sd = parse_seed(seed)
        self.check_model(session, source)
        return grid, n, sd

    def trajectories(self, session, source, grid_kind, steps, custom, n_points, seed):
        """ODE paths and flow-map jumps for a model; plus the error heat map for mixtures."""
        grid, n, sd = self.check_trajectories(session, source, grid_kind, steps, custom, n_points, seed)
        model, data, label, _ = self.resolve_model(session, source)
        d = cmp.trajectory_data(model, data, grid, n_points=n, seed=sd)
        fig = cmp.trajectories_figure(d)
        info = f"**{label}** · grid: {format_grid(grid)}\n\n" + cmp.summary(d)
        if data is not None and data.gmm is not None:
            s_vals, t_vals, err = cmp.error_grid(model, data, seed=sd)
            heat = cmp.error_heatmap(s_vals, t_vals, err)
        else:
            heat = plots.empty_figure(
                "no heat map for this model: the flow-map error over (s, t) needs Gaussian-mixture data "
                f"({', '.join(GMM_PRESETS)}), whose exact flow map is known",
                height=200,
            )
        return fig, info, heat


def grid_steps(grid_kind: Any, custom: Any, max_steps: int) -> Any:
    """The "Flow-map steps N" slider after a draw: the custom grid's N (its times less one) when
    the grid is "custom" and its times parse with N within 1 .. ``max_steps`` (the slider's range),
    so that the slider never shows an N the drawing did not use; else the slider as it is."""
    if str(grid_kind).strip().lower() != "custom":
        return gr.skip()
    try:
        n = len(parse_time_grid("custom", 1, custom, max_steps=max_steps)) - 1
    except InputError:  # the draw's own check said what to change
        return gr.skip()
    return gr.update(value=n)


def _lesson_examples(fm: CompareCallbacks, inputs: list, outputs: list, fields: dict, show_steps) -> None:
    """The one-click lessons (:data:`COMPARE_EXAMPLES` whose models are shipped): a click fills the
    inputs and draws (the lessons name shipped models only, so no visitor's session is needed).

    A lesson without custom times ("") leaves the "Custom times" box as the user left it (a
    gr.Examples would empty it); its grid is not "custom", so the box plays no part in it. The
    draw has the tab's validator, as the button has."""
    show_steps_inputs = [inputs[1], inputs[3]]
    show_steps_kw = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    shipped = set(fm.store.names(KIND_2D))
    rows = [ex for ex in COMPARE_EXAMPLES if ex[1] in shipped]
    if not rows:
        return
    times = inputs[3]
    lessons = gr.Dataset(
        components=inputs,
        samples=[list(ex[1:]) for ex in rows],
        sample_labels=[ex[0] for ex in rows],
        type="index",
        label="One-click lessons",
        elem_id="cmp-examples",
    )

    def fill(index: Any) -> list:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(rows):
            return [gr.skip() for _ in inputs]
        return [
            gr.skip() if comp is times and value == "" else gr.update(value=value)
            for comp, value in zip(inputs, rows[index][1:])
        ]

    def draw(*args):
        raise_refused(args)  # a field's own refusal, met here on gradio's direct route (no validator)
        return keep_plots(fm.trajectories, 3, 1)(LiveSession(), *args)

    def check(*args) -> None:
        fm.check_trajectories(LiveSession(), *args)

    lessons.click(fill, lessons, inputs, queue=False, show_progress="hidden", api_visibility="undocumented").then(
        guarded("Trajectories")(draw),
        inputs,
        outputs,
        api_visibility="undocumented",
        validator=InputCheck(None, inputs, check, fields, inputs[0], "Trajectories", echo=False),
    ).then(show_steps, show_steps_inputs, inputs[2], **show_steps_kw)


def _views() -> list:
    """The right column: [trajectories figure, info, error heat map]."""
    traj_plot = gr.Plot(
        plots.empty_figure("press Draw trajectories"),
        label="Flow map vs ODE",
        show_label=False,
        elem_id="plot-trajectories",
    )
    info = gr.Markdown(elem_id="cmp-info")
    err_plot = gr.Plot(
        plots.empty_figure(
            "press Draw trajectories: the flow-map error over (s, t) of a Gaussian-mixture model appears here",
            height=200,
        ),
        label="Flow-map error (Gaussian mixtures)",
        elem_id="plot-error",
    )
    return [traj_plot, info, err_plot]


def build_compare_tab(fm: CompareCallbacks, session: gr.State, lim: Limits) -> gr.Dropdown:
    """The "Flow map vs ODE" tab, inside ``gr.Tabs``; returns its model dropdown (refreshed on load)."""
    with gr.Tab("Flow map vs ODE", id="compare", elem_id="tab-compare"):
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                model = gr.Dropdown(
                    fm.model_choices(), value=fm.default_mixture_model() or SESSION, label="Model", elem_id="cmp-model"
                )
                grid = gr.Dropdown(list(GRID_CHOICES), value="uniform", label="Time grid", elem_id="cmp-grid")
                steps = NamedSlider(
                    1,
                    16,
                    value=4,
                    step=1,
                    label="Flow-map steps N",
                    info="for the uniform, edm and cosine grids; a custom grid has the steps you type",
                    elem_id="cmp-steps",
                )
                times = gr.Textbox(value="0, 0.4, 0.75, 1", label="Custom times (for 'custom')", elem_id="cmp-times")
                points = NamedSlider(
                    1, lim.max_trajectory_points, value=24, step=1, label="Start points", elem_id="cmp-points"
                )
                seed = gr.Number(value=0, label="Seed", elem_id="cmp-seed")
                button = gr.Button("Draw trajectories", variant="primary", elem_id="btn-trajectories")
                examples = gr.Column(min_width=0)  # the one-click lessons (filled below)
                gr.Markdown(
                    "Blue: paths of the ODE dx/dt = v<sub>t,t</sub>(x) of the learned velocity (adaptive "
                    "Dormand-Prince). Dashed black: the exact velocity (Gaussian mixtures). Orange: the N "
                    "flow-map jumps, each marker one network call. Move the slider: the red crosses are "
                    "one jump X<sub>0,τ</sub>(x<sub>0</sub>), the blue dots the ODE at τ."
                )
            with gr.Column(scale=3):
                outputs = _views()
    for comp in (model, grid, seed):
        named(comp)
    inputs = [model, grid, steps, times, points, seed]
    # after a draw on a custom grid the N slider shows that grid's N (grid_steps)
    show_steps = functools.partial(grid_steps, max_steps=int(steps.maximum))
    names = ("model", "time grid", "steps", "custom times", "start points", "seed")  # as the messages name them
    fields = dict(zip(names, inputs))
    check = InputCheck(
        fm.sessions, [session, *inputs], fm.check_trajectories, fields, model, "Trajectories", echo=False
    )
    button.click(
        functools.partial(visiting, fm.sessions)(keep_plots(fm.trajectories, 3, 1), "Trajectories"),
        [session, *inputs],
        [*outputs, session],
        api_name="trajectories",
        concurrency_limit=lim.concurrency,
        # a mistake beside its field (one that names no input beside the model); the plots stay
        validator=check,
    ).then(show_steps, [grid, times], steps, queue=False, show_progress="hidden", api_visibility="private")
    with examples:
        _lesson_examples(fm, inputs, outputs, fields, show_steps)
    return model
