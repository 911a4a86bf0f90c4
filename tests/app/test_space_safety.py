"""A public Space that strangers cannot break: visitors' memory comes back, hostile drawings are
refused before they are decoded, and no session can see another's cached results.

- The soak test runs ``python app.py`` as a subprocess on loopback (bench/soak_test.py): 40
  gradio_client visitors in 4 waves train, evaluate and leave (half close their tab, half go
  idle past a shortened idle time); every session must be freed, the server's RSS after the
  last departure must be within 100 MB of its RSS after the first wave arrived, and every
  visitor must see only its own results. (Before sessions were freed, the same run ended
  about 160 MB above the first wave, and no session was ever freed.)
- A small, highly compressible 8000 x 8000 PNG sent to the drawing pad through the API, as a
  file and as the browser's blob, gets a clear message, and the server grows by less than
  100 MB (it used to decode it: +1.5 GB).
- The quality cache keys a session by a token that is unique for the life of the process, so
  a session that reuses a freed session's ``id()`` does not get its results.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import socket
import struct
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import Limits
from app.datasets import toy_source
from app.drawing import check_image_size
from app.live import LiveSession
from app.quality import QualityCache, QualityResult, session_key, session_prefix
from app.sessions import SessionClosed, Sessions, SpaceFull
from app.validation import InputError, TrainSettings

LSD = "LSD (Lagrangian)"
# method, steps, batch, lr, eta, width, depth, seed
SMALL = (LSD, 20, 64, 3e-3, 0.75, 16, 1, 0)
TINY = TrainSettings(steps=5, batch=32, width=16, depth=1)


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensors(one_thread):
    """The in-process tests run tiny models: one torch thread (tests/conftest.py)."""
    yield


def _bench(name: str):
    return importlib.import_module(f"bench.{name}")


def flat_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG of any size, written without holding its pixels (a few kB for 8000 x 8000)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def drawing_png(size: int = 320) -> bytes:
    """A white canvas with a black ring, as the pad would send it."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), outline="black", width=12)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------ the soak
@pytest.mark.slow
def test_forty_visitors_arrive_train_evaluate_and_leave_in_waves():
    soak = _bench("soak_test")
    settings = soak.Settings()
    server = soak.launch(settings)
    try:
        result = soak.run_soak(server, waves=4, per_wave=10, settings=settings)
        log = server.log_text()
    finally:
        server.close()
    print()
    print(soak.report(result))
    problems = soak.check(result, rss_margin_mb=100.0)
    assert not problems, problems
    assert "Traceback" not in log, log[-3000:]


# ------------------------------------------------------------------------------ a server for the upload tests
@pytest.fixture(scope="module")
def server():
    load = _bench("load_test")
    env = {"FLOWMAPS_MAX_SESSIONS": "2", "GRADIO_HEARTBEAT_INTERVAL": "0.5", "FLOWMAPS_LOG_LEVEL": "INFO"}
    srv = load.launch(train_concurrency=2, env=env)
    yield srv
    srv.close()


def _client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def _upload(tmp_path: Path, name: str, data: bytes):
    from gradio_client import handle_file

    path = tmp_path / name
    path.write_bytes(data)
    return handle_file(str(path))


def _post_blob(server, component_id: int, blob_id: str, data: bytes, session_hash: str) -> int:
    """What the browser's sketch pad does: POST the canvas as a blob to the component server."""
    boundary = "flowmapsboundary"
    fields = {
        "session_hash": session_hash,
        "component_id": str(component_id),
        "fn_name": "accept_blobs",
        "type": "composite",
        "index": "null",
        "id": blob_id,
    }
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="blob"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        server.url + "gradio_api/component_server",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def _pad_id(server) -> int:
    with urllib.request.urlopen(server.url + "config", timeout=30) as r:
        config = json.load(r)
    return next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "draw-pad")


def test_a_huge_flat_png_on_the_drawing_pad_is_refused_before_decoding(server, tmp_path):
    from gradio_client.exceptions import ValidationError

    png = flat_png(8000, 8000)
    assert len(png) < 100_000  # small enough for any upload cap: only its decoded size is large
    c = _client(server)
    rss0, peak0 = server.memory_mb()
    pad = {"background": None, "layers": [], "composite": _upload(tmp_path, "bomb.png", png)}
    with pytest.raises(ValidationError) as err:
        c.predict("draw", pad, None, *SMALL, api_name="/train_start")
    text = str(err.value)  # refused from the PNG header before anything is decoded
    assert "drawing: the image is 8000 x 8000 pixels" in text and "at most 1280 x 1280" in text, text
    # the browser's way: the canvas as a blob, then the event names the blob
    assert _post_blob(server, _pad_id(server), "bomb-blob", png, c.session_hash) == 200
    blob = {"background": None, "layers": [], "composite": None, "id": "bomb-blob"}
    with pytest.raises(ValidationError) as err:
        c.predict("draw", blob, None, *SMALL, api_name="/train_start")
    assert "8000 x 8000 pixels" in str(err.value), str(err.value)
    # under the global cap but above what the canvas needs: refused by the pad's own rule
    pad = {"background": None, "layers": [_upload(tmp_path, "wide.png", flat_png(4000, 300))], "composite": None}
    with pytest.raises(ValidationError, match=r"drawing: the image is 4000 x 300 pixels; at most 1280 x 1280"):
        c.predict("draw", pad, None, *SMALL, api_name="/train_start")
    rss1, peak1 = server.memory_mb()
    print(f"server RSS {rss0:.0f} -> {rss1:.0f} MB, peak {peak0:.0f} -> {peak1:.0f} MB")
    assert rss1 - rss0 < 100 and peak1 - peak0 < 100
    # not an image at all, and a drawing of the canvas's own size (which trains)
    with pytest.raises(ValidationError, match="not a readable PNG"):
        pad = {"background": None, "layers": [], "composite": _upload(tmp_path, "text.png", b"x,y\n1,2\n")}
        c.predict("draw", pad, None, *SMALL, api_name="/train_start")
    good = _upload(tmp_path, "ring.png", drawing_png())
    pad = {"background": None, "layers": [], "composite": good}
    out = c.predict("draw", pad, None, *SMALL, api_name="/train_start")
    assert "done" in out[3] and "draw" in out[3]
    # the same ring as a blob: read by the event's validator, then by the event (gradio's pad
    # drops a blob once read, so the guard keeps it for the second read)
    assert _post_blob(server, _pad_id(server), "ring-blob", drawing_png(), c.session_hash) == 200
    blob = {"background": None, "layers": [], "composite": None, "id": "ring-blob"}
    out = c.predict("draw", blob, None, *SMALL, api_name="/train_start")
    assert "done" in out[3] and "draw" in out[3], out[3]
    c.close()


def test_input_mistakes_leave_one_line_and_no_traceback_in_the_server_log(server, tmp_path):
    from gradio_client.exceptions import ValidationError

    c = _client(server)
    before = server.log_text()
    bad = [
        ("checkerboard", None, None, LSD, 20, 0, 1e-3, 0.75, 16, 1, 0),  # batch 0 (gradio's slider check)
        ("checkerboard", None, None, LSD, 20, 64, -1.0, 0.75, 16, 1, 0),  # learning rate (the app's check)
        ("csv", None, _upload(tmp_path, "bad.csv", b"x,y\n1,2\n3,hello\n"), *SMALL),
        ("draw", None, None, *SMALL),
    ]
    for args in bad:
        with pytest.raises(ValidationError):
            c.predict(*args, api_name="/train_start")
    # a plotting tab's validator refuses a mistake beside its field, and keeps its last plot
    with pytest.raises(ValidationError, match="custom times"):
        c.predict("__session__", "custom", 1, "0, 0.7, 0.3, 1", 4, 0, api_name="/trajectories")
    time.sleep(0.5)
    new = server.log_text()[len(before) :]
    print(new)
    assert "Traceback" not in new
    refused = [line for line in new.splitlines() if "refused" in line]
    assert len(refused) == 5, new
    c.close()


def test_the_space_is_full_then_frees_a_place_when_a_tab_closes(server):
    from gradio_client.exceptions import AppError

    a, b, c = _client(server), _client(server), _client(server)
    for client, data in ((a, "rings"), (b, "two_moons")):
        out = client.predict(data, None, None, *SMALL, api_name="/train_start")
        assert "done" in out[3]
    with pytest.raises(AppError, match="the Space is full: 2 visitors") as err:
        c.predict("checkerboard", None, None, *SMALL, api_name="/train_start")
    assert "try again in a few minutes" in str(err.value).lower()
    a.close()  # a's tab closes: the unload event frees its place within a few heartbeats
    deadline = time.time() + 30
    while True:
        try:
            out = c.predict("checkerboard", None, None, *SMALL, api_name="/train_start")
            break
        except AppError as e:
            assert "full" in str(e) and time.time() < deadline, str(e)
            time.sleep(0.5)
    assert "done" in out[3] and "checkerboard" in out[3]
    assert "tab closed" in server.log_text()
    b.close()
    c.close()


# ------------------------------------------------------------------------------ without a server
def test_image_sizes_are_read_from_the_header():
    assert check_image_size(drawing_png(320), "drawing", 1280, 1280) == (320, 320)
    with pytest.raises(InputError, match=r"drawing: the image is 8000 x 8000 pixels; at most 1280 x 1280"):
        check_image_size(flat_png(8000, 8000), "drawing", 1280, 1280, "the canvas is 320 x 320")
    with pytest.raises(InputError, match="not a readable PNG"):
        check_image_size(b"GIF89a" + b"\x00" * 64, "drawing", 1280, 1280)
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    try:  # the global cap refuses from the header too, whatever the per-input limit
        Image.MAX_IMAGE_PIXELS = 1000
        with pytest.raises(InputError, match=r"the image \(10,000 pixels\) has more pixels than the server"):
            check_image_size(flat_png(100, 100), "drawing", 10**6, 10**6)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_nothing_updates_the_drawing_pad():
    """guard_drawing patches the pad instance: an event that updated the pad would give each
    session a fresh, unguarded copy, so no event may have it as an output."""
    from app import build_app

    demo = build_app(warm=False)
    pad = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "draw-pad")
    assert pad.preprocess.__name__ == "check" and getattr(pad.accept_blobs, "_is_server_fn", False)
    for fn in demo.fns.values():
        assert pad not in fn.outputs, fn.name


def test_the_cache_key_of_a_session_is_never_reused():
    """Two sessions with the same id() (the first freed before the second is made) get different
    keys; the old key (id and version) would have been the same, so the second would have been
    shown the first's curves."""

    def a_session_with_a_freed_id():
        freed = {}  # (id(), version) of a freed session -> its token
        for _ in range(1000):
            s = LiveSession()
            if (id(s), s.version) in freed:
                return s, freed[(id(s), s.version)], set(freed.values())
            freed[(id(s), s.version)] = s.token
            s.close()
            s = None  # the last reference: freed at once
        pytest.fail("no id() was reused in 1000 sessions: the scenario did not occur")

    s, first, tokens = a_session_with_a_freed_id()
    assert s.token != first and s.token not in tokens
    assert session_key(s.token, s.version) != session_key(first, s.version)
    s.start_fresh(toy_source("rings"), TINY)  # a model changes the version, never the token
    assert s.token not in tokens and session_key(s.token, s.version) != session_key(first, s.version)


def test_a_session_reusing_a_freed_id_sees_its_own_quality_curves(tmp_path):
    """End to end through the app's quality callback, as in a day of visitors: sessions train,
    evaluate and are freed one after another until a new one lands on a freed one's id() (with
    the same model version). Its curves must be its own: those an empty cache gives for its
    model, not the freed session's."""
    from app.config import AppConfig
    from app.ui import FlowMapsApp

    def app(cache: str) -> FlowMapsApp:
        return FlowMapsApp(AppConfig(checkpoints_dir=tmp_path / "none", cache_dir=tmp_path / cache, limits=Limits()))

    def metrics(session, fm) -> list[str]:
        table = list(fm.quality(session, "__session__", 500))[-1][1]
        return [r.split("|")[4] for r in table.splitlines() if r.startswith("| this session")]

    fm = app("cache")
    freed = {}  # id() of a freed session -> (its model version, its metrics)
    for i in range(80):
        s = LiveSession()
        s.start_fresh(toy_source("checkerboard"), TrainSettings(steps=5, batch=32, width=16, depth=1, seed=i))
        if id(s) in freed and freed[id(s)][0] == s.version:
            break
        freed[id(s)] = (s.version, metrics(s, fm))
        fm.sessions.close(s, "left")
        s = None  # the last reference: freed at once, its memory first in line for the next session
    else:
        pytest.fail("no session reused a freed id() in 80 visitors: the scenario did not occur")
    print(f"a freed id() came back at visitor {i}")
    mine = metrics(s, fm)
    assert mine == metrics(s, app("empty")), "a session was shown cached curves that are not its model's"
    assert mine != freed[id(s)][1]


# ------------------------------------------------------------------------------ the session registry
def test_sessions_are_capped_and_a_freed_place_is_given_again():
    reg = Sessions(max_live=2, idle_seconds=900)
    a, b, c = LiveSession(), LiveSession(), LiveSession()
    reg.admit(a)
    reg.admit(b)
    reg.admit(a)  # a session keeps its place
    with pytest.raises(SpaceFull, match=r"the Space is full: 2 visitors .* after 15 minutes without activity"):
        reg.admit(c)
    reg.close(b, "test")
    reg.admit(c)
    assert reg.live_count() == 2
    del a
    gc.collect()  # a session dropped by gradio without a callback gives its place back too
    assert reg.live_count() == 1


def test_closing_a_session_frees_its_model_trainer_and_cached_results():
    forgotten = []
    reg = Sessions(max_live=4, idle_seconds=60, on_close=lambda s: forgotten.append(s.token))
    s = LiveSession()
    reg.admit(s)
    s.start_fresh(toy_source("rings"), TINY)
    model = s.model
    import weakref

    ref = weakref.ref(model)
    del model
    with reg.using(s, "visitor-1"):
        assert not reg.expire(s), "an idle expiry must leave a session in use alone"
    assert s.has_model
    assert reg.leave("visitor-1")  # the tab closed (no grace period here)
    assert not s.has_model and s.trainer is None and s.data is None and forgotten == [s.token]
    gc.collect()
    assert ref() is None, "the model is still referenced after the session was freed"
    assert not reg.close(s, "again") and not reg.leave("visitor-1")  # once only
    idle = LiveSession()
    with reg.using(idle, "visitor-2"):
        pass
    assert reg.expire(idle) and "visitor-2" not in reg._visitors  # nothing kept for a freed session
    with pytest.raises(SessionClosed, match="reload the page"):
        with reg.using(s):
            pass
    with pytest.raises(InputError, match="ended"):
        s.start_fresh(toy_source("rings"), TINY)


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_a_closed_tab_is_freed_after_a_grace_period_unless_the_visitor_comes_back():
    reg = Sessions(max_live=4, idle_seconds=60, leave_grace=0.2)
    gone, back = LiveSession(), LiveSession()
    for i, s in enumerate((gone, back)):
        reg.admit(s)
        s.start_fresh(toy_source("rings"), TINY)
        with reg.using(s, f"visitor-{i}"):
            pass
    assert reg.leave("visitor-0") and reg.leave("visitor-1")
    with reg.using(back, "visitor-1"):  # a request within the grace period: the connection was re-opened
        pass
    assert _wait_for(lambda: gone.closed), "the session of a closed tab was not freed"
    assert _wait_for(lambda: reg.closed_count == 1) and not back.closed and back.has_model
    time.sleep(0.5)  # well past the grace period: still kept
    assert not back.closed and reg.live_count() == 1


def test_closing_stops_a_running_session():
    reg = Sessions(max_live=4, idle_seconds=60)
    s = LiveSession()
    s.start_fresh(toy_source("rings"), TINY)
    with s.run_lock:  # as the app's stream holds it
        run = s.run(10**6, max_seconds=60.0, chunk_seconds=0.05, first_chunk_seconds=0.05)
        next(run)
        next(run)
        assert not reg.expire(s), "an idle expiry must leave a training session alone"
        assert reg.close(s, "tab closed")
        states = [snap.state for snap in run]
    assert states and states[-1] == "stopped" and len(states) <= 2
    assert not s.has_model


def test_quality_cache_forgets_a_session():
    cache = QualityCache(None)
    res = QualityResult("m", 0.1)
    cache.put(session_key(7, 1) + "n500", res, persist=False)
    cache.put(session_key(7, 2) + "n500", res, persist=False)
    cache.put(session_key(70, 1) + "n500", res, persist=False)
    assert cache.forget(session_prefix(7)) == 2
    assert cache.get(session_key(70, 1) + "n500") is res and cache.get(session_key(7, 1) + "n500") is None


def test_idle_time_and_session_cap_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLOWMAPS_IDLE_SECONDS", "5")
    monkeypatch.setenv("FLOWMAPS_MAX_SESSIONS", "3")
    monkeypatch.setenv("FLOWMAPS_MAX_IMAGE_PIXELS", "1000000")
    lim = Limits.from_env()
    assert (lim.idle_seconds, lim.max_sessions, lim.max_image_pixels) == (5.0, 3, 1_000_000)
    assert Limits().idle_seconds == 900.0 and Limits().max_sessions == 48


def test_an_upload_cut_off_by_a_closed_page_logs_one_line_not_a_stack_trace(server):
    """A page closed mid-upload (the sketch pad's blob, a file box's file) cuts the request's body
    off: gradio's upload route raises starlette's ClientDisconnect, which uvicorn logged with its
    whole stack. The server log now holds one INFO line for it; the server goes on serving."""
    host, port = urllib.parse.urlsplit(server.url).hostname, urllib.parse.urlsplit(server.url).port
    before = server.log_text()
    head = (
        b'--cut\r\nContent-Disposition: form-data; name="files"; filename="pad.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG" + b"0" * 4096
    )
    with socket.create_connection((host, port), timeout=10) as sock:  # promises 1 MB, sends 4 kB, goes
        sock.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=cut\r\nContent-Length: 1000000\r\n\r\n" + head
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 20
    while "cut off by its page" not in server.log_text()[len(before) :] and time.monotonic() < deadline:
        time.sleep(0.2)
    new = server.log_text()[len(before) :]
    assert "cut off by its page" in new, new[-2000:]
    assert "Traceback" not in new and "ClientDisconnect" not in new, new[-3000:]
    with urllib.request.urlopen(server.url + "config", timeout=30) as r:
        assert r.status == 200


def test_the_idle_server_polls_gradios_queue_every_20_ms_not_every_1_ms():
    """gradio's queue polls every 1 ms for an event to start and every 10 ms for progress to send
    while it has none; on a shared 2-core Space that is 8 % of a core with no visitor
    (bench/idle_cpu.py). The app's queue, as built, polls every QUEUE_POLL_SECONDS; a queue without
    those attributes (another gradio) is left as it is and said so by the return value."""
    from types import SimpleNamespace

    from app import build_app
    from app.ui import QUEUE_POLL_SECONDS, slow_idle_polling

    queue = build_app(warm=False)._queue
    assert queue.sleep_when_free == queue.progress_update_sleep_when_free == QUEUE_POLL_SECONDS == 0.02
    other = SimpleNamespace(_queue=SimpleNamespace(sleep_when_free=0.001))  # no progress sleep
    assert slow_idle_polling(other) is False and other._queue.sleep_when_free == 0.001
    slower = SimpleNamespace(_queue=SimpleNamespace(sleep_when_free=0.1, progress_update_sleep_when_free=0.01))
    assert slow_idle_polling(slower) is True and slower._queue.sleep_when_free == 0.1  # never made faster
