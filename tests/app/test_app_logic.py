"""The app's logic without a server: input checks, plots, live sessions, checkpoints, callbacks.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import AppConfig, Limits
from app.validation import (
    ETA,
    InputError,
    parse_int,
    parse_time_grid,
    parse_train_settings,
    points_from_drawing,
    points_from_upload,
    standardize_points,
)

LSD = "LSD (Lagrangian)"


# ------------------------------------------------------------------------------ shared helpers
def make_checkpoints(root: Path) -> Path:
    """Tiny untrained checkpoints of every kind the app lists (2-D MLPs, a mixture model, a UNet)."""
    from flowmaps.data.gmm import gmm_preset
    from flowmaps.data.toy import data_std
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    mlp = {"name": "mlp", "dim": 2, "width": 32, "depth": 2}
    sig = data_std("checkerboard")
    for method in ("lsd", "fm"):
        cfg = {"net": mlp, "sigma": sig, "data": "checkerboard", "method": method}
        save_pretrained(build_model(cfg), root / f"checkerboard-{method}", cfg)
    cfg = {"net": mlp, "sigma": gmm_preset("eight_gaussians").sigma}
    for method in ("lsd", "esd"):  # data and method from the name
        save_pretrained(build_model(cfg), root / f"eight_gaussians-{method}", cfg)
    unet = {
        "name": "unet",
        "base_channels": 8,
        "channel_mults": [1, 2],
        "num_res_blocks": 1,
        "emb_dim": 16,
        "max_groups": 4,
    }
    cfg = {
        "net": unet,
        "sigma": 0.5,
        "data": "fashion-mnist",
        "method": "lsd",
        "metrics": {"FID": {"N=1": 50.5, "N=2": 31.25, "N=4": 20.0}},
    }
    save_pretrained(build_model(cfg), root / "fashion-mnist-lsd", cfg)
    (root / "not-a-checkpoint").mkdir(exist_ok=True)
    return root


def small_limits(**kw) -> Limits:
    return Limits(**{"live_seconds": 30.0, "session_seconds": 120.0, **kw})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the app uses per request on a 2-core machine (see app.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    return make_checkpoints(tmp_path_factory.mktemp("ckpt") / "checkpoints")


@pytest.fixture(scope="module")
def fm_app(ckpt_root, tmp_path_factory):
    from app.ui import FlowMapsApp

    cfg = AppConfig(checkpoints_dir=ckpt_root, cache_dir=tmp_path_factory.mktemp("cache"), limits=small_limits())
    return FlowMapsApp(cfg)


# ------------------------------------------------------------------------------ validation
def test_settings_in_range_are_accepted():
    s = parse_train_settings(LSD, 200, 256, 1e-3, 0.75, 64, 2, 3)
    assert (s.method, s.steps, s.batch, s.lr, s.eta, s.width, s.depth, s.seed) == (
        "lsd",
        200,
        256,
        1e-3,
        0.75,
        64,
        2,
        3,
    )
    assert parse_train_settings("fm", 10, 16, 1e-3, 1.0, 16).eta == 1.0  # flow matching may put all on the diagonal


@pytest.mark.parametrize(
    "kwargs, field, allowed",
    [
        ({"batch": 0}, "batch size", "[16, 4096]"),
        ({"batch": 10**7}, "batch size", "[16, 4096]"),
        ({"lr": -0.1}, "learning rate", "[1e-05, 0.1]"),
        ({"lr": float("nan")}, "learning rate", "finite"),
        ({"eta": 1.5}, "eta", "[0, 1]"),
        ({"eta": 1.0}, "eta", "use 0.05 to 0.95 (the paper uses 0.75); 1 is for Flow matching only"),
        ({"width": 100_000}, "width", "[16, 512]"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"steps": "many"}, "steps", "not a number"),
        ({"method": "magic"}, "method", "LSD"),
    ],
)
def test_bad_settings_name_the_field_and_range(kwargs, field, allowed):
    args = {"method": LSD, "steps": 100, "batch": 256, "lr": 1e-3, "eta": 0.75, "width": 64}
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        parse_train_settings(**args)
    assert field in str(err.value) and allowed in str(err.value)


def test_parse_int_refuses_bools_and_fractions():
    for bad in (True, 2.5, float("inf"), None, "x"):
        with pytest.raises(InputError):
            parse_int(bad, "n", 0, 10)
    assert parse_int("7", "n", 0, 10) == 7


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "seed: the field is empty; type a number in the allowed range [0, 10]"),
        ("  ", "seed: the field is empty; type a number in the allowed range [0, 10]"),
        ("ten", "seed: 'ten' is not a number; type a number in the allowed range [0, 10]"),
        (True, "seed: True is not a number; type a number in the allowed range [0, 10]"),
        ([3], "seed: expected a number, got list; type a number in the allowed range [0, 10]"),
    ],
)
def test_a_number_field_that_is_empty_or_not_a_number_says_what_to_type(value, message):
    with pytest.raises(InputError) as err:
        parse_int(value, "seed", 0, 10)
    assert str(err.value) == message


def test_time_grids():
    assert parse_time_grid("uniform", 4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    g = parse_time_grid("custom", 1, "0, 0.4, 0.75, 1")
    assert g.tolist() == [0.0, 0.4, 0.75, 1.0]
    for kind in ("edm", "cosine"):
        e = parse_time_grid(kind, 8)
        assert e[0] == 0 and e[-1] == 1 and bool((e[1:] > e[:-1]).all())
    cases = {
        "0, 0.7, 0.3, 1": "increasing",
        "0, 0.5, 0.5, 1": "increasing",
        "0, 1.5": "outside [0, 1]",
        "0, nan, 1": "finite",
        "zero, one": "not a number",
        "": "empty",
        "0.2, 1": "start at 0",
    }
    for text, why in cases.items():
        with pytest.raises(InputError) as err:
            parse_time_grid("custom", 1, text)
        assert "custom times" in str(err.value) and why in str(err.value)
    with pytest.raises(InputError, match="outside the allowed range"):
        parse_time_grid("uniform", 100_000)
    with pytest.raises(InputError) as err:
        parse_time_grid("custom", 1, ", ".join(f"{i / 300:.4f}" for i in range(301)))
    assert str(err.value) == "custom times: the box holds more than 256 steps (the cap); use at most 257 times"
    with pytest.raises(InputError) as err:
        parse_time_grid("custom", 1, "0.5")
    assert str(err.value).startswith("custom times: the box needs at least two times (start and end)")
    with pytest.raises(InputError, match="too long"):
        parse_time_grid("custom", 1, "0, " * 10_000 + "1")
    with pytest.raises(InputError, match="kind"):
        parse_time_grid("spiral", 4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789.,; -eE+naif[]", max_size=40))
def test_grid_parser_returns_a_valid_grid_or_a_clear_error(text):
    try:
        g = parse_time_grid("custom", 1, text)
    except InputError as err:
        assert str(err).startswith("custom times:")
        return
    vals = g.tolist()
    assert vals[0] == 0.0 and vals[-1] == 1.0 and all(b > a for a, b in zip(vals, vals[1:]))


def _canvas(h: int = 100, w: int = 100) -> np.ndarray:
    return np.zeros((h, w, 4), dtype=np.uint8)  # a transparent layer


def test_drawing_to_points():
    layer = _canvas()
    layer[10:14, 20:80, 3] = 255  # a horizontal stroke near the top
    pts = points_from_drawing({"background": None, "layers": [layer], "composite": None}, n_points=500)
    assert pts.shape == (500, 2)
    assert np.all(np.abs(pts[:, 0]) <= 1) and np.all(pts[:, 1] > 0.6)  # top of the canvas is y > 0
    assert -0.62 < pts[:, 0].min() and pts[:, 0].max() < 0.62
    white = np.full((100, 100, 4), 255, dtype=np.uint8)  # opaque composite: dark pixels are strokes
    white[40:60, 40:60, :3] = 0
    assert points_from_drawing(white, n_points=100).shape == (100, 2)


@pytest.mark.parametrize(
    "value, why",
    [
        (None, "empty"),
        ({"background": None, "layers": [], "composite": None}, "empty"),
        ({"layers": [_canvas()]}, "nothing is drawn"),
    ],
)
def test_empty_drawings_are_refused(value, why):
    with pytest.raises(InputError, match=why):
        points_from_drawing(value)


def test_degenerate_drawings_are_refused():
    dot = _canvas()
    dot[50, 50, 3] = 255
    with pytest.raises(InputError, match="only 1 pixels"):
        points_from_drawing({"layers": [dot]})
    blob = _canvas(1000, 1000)
    blob[500:505, 500:505, 3] = 255
    with pytest.raises(InputError, match="single point"):
        points_from_drawing({"layers": [blob]})


def test_csv_upload(tmp_path):
    good = tmp_path / "pts.csv"
    rng = np.random.default_rng(0)
    xy = rng.normal(5.0, 3.0, size=(300, 2))
    good.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in xy))
    pts = points_from_upload(str(good))
    assert pts.shape == (300, 2)
    assert np.allclose(pts.mean(axis=0), 0, atol=1e-5)
    assert math.isclose(float(np.sqrt(pts.astype(np.float64).var(axis=0).mean())), 0.5, rel_tol=1e-4)

    def bad(text: str | bytes, why: str, **kw):
        p = tmp_path / "bad.csv"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(InputError) as err:
            points_from_upload(str(p), **kw)
        assert str(err.value).startswith("CSV file:") and why in str(err.value), str(err.value)

    bad("x,y\n1,2\nthree,4\n", "line 3")
    bad("1,2\n3,nan\n", "non-finite")
    bad("1,2,3\n4,5,6\n", "exactly 2")
    bad("x,y\n1,2\n", "at least 2")
    bad(
        "\n".join(f"{i},{i}" for i in range(50)),
        "the file has more than 10 rows of points, the most the app reads; keep at most 10 of them",
        max_rows=10,
    )
    bad("x,y\n\n1,2\n3,1e39\n", "line 4, column 2: 1e39 is too large")  # lines as the file shows them
    bad(b"\x00\x01\x02binary", "binary")
    bad(b"\x00\x01\x02binary", "saved as text (UTF-8 or UTF-16)")
    utf16 = tmp_path / "unicode.txt"  # a spreadsheet's "Unicode text" export: UTF-16, tab-separated
    utf16.write_bytes(good.read_text().replace(",", "\t").encode("utf-16"))
    assert np.array_equal(points_from_upload(str(utf16)), pts)
    bad("1,2\n" * 2000, "the file is 8,000 bytes, above the limit of 1,000 bytes; subsample it", max_bytes=1000)
    bad("1,1\n1,1\n1,1\n", "same")
    with pytest.raises(InputError, match="no file"):
        points_from_upload(None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789.,;\t -eEnaif\n#xy", max_size=80))
def test_csv_parser_returns_points_or_a_clear_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("csv") / "u.csv"
    p.write_text(text)
    try:
        pts = points_from_upload(str(p))
    except InputError as err:
        assert str(err).startswith("CSV file:")
        return
    assert pts.ndim == 2 and pts.shape[1] == 2 and np.isfinite(pts).all()


def test_standardize_refuses_identical_points():
    with pytest.raises(InputError, match="same"):
        standardize_points(np.ones((10, 2)))


# ------------------------------------------------------------------------------ plots
def _finite_numbers(fig) -> bool:
    found = False
    for tr in fig.data:
        for axis in ("x", "y"):
            vals = getattr(tr, axis, None)
            if vals is None:
                continue
            arr = np.asarray([v for v in np.asarray(vals, dtype=object).ravel() if v is not None], dtype=float)
            arr = arr[~np.isnan(arr)]
            if arr.size:
                found = True
                if not np.isfinite(arr).all():
                    return False
    return found


def test_loss_curve_after_a_rollback_is_one_forward_curve_without_warnings(recwarn):
    """A session's history after a guard rollback (steps 1..50 of the first path, then 51..80 of the
    new one, whose logs have no lagrangian term) draws one forward curve with each path's values;
    a term logged on only some steps (whole bins empty) raises no 'Mean of empty slice'."""
    from app import plots

    first = [{"step": k, "loss": 1.0, "lagrangian": 0.5} for k in range(1, 51)]
    after = [{"step": k, "loss": 2.0} for k in range(51, 81)]  # no lagrangian term after the rollback
    fig = plots.loss_figure(first + after, max_points=20)
    loss = next(t for t in fig.data if t.name == "loss")
    x = np.asarray(loss.x, dtype=float)
    assert (np.diff(x) > 0).all() and x.max() <= 80
    unbinned = plots.loss_figure(first + after, max_points=1000)
    loss = next(t for t in unbinned.data if t.name == "loss")
    assert list(loss.x) == list(range(1, 81))
    assert list(loss.y[:50]) == [1.0] * 50 and list(loss.y[50:]) == [2.0] * 30
    assert not [w for w in recwarn if "empty slice" in str(w.message)]


def test_live_nan_batch_rolls_back_says_so_and_drops_the_discarded_history():
    """The app's live training through the Trainer's guard: a NaN batch at step 75 restores the
    snapshot of step 50, halves the learning rate and says so in the status message. Right after
    that step the session's history (what the loss plot and status read) ends at step 50, and
    throughout the run its steps increase, ending as one path 1..120 whose steps 51.. are new."""
    from app.datasets import toy_source
    from app.live import LiveSession

    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), parse_train_settings(LSD, 120, 64, 3e-3, 0.75, 16, 1, 0))
    real = sess.trainer.data_sampler
    calls = {"n": 0}

    def poisoned(n, g):
        calls["n"] += 1
        x = real(n, g)
        return x.fill_(float("nan")) if calls["n"] == 75 else x

    sess.trainer.data_sampler = poisoned
    seen = []  # (snapshot step, its message, the history's steps then); a slice of 0 s is one step
    for snap in sess.run(120, max_seconds=60, chunk_seconds=0.0, first_chunk_seconds=0.0):
        seen.append((snap.step, snap.message, [e["step"] for e in snap.history]))
    assert sess.trainer.recoveries == 1 and seen[-1][0] == 120
    messages = [message for _, message, _ in seen if message]
    assert "non-finite loss" in messages[-1], messages[-1]
    assert "the guard rolled back to step 50" in messages[-1] and "halved the learning rate" in messages[-1]
    assert sess.trainer.lr_scale == 0.5 and snap.state == "done"
    assert all(np.isfinite(p).all() for _, p in snap.panels)
    at = next(i for i, (_, message, _) in enumerate(seen) if "rolled back to step 50" in message)
    step, _, steps = seen[at]
    assert step == 50 and seen[at - 1][2][-1] == 74  # steps 51..74 were logged before the NaN
    assert steps == list(range(1, 51)), steps[45:]
    for _, _, steps in seen:
        assert all(b > a for a, b in zip(steps, steps[1:]))
    assert seen[-1][2] == list(range(1, 121))
    losses = [e["loss"] for e in sess.history]
    assert all(math.isfinite(v) for v in losses)


def test_plots_are_well_formed():
    from app import plots

    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 2))
    fig = plots.samples_figure(data, [("N = 1", data + 1), ("N = 2", data * 0.5)])
    assert len(fig.data) == 3 and _finite_numbers(fig)
    hist = [{"step": i + 1, "loss": 1.0 / (i + 1), "diagonal": 0.5, "lagrangian": 0.1} for i in range(1000)]
    hist[3]["loss"] = float("nan")
    fig = plots.loss_figure(hist, max_points=100)
    assert {t.name for t in fig.data} == {"loss", "diagonal", "lagrangian"}
    assert all(len(t.x) <= 100 for t in fig.data) and _finite_numbers(fig)
    assert len(plots.loss_figure([]).layout.annotations) == 1
    c1 = plots.Curve("m", "flow map", [1, 2, 4], [0.3, 0.2, float("inf")], [1.0, 2.0, 4.0])
    c2 = plots.Curve("m", "heun", [4, 16], [0.5, 0.1], [3.0, 9.0])
    fig = plots.quality_figure([c1, c2], "KL", floor=0.05)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"
    assert "0.05" in str(fig.layout.annotations)
    html_bar = plots.progress_html(50, 100, 3.0, 120.0, 16.7, "training")
    assert "width:50%" in html_bar and "step 50 of 100" in html_bar and "cap ends" not in html_bar


def test_the_progress_line_says_near_which_step_the_cap_will_end_a_slow_run():
    """A fresh user continued a loaded 512-wide model at 1 step/s and read "step 8 of 8000" beside a
    bar filled by the time cap: while training, a run the cap will end before its steps says near
    which step (steps so far plus the rate times the cap's time left); not before a steady rate,
    not once the run has ended, not when the steps will finish first."""
    from app import plots

    slow = plots.progress_html(8, 8000, 8.0, 120.0, 1.0, "training")
    assert "step 8 of 8000" in slow and "at this speed the cap ends the run near step 120" in slow
    assert "width:7%" in slow  # the bar follows the time used (8 of 120 s)
    assert "cap ends" not in plots.progress_html(2, 8000, 2.0, 120.0, 1.0, "training")  # rate not steady yet
    assert "cap ends" not in plots.progress_html(120, 8000, 120.0, 120.0, 1.0, "time cap reached")
    assert "cap ends" not in plots.progress_html(800, 8000, 10.0, 120.0, 80.0, "training")  # 800 + 8,800 > 8,000
    race = plots.progress_html(500, 8000, 22.7, 120.0, 22.0, "racing")  # a race too: 500 + 22 x 97.3 = 2,640
    assert "at this speed the cap ends the run near step 2,640" in race


def test_a_slow_runs_speed_keeps_its_digits():
    """A fresh user continued a loaded 512-wide model on a busy CPU and read "0 steps/s" beside a run
    that moved (0.5 steps/s): below 10 steps/s the line keeps its first digits."""
    from app import plots

    assert "· 0.50 steps/s" in plots.progress_html(3, 8000, 6.1, 120.0, 0.5, "training")
    assert "· 2.5 steps/s" in plots.progress_html(15, 8000, 6.0, 120.0, 2.5, "training")
    assert "· 59 steps/s" in plots.progress_html(492, 8000, 8.4, 120.0, 59.2, "training")
    assert "· 0 steps/s" in plots.progress_html(0, 8000, 0.0, 120.0, 0.0, "starting")  # no rate yet


def test_a_continued_runs_progress_line_also_counts_its_own_steps(fm_app):
    """A fresh user's second Continue read "step 20 of 8019": the model's steps against the model's
    target, which matched neither the run's steps nor the model's. A run that began past step 0
    fills the bar by its own steps and says them too; a first run's line is as before."""
    from app import plots
    from app.datasets import toy_source
    from app.live import LiveSession

    line = plots.progress_html(20, 8019, 1.0, 120.0, 4.0, "training", start=19)
    assert "step 20 of 8019 (this run: 1 of 8,000)" in line and "width:1%" in line  # 1 s of the 120 s cap
    assert "this run" not in plots.progress_html(20, 8000, 1.0, 120.0, 4.0, "training")
    half = plots.progress_html(300_100, 300_200, 1.0, 120.0, 100.0, "training", start=300_000)
    assert "width:50%" in half  # the run's own half, not the model's 99.97%
    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), parse_train_settings(LSD, 20, 32, 1e-3, 0.75, 16, 1, 0))
    first = list(sess.run(15, max_seconds=30))
    assert {snap.start for snap in first} == {0}
    done = sess.trainer.global_step
    second = list(sess.run(10, max_seconds=30))
    assert {snap.start for snap in second} == {done} and second[-1].target == done + 10
    bar = fm_app._figures(sess, second[-1])[2]
    assert f"of {done + 10} (this run: {second[-1].step - done:,} of 10)" in bar, bar


def test_a_long_placeholder_is_broken_into_short_lines():
    """plotly never wraps an annotation: a placeholder is broken into lines that fit a narrow
    plot (the page check is tests/app/test_browser.py), every word kept in order, text escaped."""
    from app import plots

    message = "no heat map for this model: it needs <Gaussian-mixture> data (eight_gaussians, two_gaussians) " * 2
    text = plots.empty_figure(message, height=200).layout.annotations[0].text
    lines = text.split("<br>")
    assert len(lines) > 1 and all(len(line) <= plots.PLACEHOLDER_LINE + 8 for line in lines), lines  # "&lt;" ...
    assert " ".join(lines).replace("&lt;", "<").replace("&gt;", ">") == message.strip()
    assert plots.empty_figure("press Race").layout.annotations[0].text == "press Race"


def test_method_names_as_the_field_writes_them():
    from app.validation import METHODS, method_name

    names = {m: method_name(m) for m in METHODS.values()}
    assert names == {
        "lsd": "LSD", "esd": "ESD", "psd-u": "PSD-U", "psd-m": "PSD-M", "fm": "FM",
        "meanflow": "MeanFlow", "ct": "CT", "shortcut": "Shortcut",
    }  # fmt: skip
    assert method_name(None) == ""


def test_sample_panel_titles_break_at_their_commas():
    """Five panels side by side leave about 70 px each on a phone: a title such as "flow map, N = 4"
    goes on two lines, so it does not run into the next panel's."""
    from app import plots

    pts = np.zeros((4, 2))
    fig = plots.samples_figure(pts, [(f"flow map, N = {n}", pts) for n in (1, 2, 4, 8)])
    assert [a.text for a in fig.layout.annotations] == ["data"] + [f"flow map<br>N = {n}" for n in (1, 2, 4, 8)]
    assert [t.name for t in fig.data][1:] == [f"flow map, N = {n}" for n in (1, 2, 4, 8)]  # names as they were


def test_trajectories_figure_has_a_working_slider():
    from app import compare as cmp

    t, b, n, k = 11, 5, 4, 6
    rng = np.random.default_rng(1)
    d = cmp.TrajectoryData(
        data=rng.normal(size=(100, 2)),
        ode_times=np.linspace(0, 1, t),
        ode=rng.normal(size=(t, b, 2)),
        exact=rng.normal(size=(t, b, 2)),
        grid=np.linspace(0, 1, n + 1),
        jumps=rng.normal(size=(n + 1, b, 2)),
        slider_times=np.linspace(0, 1, k),
        direct=rng.normal(size=(k, b, 2)),
        ode_at=rng.normal(size=(k, b, 2)),
        nfe_ode=44,
    )
    fig = cmp.trajectories_figure(d)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == k
    # the slider restyles the last two traces with the states at its time
    assert list(steps[2].args[1]) == [len(fig.data) - 2, len(fig.data) - 1]
    assert np.allclose(steps[2].args[0]["x"][1], d.direct[2, :, 0])
    heat = cmp.error_heatmap([0.0, 0.5], [0.5, 1.0], np.array([[1e-3, 2e-3], [np.nan, 1e-4]]))
    assert heat.data[0].type == "heatmap"


def test_trajectories_plot_holds_every_path_from_its_start_point():
    """Noise can start outside the data: the view widens to every drawn path (by at most the
    data's own span each side, so a diverged path cannot shrink the board to a dot)."""
    from app import compare as cmp

    rng = np.random.default_rng(0)
    t, b, n = 5, 3, 2
    ode = rng.uniform(-0.5, 0.5, size=(t, b, 2))
    ode[0, 0] = (0.2, 1.8)  # a start point above the board
    jumps = rng.uniform(-0.5, 0.5, size=(n + 1, b, 2))
    jumps[0] = ode[0]
    d = cmp.TrajectoryData(
        data=rng.uniform(-1, 1, size=(2000, 2)), ode_times=np.linspace(0, 1, t), ode=ode, exact=None,
        grid=np.linspace(0, 1, n + 1), jumps=jumps, slider_times=np.linspace(0, 1, 2),
        direct=jumps[[0, -1]], ode_at=ode[[0, -1]], nfe_ode=20,
    )  # fmt: skip
    lo, hi = cmp.trajectories_figure(d).layout.yaxis.range
    assert hi > 1.8 and lo < -1.0
    d.ode[1, 1] = (1e6, -1e6)  # a diverged path: the board keeps its size on the screen
    lo, hi = cmp.trajectories_figure(d).layout.yaxis.range
    assert hi - lo < 8.0 and lo < -1.0 and hi > 1.0


# ------------------------------------------------------------------------------ live sessions
def test_a_sessions_time_is_spent_on_the_runs_own_clock():
    """A run's elapsed time (the "s of cap" on the progress line) is what the session's budget
    loses, drawing the panels between slices included: after two runs the time used is the sum of
    their last snapshots' elapsed times, so cap and "session time left" add up for the student."""
    from app.datasets import toy_source
    from app.live import LiveSession

    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), parse_train_settings(LSD, 30, 64, 1e-3, 0.75, 32, 1, 0))
    first = list(sess.run(30, max_seconds=30, chunk_seconds=0.02, first_chunk_seconds=0.02))
    assert len(first) >= 3  # several slices, each with its panels drawn between them
    assert math.isclose(sess.used_seconds, first[-1].elapsed, rel_tol=0, abs_tol=1e-3)
    second = list(sess.run(10, max_seconds=30, chunk_seconds=0.02, first_chunk_seconds=0.02))
    assert math.isclose(sess.used_seconds, first[-1].elapsed + second[-1].elapsed, rel_tol=0, abs_tol=1e-3)


def test_live_session_trains_and_stops():
    from app.datasets import toy_source
    from app.live import LiveSession

    s = parse_train_settings(LSD, 40, 64, 3e-3, 0.75, 32, 2, 0)
    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), s)
    snaps = list(sess.run(40, max_seconds=30, chunk_seconds=0.05, first_chunk_seconds=0.05))
    assert snaps[0].state == "starting" and snaps[-1].state == "done" and len(snaps) >= 2
    assert snaps[-1].step == 40 and len(sess.history) == 40
    assert [p[0] for p in snaps[-1].panels] == [f"flow map, N = {n}" for n in (1, 2, 4, 8)]
    before = sess.snapshot_model().state_dict()["net.out.weight"].clone()
    sess.stop_event.set()
    snaps = list(sess.run(10_000, max_seconds=30))
    assert snaps[-1].state == "stopped" and snaps[-1].step == 40  # stopped before any step
    assert torch.equal(before, sess.model.state_dict()["net.out.weight"])
    sess.stop_event.clear()
    snaps = list(sess.run(10_000, max_seconds=0.3, chunk_seconds=0.1))
    assert snaps[-1].state == "time cap reached" and 40 < snaps[-1].step < 10_040
    # the copy handed to other tabs does not move with training
    copy = sess.snapshot_model()
    sess.stop_event.clear()
    list(sess.run(5, max_seconds=30))
    assert not torch.equal(copy.state_dict()["net.out.weight"], sess.model.state_dict()["net.out.weight"])


def test_live_run_decays_the_learning_rate_over_the_run():
    from app.datasets import toy_source
    from app.live import LiveSession
    from app.live_settings import CONTINUE_FACTOR, live_lr_factor, run_progress

    assert live_lr_factor(0.0) == 1.0 and live_lr_factor(1.0) == 0.0 and live_lr_factor(2.0) == 0.0
    assert live_lr_factor(0.5) == pytest.approx(0.5) and live_lr_factor(0.25) == pytest.approx(0.75)  # a line
    assert run_progress(25, 100) == 0.25 and run_progress(100, 100) == 1.0  # in steps: deterministic
    s = parse_train_settings(LSD, 30, 32, 4e-3, 0.5, 16, 1, 0)
    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), s)
    list(sess.run(30, max_seconds=1e6, chunk_seconds=0.05, first_chunk_seconds=0.05))
    lrs = [h["lr"] for h in sess.history]
    assert lrs[0] == pytest.approx(4e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[15] == pytest.approx(4e-3 * live_lr_factor(0.5))
    assert lrs[-1] == pytest.approx(4e-3 / 30) and lrs[-1] < 0.05 * lrs[0]  # the last step: 1/30 of the rate
    # the schedule reached 0: a Continue starts at CONTINUE_FACTOR of the rate, not at the full rate
    assert sess.lr_left == 0.0
    list(sess.run(10, max_seconds=1e6))
    assert sess.history[30]["lr"] == pytest.approx(4e-3 * CONTINUE_FACTOR)
    assert sess.history[-1]["lr"] == pytest.approx(4e-3 * CONTINUE_FACTOR / 10)


def test_time_capped_run_decays_its_rate_and_continue_resumes_a_stopped_schedule():
    """progress = max(steps done / steps, time term of the cap): a run ended by its time cap long
    before its steps still ends near lr 0 (a step-based schedule would leave it near the full
    rate); a Stop leaves the schedule part-way, and Continue starts from there."""
    from app.datasets import toy_source
    from app.live import LiveSession
    from app.live_settings import run_progress

    assert run_progress(10, 100, 7.5, 10.0) == pytest.approx(0.5)  # the time term leads (after a grace of 5 s)
    assert run_progress(60, 100, 7.5, 10.0) == 0.6  # the step fraction leads
    assert run_progress(10, 100, 4.9, 10.0) == 0.1  # within the grace: steps only (reproducible runs)
    assert run_progress(10, 100) == 0.1 and run_progress(10, 100, 20.0, 10.0) == 1.0
    base = 4e-3
    s = parse_train_settings(LSD, 20, 32, base, 0.5, 16, 1, 0)
    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), s)
    snaps = list(sess.run(1_000_000, max_seconds=3.0, chunk_seconds=0.2, first_chunk_seconds=0.05))
    assert snaps[-1].state == "time cap reached"
    lrs = [h["lr"] for h in sess.history]
    steps_done = len(lrs)
    assert steps_done < 100_000  # far from its steps: by steps alone the rate would still be above 0.9 * base
    assert lrs[0] == pytest.approx(base) and all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.5 * base, (lrs[-1], steps_done)  # by time, the last step is near the run's end
    assert sess.lr_left == 0.0

    # a Stop part-way: the run ends at progress k / 40 (no time term with an open cap)
    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), s)
    run = sess.run(40, max_seconds=1e9, chunk_seconds=0.0, first_chunk_seconds=0.0)
    for snap in run:
        if snap.state == "training" and snap.step >= 3:
            sess.stop_event.set()
    k = sess.trainer.global_step
    assert snap.state == "stopped" and 3 <= k < 40 and sess.phase == "stopped" and sess.phase_step == k
    assert sess.lr_left == pytest.approx(1 - k / 40)
    sess.stop_event.clear()
    list(sess.run(10, max_seconds=1e9))
    assert sess.history[k]["lr"] == pytest.approx(base * (1 - k / 40))  # resumed, not back at base
    assert sess.history[k - 1]["lr"] > sess.history[k]["lr"] > sess.history[-1]["lr"]


def test_live_refresh_slows_down_on_a_loaded_machine():
    from app.live_settings import REFRESH_SECONDS, refresh_seconds

    low, high = REFRESH_SECONDS
    assert refresh_seconds(0.0, 2) == low and refresh_seconds(1.9, 2) == low  # below one busy process per core
    assert refresh_seconds(4.0, 2) == pytest.approx(2.0)  # load 4 on 2 cores: every 2 s
    assert refresh_seconds(40.0, 2) == high and refresh_seconds(4.0, 16) == low
    assert low <= refresh_seconds() <= high  # this machine's own load average


def _consume(gen, outs: list) -> None:
    for out in gen:
        outs.append(out)


def test_stop_answers_with_the_runs_final_status(fm_app):
    """The Stop reply and the run's last update carry the same line, derived from the session's
    run state: whichever arrives last, the page ends on "stopped · ... · step N". A later Stop
    (nothing running) keeps that line, and Stop after a time cap keeps "press Continue"."""
    import threading
    import time

    from app.live import LiveSession

    sess = LiveSession()
    outs: list = []
    gen = fm_app.train_start(sess, "checkerboard", None, None, LSD, 20_000, 32, 1e-3, 0.75, 16, 1, 0)
    worker = threading.Thread(target=_consume, args=(gen, outs))
    worker.start()
    deadline = time.monotonic() + 20
    while len(outs) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(outs) >= 2 and sess.running
    no_update = {"__type__": "update"}  # gr.skip(): the progress line is left to the run
    assert fm_app.stop_progress(sess) == no_update
    reply = fm_app.train_stop(sess)
    bar = fm_app.stop_progress(sess)  # what Stop's follow-up writes, before the run's last update
    worker.join(timeout=20)
    assert not worker.is_alive()
    n = sess.trainer.global_step
    assert reply == outs[-1][3], (reply, outs[-1][3])  # the late reply cannot undo the final update
    assert reply.startswith("**stopped** · LSD on checkerboard · step ") and f"step {n} " in reply, reply
    assert 0 < n < 20_000 and "stopping" not in reply
    # Stop's progress line is the run's own last one, not the "training" line before it
    assert bar == outs[-1][2] and f"stopped: step {n} of " in bar and "training:" not in bar, (bar, outs[-1][2])
    assert fm_app.train_stop(sess) == reply  # a second Stop, after the run: the same line

    from app.ui import FlowMapsApp

    capped = FlowMapsApp(
        AppConfig(
            checkpoints_dir=fm_app.config.checkpoints_dir,
            cache_dir=fm_app.config.cache_dir,
            limits=small_limits(live_seconds=1),
        )
    )
    sess = LiveSession()
    outs = list(capped.train_start(sess, "checkerboard", None, None, LSD, 20_000, 32, 1e-3, 0.75, 16, 1, 0))
    assert "time cap reached" in outs[-1][3] and "press Continue to train more" in outs[-1][3]
    assert capped.train_stop(sess) == outs[-1][3]  # not "nothing is training"
    assert capped.stop_progress(sess) == outs[-1][2]
    assert "nothing is training" in capped.train_stop(LiveSession())
    assert capped.stop_progress(LiveSession()) == no_update


def test_load_adopts_the_checkpoints_network_and_settings(tmp_path):
    """Load puts the checkpoint's width, depth, rate, eta, batch (in the page's range) and method in
    the Settings and the session; a Continue trains at a fraction of the checkpoint's own rate,
    not at the page's."""
    from app.live import LiveSession
    from app.live_settings import CONTINUE_FACTOR
    from app.ui import FlowMapsApp
    from flowmaps.data.toy import data_std
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model

    root = tmp_path / "checkpoints"
    cfg = {
        "net": {"name": "mlp", "dim": 2, "width": 48, "depth": 3},
        "sigma": data_std("checkerboard"),
        "data": "checkerboard",
        "method": "esd",
        "training": {"lr": 2e-4, "eta": 0.75, "batch_size": 65536, "steps": 4800},
    }
    torch.manual_seed(0)
    save_pretrained(build_model(cfg), root / "checkerboard-esd", cfg)
    app = FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=small_limits()))
    sess = LiveSession()
    out = app.load_pretrained(sess, "checkerboard-esd", LSD, 20, 64, 1e-2, 0.5, 64, 4, 0)
    assert len(out) == 11
    data, method, batch, lr, eta, width, depth = out[4:]
    assert data == "checkerboard" and method == "ESD (Eulerian)"
    assert (width, depth) == (48, 3) and lr == 2e-4 and eta == 0.75
    assert batch == app.limits.max_batch  # 65,536 is above the page's range: its largest batch
    assert sess.settings.width == 48 and sess.settings.lr == 2e-4 and sess.method == "esd"
    assert "width 48, depth 3" in out[3]
    # the progress line names the model and its training, not "step 0 of 0"
    assert "loaded: checkerboard-esd (checkerboard, esd), trained 4,800 steps" in out[2], out[2]
    assert "step 0" not in out[2] and "of 0" not in out[2]
    outs = list(app.train_continue(sess, data, method, 10, 64, lr, eta, width, depth, 0))
    assert "done" in outs[-1][3] and "keeps the network" not in outs[-1][3]
    assert sess.history[0]["lr"] == pytest.approx(2e-4 * CONTINUE_FACTOR)


def test_live_run_that_diverges_says_so(fm_app):
    """When the trainer's guard gives up (DivergenceError), the run ends as "diverged" with a message
    on the page, the model rolled back and finite; the app does not crash."""
    from app.datasets import toy_source
    from app.live import LiveSession

    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), parse_train_settings(LSD, 20, 32, 1e-3, 0.75, 16, 1, 0))
    list(sess.run(20, max_seconds=30))
    sess.trainer.data_sampler = lambda n, g: torch.full((n, 2), math.nan)  # the data turns bad
    snaps = list(sess.run(100, max_seconds=30, chunk_seconds=0.05, first_chunk_seconds=0.05))
    last = snaps[-1]
    assert last.state == "diverged" and "training diverged" in last.message and "non-finite" in last.message
    assert "lower the learning rate (e.g. ten-fold, to 0.0001)" in last.message and last.step == 0  # the start
    assert "raise eta" not in last.message  # eta 0.75 is above the default
    assert sess.history == [] and last.history is sess.history  # steps 1..20 were rolled back
    assert all(torch.isfinite(p).all() for p in sess.model.parameters())
    status = fm_app._figures(sess, last)[3]
    assert "**diverged**" in status and last.message in status


def test_live_lsd_at_the_smallest_eta_rolls_back_past_a_state_that_spikes_at_once(fm_app):
    """LSD on the checkerboard at eta 0.05 and the default rate blows up from about step 30, before
    the guard is armed (its window fills at step 50), so the snapshot of step 50 already spikes. The
    guard's second rejection of it goes back to the run's start at a quarter of the rate instead of
    retrying step 50 until it gives up (8 rollbacks in 0.1 s); and were it to give up, the page
    would say to lower the rate ten-fold or raise eta to 0.5."""
    from app.datasets import toy_source
    from app.live import LiveSession, diverged_advice

    sess = LiveSession()
    s = parse_train_settings(LSD, 200, 1024, 1e-2, 0.05, 64, 4, 0)
    sess.start_fresh(toy_source("checkerboard"), s)
    snaps = list(sess.run(200, max_seconds=60, chunk_seconds=0.5))
    assert snaps[-1].state == "done" and snaps[-1].step == 200, (snaps[-1].state, snaps[-1].message)
    assert sess.trainer.recoveries == 2 and sess.trainer.lr_scale == 0.25
    # the page says so (the run goes on at a quarter of the rate) and what to change if it keeps doing so
    said = re.fullmatch(
        r"the guard rolled back to step 0 after a gradient-norm spike \(rollback 2 of this run\) and halved the "
        r"learning rate to (\S+); if it keeps doing so, lower the learning rate \(e.g. ten-fold, to 0.001\) or "
        r"raise eta \(now 0.05; e.g. to 0.5, the default\)",
        snaps[-1].message,
    )
    assert said and 1e-3 < float(said.group(1)) <= 0.25 * 1e-2, snaps[-1].message  # a quarter, as it decays
    status = fm_app._figures(sess, snaps[-1])[3]
    assert "**done**" in status and snaps[-1].message in status
    advice = diverged_advice(50, s)
    assert "to 0.001" in advice and "raise eta (now 0.05; e.g. to 0.5, the default)" in advice


def test_flow_matching_panels_use_the_ode():
    from app.datasets import toy_source
    from app.live import LiveSession

    sess = LiveSession()
    sess.start_fresh(toy_source("two_moons"), parse_train_settings("Flow matching only", 5, 32, 1e-3, 1.0, 16, 1))
    assert sess.sample_panels()[0][0].startswith("Euler ODE")


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_store_lists_and_loads(ckpt_root):
    from app.checkpoints import KIND_2D, KIND_IMAGE, CheckpointStore
    from app.datasets import DATA_CHOICES

    store = CheckpointStore(ckpt_root, known_data=list(DATA_CHOICES))
    assert store.names(KIND_2D) == ["checkerboard-fm", "checkerboard-lsd", "eight_gaussians-esd", "eight_gaussians-lsd"]
    assert store.names(KIND_IMAGE) == ["fashion-mnist-lsd"]
    info = store.info("eight_gaussians-lsd")
    assert (info.data, info.method) == ("eight_gaussians", "lsd")
    m1, cfg = store.load("checkerboard-lsd")
    m2, _ = store.load("checkerboard-lsd")
    assert m1 is m2 and cfg["method"] == "lsd"  # cached
    with pytest.raises(KeyError):
        store.load("../checkpoints/checkerboard-lsd")


def test_hub_checkpoints_that_cannot_be_read_are_skipped(ckpt_root, monkeypatch):
    from app.checkpoints import KIND_2D, CheckpointStore

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing cached: the repo cannot be read
    store = CheckpointStore(ckpt_root, hub_repos=("nobody/no-such-flowmap",))
    assert "checkerboard-lsd" in store.names(KIND_2D)  # local checkpoints still listed
    assert "nobody/no-such-flowmap" not in store.names()
    assert any("nobody/no-such-flowmap" in w for w in store.warnings)


def test_app_config_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWMAPS_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("FLOWMAPS_CHECKPOINTS_REPO", "a/b, c/d")
    monkeypatch.setenv("FLOWMAPS_LIVE_SECONDS", "45")
    monkeypatch.setenv("FLOWMAPS_MAX_BATCH", "not a number")
    cfg = AppConfig.from_env()
    assert cfg.checkpoints_dir == tmp_path and cfg.hub_repos == ("a/b", "c/d")
    assert cfg.limits.live_seconds == 45.0 and cfg.limits.max_batch == 4096  # bad values fall back


# ------------------------------------------------------------------------------ callbacks
def test_callbacks_train_compare_and_download(fm_app, tmp_path):
    from app.live import LiveSession
    from flowmaps.hub import from_pretrained

    sess = LiveSession()
    with pytest.raises(InputError, match="data set"):
        list(fm_app.train_start(sess, "mandelbrot", None, None, LSD, 20, 64, 1e-3, 0.75, 32, 2, 0))
    outs = list(fm_app.train_start(sess, "eight_gaussians", None, None, LSD, 30, 64, 3e-3, 0.75, 32, 2, 0))
    assert len(outs) >= 2 and "done" in outs[-1][3]
    fig, info, heat = fm_app.trajectories(sess, "__session__", "custom", 1, "0, 0.5, 1", 6, 0)
    assert "network evaluations" in info and heat.data[0].type == "heatmap"
    z = np.asarray(heat.data[0].z, dtype=float)
    assert np.isfinite(z[np.triu_indices(z.shape[0])]).all()
    path = fm_app.download_model(sess)
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    model, cfg = from_pretrained(folder)
    assert cfg["data"] == "eight_gaussians" and cfg["net"]["width"] == 32
    # the recipe it trained on, as a loaded-and-continued model's download gives it
    assert cfg["training"] == {"steps": 30, "batch_size": 64, "lr": 3e-3, "seed": 0}, cfg.get("training")
    x = torch.randn(5, 2)
    assert torch.allclose(model.jump(x, 0.0, 1.0), sess.model.jump(x, 0.0, 1.0), atol=1e-6)


def test_a_loaded_model_counts_its_shipped_steps_and_its_download_says_what_changed(tmp_path):
    """Load, then Download: the shipped checkpoint unchanged (its scores and recipe kept, its
    steps in the name). Load, train on, then Download: the card counts the shipped steps plus the
    session's, names the checkpoint it continued (base_model), and carries none of the shipped
    checkpoint's metrics, whose weights these no longer are; the status line says on top of what
    its step count runs."""
    from app.live import LiveSession
    from app.ui import FlowMapsApp
    from flowmaps.hub import from_pretrained

    shipped_root = Path(__file__).resolve().parents[2] / "checkpoints"  # the real ones: cards, scores, recipe
    cfg = AppConfig(checkpoints_dir=shipped_root, cache_dir=tmp_path / "cache", limits=small_limits())
    fm_app = FlowMapsApp(cfg)

    def unzip(path, into):
        with zipfile.ZipFile(path) as zf:
            zf.extractall(into)
        folder = next(p for p in Path(into).iterdir() if p.is_dir())
        return folder, json.loads((folder / "config.json").read_text()), (folder / "README.md").read_text()

    sess = LiveSession()
    fm_app.load_pretrained(sess, "checkerboard-lsd", LSD, 100, 256, 1e-3, 0.75, 64, 2, 0)
    shipped = json.loads((fm_app.store.root / "checkerboard-lsd" / "config.json").read_text())
    base = shipped["training"]["steps"]
    folder, cfg, card = unzip(fm_app.download_model(sess), tmp_path / "a")
    assert folder.name.endswith(f"-step{base}")
    assert cfg["metrics"] == shipped["metrics"] and cfg["training"] == shipped["training"]
    assert "base_model" not in cfg and "## Metrics" in card and "unchanged" in card

    for _ in sess.run(12, max_seconds=60, chunk_seconds=0.0, first_chunk_seconds=0.0):
        pass
    status = fm_app.status_text(sess)
    assert "step 12 (on top of the " + f"{base:,}" + " steps of checkerboard-lsd)" in status, status
    folder, cfg, card = unzip(fm_app.download_model(sess), tmp_path / "b")
    assert folder.name.endswith(f"-step{base + 12}")
    assert "metrics" not in cfg and "## Metrics" not in card
    assert cfg["base_model"] == "checkerboard-lsd" and cfg["base_training"] == shipped["training"]
    assert cfg["training"]["steps"] == 12 and cfg["training"]["total_steps"] == base + 12
    assert cfg["card"]["steps"] == base + 12 and "Continued from**: checkerboard-lsd" in card
    model, _ = from_pretrained(folder)
    x = torch.randn(5, 2)
    assert torch.allclose(model.jump(x, 0.0, 1.0), sess.model.jump(x, 0.0, 1.0), atol=1e-6)


def test_callbacks_quality_is_cached(fm_app):
    from app.live import LiveSession

    sess = LiveSession()
    outs = list(fm_app.quality(sess, "checkerboard-lsd", 500))
    fig, table, summary = outs[-1]
    samplers = {t.name.split(": ")[1] for t in fig.data if t.showlegend is not False}
    assert samplers == {"flow map", "euler", "heun", "dopri5"}
    assert "floor" in table.lower()
    again = list(fm_app.quality(sess, "checkerboard-lsd", 500))
    assert len(again) == 1 and again[0][1:] == (table, summary)  # from the cache, sentence included
    saved = list((fm_app.config.cache_dir / "quality").glob("*.json"))
    assert saved and json.loads(saved[0].read_text())["curves"]


def test_one_evaluation_at_a_time_in_a_page(fm_app):
    """While a page's evaluation streams, a second one of that page (either button) is refused with
    what to wait for, both of them writing the same plot; another page is not; the page is free
    again at the end, and also when the first one is cancelled (the page closed) mid-stream."""
    from app.live import LiveSession

    page, other = LiveSession(), LiveSession()
    stream = fm_app.quality_shipped(500, page)
    next(stream)  # computing
    assert page.evaluating
    with pytest.raises(InputError, match="already computing in this page"):
        fm_app.check_quality(page, "checkerboard-lsd", 500)
    with pytest.raises(InputError, match="already computing in this page"):
        next(fm_app.quality(page, "checkerboard-lsd", 500))
    with pytest.raises(InputError, match="press again once it has finished"):
        fm_app.check_shipped(page, 500)
    assert fm_app.check_shipped(other, 500) == 500
    list(stream)
    assert not page.evaluating and fm_app.check_quality(page, "checkerboard-lsd", 500) == 500
    cancelled = fm_app.quality(page, "checkerboard-lsd", 1000)
    next(cancelled)
    assert page.evaluating
    cancelled.close()
    assert not page.evaluating


def test_callbacks_images(fm_app):
    pic, info, fid = fm_app.sample_images("fashion-mnist-lsd", 3, "custom", "0, 0.4, 0.75, 1", 0, 2, "none")
    assert "custom, N = 3" in info and "FID" in fid and "31.25" in fid
    pic, info, fid = fm_app.sample_images("fashion-mnist-lsd", 3, "edm", "", 0, 2, "Heun, 16 steps (32 NFE)")
    labels = [line.split("|")[1].strip() for line in info.splitlines()[2:] if line.startswith("|")]
    assert labels == ["N = 1 (edm)", "N = 2 (edm)", "N = 3 (edm)", "N = 4 (edm)", "N = 8 (edm)", "ODE heun, 32 NFE"]
    assert pic.size[1] == 6 * (28 + 2 * 2) * 3  # six strips of one padded row, scaled 3x
    with pytest.raises(InputError, match="number of images"):
        fm_app.sample_images("fashion-mnist-lsd", 3, "uniform", "", 0, 500, "none")
    with pytest.raises(InputError, match="image model"):
        fm_app.sample_images("../etc", 3, "uniform", "", 0, 2, "none")


def test_malformed_dim_in_a_config_does_not_break_the_listing():
    from app.checkpoints import KIND_2D, classify

    assert classify({"net": {"name": "mlp", "dim": "two"}}) == "other"
    assert classify({"net": {"name": "mlp", "dim": [2]}}) == "other"
    assert classify({"net": {"name": "mlp", "dim": 2}}) == KIND_2D


def test_checkpoint_data_and_method_come_from_config_then_training_then_folder_name():
    from app.checkpoints import infer_data, infer_method

    assert infer_data({"data": "spirals", "training": {"data": "rings"}}, "x", []) == "spirals"
    assert infer_data({"training": {"data": "rings"}}, "x", []) == "rings"
    assert infer_data({}, "two-moons-lsd", ["two_moons", "checkerboard"]) == "two_moons"
    assert infer_data({}, "mystery", ["checkerboard"]) is None
    assert infer_method({"objective": "esd"}, "x-lsd") == "esd"
    assert infer_method({"train": {"method": "psd-m"}}, "x") == "psd-m"
    assert infer_method({}, "checkerboard-psd-m") == "psd-m"


def test_quality_generator_leaves_gradients_on_between_yields():
    """Grad mode is per thread; the server resumes generators on worker threads that also run
    training. A yield inside torch.no_grad() left gradients off there ("element 0 of tensors does
    not require grad" in a later training job): every pause of the generator must see them on."""
    from app.datasets import toy_source
    from app.quality import evaluate
    from flowmaps.flowmap import FlowMap
    from flowmaps.nets.mlp import MLP

    model = FlowMap(MLP(dim=2, width=8, depth=1), sigma=0.5)
    gen = evaluate(model, toy_source("checkerboard"), "m", n=200)
    for _, res in zip(range(4), gen):
        assert torch.is_grad_enabled()
        assert res.curves and res.curves[0].nfe
    gen.close()
    assert torch.is_grad_enabled()


def test_dropdowns_open_on_a_flow_map_not_the_flow_matching_baseline(tmp_path):
    """The Images tab shows what 1, 2, 4 ... steps buy: it opens on the first self-distilled
    model even where the flow-matching baseline sorts first, and on the baseline if it is alone."""
    from app.checkpoints import KIND_IMAGE
    from app.ui import FlowMapsApp
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model

    unet = {"name": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16}
    root = tmp_path / "checkpoints"

    def app_with(*methods):
        for method in methods:
            cfg = {"net": unet, "sigma": 0.5, "data": "fashion-mnist", "method": method}
            save_pretrained(build_model(cfg), root / f"fmnist-{method}", cfg)
        return FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=small_limits()))

    root.mkdir()
    assert app_with().default_checkpoint(KIND_IMAGE) is None
    assert app_with("fm").default_checkpoint(KIND_IMAGE) == "fmnist-fm"
    assert app_with("psd-m").default_checkpoint(KIND_IMAGE) == "fmnist-psd-m"  # fm sorts first, psd-m is chosen
    # a method asked for wins over the alphabetical order (the 2-D tab opens on the default method's model)
    assert app_with("lsd").default_checkpoint(KIND_IMAGE, "lsd") == "fmnist-lsd"
    assert app_with().default_checkpoint(KIND_IMAGE, "esd") == "fmnist-lsd"  # no esd: the first flow map


def test_fid_table_moves_constant_columns_under_it_and_keeps_the_rest():
    from app.images import card_metrics, tidy_table

    card = (
        "# model\n\n## Metrics\n\n"
        "| sampler | nfe | fid | fid_samples | hardware_gpu |\n| --- | --- | --- | --- | --- |\n"
        "| flow map | 1 | 14.55 | 2000 | H200 |\n| flow map | 4 | 3.975 | 2000 | H200 |\n"
        "| Heun ODE | 128 | 1.791 | 2000 | H200 |\n\n## Usage\n\ntext\n"
    )
    table = card_metrics({}, card)
    lines = table.splitlines()
    assert lines[0] == "| sampler | nfe | fid |"  # the varying columns, in order
    assert lines[2:5] == ["| flow map | 1 | 14.55 |", "| flow map | 4 | 3.975 |", "| Heun ODE | 128 | 1.791 |"]
    assert lines[-1] == "Every row: fid samples 2000; hardware gpu H200."
    assert "Usage" not in table
    # Not a table, or rows of another width: unchanged. One row: nothing is "constant".
    assert tidy_table("_no metrics_") == "_no metrics_"
    ragged = "| a | b |\n| --- | --- |\n| 1 |"
    assert tidy_table(ragged) == ragged
    assert tidy_table("| a_b | c |\n| --- | --- |\n| 1 | 2 |") == "| a b | c |\n| --- | --- |\n| 1 | 2 |"
    # A config's own metrics dict goes through the same tidying.
    rows = {"map-1": {"fid": 9.0, "n": 2000}, "map-2": {"fid": 5.0, "n": 2000}}
    assert "Every row: n 2000." in card_metrics({"metrics": rows}, "")


def test_comparison_sentence_names_the_winner_the_numbers_show():
    """The sentence under the shipped comparison is read from the curves: the lowest metric at
    each N, and the best ODE figure with its NFE; it changes when the numbers change."""
    from app import quality as ql
    from app.plots import Curve

    res = ql.QualityResult("KL", 0.05, n=1000)
    res.curves = [
        Curve("LSD", "flow map", [1, 2, 4, 8], [0.30, 0.20, 0.15, 0.12], [1, 2, 3, 4]),
        Curve("ESD", "flow map", [1, 2, 4, 8], [0.40, 0.18, 0.16, 0.11], [1, 2, 3, 4]),
        Curve("FM", "heun", [2, 8, 32], [0.9, 0.25, 0.09], [1, 2, 3]),
    ]
    text = ql.comparison_sentence(res)
    assert "N = 1: **LSD** (0.300)" in text and "N = 2: **ESD** (0.180)" in text
    assert "N = 4: **LSD** (0.150)" in text and "N = 8: **ESD** (0.110)" in text
    assert "heun on FM's velocity, reaches 0.090 with 32 evaluations" in text
    assert ql.summary_sentence(res) == text  # shown above the plot
    assert "Who wins" not in ql.table_markdown(res)  # not repeated in the closed accordion
    res.curves[0].metric[1] = 0.10  # LSD now wins at N = 2
    assert "N = 2: **LSD** (0.100)" in ql.comparison_sentence(res)
    res.curves[0].nfe.append(16), res.curves[0].metric.append(0.10)  # a curve that reaches N = 16
    res.curves[1].nfe.append(16), res.curves[1].metric.append(0.09)
    assert "N = 16: **ESD** (0.090)" in ql.comparison_sentence(res)  # every N on the plot
    res.curves = [res.curves[0], res.curves[2]]  # one flow map: nothing to compare
    assert ql.comparison_sentence(res) == ""
    one = ql.summary_sentence(res)  # its own numbers instead: fewest and most steps, best ODE
    assert "**LSD**, flow map: KL 0.300 at N = 1, 0.100 at N = 16" in one
    assert "best ODE solve: heun, 0.090 with 32 evaluations" in one and "(floor 0.050)" in one


def test_the_floor_is_a_mean_over_draws_and_scores_inside_its_spread_are_called_so():
    """A fresh user scored a shipped model at 500 samples under the floor's single draw (0.185
    against 0.193): the floor is now the mean over FLOOR_DRAWS draws of exact samples, with its sd,
    computed here independently; the sentence warns about scores within FLOOR_BAND sd of it (and only
    then), the plot shades the band, and a result's JSON keeps the spread (an older one, without it,
    still loads)."""
    import statistics

    import app.quality as ql
    from app import plots
    from app.datasets import toy_source
    from app.plots import Curve
    from flowmaps.data import sample_toy
    from flowmaps.metrics import checkerboard_kl

    metric = ql.Metric(toy_source("checkerboard"), 500, seed=0)
    draws = [
        checkerboard_kl(
            sample_toy("checkerboard", 500, torch.Generator().manual_seed(303 + k), dtype=torch.float64),
            bins=ql.KL_BINS,
            eps=ql.KL_EPS,
        ).kl
        for k in range(ql.FLOOR_DRAWS)
    ]
    assert metric.floor == pytest.approx(statistics.mean(draws), rel=1e-12)
    assert metric.floor_sd == pytest.approx(statistics.stdev(draws), rel=1e-12)
    assert metric.floor_sd > 0.005  # at 500 samples the floor scatters: one draw is not enough
    res = ql.QualityResult(metric.name, metric.floor, n=500, floor_sd=metric.floor_sd)
    top = metric.floor + ql.FLOOR_BAND * metric.floor_sd
    res.curves = [Curve("LSD", "flow map", [1, 2], [top + 0.05, top + 0.01], [1.0, 2.0])]
    clear = ql.summary_sentence(res)
    assert f"(floor {metric.floor:.3f} ± {metric.floor_sd:.3f})" in clear and "at the floor" not in clear
    res.curves[0].metric[1] = metric.floor - 0.01  # under the floor's mean, as the user saw
    warned = ql.summary_sentence(res)
    assert "1 of the scores lies at the floor" in warned and "at 500 samples" in warned
    assert "raise Samples per point" in warned
    res.curves.append(Curve("ESD", "flow map", [1, 2], [top + 0.02, top - 0.001], [1.0, 2.0]))
    assert "2 of the scores lie at the floor" in ql.summary_sentence(res)  # the comparison sentence too
    assert f"{metric.floor:.4f}** ± {metric.floor_sd:.4f}" in ql.table_markdown(res)
    back = ql.QualityResult.from_json(res.to_json())
    assert back.floor_sd == res.floor_sd and back.floor == res.floor
    old = json.loads(res.to_json())
    del old["floor_sd"]
    assert ql.QualityResult.from_json(json.dumps(old)).floor_sd is None
    fig = plots.quality_figure(res.curves, res.metric_name, res.floor, floor_sd=res.floor_sd)
    (band,) = fig.layout.shapes[:1]
    assert band.y0 == pytest.approx(metric.floor - ql.FLOOR_BAND * metric.floor_sd)
    assert band.y1 == pytest.approx(top)
    assert f"± {metric.floor_sd:.3f}" in str(fig.layout.annotations)
    assert len(plots.quality_figure(res.curves, res.metric_name, res.floor).layout.shapes) == 1  # line only


def test_who_wins_calls_a_gap_inside_the_floors_spread_a_tie_and_marks_scores_at_the_floor():
    """A fresh user read "N = 8: psd-u (0.029)" in bold over psd-m's 0.0296, a gap well inside the
    floor's spread: two flow maps closer than FLOOR_BAND floor sds are a tie (both named, lowest
    first, with both scores), a gap wider than that still has one winner, and a winner or best ODE
    solve at the floor says so. Without a spread (an older result) the rule is the plain minimum."""
    import app.quality as ql
    from app.plots import Curve

    res = ql.QualityResult("KL", 0.020, n=5000, floor_sd=0.002)  # floor band: up to 0.024
    res.curves = [
        Curve("psd-m", "flow map", [1, 8, 16, 32], [0.300, 0.0296, 0.0300, 0.0262], [1, 2, 3, 4]),
        Curve("psd-u", "flow map", [1, 8, 16, 32], [0.200, 0.0289, 0.0230, 0.0232], [1, 2, 3, 4]),
        Curve("fm", "euler", [64], [0.0212], [4]),
    ]
    text = ql.comparison_sentence(res)
    assert "N = 1: **psd-u** (0.200);" in text  # 0.1 apart: a win
    assert "N = 8: **psd-u** and **psd-m** (0.029, 0.030: a tie, closer than 2 sd of the floor);" in text
    assert "N = 16: **psd-u** (0.023), at the floor;" in text  # 0.007 apart, over the 0.004 of two sd
    assert "reaches 0.021 with 64 evaluations, at the floor." in text
    # a tie can reach above the band: only the members inside it are at the floor (a fresh user read
    # "psd-u, psd-m and lsd (0.045, 0.046, 0.049: a tie), at the floor" with the floor's top at 0.046)
    assert (
        "N = 32: **psd-u** and **psd-m** (0.023, 0.026: a tie, closer than 2 sd of the floor), psd-u at the floor."
        in text
    )
    res.floor_sd = None  # no spread known: the plain minimum, no floor marks
    plain = ql.comparison_sentence(res)
    assert "N = 8: **psd-u** (0.029);" in plain and "at the floor" not in plain and "tie" not in plain


# ------------------------------------------------------------------------------ issue 16: honest figures, ready tabs
def test_nfe_sentence_counts_one_solve_over_the_whole_interval(fm_app):
    """The sentence's NFE is the solver's own count for one dopri5 solve over [0, 1] from the same
    start points, not that of the drawn solve forced to stop at every plot time."""
    import re

    from app.compare import ODE_TIMES
    from app.live import LiveSession
    from flowmaps.sampling import ode_solve

    _, info, _ = fm_app.trajectories(LiveSession(), "checkerboard-lsd", "uniform", 2, "", 6, 3)
    said = int(re.search(r"\*\*(\d+) network evaluations\*\*", info).group(1))
    model, _ = fm_app.store.load("checkerboard-lsd")
    x0 = model.sigma * torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    free = ode_solve(model.velocity, x0, method="dopri5", rtol=1e-4, atol=1e-5, max_steps=2000)
    drawn = ode_solve(model.velocity, x0, method="dopri5", rtol=1e-4, atol=1e-5, max_steps=2000, grid=ODE_TIMES)
    assert "over [0, 1]" in info and "rtol 1e-4" in info
    assert said == free.nfe < drawn.nfe


class _StepClock:
    """A clock whose timed calls last 5, 1 and 9 ms in turn (best 1 ms), counting its reads."""

    def __init__(self) -> None:
        self.t, self.reads = 0.0, 0

    def __call__(self) -> float:
        if self.reads % 2:
            self.t += (0.005, 0.001, 0.009)[(self.reads // 2) % 3]
        self.reads += 1
        return self.t


def test_timings_are_the_best_of_the_stated_repeats_and_the_lesson_says_so(fm_app):
    from app import quality as ql
    from app.datasets import toy_source

    assert ql.REPEATS == 3  # the clock below cycles through three durations
    model, _ = fm_app.store.load("checkerboard-lsd")
    clock = _StepClock()
    # min_seconds=0: one call per timed run, so the clock's reads are the runs (the loops are tested below)
    res = list(ql.evaluate(model, toy_source("checkerboard"), "m", n=500, clock=clock, min_seconds=0))[-1]
    points = sum(len(c.nfe) for c in res.curves)
    assert points == len(ql.FLOW_STEPS) + len(ql.EULER_STEPS) + len(ql.HEUN_STEPS) + len(ql.DOPRI_RTOL)
    assert clock.reads == 2 * ql.REPEATS * points  # every point timed REPEATS times; the warm-up not timed
    # the best run lasts 1 ms: the panel reads ms per TIMING_BATCH samples, not rescaled
    assert all(ms == pytest.approx(1.0) for c in res.curves for ms in c.ms)
    assert all(len(c.timed_nfe) == len(c.nfe) for c in res.curves)
    assert all(t == n for c in res.curves if c.sampler != "dopri5" for t, n in zip(c.timed_nfe, c.nfe))
    assert f"best of {ql.REPEATS} timed runs of {ql.TIMING_BATCH} samples" in ql.LESSON
    assert "warm-up" in ql.LESSON and f"best of {ql.REPEATS}" in ql.table_markdown(res)
    fig = fm_app._quality_stream  # the page's figure carries the same title
    plot, _, _ = list(fig([(model, toy_source("checkerboard"), "m", True, False)], 500, None, False))[-1]
    titles = [a.text for a in plot.layout.annotations]
    assert ql.TIME_TITLE in titles and f"best of {ql.REPEATS} runs of at least 50 ms, after a warm-up" in ql.TIME_TITLE
    assert ql.MIN_REPEAT_SECONDS == 0.05 and "faster than 50 ms is repeated within each timed run" in ql.LESSON
    assert f"per {ql.TIMING_BATCH} samples" in ql.TIME_TITLE
    assert f"ms / {ql.TIMING_BATCH} samples" in ql.table_markdown(res)


def test_best_seconds_is_the_best_of_its_repeats():
    from app.quality import best_seconds

    clock = _StepClock()
    assert best_seconds(lambda: None, 3, clock, min_seconds=0) == pytest.approx(0.001)
    assert best_seconds(lambda: None, 1, _StepClock(), min_seconds=0) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="repeats"):
        best_seconds(lambda: None, 0)
    with pytest.raises(ValueError, match="min_seconds"):
        best_seconds(lambda: None, 3, min_seconds=-1)


def test_best_seconds_repeats_a_fast_call_within_each_timed_run():
    """A call of 4 ms against a 20 ms minimum: each timed run makes ceil(20 / 4) = 5 calls and
    counts their mean, and the best run is taken; slow calls (other work on the machine) only
    raise the runs they fall in. A call longer than the minimum runs once per timed run."""
    from app.quality import best_seconds

    now, calls = [0.0], []

    def fn() -> None:
        calls.append(1)
        now[0] += next(durations)

    durations = iter([0.004] * 6 + [0.024] * 5 + [0.004] * 20)  # run 2 (calls 7-11) slowed throughout
    got = best_seconds(fn, 3, clock=lambda: now[0], min_seconds=0.02)
    assert len(calls) == 1 + 3 * 5  # one measuring call, then three runs of five
    assert got == pytest.approx(0.004)
    now[0], calls[:] = 0.0, []
    durations = iter([0.1, 0.1, 0.3, 0.2])  # longer than the minimum: one call per run
    assert best_seconds(fn, 3, clock=lambda: now[0], min_seconds=0.02) == pytest.approx(0.1)
    assert len(calls) == 1 + 3


def test_quality_cache_follows_the_weights_content_not_their_file_times(tmp_path):
    """A fresh clone has the same weights under other file times: it must reuse a cache written from
    them (a second app, a copy of the folder with new times, one shared cache folder); changed
    weights must not."""
    import shutil

    from app.checkpoints import CheckpointStore
    from app.live import LiveSession
    from app.ui import FlowMapsApp
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model

    cfg = {"net": {"name": "mlp", "dim": 2, "width": 8, "depth": 1}, "sigma": 0.5, "data": "checkerboard"}
    torch.manual_seed(0)
    save_pretrained(build_model(cfg), tmp_path / "a" / "checkerboard-lsd", cfg)
    stamp = CheckpointStore(tmp_path / "a").info("checkerboard-lsd").stamp
    weights = tmp_path / "a" / "checkerboard-lsd" / "model.safetensors"
    os.utime(weights, ns=(10**18, 10**18))  # only the time changes
    assert CheckpointStore(tmp_path / "a").info("checkerboard-lsd").stamp == stamp
    shutil.copytree(tmp_path / "a", tmp_path / "clone", copy_function=shutil.copy)  # new file times
    assert (tmp_path / "clone" / "checkerboard-lsd" / "model.safetensors").stat().st_mtime_ns != 10**18

    def app(root):
        return FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=small_limits()))

    first = list(app(tmp_path / "a").quality(LiveSession(), "checkerboard-lsd", 500))
    again = list(app(tmp_path / "clone").quality(LiveSession(), "checkerboard-lsd", 500))
    assert len(first) > 1 and len(again) == 1 and again[0][1:] == first[-1][1:]  # read from the file
    torch.manual_seed(1)
    save_pretrained(build_model(cfg), tmp_path / "clone" / "checkerboard-lsd", cfg)  # other weights
    assert CheckpointStore(tmp_path / "clone").info("checkerboard-lsd").stamp != stamp
    assert len(list(app(tmp_path / "clone").quality(LiveSession(), "checkerboard-lsd", 500))) > 1


def test_quality_cache_suffix_names_every_setting_of_the_evaluation(monkeypatch):
    from app import quality as ql

    base = ql.cache_suffix(3000, 0)
    assert base == ql.cache_suffix(3000, 0, ql.FLOW_STEPS)
    others = {ql.cache_suffix(2000, 0), ql.cache_suffix(3000, 1), ql.cache_suffix(3000, 0, ql.COMPARE_FLOW_STEPS)}
    for name, value in (("TIMING_BATCH", 100), ("REPEATS", 5), ("DOPRI_RTOL", (1e-2,)), ("EVAL_VERSION", 0)):
        with monkeypatch.context() as m:
            m.setattr(ql, name, value)
            others.add(ql.cache_suffix(3000, 0))
    assert base not in others and len(others) == 7


def test_each_dopri5_row_names_its_tolerance():
    """The ODE curve of dopri5 has one point per tolerance: the table tells them apart, and a
    cached result keeps that."""
    from app import quality as ql
    from app.datasets import toy_source
    from flowmaps.flowmap import FlowMap
    from flowmaps.nets.mlp import MLP

    model = FlowMap(MLP(dim=2, width=8, depth=1), sigma=0.5)
    res = list(ql.evaluate(model, toy_source("checkerboard"), "m", n=300, flow_map=False, repeats=1))[-1]
    for r in (res, ql.QualityResult.from_json(res.to_json())):
        rows = [row for row in ql.table_markdown(r).splitlines() if "| dopri5" in row]
        assert [row.split(" | ")[1] for row in rows] == [f"dopri5, rtol {t:g}" for t in ql.DOPRI_RTOL], rows


def test_dopri5_past_its_step_cap_is_left_out_and_the_summary_says_so(monkeypatch):
    from app import quality as ql
    from app.datasets import toy_source
    from flowmaps.flowmap import FlowMap
    from flowmaps.nets.mlp import MLP

    monkeypatch.setattr(ql, "DOPRI_MAX_STEPS", 0)  # no solve fits: every dopri5 point is left out
    model = FlowMap(MLP(dim=2, width=8, depth=1), sigma=0.5)
    res = list(ql.evaluate(model, toy_source("checkerboard"), "m", n=300, flow_map=False, repeats=1))[-1]
    dopri = next(c for c in res.curves if c.sampler == "dopri5")
    assert dopri.nfe == dopri.metric == dopri.ms == dopri.timed_nfe == []
    assert res.notes == [f"m: dopri5 at rtol {r:g} left out (more than 0 steps)" for r in ql.DOPRI_RTOL]
    assert res.notes[0] in ql.summary_sentence(res) and res.notes[-1] in ql.table_markdown(res)
    assert ql.QualityResult.from_json(res.to_json()).notes == res.notes


def test_wall_time_panel_plots_each_time_at_the_nfe_of_the_runs_it_timed():
    """dopri5's steps depend on the batch: the timed runs (TIMING_BATCH samples) may take other NFE
    than the metric's run; the time is drawn at, and the table names, the NFE it was measured at."""
    from app import plots
    from app import quality as ql

    res = ql.QualityResult("KL", 0.05, n=3000)
    res.curves = [plots.Curve("m", "dopri5", [38, 62], [0.2, 0.1], [9.0, 12.0], [38, 50])]
    fig = plots.quality_figure(res.curves, res.metric_name, res.floor, ql.TIME_TITLE)
    left, right = fig.data
    assert list(left.x) == [38, 62] and list(right.x) == [38, 50] and list(right.y) == [9.0, 12.0]
    rows = ql.table_markdown(res).splitlines()
    assert "| m | dopri5 | 38 | 0.2000 | 9.0 |" in rows
    assert "| m | dopri5 | 62 | 0.1000 | 12.0 (on the 250 timed samples the solve took 50 NFE) |" in rows


def test_shipped_comparison_runs_the_flow_maps_at_the_budgets_the_lesson_states(fm_app):
    from app import quality as ql

    *_, (plot, table, summary) = fm_app.quality_shipped(500)
    maps = [t for t in plot.data if t.name.endswith(": flow map")]
    assert maps and all(list(t.x) == list(ql.COMPARE_FLOW_STEPS) for t in maps)
    assert f"N = {ql.COMPARE_FLOW_STEPS[0]} to {ql.COMPARE_FLOW_STEPS[-1]}" in ql.LESSON
    assert f"goes to N = {ql.FLOW_STEPS[-1]}" in ql.LESSON
    assert "checkerboard-fm: heun" in {t.name for t in plot.data}  # the ODE on flow matching's velocity


def test_tabs_open_on_shipped_models_and_draw_on_the_first_call(fm_app):
    """A fresh visitor, no training: the compare tab opens on the mixture model (a heat map
    on the first call), the quality tab on a shipped flow map; both draw without an error."""
    from app.checkpoints import KIND_2D
    from app.live import LiveSession

    cmp_default, q_default = fm_app.default_mixture_model(), fm_app.default_checkpoint(KIND_2D, "lsd")
    assert cmp_default == "eight_gaussians-lsd" and q_default == "checkerboard-lsd"
    fig, info, heat = fm_app.trajectories(LiveSession(), cmp_default, "uniform", 4, "0, 0.4, 0.75, 1", 24, 0)
    assert heat.data[0].type == "heatmap" and "network evaluations" in info
    plot, table, summary = list(fm_app.quality(LiveSession(), q_default, 500))[-1]
    assert q_default in summary
    assert "floor" in table.lower() and len(plot.data) > 0


@pytest.fixture
def page(fm_app):
    """The page built on the test checkpoints; PIL's global pixel cap (which build_app sets) restored."""
    from PIL import Image

    from app.ui import build_app

    cap = Image.MAX_IMAGE_PIXELS
    yield build_app(fm_app.config, warm=False)
    Image.MAX_IMAGE_PIXELS = cap


def test_page_opens_every_tab_on_a_shipped_model(page):
    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert by_id["cmp-model"].value == "eight_gaussians-lsd"  # a mixture: the first Draw gives a heat map
    assert by_id["q-model"].value == "checkerboard-lsd"
    assert by_id["img-model"].value == "fashion-mnist-lsd" and "31.25" in by_id["img-fid"].value  # before Sample
    assert by_id["img-output"].show_label is False  # its label badge would hide the first row's label
    assert "Euler" in by_id["img-lesson"].value


def test_input_mistakes_keep_the_last_plot_and_say_what_to_change(fm_app):
    import gradio as gr

    from app.events import keep_plots
    from app.live import LiveSession

    traj = keep_plots(fm_app.trajectories, 3, 1)
    fig, info, heat = traj(LiveSession(), "checkerboard-lsd", "custom", 1, "0.2, 0.5, 1", 6, 0)
    assert fig == gr.update() and heat == gr.update()  # the plots stay as they were
    assert "custom times" in info and "put 0 first" in info and "partial" not in info
    *kept, msg = list(keep_plots(fm_app.quality, 3)(LiveSession(), "__session__", 500))[-1]
    assert kept == [gr.update(), gr.update(), gr.update()] and "no model yet" in msg
    *_, cleared = list(keep_plots(fm_app.quality, 3)(LiveSession(), "checkerboard-lsd", 500))[-1]
    assert cleared == ""  # a good result clears the last message
    with pytest.raises(InputError) as err:
        parse_time_grid("custom", 1, "0, 0.5")
    assert "put 1 last" in str(err.value) and "partial" not in str(err.value)


def test_method_choices_include_ct_and_meanflow_has_a_loss_caption():
    from app.tabs.train import method_help
    from app.validation import METHODS

    assert METHODS["Consistency training (CT)"] == "ct"
    assert "eulerian" in method_help("MeanFlow") and "samples" in method_help("MeanFlow")
    assert parse_train_settings("Consistency training (CT)", 100, 64, 1e-3, 0.75, 32, 2, 0).method == "ct"


def test_image_rows_of_a_flow_matching_model_are_euler_steps_with_fids_from_metrics_json(tmp_path):
    from app.ui import FlowMapsApp
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model
    from flowmaps.sampling import make_grid, ode_solve

    unet = {"name": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16}
    root = tmp_path / "checkpoints"
    metrics = {
        "map-1": {"sampler": "flow map", "nfe": 1, "fid": 300.0},
        "map-2": {"sampler": "flow map", "nfe": 2, "fid": 200.0},
        "heun-32": {"sampler": "Heun ODE", "nfe": 32, "fid": 6.5},
    }
    for method in ("fm", "lsd"):
        cfg = {"net": unet, "sigma": 0.5, "data": "fashion-mnist", "method": method}
        save_pretrained(build_model(cfg), root / f"fmnist-{method}", cfg)
        (root / f"fmnist-{method}" / "metrics.json").write_text(json.dumps(metrics))
    app = FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=small_limits()))
    before = app.image_fid("fmnist-fm")  # shown before the first Sample
    assert "6.5" in before and "300.0" not in before  # a baseline's untrained jumps are not listed
    assert "300.0" in app.image_fid("fmnist-lsd") and app.image_fid("../x") == ""
    pic, info, fid = app.sample_images("fmnist-fm", 2, "uniform", "", 0, 2, "Heun, 16 steps (32 NFE)")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in info.splitlines()[2:] if line.startswith("|")]
    assert [r[0] for r in rows[:-1]] == [f"Euler, {n} step{'s' * (n > 1)} (uniform)" for n in (1, 2, 4, 8)]
    assert all(r[3] == "—" for r in rows[:-1]) and rows[-1][3] == "6.5"  # Euler rows never measured
    assert "Euler steps of that velocity" in info and "N = " not in info
    # the rows are the velocity's Euler steps: the same as the library's Euler solver from that noise
    from app.images import sample_rows

    model, config = app.store.load("fmnist-fm")
    row = sample_rows(model, config, [("x", make_grid("uniform", 2))], "none", 1, 0, euler=True)[0]
    x0 = model.sigma * torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    ref = ode_solve(model.velocity, x0, method="euler", grid=make_grid("uniform", 2)).x.clamp(-1, 1)
    assert np.allclose(row.images, ref.numpy(), atol=1e-5) and row.nfe == 2
    _, info, _ = app.sample_images("fmnist-lsd", 7, "custom", "0, 0.4, 0.75, 1", 0, 1, "none")
    assert "custom, N = 3" in info and "0, 0.4, 0.75, 1" in info and "slider" in info
    assert "| N = 1 (uniform) | 1 |" in info and "| 300.0 |" in info


def test_image_labels_draw_a_custom_grids_times_and_the_component_hides_no_row():
    from app.images import Row, compose

    imgs = np.zeros((1, 1, 28, 28), dtype=np.float32)
    plain = np.asarray(compose([Row("custom, N = 3", imgs, 1.0, 3)]))
    timed = np.asarray(compose([Row("custom, N = 3", imgs, 1.0, 3, grid_kind="custom", times="t = 0, 0.4, 1")]))
    assert (timed != plain).any()  # the times are drawn in the label


def test_one_click_lessons_draw_on_shipped_models(fm_app, page):
    from app.live import LiveSession
    from app.tabs.flowmap_vs_ode import COMPARE_EXAMPLES

    demo = page
    ds = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "cmp-examples")
    assert len(ds.samples) == len(COMPARE_EXAMPLES) and ds.parent.parent is not None  # placed in the tab
    for _, *args in COMPARE_EXAMPLES:
        fig, info, heat = fm_app.trajectories(LiveSession(), *args)
        assert "network evaluations" in info and len(fig.data) > 0


def test_train_lessons_name_choices_the_tab_offers():
    """Each one-click lesson of the training tab fills a data set and a method the dropdowns list."""
    from app.datasets import DATA_CHOICES
    from app.tabs.train import TRAIN_EXAMPLES
    from app.validation import METHODS

    assert len(TRAIN_EXAMPLES) >= 3
    for data, method in TRAIN_EXAMPLES:
        assert data in DATA_CHOICES and method in METHODS, (data, method)
    assert {m for _, m in TRAIN_EXAMPLES} >= {"LSD (Lagrangian)", "ESD (Eulerian)", "PSD-M (progressive, gamma = 1/2)"}


def _page_event(demo, target, event: str, inputs: list, session, validator: bool = False):
    """Run the page's ``event`` on ``target`` for one browser session through gradio's own event
    path (its validator instead, with ``validator=True``, as the queue runs it before the event)."""
    import asyncio

    from gradio.queueing import create_validator_fn

    fn = next(f for f in demo.fns.values() if (getattr(target, "_id", None), event) in f.targets)
    return asyncio.run(demo.process_api(create_validator_fn(fn) if validator else fn, inputs, state=session))


def test_an_event_that_fills_a_field_leaves_its_check_in_place(page):
    """gradio answers an event that updates a component (a lesson's click, the page's load that
    refreshes the model choices) by giving that browser session a fresh copy of the component,
    built from its class. The copy keeps the field's check: a fraction on a slider of whole steps,
    or a model not offered, is refused under the field's label, beside the field where the event
    has a validator."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    session = SessionState(demo)
    for fn in [f for f in demo.fns.values() if any(ev == "load" for _, ev in f.targets)]:  # the page opens
        asyncio.run(demo.process_api(fn, [], state=session))
    race_lessons = next(b for b in demo.blocks.values() if by_id["race-steps"] in getattr(b, "_components", []))
    _page_event(demo, race_lessons, "click", [1], session)
    _page_event(demo, by_id["cmp-examples"], "click", [0], session)
    # each was given to this session as a fresh copy (else there would be nothing to test here)
    for name in ("race-steps", "race-data", "cmp-steps", "cmp-points", "cmp-model", "pretrained", "q-model"):
        assert session[by_id[name]._id] is not by_id[name], name
    # the race: its validator shows the slider's refusal beside the slider
    race = [None, "eight_gaussians", ["LSD"], 1550.5, 0]
    answer = _page_event(demo, by_id["race-start"], "click", race, session, validator=True)["data"]
    steps_message = "steps per family: 1550.5 is not a whole number; type a whole number, e.g. 1550"
    assert (answer[3]["is_valid"], answer[3]["message"]) == (False, steps_message)
    with pytest.raises(gr.Error) as refused:  # gradio's direct route runs no validator: the event refuses it
        _page_event(demo, by_id["race-start"], "click", race, session)
    assert refused.value.message == steps_message
    # the flow-map-vs-ODE tab, whose lesson filled its sliders and its model
    traj = [None, "eight_gaussians-lsd", "uniform", 2.5, "0, 1", 24, 0]
    with pytest.raises(gr.Error) as refused:
        _page_event(demo, by_id["btn-trajectories"], "click", traj, session)
    assert refused.value.message == "Flow-map steps N: 2.5 is not a whole number; type a whole number, e.g. 2"
    with pytest.raises(gr.Error) as refused:
        _page_event(demo, by_id["btn-trajectories"], "click", [None, "nope", *traj[2:]], session)
    assert refused.value.message.startswith("Model: ") and "nope" in refused.value.message


def _verdicts(answer: dict) -> list[tuple[bool, str]]:
    """A validator's answer through gradio's event path: (valid, message) per input."""
    assert all(a["__type__"] == "validate" for a in answer["data"])
    return [(a["is_valid"], a["message"]) for a in answer["data"]]


def _refused_at(answer: dict) -> dict[int, str]:
    """Where a validator's answer shows a message: input position -> message."""
    return {i: message for i, (ok, message) in enumerate(_verdicts(answer)) if not ok}


def test_the_plotting_tabs_show_a_mistake_beside_its_field_before_the_event_runs(page):
    """The "Flow map vs ODE" and Images buttons have gradio's validator: a fraction on a slider of
    whole steps, a bad custom grid, a model not offered or a session without a model is refused
    beside that one field (the event does not run, so the plots stay as they are), in the words
    of the callback's own check; good values pass. On gradio's direct route (no validator) the
    event itself refuses a slider's fraction (a gr.Error) and answers a bad grid in its text with
    the plots unchanged."""
    import gradio as gr
    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    session = SessionState(demo)
    traj = by_id["btn-trajectories"]
    # inputs: [session, model, grid, steps, custom times, start points, seed]
    good = [None, "eight_gaussians-lsd", "uniform", 4, "0, 0.4, 0.75, 1", 24, 0]

    def refusals(button, names: list[str], good: list):
        """refused(**changes): where the button's validator refuses ``good`` with ``changes``."""

        def refused(**changes) -> dict[int, str]:
            values = [changes.get(n, v) for n, v in zip(names, good)]
            return _refused_at(_page_event(demo, button, "click", values, session, validator=True))

        return refused

    traj_refused = refusals(traj, ["session", "model", "grid", "steps", "times", "points", "seed"], good)

    assert traj_refused() == {}
    assert traj_refused(steps=2.5) == {3: "Flow-map steps N: 2.5 is not a whole number; type a whole number, e.g. 2"}
    assert traj_refused(points=3.5) == {5: "Start points: 3.5 is not a whole number; type a whole number, e.g. 4"}
    bad_grid = traj_refused(grid="custom", times="0, 0.7, 0.3, 1")
    assert list(bad_grid) == [4] and bad_grid[4].startswith("custom times: ") and "increasing" in bad_grid[4]
    assert list(traj_refused(seed=-1)) == [6]
    no_model = traj_refused(model="__session__")  # a message that names no field: beside the model
    assert list(no_model) == [1] and "no model yet" in no_model[1]
    # the direct route: the event refuses the fraction itself, and keeps the plots for a bad grid
    with pytest.raises(gr.Error) as refused:
        _page_event(demo, traj, "click", [None, *good[1:3], 2.5, *good[4:]], session)
    assert refused.value.message.startswith("Flow-map steps N: 2.5 is not a whole number")
    bad_grid = [None, good[1], "custom", 4, "0, 0.7, 0.3, 1", 24, 0]
    fig, info, heat, _ = _page_event(demo, traj, "click", bad_grid, session)["data"]
    assert fig == heat == {"__type__": "update"} and "custom times" in info

    images = by_id["btn-images"]
    # inputs: [image model, steps, grid, custom times, seed, images, ODE baseline]
    good = ["fashion-mnist-lsd", 2, "uniform", "0, 0.4, 0.75, 1", 0, 2, "none"]
    img_refused = refusals(images, ["model", "steps", "grid", "times", "seed", "count", "ode"], good)

    assert img_refused() == {}
    assert img_refused(steps=2.5) == {1: "Steps N: 2.5 is not a whole number; type a whole number, e.g. 2"}
    assert img_refused(count=3.5) == {5: "Images: 3.5 is not a whole number; type a whole number, e.g. 4"}
    bad_grid = img_refused(grid="custom", times="1, 0")
    assert list(bad_grid) == [3] and bad_grid[3].startswith("custom times: ")
    assert img_refused(grid="custom", times="0, 0.5, 1") == {}  # the steps slider plays no part in a custom grid
    assert list(img_refused(model="nope")) == [0] and list(img_refused(ode="nope")) == [6]
    with pytest.raises(gr.Error) as refused:
        _page_event(demo, images, "click", ["fashion-mnist-lsd", 2.5, *good[2:]], session)
    assert refused.value.message.startswith("Steps N: 2.5 is not a whole number")


def test_a_lesson_leaves_the_custom_times_a_user_typed(page):
    """The "Flow map vs ODE" lessons on a uniform grid fill every field but "Custom times", which
    keeps what the user typed there; the custom-grid lesson fills its own times. The lesson then
    draws, through the same validator as the button (a fraction in a slider is refused beside it)."""
    import asyncio

    from gradio.queueing import create_validator_fn
    from gradio.state_holder import SessionState

    from app.tabs.flowmap_vs_ode import COMPARE_EXAMPLES

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    lessons = by_id["cmp-examples"]
    session = SessionState(demo)
    for index, (_, model, grid, steps, times, points, seed) in enumerate(COMPARE_EXAMPLES):
        filled = _page_event(demo, lessons, "click", [index], session)["data"]
        assert [f.get("value") for f in filled] == [model, grid, steps, times or None, points, seed]
        assert ("value" in filled[3]) == (grid == "custom"), filled[3]  # no value: the box is left alone
    draw = next(f for f in demo.fns.values() if f.name == "draw")
    assert draw.validator is not None and draw.inputs == lessons._components
    answer = asyncio.run(
        demo.process_api(create_validator_fn(draw), ["eight_gaussians-lsd", "uniform", 2.5, "", 24, 0], state=session)
    )
    assert _refused_at(answer) == {2: "Flow-map steps N: 2.5 is not a whole number; type a whole number, e.g. 2"}


def test_no_event_of_the_page_updates_a_component_checked_by_its_instance(page):
    """A check set on a component instance (app/drawing.py's sketch pad) is lost for a session
    once an event updates the component (gradio gives the session a copy built from its class),
    so no event of the page outputs to one; the named fields are checked by their class."""
    from app.events import _gradio_check, _slider_value

    demo = page
    own = [b for b in demo.blocks.values() if "preprocess" in vars(b)]
    assert [getattr(b, "elem_id", None) for b in own] == ["draw-pad"]  # the one there is (else nothing to test)
    for fn in demo.fns.values():
        for block in fn.outputs:
            assert block not in own, (fn.name, getattr(block, "elem_id", None))
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    for name in ("steps", "depth", "race-steps", "cmp-steps", "cmp-points", "q-samples", "img-steps", "img-count"):
        assert getattr(type(by_id[name]), "field_check", None) is _slider_value, name
    for name in ("data-set", "method", "pretrained", "race-data", "race-families", "cmp-model", "q-model", "img-model"):
        assert getattr(type(by_id[name]), "field_check", None) is _gradio_check, name


def _page_stream(demo, target, event: str, inputs: list, session) -> list:
    """Every update of the page's streaming ``event`` on ``target`` for one browser session,
    through gradio's own event path (its iterator driven to the end)."""
    import asyncio

    fn = next(f for f in demo.fns.values() if (getattr(target, "_id", None), event) in f.targets)
    updates, iterator = [], None
    while True:
        out = asyncio.run(demo.process_api(fn, inputs, state=session, iterator=iterator))
        if not out["is_generating"]:
            return updates
        updates.append(out["data"])
        iterator = out["iterator"]


def test_a_stop_with_nothing_running_leaves_the_session_usable(page):
    """The race's Stop and the live tab's Stop, pressed with nothing running, answer without
    harm: the page's session state still holds the session (a handler with no output of its own
    must not leave a tuple there), and a Start afterwards trains in that browser session."""
    from gradio.state_holder import SessionState

    from app.live import LiveSession

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    state = next(b for b in demo.blocks.values() if type(b).__name__ == "State")
    session = SessionState(demo)
    first = session[state._id]
    assert isinstance(first, LiveSession)
    assert _page_event(demo, by_id["race-stop"], "click", [None], session)["data"] == [None]  # the state's update
    assert session[state._id] is first  # the same session, not (session,)
    said = _page_event(demo, by_id["btn-stop"], "click", [None], session)["data"][0]
    assert "nothing is training" in said and session[state._id] is first
    # a refused Start leaves the status as it was: one wording whether or not Stop came first
    assert said == by_id["live-status"].value, (said, by_id["live-status"].value)
    start = [None, "checkerboard", None, None, LSD, 20, 16, 1e-3, 0.75, 16, 1, 0, ""]
    verdict = _page_event(demo, by_id["btn-start"], "click", start, session, validator=True)["data"]
    assert all(v["is_valid"] for v in verdict), verdict
    updates = _page_stream(demo, by_id["btn-start"], "click", start, session)
    assert "**done**" in updates[-1][3] and "step 20" in updates[-1][3], updates[-1][3]
    assert session[state._id] is first and first.has_model


def test_a_running_race_is_named_by_the_live_tab_and_the_message_goes_when_it_ends(page, fm_app):
    """A race is a run of the visitor's session: while one runs, Start on the live tab is refused
    by its validator under the run buttons with a message that names the race and where to stop it (not
    "press Stop first", which the live tab's Stop cannot do); once the race has ended, the same
    Start passes the validator. The race tab, asked while the session trains live, names the
    live tab the same way."""
    from gradio.state_holder import SessionState

    from app.live import LiveSession
    from app.sessions import Sessions
    from app.tabs.race import RaceHandlers
    from app.tabs.train_callbacks import LIVE_RUNNING, RACE_RUNNING
    from app.validation import TrainSettings

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    start = by_id["btn-start"]
    fn = next(f for f in demo.fns.values() if (start._id, "click") in f.targets)
    state = SessionState(demo)
    live = LiveSession()
    state[fn.inputs[0]._id] = live  # the page's gr.State holds this visitor's session
    values = [None, "checkerboard", None, None, "LSD (Lagrangian)", 200, 256, 1e-3, 0.75, 64, 2, 0, ""]
    message_at = [getattr(b, "elem_id", None) for b in fn.inputs].index("run-message")

    race = RaceHandlers(Limits(live_seconds=60.0, session_seconds=200.0), Sessions(max_live=4, idle_seconds=60.0))
    tiny = TrainSettings(method="lsd", steps=30, batch=64, lr=1e-2, eta=0.5, width=16, depth=2, seed=3)
    run = race.start(live, "two_moons", ["LSD"], 20_000, 0, chunk=5, settings=tiny)
    next(run)  # the race has begun
    assert live.running
    refused = _refused_at(_page_event(demo, start, "click", values, state, validator=True))
    assert refused == {message_at: RACE_RUNNING}, refused  # under the buttons, not beside a field
    assert '"Race the families" tab' in RACE_RUNNING and "stop it there" in RACE_RUNNING
    race.stop(live)
    *_, last = run
    assert last[2].startswith("**stopped**") and not live.running
    assert _refused_at(_page_event(demo, start, "click", values, state, validator=True)) == {}

    # the other way round: the race tab, while this session trains live
    run = fm_app.train_start(live, "checkerboard", None, None, "LSD (Lagrangian)", 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    next(run)
    assert live.running
    with pytest.raises(InputError) as err:
        race.check(live, "two_moons", ["LSD"], 100, 0)
    assert str(err.value) == LIVE_RUNNING
    fm_app.train_stop(live, wait=0.0)  # the run sees the flag at its next step (this test drives it)
    *_, last = run
    assert last[3].startswith("**stopped**") and not live.running


def test_download_with_no_model_is_refused_in_the_checkpoint_box(page, fm_app):
    """Download (zip) before any model: gradio's validator refuses it in the Checkpoint box (the
    event's second input) with what to do, so no error toast or badge; on gradio's direct route
    the event refuses it with the same words. With a model the validator passes."""
    import gradio as gr
    from gradio.state_holder import SessionState

    from app.live import LiveSession
    from app.tabs.train_callbacks import NOTHING_TO_DOWNLOAD

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    button = by_id["btn-download"]
    fn = next(f for f in demo.fns.values() if (button._id, "click") in f.targets)
    assert fn.inputs[1] is by_id["download-file"]
    state = SessionState(demo)
    live = LiveSession()
    state[fn.inputs[0]._id] = live
    answer = _page_event(demo, button, "click", [None, None], state, validator=True)
    assert _refused_at(answer) == {1: NOTHING_TO_DOWNLOAD}
    assert "press Start" in NOTHING_TO_DOWNLOAD and "Load" in NOTHING_TO_DOWNLOAD
    with pytest.raises(gr.Error) as refused:
        _page_event(demo, button, "click", [None, None], state)
    assert refused.value.message == NOTHING_TO_DOWNLOAD
    list(fm_app.train_start(live, "eight_gaussians", None, None, LSD, 20, 64, 3e-3, 0.75, 16, 1, 0))
    assert _refused_at(_page_event(demo, button, "click", [None, None], state, validator=True)) == {}


def test_continue_trains_the_data_set_and_method_the_page_shows(page):
    """What Continue trains is what the Data set and Method dropdowns show. A one-click lesson
    that fills another data set leaves the session's model where it was, so Continue is refused
    beside Data set (by the validator, and by the event on gradio's direct route) with both data
    sets named and what to press; set back, it continues on the model's data with the page's
    method. Load puts the shipped model's data set (and method) in the dropdowns, so the
    dropdowns it leaves continue that model, and the old data set is refused."""
    import gradio as gr
    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    cont, load = by_id["btn-continue"], by_id["btn-load"]
    session = SessionState(demo)
    start = [None, "checkerboard", None, None, LSD, 20, 16, 1e-3, 0.75, 16, 1, 0, ""]
    assert "**done**" in _page_stream(demo, by_id["btn-start"], "click", start, session)[-1][3]
    state = next(b for b in demo.blocks.values() if type(b).__name__ == "State")
    live = session[state._id]
    assert live.data.name == "checkerboard"

    # a lesson fills Data set and Method (eight_gaussians, ESD); the model is still the checkerboard's
    filled = _page_event(demo, by_id["train-examples"], "click", [1], session)["data"]
    shown = [f["value"] if isinstance(f, dict) else f for f in filled]
    assert shown == ["eight_gaussians", "ESD (Eulerian)"], shown
    fn = next(f for f in demo.fns.values() if (cont._id, "click") in f.targets)
    ids = [getattr(b, "elem_id", None) for b in fn.inputs]
    data_at = ids.index("data-set")
    after_lesson = [None, *shown, 10, 16, 1e-3, 0.75, 16, 1, 0, None, None, ""]
    refused = _refused_at(_page_event(demo, cont, "click", after_lesson, session, validator=True))
    assert set(refused) == {data_at}  # beside Data set only: not again beside Method or under the buttons
    message = refused[data_at]
    assert message.startswith("data set: ") and "learns checkerboard" in message and "shows eight_gaussians" in message
    assert "press Start to train a new model on eight_gaussians" in message and "choose checkerboard" in message
    with pytest.raises(gr.Error) as direct:  # no validator on the direct route: the event refuses it
        _page_event(demo, cont, "click", after_lesson, session)
    assert direct.value.message == message
    assert live.trainer.global_step == 20 and live.method == "lsd"  # nothing trained, nothing changed

    # Data set set back: Continue trains the checkerboard model with the page's method (ESD)
    back = [None, "checkerboard", "ESD (Eulerian)", 10, 16, 1e-3, 0.75, 16, 1, 0, None, None, ""]
    assert _refused_at(_page_event(demo, cont, "click", back, session, validator=True)) == {}
    last = _page_stream(demo, cont, "click", back, session)[-1][3]
    assert "**done**" in last and "ESD on checkerboard" in last and "step 30" in last, last
    assert live.data.name == "checkerboard" and live.method == "esd"

    # Load a shipped model of another data set: the dropdowns now show its data set and method
    load_fn = next(f for f in demo.fns.values() if (load._id, "click") in f.targets)
    out_ids = [getattr(b, "elem_id", None) for b in load_fn.outputs]
    loaded = _page_event(demo, load, "click", [None, "eight_gaussians-lsd", *back[2:-3], ""], session)["data"]
    value = {name: (v.get("value", v) if isinstance(v, dict) else v) for name, v in zip(out_ids, loaded)}
    assert value["data-set"] == "eight_gaussians" and value["method"] == LSD, value
    assert live.data.name == "eight_gaussians"
    stale = [None, "checkerboard", *back[2:]]  # the dropdown as it was before the Load
    refused = _refused_at(_page_event(demo, cont, "click", stale, session, validator=True))
    assert "learns eight_gaussians" in refused[data_at] and "shows checkerboard" in refused[data_at]
    shown_now = [None, value["data-set"], value["method"], 10, value["batch"], value["lr"], value["eta"]]
    shown_now += [value["width"], value["depth"], 0, None, None, ""]
    last = _page_stream(demo, cont, "click", shown_now, session)[-1][3]
    assert "**done**" in last and "LSD on eight_gaussians" in last, last
    assert live.data.name == "eight_gaussians" and live.method == "lsd"


def test_the_eta_slider_reaches_1_for_flow_matching_only(page):
    """Start refuses eta 1 for a flow-map method, so the eta slider's top follows the Method
    dropdown: 0.95 for a flow-map method (the page opens on LSD), 1 for Flow matching; an eta of 1
    left by Flow matching is lowered to 0.95 when a flow-map method is picked, with a note under the
    slider. The server still takes eta 1 for Flow matching and refuses it for a flow-map method by name."""
    import asyncio

    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    method, eta, note, start = by_id["method"], by_id["eta"], by_id["eta-note"], by_id["btn-start"]
    assert eta.maximum == 0.95 and eta.value <= eta.maximum
    fn = next(f for f in demo.fns.values() if (method._id, "change") in f.targets and any(o is eta for o in f.outputs))
    session = SessionState(demo)

    def pick(label, value):
        out = asyncio.run(demo.process_api(fn, [label, value], state=session))["data"]
        return out[0], out[1]

    slider, shown = pick("Flow matching only", 0.5)
    assert slider["maximum"] == 1.0 and "value" not in slider and shown["visible"] is False
    slider, shown = pick(LSD, 1.0)
    assert slider["maximum"] == 0.95 and slider["value"] == 0.95, slider
    assert shown["visible"] is True and shown["value"].startswith("eta: 1 is for Flow matching only"), shown
    assert shown["value"].endswith("the slider set it to 0.95")
    slider, shown = pick(LSD, 0.75)  # in range: kept, no note
    assert "value" not in slider and shown["visible"] is False
    assert note.visible is False  # the page opens without a note

    # the server's checks: eta 1 with Flow matching trains, with LSD it is refused beside eta by name
    fm = [None, "checkerboard", None, None, "Flow matching only", 10, 16, 1e-3, 1.0, 16, 1, 0, ""]
    assert _refused_at(_page_event(demo, start, "click", fm, session, validator=True)) == {}
    lsd = [*fm[:4], LSD, *fm[5:]]
    refused = _refused_at(_page_event(demo, start, "click", lsd, session, validator=True))
    assert list(refused.values())[0].startswith(f"{ETA}: must be below 1 for a flow-map method"), refused


def test_after_a_draw_on_a_custom_grid_the_n_slider_shows_its_n(page):
    """The "Flow-map steps N" slider does not apply to a custom grid: after Draw trajectories (or a
    lesson's draw) on custom times "0 0.5 1" it shows that grid's N, 2, not its old value; times
    that do not parse, or another grid, leave it as it is."""
    import asyncio

    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    button, steps = by_id["btn-trajectories"], by_id["cmp-steps"]
    draw = next(f for f in demo.fns.values() if (button._id, "click") in f.targets)
    after = [f for f in demo.fns.values() if f.trigger_after == draw._id]
    assert len(after) == 1 and [o._id for o in after[0].outputs] == [steps._id]
    session = SessionState(demo)

    def shown(grid_kind, times):
        return asyncio.run(demo.process_api(after[0], [grid_kind, times], state=session))["data"][0]

    assert shown("custom", "0 0.5 1")["value"] == 2
    assert shown("custom", "0, 0.5, 0.9, 1")["value"] == 3
    for kind, times in (("custom", "0, 0.7, 0.5, 1"), ("custom", ""), ("uniform", "0 0.5 1")):
        assert shown(kind, times) == {"__type__": "update"} or "value" not in shown(kind, times), (kind, times)
    # the lessons' draw is followed by the same update
    lesson_draws = [f for f in demo.fns.values() if f.name == "draw"]
    assert lesson_draws and all(
        any(g.trigger_after == d._id and g.outputs == [steps] for g in demo.fns.values()) for d in lesson_draws
    )


def _run_button_calls(demo):
    """The live tab's Start, Continue and Load for one browser session that holds a fresh
    LiveSession: (components by elem_id, the gradio session state, the LiveSession, the page's
    settings, each button's input values for :func:`_page_event`). Each event's last input is the
    message element under the run buttons."""
    from gradio.state_holder import SessionState

    from app.live import LiveSession

    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    state = SessionState(demo)
    live = LiveSession()
    settings = [LSD, 20, 16, 1e-3, 0.75, 16, 1, 0, ""]
    calls = {
        "btn-start": [None, "checkerboard", None, None, *settings],
        "btn-continue": [None, "checkerboard", *settings[:-1], None, None, ""],
        "btn-load": [None, "eight_gaussians-lsd", *settings],
    }
    for name in calls:
        fn = next(f for f in demo.fns.values() if (by_id[name]._id, "click") in f.targets)
        assert fn.inputs[-1] is by_id["run-message"], name
        state[fn.inputs[0]._id] = live
    return by_id, state, live, settings, calls


def _run_note_refusal(demo, by_id, state, calls, name: str) -> str:
    """The refusal that the validator of button ``name`` (one of :func:`_run_button_calls`) shows
    under the run buttons, "" when it accepts the click."""
    answer = _page_event(demo, by_id[name], "click", calls[name], state, validator=True)
    return _refused_at(answer).get(len(calls[name]) - 1, "")


def test_a_refusal_naming_no_field_shows_under_the_run_buttons_only(page, fm_app):
    """While the session trains, Start, Continue and Load are refused by their validators in the
    message element under the run buttons (their last input) and nowhere else: not beside Method
    (where it read as a Method error) nor beside the shipped-model dropdown. Load's refusal says
    that the model its dropdown shows was not loaded. A field's mistake shows beside that field only."""

    from app.tabs.train_callbacks import ALREADY_TRAINING

    demo = page
    by_id, state, live, settings, calls = _run_button_calls(demo)
    run = fm_app.train_start(live, "checkerboard", None, None, LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    next(run)
    assert live.running
    try:
        for name, values in calls.items():
            refused = _refused_at(_page_event(demo, by_id[name], "click", values, state, validator=True))
            assert list(refused) == [len(values) - 1], (name, refused)
            assert refused[len(values) - 1].startswith(ALREADY_TRAINING), (name, refused)
        said = _refused_at(_page_event(demo, by_id["btn-load"], "click", calls["btn-load"], state, validator=True))
        assert said[len(calls["btn-load"]) - 1].endswith(
            "eight_gaussians-lsd was not loaded (the run goes on with its own model)"
        )
        # a field's mistake: beside that field alone
        bad = [None, "checkerboard", None, None, LSD, 20, 16, 1e-3, 0.75, 16, 1, 2.5, ""]
        refused = _refused_at(_page_event(demo, by_id["btn-start"], "click", bad, state, validator=True))
        assert list(refused) == [11] and refused[11].startswith("seed"), refused
    finally:
        fm_app.train_stop(live, wait=0.0)
        for _ in run:
            pass


def test_an_accepted_start_or_load_claims_the_session_until_its_callback_takes_it(page, fm_app, monkeypatch):
    """gradio runs a validator when the click arrives and the callback later: a Load clicked right
    after Start, before Start's callback has begun the run, is refused by Load's validator (under
    the run buttons, "already training ... was not loaded"), not by its own callback once the run
    has begun (which showed as an error over the run's status line). The claim refuses only
    validators: Start's own callback runs, and its run releases the claim. A Load's claim refuses
    Start while the model loads and ends when it has loaded; an unanswered claim lapses."""
    import time

    import app.live
    from app.tabs.train_callbacks import ALREADY_TRAINING, LOADING

    demo = page
    by_id, state, live, settings, calls = _run_button_calls(demo)
    refused = functools.partial(_run_note_refusal, demo, by_id, state, calls)

    assert refused("btn-start") == "" and not live.running  # accepted: the callback has not run yet
    said = refused("btn-load")
    assert said.startswith(ALREADY_TRAINING) and said.endswith(
        "eight_gaussians-lsd was not loaded (the run goes on with its own model)"
    )
    assert refused("btn-continue").startswith(ALREADY_TRAINING)
    assert refused("btn-start").startswith(ALREADY_TRAINING)  # a double click starts one run
    # Start's own callback is not refused by the claim its validator made; its run releases it
    run = fm_app.train_start(live, "checkerboard", None, None, LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    try:
        next(run)
        assert live.running and live.claim_action == ""
    finally:
        fm_app.train_stop(live, wait=10.0)
        for _ in run:
            pass
    assert not live.running and refused("btn-load") == ""  # now the Load's claim...
    assert refused("btn-start") == LOADING and refused("btn-continue") == LOADING
    out = fm_app.load_pretrained(live, "eight_gaussians-lsd", *settings[:-1])  # ...ends when it has loaded
    assert len(out) == 11 and live.claim_action == "" and refused("btn-start") == ""
    # a callback may wait up to STOP_WAIT for a stopping run before it takes the session: its
    # claim must hold through that wait, or a second click in it passes its validator again
    assert app.live.CLAIM_SECONDS > app.live.STOP_WAIT
    # a claim whose callback never comes (e.g. a Start dropped from a full queue) lapses
    monkeypatch.setattr(app.live, "CLAIM_SECONDS", 0.2)
    live.release_claim()
    assert refused("btn-start") == "" and refused("btn-load").startswith(ALREADY_TRAINING)
    time.sleep(0.3)
    assert refused("btn-load") == ""
    # a callback that refuses what its validator accepted (e.g. a full Space, or values changed on
    # the way) answers the claim too: the next click is not refused as "already training"
    monkeypatch.setattr(app.live, "CLAIM_SECONDS", 60.0)
    live.release_claim()
    assert refused("btn-start") == "" and live.claim_action == "Training"
    with pytest.raises(InputError, match="seed"):
        next(fm_app.train_start(live, "checkerboard", None, None, LSD, 20, 16, 1e-3, 0.75, 16, 1, 2.5))
    assert live.claim_action == "" and refused("btn-load") == ""


def test_continue_right_after_stop_waits_for_the_run_to_end_and_stop_keeps_a_loaded_model(page, fm_app):
    """Continue (or Start) pressed right after Stop, while the run has not yet reached its next
    step, waits for the run to end and then trains, rather than being refused as "already
    training: press Stop first" (a refusal the "stopped" that followed wiped from the page). A
    Stop with nothing running after a Load says the loaded model waits for Continue."""
    import threading

    import gradio as gr

    from app.tabs.train_callbacks import LOADED_IDLE
    from app.validation import InputError

    demo = page
    by_id, state, live, settings, calls = _run_button_calls(demo)
    refused = functools.partial(_run_note_refusal, demo, by_id, state, calls)

    run = fm_app.train_start(live, "checkerboard", None, None, LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    next(run)
    assert live.running
    ended = threading.Thread(target=lambda: [None for _ in run])  # the page keeps reading the stream
    fm_app.train_stop(live, wait=0.0)  # Stop pressed: the run ends at its next step
    assert live.running and refused("btn-continue") == ""
    assert refused("btn-start").startswith("this session is already training")  # Continue's claim
    live.release_claim()
    assert refused("btn-start") == ""
    live.release_claim()
    # the stopped run's stream has not drawn its last update (nobody reads it yet): a Start that
    # cannot wait that long says so, then gives the status back and is refused
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("app.tabs.train_callbacks.STOP_WAIT", 0.2)
        start = fm_app.train_start(live, "checkerboard", None, None, LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
        waiting = next(start)
        assert waiting[3].startswith("**starting** · waiting") and all(u == gr.skip() for u in waiting[:3])
        restored = next(start)
        assert restored[3] == fm_app.status_text(live) and all(u == gr.skip() for u in restored[:3])
        with pytest.raises(InputError, match="still stopping"):
            next(start)
    live.release_claim()
    cont = fm_app.train_continue(live, "checkerboard", LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    try:
        waiting = next(cont)  # the status says at once that Continue waits for the stopped run
        assert waiting[3].startswith("**continuing** · waiting") and all(u == gr.skip() for u in waiting[:3])
        assert "**stopped**" not in waiting[3]
        ended.start()  # the page draws the stopped run's last update
        next(cont)  # then Continue trains
        assert live.running and live.phase in ("starting", "training"), live.phase
        ended.join(timeout=30)
        assert not ended.is_alive()
    finally:
        if ended.ident is None:  # never started: the page must still read the stopped run to its end
            ended.start()
        fm_app.train_stop(live, wait=10.0)
        for _ in cont:
            pass
    fm_app.load_pretrained(live, "eight_gaussians-lsd", *settings[:-1])
    assert fm_app.train_stop(live) == LOADED_IDLE.format(name="eight_gaussians-lsd")


def test_continue_refuses_a_csv_other_than_the_one_read_at_start(page, tmp_path):
    """A CSV is read at Start: after a run on circle.csv, Continue with line.csv in the CSV box is
    refused beside the CSV box (gradio's validator, and the event on the direct route), naming
    both files and saying to press Start for the new one or upload the old one again; nothing
    trains. With circle.csv back (a fresh upload of the same bytes) Continue trains. The status of
    a CSV run names its file."""
    import math

    import gradio as gr
    from gradio.state_holder import SessionState

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    start, cont = by_id["btn-start"], by_id["btn-continue"]
    # gradio keeps an upload's name as the last part of its cached path; two folders, two uploads
    circle, line, circle_again = (
        tmp_path / "a" / "circle.csv",
        tmp_path / "b" / "line.csv",
        tmp_path / "c" / "circle.csv",
    )
    for path in (circle, line, circle_again):
        path.parent.mkdir()
    ring = "".join(f"{math.cos(k / 20):.5f},{math.sin(k / 20):.5f}\n" for k in range(200))
    circle.write_text(ring)
    circle_again.write_text(ring)
    line.write_text("".join(f"{k / 100:.3f},{k / 50:.3f}\n" for k in range(200)))

    def upload(path):  # what the page sends for a file in the CSV box
        return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    session = SessionState(demo)
    first = _page_stream(
        demo, start, "click", [None, "csv", None, upload(circle), LSD, 20, 16, 1e-3, 0.75, 16, 1, 0, ""], session
    )[-1][3]
    assert "**done**" in first and "LSD on circle.csv" in first, first
    fn = next(f for f in demo.fns.values() if (cont._id, "click") in f.targets)
    csv_at = [getattr(b, "elem_id", None) for b in fn.inputs].index("csv-upload")
    settings = [LSD, 10, 16, 1e-3, 0.75, 16, 1, 0]
    other = [None, "csv", *settings, upload(line), None, ""]
    refused = _refused_at(_page_event(demo, cont, "click", other, session, validator=True))
    assert list(refused) == [csv_at], refused
    message = refused[csv_at]
    assert message.startswith("CSV file: the model in this session learns circle.csv, but the CSV box holds line.csv")
    assert "press Start to train a new model on line.csv" in message and "upload circle.csv again" in message
    with pytest.raises(gr.Error) as direct:
        _page_event(demo, cont, "click", other, session)
    assert direct.value.message == message
    same = [None, "csv", *settings, upload(circle_again), None, ""]
    assert _refused_at(_page_event(demo, cont, "click", same, session, validator=True)) == {}
    last = _page_stream(demo, cont, "click", same, session)[-1][3]
    assert "**done**" in last and "LSD on circle.csv" in last and "step 30" in last, last
    assert "same points" not in last  # the same file: nothing to explain
    # a copy under another name holds the same points: it continues, and the status says so
    ring2 = tmp_path / "d" / "ring2.csv"
    ring2.parent.mkdir()
    ring2.write_text(ring)
    renamed = [None, "csv", *settings, upload(ring2), None, ""]
    assert _refused_at(_page_event(demo, cont, "click", renamed, session, validator=True)) == {}
    last = _page_stream(demo, cont, "click", renamed, session)[-1][3]
    assert "**done**" in last and "step 40" in last, last
    assert "ring2.csv holds the same points as circle.csv" in last and "continues on them" in last, last


def test_continue_refuses_a_sketch_pad_changed_since_start(page, fm_app, tmp_path):
    """A drawing is read at Start: after a run on a ring drawn on the pad, Continue with a stroke
    added to the pad, or with the pad cleared, is refused beside Data set (the pad's messages go
    there), saying the pad changed since the run started, that Continue keeps the run's drawing,
    and to press Start for the new one or undo to continue; nothing trains and the run keeps its
    points. The same strokes sent again (a fresh copy of the same pixels, as the page sends the
    pad at each event) continue; so does Continue from an API caller that leaves the pad out."""
    import gradio as gr
    from gradio.state_holder import SessionState
    from PIL import Image, ImageDraw

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    start, cont = by_id["btn-start"], by_id["btn-continue"]

    def pad(name: str, extra_line: bool = False) -> dict:
        """The pad's value as the page sends it: one transparent layer holding black strokes."""
        layer = Image.new("RGBA", (320, 320), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        draw.ellipse((80, 80, 240, 240), outline=(0, 0, 0, 255), width=10)
        if extra_line:
            draw.line((20, 300, 300, 300), fill=(0, 0, 0, 255), width=10)
        path = tmp_path / f"{name}.png"
        layer.save(path)
        files = {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
        return {"background": None, "layers": [files], "composite": None, "id": None}

    session = SessionState(demo)
    settings = [LSD, 20, 16, 1e-3, 0.75, 16, 1, 0]
    first = _page_stream(demo, start, "click", [None, "draw", pad("ring"), None, *settings, ""], session)[-1][3]
    assert "**done**" in first and "LSD on draw · step 20" in first, first
    state = next(b for b in demo.blocks.values() if type(b).__name__ == "State")
    live = session[state._id]
    points = live.data.points.clone()
    fn = next(f for f in demo.fns.values() if (cont._id, "click") in f.targets)
    names = [getattr(b, "elem_id", None) for b in fn.inputs]
    data_at = names.index("data-set")
    assert "draw-pad" in names  # Continue reads the pad
    settings[1] = 10
    cleared = {"background": None, "layers": [], "composite": None, "id": None}
    for value, now in ((pad("ring-and-line", extra_line=True), "changed"), (cleared, "cleared")):
        other = [None, "draw", *settings, None, value, ""]
        refused = _refused_at(_page_event(demo, cont, "click", other, session, validator=True))
        assert list(refused) == [data_at], refused  # once, beside Data set
        message = refused[data_at]
        assert message.startswith(f"drawing: the sketch pad was {now} since this run started"), message
        assert "Continue keeps training on the run's drawing" in message, message
        assert "press Start to train a new model on" in message and "undo the changes on the pad" in message
        with pytest.raises(gr.Error) as direct:  # the direct route (no validator): the event refuses it
            _page_event(demo, cont, "click", other, session)
        assert direct.value.message == message
        assert live.trainer.global_step == 20 and torch.equal(live.data.points, points)  # the run unchanged
    same = [None, "draw", *settings, None, pad("ring-again"), ""]
    assert _refused_at(_page_event(demo, cont, "click", same, session, validator=True)) == {}
    last = _page_stream(demo, cont, "click", same, session)[-1][3]
    assert "**done**" in last and "LSD on draw · step 30" in last, last
    assert torch.equal(live.data.points, points)
    # an API caller that leaves the pad out (None, the event's default) is not refused
    assert fm_app.check_continue(live, "draw", *settings).steps == 10


def test_a_method_changed_mid_run_is_said_to_apply_at_the_next_continue_or_start(page, fm_app):
    """While the session trains with LSD, setting Method to ESD (through the page's change event)
    shows a note under Method: the run goes on with LSD, ESD applies at the next Continue or
    Start. Back to LSD, or with nothing running, no note; Start and Continue clear it."""
    import asyncio

    from gradio.state_holder import SessionState

    from app.live import LiveSession

    demo = page
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    method, note = by_id["method"], by_id["method-note"]
    fn = next(f for f in demo.fns.values() if (method._id, "change") in f.targets and note in f.outputs)
    state = SessionState(demo)
    live = LiveSession()
    state[fn.inputs[0]._id] = live

    def shown(label):
        out = asyncio.run(demo.process_api(fn, [None, label], state=state))["data"][0]
        return out["value"] if out.get("visible") else None

    assert shown("ESD (Eulerian)") is None  # nothing running: nothing to say
    run = fm_app.train_start(live, "checkerboard", None, None, LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    next(run)
    try:
        assert shown("ESD (Eulerian)") == (
            "Method: the run under way goes on with LSD; ESD applies at the next Continue or Start"
        )
        assert shown(LSD) is None
    finally:
        fm_app.train_stop(live, wait=0.0)
        for _ in run:
            pass
    for button in ("btn-start", "btn-continue"):
        clear = next(f for f in demo.fns.values() if (by_id[button]._id, "click") in f.targets and note in f.outputs)
        assert not clear.inputs and clear.validator is None


def test_a_seed_out_of_range_is_quoted_as_typed():
    """-1e30 in the seed box is refused with the number as typed, not int(-1e30)'s 31 digits."""
    for value, shown in ((-1e30, "-1e+30"), ("-1e30", "-1e30"), (2**40, str(2**40)), (" 3e9 ", "3e9")):
        with pytest.raises(InputError) as err:
            parse_train_settings(LSD, 200, 256, 1e-3, 0.75, 64, 2, value)
        assert str(err.value) == f"seed: {shown} is outside the allowed range [0, 2147483647]"
    assert parse_train_settings(LSD, 200, 256, 1e-3, 0.75, 64, 2, 7.0).seed == 7


def test_images_report_progress_by_network_calls_and_unmeasured_fids_show_a_dash(tmp_path):
    """The Images tab's Sample hears its share of the work: loading, then each row by its network
    calls (N = 1, 2, 4, 8 and the ODE's 32), rising to 1; the FID table marks a cell that
    metrics.json does not measure with "—" (the caption's promise), never a blank cell."""
    from app.images import fid_markdown
    from app.ui import FlowMapsApp
    from flowmaps.hub import save_pretrained
    from flowmaps.registry import build_model

    unet = {"name": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16}
    root = tmp_path / "checkpoints"
    metrics = {
        "map-1": {"sampler": "flow map", "nfe": 1, "fid": 300.0},
        "heun-32": {"sampler": "Heun ODE", "nfe": 32, "fid": 6.5},
    }
    cfg = {"net": unet, "sigma": 0.5, "data": "fashion-mnist", "method": "lsd"}
    save_pretrained(build_model(cfg), root / "fmnist-lsd", cfg)
    (root / "fmnist-lsd" / "metrics.json").write_text(json.dumps(metrics))
    app = FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=small_limits()))
    heard: list[tuple[float, str]] = []
    app.sample_images(
        "fmnist-lsd", 2, "uniform", "", 0, 1, "Heun, 16 steps (32 NFE)", progress=lambda f, d: heard.append((f, d))
    )
    fractions = [f for f, _ in heard]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0, heard
    total = 1 + 2 + 4 + 8 + 32  # the rows' network calls
    assert [round(f * total) for f in fractions] == [0, 0, 1, 3, 7, 15, 47], heard
    assert "loading fmnist-lsd" in heard[0][1] and "N = 4" in heard[3][1] and "ODE heun" in heard[5][1]
    table = fid_markdown(metrics)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows == [["1", "300.0", "—"], ["32", "—", "6.5"]], table
    assert "— means not measured" in table and "— means not measured" in app.image_fid("fmnist-lsd")
    full = fid_markdown({"a": {"sampler": "flow map", "nfe": 1, "fid": 3.0}})
    assert "—" not in full  # nothing unmeasured: no dash and no caption


def test_image_fids_show_their_spread_over_noise_seeds_and_how_they_were_measured(tmp_path):
    """A fresh user saw FID 13.2 / 7.0 / 3.5 in the Images tab where the README gives 13.2 ± 0.6:
    the tab's tables now give the mean ± sd over noise seeds that metrics.json records, and say how
    many samples and which seeds; a FID without a spread stays a plain number. On the shipped model."""
    import statistics

    import app.images as img
    from app.ui import FlowMapsApp
    from tests import REPO

    fm_app = FlowMapsApp(
        AppConfig(checkpoints_dir=REPO / "checkpoints", cache_dir=tmp_path / "cache", limits=small_limits())
    )

    metrics = json.loads((Path(fm_app.store.info("fmnist-lsd").source) / "metrics.json").read_text())
    one = metrics["map-1"]
    sd = statistics.stdev(one["fid_by_seed"].values())
    assert abs(sd - one["fid_sd"]) < 1e-3 and abs(statistics.mean(one["fid_by_seed"].values()) - one["fid"]) < 1e-3
    cell = f"{one['fid']:.1f} ± {one['fid_sd']:.1f}"
    table = img.fid_markdown(metrics)
    assert f"| 1 | {cell} |" in table, table
    assert "Each FID is of 2,000 samples, the mean ± sd over noise seeds 0, 1, 2" in table
    assert cell in fm_app.image_fid("fmnist-lsd")
    _, info, _ = fm_app.sample_images("fmnist-lsd", 2, "uniform", "", 0, 1, "none")
    row = next(line for line in info.splitlines() if line.startswith("| N = 1 "))
    assert row.endswith(f"| {cell} |"), row
    assert "mean ± sd over noise seeds 0, 1, 2" in info
    assert img.fid_cell({"fid": 3.04}) == "3.0" and img.fid_cell({"nfe": 1}) == img.NOT_MEASURED
    assert img.fid_convention({"a": {"fid": 3.0}}) == ""  # says nothing it does not know


def test_an_evaluation_of_this_sessions_model_names_the_step_of_the_weights_it_used(fm_app):
    """The quality tab and the jump-vs-ODE tab copy this session's weights, possibly while a run
    goes on: the copy's label says which training step it holds (the trainer's steps, plus a
    loaded checkpoint's own), read under the same lock as the copy."""
    from app.datasets import toy_source
    from app.live import LiveSession
    from app.tabs.base import SESSION

    sess = LiveSession()
    sess.start_fresh(toy_source("checkerboard"), parse_train_settings(LSD, 20, 32, 1e-3, 0.75, 16, 1, 0))
    list(sess.run(20, max_seconds=30))
    steps = sess.trainer.global_step
    assert steps > 0
    model, taken = sess.snapshot()
    assert taken == steps
    _, _, label, key = fm_app.resolve_model(sess, SESSION)
    assert label == f"this session, step {steps:,}" and key is None
    fig, table, summary = list(fm_app.quality(sess, SESSION, 500))[-1]
    assert f"this session, step {steps:,}" in table
    sess.base_steps = 1000  # as after Load: the checkpoint's own steps come first
    assert fm_app.resolve_model(sess, SESSION)[2] == f"this session, step {1000 + steps:,}"


def test_the_progress_line_counts_network_evaluations_against_the_plan(fm_app):
    """While an evaluation computes, the summary says how many network evaluations are done of how
    many planned, and (once a tenth is done) the seconds left; the plan is the count of an actual
    evaluation, up to dopri5's guess."""
    from app import quality as ql
    from app.datasets import toy_source

    model, _ = fm_app.store.load("checkerboard-lsd")
    res = list(ql.evaluate(model, toy_source("checkerboard"), "m", n=500, min_seconds=0))[-1]
    counted = {c.sampler: sum(c.nfe) for c in res.curves}
    plan = ql.planned_nfe(True, True)
    assert plan - ql.DOPRI_NFE_GUESS == sum(v for k, v in counted.items() if k != "dopri5")
    assert counted["flow map"] == ql.planned_nfe(True, False) == sum(ql.FLOW_STEPS)
    # the guess is close on the shipped flow-matching model, whose ODE the shipped comparison runs
    from flowmaps.hub import from_pretrained
    from tests import REPO

    fm, _ = from_pretrained(REPO / "checkpoints" / "checkerboard-fm")
    shipped = list(ql.evaluate(fm, toy_source("checkerboard"), "fm", n=500, min_seconds=0, repeats=1, flow_map=False))
    dopri = [n for c in shipped[-1].curves if c.sampler == "dopri5" for n in c.nfe]
    assert 0.8 * ql.DOPRI_NFE_GUESS <= sum(dopri) <= 1.2 * ql.DOPRI_NFE_GUESS
    assert ql.planned_nfe(True, False, ql.COMPARE_FLOW_STEPS) == 31
    # a tenth done: the time left at the pace so far; before that, none
    assert ql.progress_sentence(50, 400, 10.0, True) == (
        "_computing: 50 of about 400 network evaluations after 10 s, about 70 s left at this pace."
        " The result is kept: the next press with these settings shows it at once._"
    )
    assert "left" not in ql.progress_sentence(10, 400, 10.0, False)
    assert "kept" not in ql.progress_sentence(10, 400, 10.0, False)
    over = ql.progress_sentence(120, 100, 5.0, False)  # dopri5 over its guess: no "0 s left"
    assert "120 of about 120 network evaluations after 5 s." in over and "left" not in over
    lines = [
        s
        for _, t, s in fm_app._quality_stream([(model, toy_source("checkerboard"), "m", True, False)], 500, None, False)
    ]
    progress = [s for s in lines if s.startswith("_computing: ")]
    assert progress and all("of about 127 network evaluations" in s for s in progress)
    done = [int(re.search(r"computing: ([\d,]+) of", s).group(1).replace(",", "")) for s in progress]
    assert done == sorted(done) and done[0] > 0 and "computing" not in lines[-1]


def test_wall_times_out_of_the_order_of_their_evaluations_are_flagged():
    """A fresh user under load read a flow map's N = 8 timed at 28 ms after 46 ms at N = 4, under a
    lesson that calls the right plot a speed plot: the summary flags times out of order."""
    from app import plots
    from app import quality as ql

    def result(ms: list[float], timed: list[int] | None = None) -> ql.QualityResult:
        res = ql.QualityResult("KL", 0.05, n=3000)
        nfe = [1, 2, 4, 8]
        res.curves.append(plots.Curve("m", "flow map", nfe, [0.3, 0.2, 0.15, 0.1], ms, timed or []))
        return res

    noisy = ql.summary_sentence(result([6.8, 18.9, 45.9, 28.1]))
    assert "The wall times are out of order (m, flow map: 45.9 ms at 4 NFE, 28.1 ms at 8)" in noisy
    assert ql.timing_sentence(result([6.8, 12.0, 25.0, 49.0])) == ""
    assert ql.timing_sentence(result([10.0, 9.0, 25.0, 49.0])) == ""  # within the slack (0.9 > 0.8)
    # an adaptive solve is ordered by the NFE of its timed runs, not of its metric runs
    assert ql.timing_sentence(result([10.0, 20.0, 30.0, 25.0], timed=[1, 2, 8, 4])) == ""


def test_the_upload_format_is_said_under_the_data_choice_not_in_the_upload_label():
    """The upload box's label is one line, cut short by its clear button once a file is in it (a
    fresh user saw "...2 MB; comm"): the separators and encodings the reader takes are said in the
    data set's description instead, and only there for the CSV choice."""
    from app.datasets import CSV
    from app.tabs.train import data_help

    text = data_help(CSV)
    assert all(word in text for word in ("comma", "semicolon", "tab", "space", "UTF-8", "UTF-16"))
    assert "semicolon" not in data_help("checkerboard")
