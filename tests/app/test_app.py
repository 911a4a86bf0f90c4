"""The app through gradio_client against a launched server: every tab's main action, bad input,
and two sessions training at once (a Stop in one leaves the other running).

Time convention: t = 0 is noise, t = 1 is data. The server uses tiny untrained checkpoints
written by tests/test_app_logic.make_checkpoints into a temporary folder.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import zipfile

import numpy as np
import plotly.io as pio
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError

from app.config import AppConfig, Limits
from tests.app.test_app_logic import make_checkpoints

LSD = "LSD (Lagrangian)"
# method, steps, batch, lr, eta, width, depth, seed
SMALL = (LSD, 120, 128, 3e-3, 0.75, 32, 2, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from app import build_app, launch_kwargs

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as app.py does on 2 cores with two training slots
    root = make_checkpoints(tmp_path_factory.mktemp("ckpt") / "checkpoints")
    limits = Limits(live_seconds=20.0, session_seconds=200.0, max_csv_rows=1000, max_upload="20kb")
    cfg = AppConfig(checkpoints_dir=root, cache_dir=tmp_path_factory.mktemp("cache"), limits=limits)
    demo = build_app(cfg)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_kwargs(cfg))
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    torch.set_num_threads(before)


def _client(url: str) -> Client:
    return Client(url, verbose=False)


def _fig(value):
    """A gr.Plot value from the client -> plotly Figure."""
    assert isinstance(value, dict) and value.get("type") == "plotly", value
    return pio.from_json(value["plot"])


def _arr(v) -> np.ndarray:
    """A trace's x / y / z as floats; decodes plotly's typed-array JSON ({"dtype", "bdata"})."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float)
        return a.reshape(v["shape"]) if "shape" in v else a
    items = np.asarray(v, dtype=object).ravel()
    out = []
    for u in items:
        out.extend(_arr(u).ravel() if isinstance(u, (dict, list, tuple, np.ndarray)) else [np.nan if u is None else u])
    return np.asarray(out, dtype=float)


def _numbers(fig) -> np.ndarray:
    vals = []
    for tr in fig.data:
        for axis in ("x", "y", "z"):
            v = getattr(tr, axis, None)
            if v is not None:
                arr = _arr(v).ravel()
                vals.append(arr[~np.isnan(arr)])
    return np.concatenate(vals) if vals else np.zeros(0)


def _loss_curve(fig) -> np.ndarray:
    tr = next(t for t in fig.data if t.name == "loss")
    return _arr(tr.y)


def _panel(fig, title_start: str) -> np.ndarray:
    tr = next(t for t in fig.data if t.name.startswith(title_start))
    return np.stack([_arr(tr.x), _arr(tr.y)], axis=1)


def test_train_streams_updates_and_learns(server):
    c = _client(server)
    t0 = time.perf_counter()
    job = c.submit("checkerboard", None, None, *SMALL, api_name="/train_start")
    first = None
    for _ in job:
        if first is None:
            first = time.perf_counter() - t0
    outs = job.outputs()
    assert len(outs) >= 2, "the train handler streams at least a start and an end update"
    samples0, _, _, status0 = outs[0]
    samples, loss, bar, status = outs[-1]
    assert "starting" in status0 and "done" in status and "step 120" in status and "step 120 of 120" in bar
    fig_s, fig_l = _fig(samples), _fig(loss)
    assert np.isfinite(_numbers(fig_s)).all() and _numbers(fig_s).size > 1000
    curve = _loss_curve(fig_l)
    assert np.isfinite(curve).all() and curve[-10:].mean() < curve[:10].mean()
    assert not np.allclose(_panel(_fig(samples0), "flow map, N = 1"), _panel(fig_s, "flow map, N = 1"))
    print(f"first update {first:.2f} s after submit, {len(outs)} updates")

    # continue, then the other tabs on this session's model
    outs = c.submit("checkerboard", *SMALL[:1], 40, *SMALL[2:], api_name="/train_continue")
    outs.result()
    assert "step 160" in outs.outputs()[-1][3]
    fig, info, heat = c.predict("__session__", "uniform", 4, "", 8, 0, api_name="/trajectories")
    fig = _fig(fig)
    assert np.isfinite(_numbers(fig)).all() and len(fig.layout.sliders[0].steps) == 21
    assert "network evaluations" in info
    path = c.predict(api_name="/download_model")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    folders = {n.split("/")[0] for n in names}  # named apart from the shipped checkerboard-lsd
    assert len(folders) == 1 and (folder := folders.pop()).startswith("live-checkerboard-lsd-step")
    assert {f"{folder}/config.json", f"{folder}/model.safetensors"} <= names


def test_two_sessions_stop_independently(server):
    a, b = _client(server), _client(server)
    long = (LSD, 20_000, 64, 1e-3, 0.75, 16, 1, 0)
    job_a = a.submit("two_moons", None, None, *long, api_name="/train_start")
    job_b = b.submit("rings", None, None, *long, api_name="/train_start")
    deadline = time.time() + 30
    while (len(job_a.outputs()) < 2 or len(job_b.outputs()) < 2) and time.time() < deadline:
        time.sleep(0.1)
    assert len(job_a.outputs()) >= 2 and len(job_b.outputs()) >= 2, "both sessions train at once"
    msg = a.predict(api_name="/train_stop")  # answered once the run has stopped, with its final line
    assert msg.startswith("**stopped**") and "two_moons" in msg, msg
    job_a.result(timeout=30)
    assert job_a.outputs()[-1][3] == msg
    n_b = len(job_b.outputs())
    deadline = time.time() + 15  # updates come every 1 to 3 s (slower on a loaded machine)
    while len(job_b.outputs()) <= n_b and not job_b.done() and time.time() < deadline:
        time.sleep(0.1)
    assert not job_b.done() and len(job_b.outputs()) > n_b, "a Stop in session A must not stop session B"
    assert "two_moons" in job_a.outputs()[-1][3] and "rings" in job_b.outputs()[-1][3]
    msg = b.predict(api_name="/train_stop")
    assert msg.startswith("**stopped**") and "rings" in msg, msg
    job_b.result(timeout=30)
    assert job_b.outputs()[-1][3] == msg
    assert b.predict(api_name="/train_stop") == msg  # a Stop with nothing running keeps the last line


def test_shipped_models_in_every_tab(server):
    c = _client(server)
    samples, loss, bar, status, *settings = c.predict("checkerboard-lsd", *SMALL, api_name="/load_pretrained")
    assert "loaded" in status and np.isfinite(_numbers(_fig(samples))).all()
    assert settings[-2:] == [32, 2]  # the checkpoint's width and depth
    fig, info, heat = c.predict("eight_gaussians-lsd", "custom", 1, "0, 0.4, 0.75, 1", 6, 1, api_name="/trajectories")
    fig, heat = _fig(fig), _fig(heat)
    assert any("exact velocity" in (t.name or "") for t in fig.data)
    assert heat.data[0].type == "heatmap" and np.isfinite(_numbers(heat)).all() and _numbers(heat).size > 10
    plot, table, summary, msg = c.predict("checkerboard-lsd", 500, api_name="/quality")
    plot = _fig(plot)
    assert msg == ""
    assert "**checkerboard-lsd**, flow map" in summary and "best ODE solve" in summary
    assert {t.name for t in plot.data} >= {"checkerboard-lsd: flow map", "checkerboard-lsd: dopri5"}
    assert "floor" in table.lower() and np.isfinite(_numbers(plot)).all()
    plot, table, summary, _ = c.predict(500, api_name="/quality_shipped")
    names = {t.name for t in _fig(plot).data}
    maps = [n for n in names if n.endswith(": flow map")]
    assert summary.startswith("**Who wins at which N**") if len(maps) > 1 else "flow map: " in summary
    assert {"checkerboard-lsd: flow map", "checkerboard-fm: heun"} <= names
    assert "checkerboard-fm: flow map" not in names  # flow matching is sampled with the ODE only
    image, info, fid = c.predict("fashion-mnist-lsd", 2, "uniform", "", 0, 3, "none", api_name="/sample_images")
    from PIL import Image

    with Image.open(image) as im:
        assert im.size[0] > 200 and im.size[1] > 3 * 28
    assert "N = 8 (uniform)" in info and "FID" in fid


@pytest.mark.parametrize(
    "api, args, refused_by, expected",
    [
        (
            "/train_start",
            ("checkerboard", None, None, LSD, 100, 0, 1e-3, 0.75, 32, 2, 0),
            ValidationError,
            "Batch size",
        ),
        (
            "/train_start",
            ("checkerboard", None, None, LSD, 100, 64, -1.0, 0.75, 32, 2, 0),
            ValidationError,
            "learning rate",
        ),
        ("/train_start", ("checkerboard", None, None, LSD, 100, 64, 1e-3, 1.0, 32, 2, 0), ValidationError, "eta"),
        (
            "/train_start",
            ("checkerboard", None, None, LSD, 100, 64, 1e-3, 0.75, 100_000, 2, 0),
            ValidationError,
            "Width",
        ),
        ("/train_start", ("draw", None, None, *SMALL), ValidationError, "drawing"),
        ("/train_start", ("mandelbrot", None, None, *SMALL), ValidationError, "Data set"),
        ("/train_start", ("csv", None, None, *SMALL), ValidationError, "CSV file"),
        ("/train_continue", ("checkerboard", *SMALL), ValidationError, "nothing to continue"),
        ("/train_start", ("checkerboard", None, None, *SMALL[:-1], 1.5), ValidationError, "seed: must be a whole"),
        ("/load_pretrained", ("checkerboard-lsd", LSD, 20, 64, 1e-3, 0.75, 32, 2, -1), ValidationError, "seed"),
        ("/trajectories", ("../../etc", "uniform", 2, "", 4, 0), ValidationError, "Model: "),
        ("/trajectories", ("__session__", "custom", 1, "0, 0.7, 0.3, 1", 4, 0), ValidationError, "custom times"),
        ("/trajectories", ("checkerboard-lsd", "custom", 1, "0, lots, 1", 4, 0), ValidationError, "not a number"),
        ("/trajectories", ("checkerboard-lsd", "custom", 1, "0.3, 1", 4, 0), ValidationError, "put 0 first"),
        ("/trajectories", ("checkerboard-lsd", "uniform", 2.5, "", 4, 0), ValidationError, "Flow-map steps N"),
        ("/trajectories", ("__session__", "uniform", 2, "", 4, 0), ValidationError, "no model yet"),
        ("/trajectories", ("checkerboard-lsd", "uniform", 2, "", 4, 1.5), ValidationError, "seed: must be a whole"),
        ("/sample_images", ("fashion-mnist-lsd", 2, "uniform", "", 1.5, 2, "none"), ValidationError, "seed: must"),
        ("/sample_images", ("fashion-mnist-lsd", 2, "custom", "1, 0", 0, 2, "none"), ValidationError, "custom times"),
        ("/sample_images", ("fashion-mnist-lsd", 2, "uniform", "", 0, 2.5, "none"), ValidationError, "Images: "),
        ("/sample_images", ("../x", 2, "uniform", "", 0, 2, "none"), ValidationError, "Image model: "),
        ("/quality", ("../x", 500), ValidationError, "Model: "),
        ("/quality", ("__session__", 500), ValidationError, "no model yet"),
        ("/quality", ("checkerboard-lsd", 1234.5), ValidationError, "Samples per point"),
        ("/quality_shipped", (750.5,), ValidationError, "Samples per point"),
    ],
)
def test_bad_input_gets_a_clear_message(server, api, args, refused_by, expected, capfd):
    """A bad request is refused with a message that names the field: every tab's events are
    refused by their validator before they run (gradio_client's ValidationError: an HTTP 422 that
    the page shows beside the field), so a mistake never reaches the plots."""
    c = _client(server)
    capfd.readouterr()
    with pytest.raises(refused_by) as err:
        c.predict(*args, api_name=api)
    assert expected in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)
    out, log = capfd.readouterr()  # the in-process server's output: a user's mistake is one log line
    assert "Traceback" not in out + log, (out + log)[-2000:]


def test_bad_uploads(server, tmp_path):
    c = _client(server)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,hello\n")
    with pytest.raises(ValidationError, match="CSV file: line 3"):  # refused beside the upload, before training
        c.predict("csv", None, handle_file(str(bad)), *SMALL, api_name="/train_start")
    big = tmp_path / "big.csv"
    big.write_text("1,2\n" * 20_000)  # 80 kB, above the server's 20 kB cap
    with pytest.raises(Exception, match="(?i)size|large|exceed"):
        c.predict("csv", None, handle_file(str(big)), *SMALL, api_name="/train_start")
    good = tmp_path / "good.csv"
    rng = np.random.default_rng(0)
    good.write_text("\n".join(f"{x:.4f},{y:.4f}" for x, y in rng.normal(size=(200, 2)) * [1.0, 0.2]))
    out = c.predict("csv", None, handle_file(str(good)), LSD, 20, 64, 1e-3, 0.75, 16, 1, 0, api_name="/train_start")
    assert "done" in out[3] and "csv" in out[3]
    # the server still answers after all this (Stop keeps the finished run's line)
    assert "**done**" in c.predict(api_name="/train_stop")
