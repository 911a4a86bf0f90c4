"""Plotly figures of the app. Pure functions of arrays: no model, no gradio.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

DATA_COLOR = "rgba(120, 120, 120, 0.35)"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
TERM_COLORS = {"loss": "#444444", "diagonal": "#1f77b4"}
FONT = {"family": "Inter, Helvetica, Arial, sans-serif", "size": 12}


def as_finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def axis_range(points: np.ndarray, pad: float = 0.15) -> tuple[float, float]:
    """A square plotting range that holds the central 99.5% of ``points`` plus a margin."""
    p = as_finite(points)
    p = p[np.isfinite(p).all(axis=1)] if p.ndim == 2 else p
    if p.size == 0:
        return (-1.5, 1.5)
    lo = float(np.quantile(p, 0.0025))
    hi = float(np.quantile(p, 0.9975))
    span = max(hi - lo, 1e-3)
    return (lo - pad * span, hi + pad * span)


#: Characters per line of a placeholder's text: plotly never wraps an annotation, so a longer
#: line would run past the sides of a narrow plot. At 15 px a character is about 7 px wide; a
#: phone 360 px wide (or 390 px with a scrollbar) leaves a plot about 290 px wide, of which 34
#: characters take about 240 px (48, the former length, ran past the edge of the live tab's plot).
PLACEHOLDER_LINE = 34


def empty_figure(message: str, height: int = 320) -> go.Figure:
    """A blank figure holding a short text (for "train first", "no checkpoint", ...), broken into
    centred lines of at most :data:`PLACEHOLDER_LINE` characters (a longer word keeps its line)."""
    lines = textwrap.wrap(message, PLACEHOLDER_LINE, break_long_words=False, break_on_hyphens=False) or [""]
    fig = go.Figure()
    fig.add_annotation(
        text="<br>".join(html.escape(line) for line in lines),
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 15, "color": "#666"},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, template="plotly_white", margin={"l": 10, "r": 10, "t": 10, "b": 10}, font=FONT)
    return fig


# ------------------------------------------------------------------------------ live training
def samples_figure(
    data: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    rng: tuple[float, float] | None = None,
    title: str | None = None,
    marker_size: float = 2.5,
) -> go.Figure:
    """Data beside generated samples: one square panel per (title, (n, 2) points)."""
    data = as_finite(data)
    rng = rng or axis_range(data)
    cols = 1 + len(panels)
    # a title per line at its commas ("flow map<br>N = 4"): five panels side by side on a phone leave
    # about 70 px each, where one line ran into the next panel's title
    titles = ["data"] + [t.replace(", ", "<br>") for t, _ in panels]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.02)
    fig.update_annotations(font_size=13)
    fig.add_trace(
        go.Scatter(
            x=data[:, 0],
            y=data[:, 1],
            mode="markers",
            name="data",
            showlegend=False,
            marker={"size": marker_size, "color": "#555"},
        ),
        row=1,
        col=1,
    )
    for i, (name, pts) in enumerate(panels):
        p = as_finite(pts)
        fig.add_trace(
            go.Scatter(
                x=p[:, 0],
                y=p[:, 1],
                mode="markers",
                name=name,
                showlegend=False,
                marker={"size": marker_size, "color": PALETTE[i % len(PALETTE)]},
            ),
            row=1,
            col=i + 2,
        )
    for c in range(1, cols + 1):
        fig.update_xaxes(
            range=list(rng), showticklabels=False, zeroline=False, showgrid=False, row=1, col=c, constrain="domain"
        )
        fig.update_yaxes(
            range=list(rng),
            showticklabels=False,
            zeroline=False,
            showgrid=False,
            row=1,
            col=c,
            scaleanchor=f"x{'' if c == 1 else c}",
            scaleratio=1,
        )
    fig.update_layout(
        height=300,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 56 if not title else 76, "b": 10},  # two-line panel titles
        font=FONT,
        title=title,
        uirevision="samples",
    )
    return fig


def _bin_history(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive entries so that at most ``max_points`` remain."""
    n = len(steps)
    if n <= max_points:
        return steps, values
    edges = np.linspace(0, n, max_points + 1).astype(int)
    s = np.array([steps[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    v = np.array([_mean_of_finite(values[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    return s, v


def _mean_of_finite(values: np.ndarray) -> float:
    """Mean of the entries that are not NaN; NaN when there are none (np.nanmean would warn, once per
    bin, into the server log: a term logged only on some steps leaves whole bins empty)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def loss_figure(history: Sequence[dict], max_points: int = 400, title: str | None = None) -> go.Figure:
    """Loss per term against the step, log scale; ``history`` is a list of per-step logs.

    Each entry has "step" and float terms ("loss", "diagonal", and the distillation term, e.g.
    "lagrangian"); non-numeric entries are ignored. Long histories are averaged into bins. The
    steps are expected in increasing order, the run's current path: a live session drops the steps
    a guard rollback discarded from its history (:class:`app.live.LiveSession`), so none is drawn.
    """
    if not history:
        return empty_figure("the loss appears here once training starts", height=300)
    skip = {"step", "lr", "grad_norm", "step_time", "time", "recovered"}
    terms: list[str] = []
    for entry in history:
        for k, v in entry.items():
            if k not in skip and k not in terms and isinstance(v, (int, float)):
                terms.append(k)
    steps = np.array([float(e.get("step", i)) for i, e in enumerate(history)])
    fig = go.Figure()
    for i, term in enumerate(terms):
        vals = np.array(
            [float(e.get(term, np.nan)) if isinstance(e.get(term), (int, float)) else np.nan for e in history]
        )
        vals = np.where(vals > 0, vals, np.nan)
        s, v = _bin_history(steps, vals, max_points)
        color = TERM_COLORS.get(term, PALETTE[(i + 2) % len(PALETTE)])
        fig.add_trace(
            go.Scatter(
                x=s, y=v, mode="lines", name=term, line={"color": color, "width": 2.5 if term == "loss" else 1.5}
            )
        )
    fig.update_yaxes(type="log", title="mean squared residual")
    fig.update_xaxes(title="step")
    fig.update_layout(
        height=300,
        template="plotly_white",
        margin={"l": 60, "r": 10, "t": 30 if title else 10, "b": 40},
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        font=FONT,
        title=title,
        uirevision="loss",
    )
    return fig


def rate_text(rate: float) -> str:
    """Steps per second as the progress line shows them: a slow run (a big loaded model on a busy
    CPU: 0.5 steps/s) keeps its first significant digits instead of reading "0 steps/s"."""
    if rate >= 10 or rate <= 0:
        return f"{rate:.0f} steps/s"
    if rate >= 1:
        return f"{rate:.1f} steps/s"
    return f"{rate:.2f} steps/s"


#: Seconds of a run before the progress line forecasts where the time cap will end it.
CAP_FORECAST_AFTER = 3.0


def progress_html(
    step: int,
    target: int,
    elapsed: float,
    cap: float,
    rate: float,
    state: str,
    session_left: float | None = None,
    start: int = 0,
    top_step: int | None = None,
    rate_note: str = "",
) -> str:
    """A progress bar with step, time and speed, as HTML (rendered by gr.HTML).

    The bar shows the larger of the steps' share and the cap's share used. While training or
    racing (``state``), once :data:`CAP_FORECAST_AFTER` seconds give a steady rate, a run that the
    time cap will end before its steps (a big loaded model, a busy CPU, a long race) also says near
    which step: else "step 8 of 8000" beside a bar at 5% reads as a contradiction.

    ``step`` and ``target`` count from the model's first step; ``start`` is the step this run began
    at. A run that began past 0 (a Continue) fills the bar by its own steps and also says them:
    "step 20 of 8019" alone matched neither the run's 8000 steps nor the model's.

    Several runs side by side (the race): ``step`` is the slowest one's; ``top_step``, when above
    it, the fastest one's, shown as "steps 180-199"; ``rate_note`` follows the speed ("per family,
    4 families")."""
    run_steps, run_done = max(0, target - start), max(0, step - start)
    frac = 0.0 if run_steps <= 0 else min(1.0, max(run_done / run_steps, elapsed / cap if cap > 0 else 0.0))
    pct = int(round(100 * frac))
    extra = ""
    if state in ("training", "racing") and elapsed >= CAP_FORECAST_AFTER and rate > 0 and cap > elapsed:
        near = step + rate * (cap - elapsed)
        if near < target:
            extra += f" · at this speed the cap ends the run near step {int(near):,}"
    extra += f" · session time left {session_left:.0f} s" if session_left is not None else ""
    this_run = f" (this run: {run_done:,} of {run_steps:,})" if start > 0 else ""
    steps = f"steps {step}-{top_step}" if top_step is not None and top_step > step else f"step {step}"
    return (
        '<div class="fm-progress" style="font-size:13px">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:12px;overflow:hidden">'
        f'<div style="background:#f97316;width:{pct}%;height:12px"></div></div>'
        f'<div style="margin-top:4px">{html.escape(state)}: {steps} of {target}{this_run} · {elapsed:.1f} s of '
        f"{cap:.0f} s cap · {rate_text(rate)}{html.escape(rate_note)}{extra}</div></div>"
    )


def loaded_html(label: str, steps: int | None) -> str:
    """The progress line after Load: the model loaded and how many steps it was trained for
    (``steps`` from its config; None where the config does not say), as HTML; no bar, since no
    run is under way."""
    trained = f", trained {steps:,} steps" if steps else ""
    return f'<div class="fm-progress" style="font-size:13px">loaded: {html.escape(label)}{trained}</div>'


# ------------------------------------------------------------------------------ steps vs quality
@dataclass
class Curve:
    """One line of the trade-off plot: a sampler of one model at several budgets."""

    model: str
    sampler: str  # "flow map", "euler", "heun", "rk4", "dopri5"
    nfe: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)  # wall time (ms; per how many samples: the panel's title)
    timed_nfe: list[int] = field(default_factory=list)  # NFE of the timed runs, if not ``nfe`` (adaptive solvers)
    settings: list[str] = field(default_factory=list)  # what sets each point apart where NFE does not (dopri5's rtol)

    @property
    def time_nfe(self) -> list[int]:
        """The NFE each wall time was measured at: ``timed_nfe`` where every time has one, else ``nfe``."""
        return self.timed_nfe if len(self.timed_nfe) == len(self.ms) else self.nfe

    @property
    def label(self) -> str:
        return f"{self.model}: {self.sampler}"


def quality_figure(
    curves: Sequence[Curve],
    metric_name: str,
    floor: float | None = None,
    time_title: str = "wall time (ms)",
    floor_sd: float | None = None,
    floor_band: float = 2.0,
) -> go.Figure:
    """Metric and wall time against the number of network evaluations, side by side (log x).

    ``time_title`` heads the right panel: it says how the times were taken (e.g. medians of repeats).
    ``floor`` (the score of exact samples) is a dotted line; with ``floor_sd`` a shaded band of
    ``floor_band`` standard deviations either side shows how far exact samples themselves scatter."""
    if not curves or not any(c.nfe for c in curves):
        return empty_figure("pick a model and press Evaluate")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[f"{metric_name} (lower is better)", time_title],
        horizontal_spacing=0.09,
    )
    models = list(dict.fromkeys(c.model for c in curves))
    dashes = {"flow map": "solid", "euler": "dot", "heun": "dash", "rk4": "dashdot", "dopri5": "longdash"}
    symbols = {"flow map": "circle", "euler": "triangle-up", "heun": "square", "rk4": "diamond", "dopri5": "star"}
    for c in curves:
        if not c.nfe:
            continue
        color = PALETTE[models.index(c.model) % len(PALETTE)]
        metric = [m if math.isfinite(m) else None for m in c.metric]
        style = {
            "color": color,
            "dash": dashes.get(c.sampler, "solid"),
            "width": 2.5 if c.sampler == "flow map" else 1.5,
        }
        marker = {"symbol": symbols.get(c.sampler, "circle"), "size": 8}
        fig.add_trace(
            go.Scatter(
                x=c.nfe, y=metric, mode="lines+markers", name=c.label, legendgroup=c.label, line=style, marker=marker
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=c.time_nfe,
                y=c.ms,
                mode="lines+markers",
                name=c.label,
                legendgroup=c.label,
                showlegend=False,
                line=style,
                marker=marker,
            ),
            row=1,
            col=2,
        )
    if floor is not None and math.isfinite(floor):
        spread = floor_sd is not None and math.isfinite(floor_sd) and floor_sd > 0
        if spread:
            fig.add_hrect(
                # the axis is logarithmic: a band reaching 0 cannot be drawn (nor would it be read)
                y0=max(floor - floor_band * floor_sd, 0.5 * floor),
                y1=floor + floor_band * floor_sd,
                fillcolor="#888",
                opacity=0.15,
                line_width=0,
                row=1,
                col=1,
            )
        fig.add_hline(
            y=floor,
            line={"color": "#888", "dash": "dot"},
            row=1,
            col=1,
            annotation_text=f"floor (exact samples) {floor:.3f}" + (f" ± {floor_sd:.3f}" if spread else ""),
            annotation_position="top right",
        )
    for col in (1, 2):
        fig.update_xaxes(
            type="log",
            title="network evaluations (flow map: N steps)",
            row=1,
            col=col,
            tickvals=[1, 2, 4, 8, 16, 32, 64, 128, 256],
            ticktext=["1", "2", "4", "8", "16", "32", "64", "128", "256"],
        )
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    # room above the panels for their titles' lines and, over them, plotly's hover toolbar (about 30 px)
    lines = 1 + max(title.count("<br>") for title in (metric_name, time_title))
    fig.update_layout(
        height=460,
        template="plotly_white",
        font=FONT,
        margin={"l": 50, "r": 10, "t": 30 + 20 * lines, "b": 50},
        legend={"orientation": "h", "y": -0.18, "x": 0, "yanchor": "top"},
    )
    return fig
