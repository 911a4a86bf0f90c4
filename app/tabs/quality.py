"""The "Steps vs quality" tab: a metric and the wall time against network evaluations, for one
model's flow map and ODE solvers, or for the shipped checkerboard models side by side.

Element ids: inputs ``q-model``, ``q-samples``; buttons ``btn-quality``, ``btn-quality-shipped``;
outputs ``q-lesson``, ``q-summary`` (who wins at which N, or this model's numbers in one
sentence, above the plot), ``q-message`` (what to change after an input mistake),
``plot-quality``, ``q-table`` (inside the closed accordion "The numbers"). API names: ``/quality``,
``/quality_shipped``.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import time

import gradio as gr

from app import plots
from app import quality as ql
from app.checkpoints import KIND_2D
from app.config import Limits
from app.datasets import toy_source
from app.events import InputCheck, NamedSlider, keep_plots, named, visiting
from app.tabs.base import DEFAULTS, SESSION, AppBase
from app.validation import InputError, parse_int


def _figure(res: ql.QualityResult):
    """The plot of a result: its curves, its floor and the floor's band (as wide as the sentence's)."""
    return plots.quality_figure(
        res.curves, res.metric_name, res.floor, ql.TIME_TITLE, floor_sd=res.floor_sd, floor_band=ql.FLOOR_BAND
    )


class QualityCallbacks(AppBase):
    """The tab's events: three outputs each (figure, table, summary sentence), streamed as the
    evaluation computes."""

    def _quality_stream(self, jobs, n: int, key: str | None, persist: bool, flow_steps=ql.FLOW_STEPS):
        """Stream (figure, table, sentence) as ``jobs`` ((model, data, label, flow map?, ODE?) each)
        are evaluated; ``key``: the model part of the cache key (None: not cached), completed here
        by :func:`app.quality.cache_suffix` with n, the seed and the evaluation's settings."""
        seed = 0
        if key is not None:
            key += ("" if key.endswith("-") else "-") + ql.cache_suffix(n, seed, flow_steps)
            cached = self.quality_cache.get(key)
            if cached is not None:
                yield (
                    _figure(cached),
                    ql.table_markdown(cached),
                    ql.summary_sentence(cached),
                )
                return
        res = None
        metric = None
        planned = sum(ql.planned_nfe(flow, ode, flow_steps) for _, _, _, flow, ode in jobs)
        started = time.perf_counter()
        for model, data, label, flow, ode in jobs:
            if metric is None:
                metric = ql.Metric(data, n, seed)
                res = ql.QualityResult(metric.name, metric.floor, n=n, floor_sd=metric.floor_sd)
            count = 0
            for partial in ql.evaluate(
                model,
                data,
                label,
                n=n,
                seed=seed,
                flow_map=flow,
                ode=ode,
                result=res,
                metric=metric,
                flow_steps=flow_steps,
            ):
                res = partial
                count += 1
                if count % 3 == 0:
                    done = sum(sum(c.nfe) for c in res.curves)
                    line = ql.progress_sentence(done, planned, time.perf_counter() - started, key is not None)
                    yield _figure(res), "computing...", line
        if res is None:
            raise InputError("no model to evaluate")
        if key is not None:
            self.quality_cache.put(key, res, persist)
        yield _figure(res), ql.table_markdown(res), ql.summary_sentence(res)

    def check_quality(self, session, source, n_samples) -> int:
        """ "Evaluate this model"'s input checks, also its validator in the page
        (app/events.InputCheck): the number of samples and the model; loads nothing. Returns the
        number of samples.

        Raises:
            InputError: naming the field that is wrong and what to change.
        """
        self.check_free(session)
        n = self.check_samples(n_samples)
        self.check_model(session, source)
        return n

    @staticmethod
    def check_free(session) -> None:
        """Refuse a second evaluation while this page's first one computes: both would write the
        same plot and summary (the second, queued behind the first, would show nothing until then).

        Raises:
            InputError: saying what to wait for.
        """
        if session is not None and session.evaluating:
            raise InputError(
                "an evaluation is already computing in this page (the summary above the plot says "
                "computing...); press again once it has finished"
            )

    def check_shipped(self, session, n_samples) -> int:
        """The shipped comparison's whole check (and its validator): this page free, the samples."""
        self.check_free(session)
        return self.check_samples(n_samples)

    @staticmethod
    def _marked(session, stream):
        """``stream`` run with ``session.evaluating`` set (cleared at its end, error or cancel)."""
        if session is None:
            yield from stream
            return
        session.evaluating = True
        try:
            yield from stream
        finally:
            session.evaluating = False

    def check_samples(self, n_samples) -> int:
        """The number of samples, checked: the shipped comparison's whole check (and its validator)."""
        return parse_int(n_samples, "samples", 500, 20_000)

    def quality(self, session, source, n_samples):
        """Metric and wall time against network evaluations, for one model (streams as it computes).

        A session's results are cached under its process-unique token and model version
        (:func:`app.quality.session_key`), read before the model is copied, and not at all while
        the session is training (its model changes under the same version)."""
        n = self.check_quality(session, source, n_samples)
        version, training = session.version, session.running
        model, data, label, key = self.resolve_model(session, source)
        if data is None:
            raise InputError(f"model {label}: its data set is unknown, so there is nothing to compare samples with")
        fm_only = (session.method if source in (None, "", SESSION) else self.store.info(source).method) == "fm"
        if key is None:
            key = None if training else ql.session_key(session.token, version)
            persist = False
        else:
            persist = True
        jobs = [(model, data, label, not fm_only, True)]
        yield from self._marked(session, self._quality_stream(jobs, n, key, persist))

    def quality_shipped(self, n_samples, session=None):
        """The shipped checkerboard models side by side: flow maps at
        :data:`app.quality.COMPARE_FLOW_STEPS` and the ODE on the FM model; with ``session``, the
        page's, one evaluation at a time in it (:meth:`check_free`)."""
        n = self.check_shipped(session, n_samples)
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
        key = "shipped-" + "+".join(keys)
        yield from self._marked(session, self._quality_stream(jobs, n, key, True, flow_steps=ql.COMPARE_FLOW_STEPS))


def build_quality_tab(fm: QualityCallbacks, session: gr.State, lim: Limits) -> gr.Dropdown:
    """The "Steps vs quality" tab, inside ``gr.Tabs``; returns its model dropdown (refreshed on load)."""
    with gr.Tab("Steps vs quality", id="quality", elem_id="tab-quality"):
        gr.Markdown(ql.LESSON, elem_id="q-lesson")
        with gr.Row():
            model = gr.Dropdown(
                fm.model_choices(),
                value=fm.default_checkpoint(KIND_2D, DEFAULTS.method) or SESSION,
                label="Model",
                elem_id="q-model",
                scale=3,
            )
            samples = NamedSlider(
                500, 20_000, value=3000, step=500, label="Samples per point", elem_id="q-samples", scale=2
            )
        with gr.Row():
            button = gr.Button("Evaluate this model", variant="primary", elem_id="btn-quality")
            shipped = gr.Button(
                "Compare the shipped checkerboard models (LSD, ESD, PSD-M, PSD-U, FM; one training budget)",
                elem_id="btn-quality-shipped",
            )
        message = gr.Markdown(elem_id="q-message")
        summary = gr.Markdown(elem_id="q-summary")
        figure = gr.Plot(
            plots.quality_figure([], ""),
            label="Quality and time against network evaluations",
            show_label=False,
            elem_id="plot-quality",
        )
        with gr.Accordion("The numbers", open=False):
            table = gr.Markdown(elem_id="q-table")
    named(model)
    one_at_a_time = {"concurrency_limit": 1, "concurrency_id": "quality"}
    # A mistake (a fraction typed into the samples slider, a model that is not there) is named
    # beside its field by gradio's validator, before the event is queued; the last plot stays.
    fields = {"samples": samples, "model": model}
    button.click(
        visiting(fm.sessions, keep_plots(fm.quality, 3), "Evaluation"),
        [session, model, samples],
        [figure, table, summary, message, session],
        api_name="quality",
        # each message beside its own field only (the model's dropdown sits next to the slider)
        validator=InputCheck(
            fm.sessions, [session, model, samples], fm.check_quality, fields, model, "Evaluation", echo=False
        ),
        **one_at_a_time,
    )

    def compare_shipped(session, n_samples):
        yield from fm.quality_shipped(n_samples, session)

    shipped.click(
        visiting(fm.sessions, keep_plots(compare_shipped, 3), "Evaluation"),
        [session, samples],
        [figure, table, summary, message, session],
        api_name="quality_shipped",
        validator=InputCheck(
            fm.sessions, [session, samples], fm.check_shipped, {"samples": samples}, samples, "Evaluation"
        ),
        **one_at_a_time,
    )
    return model
