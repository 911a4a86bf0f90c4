"""The app in a real browser: Debian's chromium driven by playwright against `python app.py`.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

One test walks the four tabs the way a user would and checks what the page shows:

* **Train live**: Start is in view on a 1280 x 720 screen; checkerboard + LSD (the defaults),
  Start; the sample plot's points move between two refreshes while the step counter grows;
  Stop halts the counter and the status ends "stopped · ... · step N" (never a late
  "stopping"); a stroke on the drawing pad (its brush picked for it) trains on the drawing.
* **Flow map vs ODE**: the shipped LSD checkerboard model; trajectories and jumps are drawn.
* **Steps vs quality**: the shipped checkerboard models side by side; the curves and the table
  arrive.
* **Images**: the shipped Fashion-MNIST LSD flow map at 1 step (4 images) and at 8 steps
  (8 images): a picture appears, then a wider one, and the info names the time per image.
  A bad custom grid (``0, 0.7, 0.5, 1``, not increasing) is refused beside the custom times,
  the picture kept, and no traceback anywhere in the page.

Other tests make the "Flow map vs ODE" and Images tabs' input mistakes (a fraction typed into a
slider of whole steps, a bad custom grid): each is named beside its field, the plots from before
kept; a lesson of the "Flow map vs ODE" tab leaves the custom times a user typed. Another makes
the live and race tabs' input mistakes (Start with nothing drawn, a race with
no family, a number typed beyond a slider's range, then a fraction in that slider) and checks that
each is named beside its field, with no error badge and the last plot kept.

Uncaught JavaScript errors fail the test. With ``FLOWMAPS_SCREENSHOTS=1`` it also writes a
full-page PNG of each tab after its main action to ``docs/screenshots/`` (otherwise it writes
nothing in the tree). Skipped only where ``/usr/bin/chromium`` is missing; scripts/test.sh
installs it. Never run ``playwright install``: the browser is Debian's.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import REPO

ROOT = REPO
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "docs" / "screenshots"
TAKE_SHOTS = os.environ.get("FLOWMAPS_SCREENSHOTS", "") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
LSD_CHECKERBOARD = "checkerboard-lsd"
IMAGE_MODEL = "fmnist-lsd"
BAD_GRID = "0, 0.7, 0.5, 1"


def _slow(ms: int) -> int:
    """A wait's limit in milliseconds, stretched on a loaded machine (CI and Spaces share their
    cores): times the 1-minute load average per core, between 1 and 4. Only how long a wait may
    last changes; what the page must show does not."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return int(ms * min(4.0, max(1.0, per_core)))


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (scripts/test.sh installs it)"),
]

# A compact fingerprint of the points plotly drew: count and a 32-bit hash of their positions.
POINTS_JS = """el => {
  const pts = el.querySelectorAll('.scatterlayer path.point');
  let h = 0;
  for (const p of pts) {
    const s = p.getAttribute('transform') || '';
    for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
  }
  return [pts.length, h];
}"""
# Line traces plotly drew (paths with data), e.g. loss curves or trajectories.
LINES_JS = (
    "el => Array.from(el.querySelectorAll('.scatterlayer path.js-line'))"
    ".filter(p => (p.getAttribute('d') || '').length > 10).length"
)
STEP_RE = re.compile(r"step (\d+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> Iterator[str]:
    """`python app.py` in a subprocess, as a user starts it; its own empty result cache."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("app") / "app.log"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "FLOWMAPS_APP_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer within 90 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def browser_page(app_url):
    """A fresh headless chromium page (a new temporary profile per launch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT)
        pg = context.new_page()
        pg.set_default_timeout(_slow(60_000))
        errors: list[str] = []
        pg.on("pageerror", lambda err: errors.append(str(err)))
        pg.goto(app_url)
        pg.wait_for_selector("#btn-start")
        yield pg, errors
        context.close()
        browser.close()


# ------------------------------------------------------------------------------ helpers
def _shot(page, name: str) -> None:
    if TAKE_SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(500)  # let plotly finish its transition
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _tab(page, name: str) -> None:
    page.click(f"#tab-{name}-button")
    page.wait_for_selector(f"#tab-{name}", state="visible")


def _choose(page, elem_id: str, label: str) -> None:
    """Pick the option of a gr.Dropdown whose visible label starts with ``label``."""
    page.click(f"#{elem_id} input")
    page.locator("ul[role=listbox] li[role=option]", has_text=label).first.click()
    value = page.locator(f"#{elem_id} input").input_value()
    assert value.startswith(label), (elem_id, value)


def _set_number(page, elem_id: str, value: float) -> None:
    """Type a value into a slider's number box (as a user does) and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()
    assert float(box.input_value()) == float(value), (elem_id, box.input_value())


def _stroke(page, at: tuple[float, float]) -> None:
    """Wait until the drawing pad's brush is picked, then draw one stroke from ``at`` (fractions of
    the canvas's width and height) down and to the right."""
    page.wait_for_function(
        "() => { const b = document.querySelector('#draw-pad button[aria-label=\"Brush\"]');"
        " return b && b.classList.contains('highlight'); }",
        timeout=_slow(20_000),
    )
    canvas = page.locator("#draw-pad canvas").first
    canvas.scroll_into_view_if_needed()  # the mouse draws at page coordinates: off screen, nothing lands
    box = canvas.bounding_box()
    x0, y0 = box["x"] + at[0] * box["width"], box["y"] + at[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(20):
        page.mouse.move(x0 + 5 * k, y0 + 3 * k)
    page.mouse.up()


def _just_under(page, above: str, below: str) -> None:
    """``below`` is shown right under ``above``, across the same width (a slider and its note)."""
    a, b = page.locator(above).bounding_box(), page.locator(below).bounding_box()
    assert a and b and abs(b["y"] - (a["y"] + a["height"])) <= 2, (a, b)
    assert abs(b["x"] - a["x"]) <= 2 and abs(b["width"] - a["width"]) <= 2, (a, b)


def _above_label(page, field: str) -> None:
    """The validation message shown in ``field`` sits above the field's label, leaving it readable."""
    message = page.locator(f"{field} .validation-error").bounding_box()
    label = page.locator(f"{field} [data-testid=block-info]").first.bounding_box()
    assert message and label and message["y"] + message["height"] <= label["y"] + 1, (message, label)


def _fits_on_a_phone(page, inner: str, outer: str) -> None:
    """On a phone's screen (360 px wide, the narrowest common one; a 390 px phone with a scrollbar
    is as wide), ``inner`` (e.g. a plot's placeholder text) lies wholly inside ``outer``: nothing of
    it is cut off. The page's own size is restored after."""
    page.set_viewport_size({"width": 360, "height": 900})
    try:
        page.wait_for_timeout(800)  # plotly redraws at the new width
        _inside(page, inner, outer)
    finally:
        page.set_viewport_size(VIEWPORT)
        page.wait_for_timeout(800)


def _inside(page, inner: str, outer: str) -> None:
    """``inner`` lies wholly inside ``outer`` (both CSS selectors, their first match)."""
    a, b = page.locator(inner).first.bounding_box(), page.locator(outer).first.bounding_box()
    assert a and b and a["width"] > 0, (a, b)
    assert b["x"] <= a["x"] and a["x"] + a["width"] <= b["x"] + b["width"], (a, b)
    assert b["y"] <= a["y"] and a["y"] + a["height"] <= b["y"] + b["height"], (a, b)


def _type_number(page, elem_id: str, value: str) -> None:
    """Type ``value`` into a slider's number box as a user does (Enter, then leave the box)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")
    box.blur()


def _no_error_badge(page, *outputs: str) -> None:
    """No output shows gradio's red "Error" badge (what an event that fails leaves there)."""
    for out in outputs:
        assert page.locator(f"{out} .error").count() == 0, out
        assert "Error" not in page.inner_text(out), (out, page.inner_text(out))


def _step(page) -> int:
    m = STEP_RE.search(page.inner_text("#live-status"))
    return int(m.group(1)) if m else -1


def _quality_done(page, timeout_ms: int) -> None:
    """Wait until the quality tab's evaluation has sent its last update: a summary without
    "computing" and no pending plot."""
    page.wait_for_function(
        "() => { const t = document.querySelector('#q-summary').innerText.trim();"
        " return t.length > 0 && !t.includes('computing')"
        " && !document.querySelector('#plot-quality .pending, #plot-quality .generating'); }",
        timeout=_slow(timeout_ms),
    )


def _no_traceback(page) -> None:
    text = page.inner_text("body")
    assert "Traceback" not in text and 'File "' not in text, text[-2000:]


# ------------------------------------------------------------------------------ the test
def test_browser_walkthrough(browser_page):
    page, js_errors = browser_page
    t_start = time.monotonic()

    # ---- train live: on a 1280 x 720 laptop screen Start is in view without scrolling
    page.set_viewport_size({"width": 1280, "height": 720})
    box = page.locator("#btn-start").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 720, box
    page.set_viewport_size(VIEWPORT)
    # checkerboard + LSD are the defaults
    assert page.locator("#data-set input").input_value() == "checkerboard"
    assert page.locator("#method input").input_value().startswith("LSD")
    samples = page.locator("#plot-samples")
    assert samples.evaluate(POINTS_JS)[0] == 0  # an empty placeholder before Start
    _fits_on_a_phone(page, "#plot-samples .annotation-text", "#plot-samples .js-plotly-plot")
    t_click = time.monotonic()
    page.click("#btn-start")
    page.wait_for_function(
        "() => /training/.test(document.querySelector('#live-status').innerText) "
        "&& /step [1-9]/.test(document.querySelector('#live-status').innerText)",
        timeout=_slow(20_000),
    )
    # the data and four sample panels drawn (plotly draws just after the status text changes)
    page.wait_for_function(f"el => ({POINTS_JS})(el)[0] > 1000", arg=samples.element_handle(), timeout=_slow(20_000))
    first_plot = time.monotonic() - t_click
    print(f"\nbrowser: Start until the first sample plot is drawn: {first_plot:.2f} s")
    # No timed assert: the latency is measured by bench/app_latency.py (docs/app_latency.md).
    first = samples.evaluate(POINTS_JS)[1]
    step_first = _step(page)
    # the next refresh (about a second later) must move the samples and advance the steps
    page.wait_for_function(
        f"([el, h]) => ({POINTS_JS})(el)[1] !== h",
        arg=[samples.element_handle(), first],
        timeout=_slow(20_000),
    )
    # the status line is a separate output: it may be drawn a moment after the plot
    page.wait_for_function(
        "(s) => { const m = /step (\\d+)/.exec(document.querySelector('#live-status').innerText);"
        " return m && +m[1] > s; }",
        arg=step_first,
        timeout=_slow(20_000),
    )
    assert page.locator("#plot-loss").evaluate(LINES_JS) >= 1
    assert "steps/s" in page.inner_text("#live-progress")
    if TAKE_SHOTS:  # about half a minute more, so the board takes shape
        page.wait_for_function(
            "() => { const m = /step (\\d+)/.exec(document.querySelector('#live-status').innerText);"
            " return m && +m[1] >= 4000; }",
            timeout=_slow(110_000),
        )
    _shot(page, "train")
    page.click("#btn-stop")
    # Stop's answer and the run's last update carry the same line, whichever arrives last
    page.wait_for_function(
        "() => /stopped · LSD on checkerboard · step \\d+/.test(document.querySelector('#live-status').innerText)",
        timeout=_slow(20_000),
    )
    stopped_at = _step(page)
    assert stopped_at > step_first
    page.wait_for_timeout(1500)
    status = page.inner_text("#live-status")
    assert status.strip().startswith("stopped · ") and _step(page) == stopped_at, status  # not "stopping"
    assert f"stopped: step {stopped_at} of" in page.inner_text("#live-progress")
    _no_traceback(page)

    # ---- the drawing pad takes strokes at once (its brush is picked when it is shown)
    _choose(page, "data-set", "draw")
    canvas = page.locator("#draw-pad canvas").first
    canvas.wait_for(state="visible")
    _stroke(page, at=(0.3, 0.3))
    page.click("#btn-start")
    page.wait_for_function(
        "() => /LSD on draw · step [1-9]/.test(document.querySelector('#live-status').innerText)", timeout=_slow(30_000)
    )
    page.click("#btn-stop")
    page.wait_for_function(
        "() => /stopped · LSD on draw · step \\d+/.test(document.querySelector('#live-status').innerText)",
        timeout=_slow(20_000),
    )
    _no_traceback(page)

    # ---- flow map vs ODE: the shipped LSD checkerboard model
    _tab(page, "compare")
    _choose(page, "cmp-model", LSD_CHECKERBOARD)
    page.click("#btn-trajectories")
    page.wait_for_function(
        "() => document.querySelector('#cmp-info').innerText.includes('checkerboard-lsd')", timeout=_slow(30_000)
    )
    page.wait_for_function(f"() => ({LINES_JS})(document.querySelector('#plot-trajectories')) >= 10")
    _shot(page, "compare")

    # ---- steps vs quality: the shipped checkerboard models side by side
    _tab(page, "quality")
    _set_number(page, "q-samples", 2000 if TAKE_SHOTS else 500)
    accordion = page.locator("#tab-quality .gr-accordion .label-wrap")
    accordion.click()  # open "The numbers": gradio renders its table only while it is open
    page.click("#btn-quality-shipped")
    page.wait_for_function(
        "() => { const t = document.querySelector('#q-table'); return t && t.querySelector('table')"
        " && !t.innerText.includes('computing'); }",
        timeout=_slow(120_000),
    )
    table = page.inner_text("#q-table")
    for name in ("checkerboard-lsd", "checkerboard-esd", "checkerboard-psd-m", "checkerboard-fm"):
        assert name in table, name
    assert "Floor" in table
    assert page.locator("#plot-quality").evaluate(LINES_JS) >= 4
    summary = page.inner_text("#q-summary")  # above the plot, outside the accordion
    assert "Who wins at which N" in summary and "N = 1:" in summary and "N = 8:" in summary, summary
    accordion.click()  # closed again: the screenshot shows the plot
    _shot(page, "quality")

    # ---- images: 1 step, then 8 steps
    _tab(page, "images")
    # The page's load-time refresh of the shipped models keeps the dropdown on the first flow map
    # (it used to reset it to the first name, the flow-matching baseline).
    assert page.locator("#img-model input").input_value().startswith(IMAGE_MODEL)
    _choose(page, "img-model", IMAGE_MODEL)
    image = page.locator("#img-output img")
    sizes = []
    for steps, count in ((1, 4), (8, 8)):
        before = image.get_attribute("src") if image.count() else None
        _set_number(page, "img-steps", steps)
        _set_number(page, "img-count", count)
        page.click("#btn-images")
        page.wait_for_function(
            "(before) => { const i = document.querySelector('#img-output img');"
            " return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src') !== before; }",
            arg=before,
            timeout=_slow(60_000),
        )
        sizes.append(image.evaluate("i => [i.naturalWidth, i.naturalHeight]"))
        info = page.inner_text("#img-info")
        assert "ms per image" in info, info
        assert re.search(r"N = 1 \(uniform\)\s+1\s+\d+(\.\d+)?", info), info
        assert re.search(r"N = 8 \(uniform\)\s+8\s+\d+(\.\d+)?", info), info
        assert "ODE heun" in info, info
        assert "FID" in page.inner_text("#img-fid")
    # twice the images per row: a wider picture, same rows
    assert sizes[1][0] > sizes[0][0] and sizes[1][1] == sizes[0][1], sizes
    _shot(page, "images")

    # ---- a bad grid: the reason beside the custom times, the picture stays; no traceback
    last_good = image.get_attribute("src")
    _choose(page, "img-grid", "custom")
    page.locator("#img-times textarea").fill(BAD_GRID)
    page.click("#btn-images")
    message = page.locator("#img-times div.validation-error")
    message.wait_for(timeout=_slow(30_000))
    assert "increas" in message.inner_text() and "partial" not in message.inner_text(), message.inner_text()
    assert image.get_attribute("src") == last_good  # the last good picture is kept
    _no_traceback(page)
    assert page.locator("#btn-images").is_visible()

    assert not js_errors, js_errors
    print(f"browser: the walk-through took {time.monotonic() - t_start:.1f} s")


def test_browser_race(browser_page):
    """The race tab: Race, the table refreshes while the families train, Stop ends it with a
    winner sentence, and the table holds every family at every N."""
    page, js_errors = browser_page
    _tab(page, "race")
    page.click("#race-start")
    page.wait_for_function(
        "() => /racing/.test(document.querySelector('#race-status').innerText)"
        " && /PSD-M/.test(document.querySelector('#race-table').innerText)",
        timeout=_slow(60_000),
    )
    page.wait_for_selector(
        "#race-samples .js-plotly-plot", timeout=_slow(60_000)
    )  # a first sample round, on a busy CPU
    page.click("#race-stop")
    page.wait_for_function(
        "() => /stopped/.test(document.querySelector('#race-status').innerText)"
        " && /Lowest checkerboard KL/.test(document.querySelector('#race-status').innerText)",
        timeout=_slow(30_000),
    )
    table = page.inner_text("#race-table")
    for name in ("LSD", "ESD", "PSD-M", "FM (Euler)", "exact samples (floor)"):
        assert name in table, table
    for n in (1, 2, 4, 8):
        assert f"N = {n}" in table and f"N = {n}:" in page.inner_text("#race-status")
    _shot(page, "race")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_input_mistakes_show_beside_the_field(browser_page):
    """Input mistakes in the live and race tabs: the message beside the field (gradio's validator),
    the last good plot kept, no error badge on the progress bar; a number typed beyond a slider's
    range is named in a note just under the slider with the value the page kept, after which the
    same slider still refuses a fraction under its own label."""
    page, js_errors = browser_page
    samples = page.locator("#plot-samples")
    page.click("#btn-load")  # a shipped model: the samples plot at once, without training
    page.wait_for_function(f"el => ({POINTS_JS})(el)[0] > 1000", arg=samples.element_handle(), timeout=_slow(30_000))
    page.wait_for_function("() => /loaded/.test(document.querySelector('#live-status').innerText)")
    drawn, bar = samples.evaluate(POINTS_JS), page.inner_text("#live-progress")

    # ---- draw, nothing drawn, Start: the reason on the pad, the plot and the bar as they were
    _choose(page, "data-set", "draw")
    page.locator("#draw-pad canvas").first.wait_for(state="visible")
    page.click("#btn-start")
    message = page.locator("#data-set .validation-error")  # on the data set choice, clear of the pad
    message.wait_for(timeout=_slow(20_000))
    assert re.search(r"drawing: .*draw a shape", message.inner_text()), message.inner_text()
    _above_label(page, "#data-set")
    page.wait_for_timeout(1000)  # anything still on its way lands
    assert page.locator("#live-progress .error").count() == 0  # no red "Error" badge
    assert page.inner_text("#live-progress") == bar and "loaded" in page.inner_text("#live-status")
    assert samples.evaluate(POINTS_JS) == drawn  # the last good plot, point for point

    # ---- a number above a slider's range: the page clamps it on blur, and a note under the slider says so
    note = page.locator("#steps-note")
    assert not note.is_visible()  # nothing to say: no note, and no gap for one
    box = page.locator("#steps input[type=number]")
    box.fill("99999")
    box.blur()
    note.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#steps-note').innerText.includes('the slider set it to')")
    kept = re.search(
        r"Steps per run: 99999 is outside the allowed range \[10, (\d+)\]; the slider set it to (\d+)",
        note.inner_text(),
    )
    assert kept and kept.group(1) == kept.group(2) == box.input_value(), note.inner_text()
    _just_under(page, "#steps", "#steps-note")

    # ---- the pad still takes strokes under the message; a good Start clears it and trains
    _stroke(page, at=(0.3, 0.4))
    page.click("#btn-start")
    page.wait_for_function(
        "() => /LSD on draw · step [1-9]/.test(document.querySelector('#live-status').innerText)", timeout=_slow(30_000)
    )
    # a run that starts clears the message: gradio drops it on the run's first reply and redraws the
    # field on a later frame, which a loaded browser may paint after the status line, so wait for it
    message.wait_for(state="detached", timeout=_slow(15_000))
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")

    # ---- after a note, the same slider still names a fraction by its label (the note never updates
    # the slider: gradio would give the session a plain slider, and the settings check would say "depth")
    box = page.locator("#depth input[type=number]")
    box.fill("99999")
    box.blur()
    page.wait_for_function("() => /the slider set it to/.test(document.querySelector('#depth-note')?.innerText)")
    _just_under(page, "#depth", "#depth-note")
    _type_number(page, "depth", "2.5")
    page.click("#btn-start")
    message = page.locator("#depth .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert message.inner_text().startswith("Hidden layers: 2.5 is not a whole number"), message.inner_text()
    _above_label(page, "#depth")
    _type_number(page, "depth", "4")
    page.wait_for_function("() => !document.querySelector('#depth-note')?.checkVisibility()")  # said, then gone

    # ---- a race with no family picked: the reason beside the families, nothing raced
    _tab(page, "race")
    for checkbox in page.locator("#race-families input[type=checkbox]").all():
        if checkbox.is_checked():
            checkbox.click()
    page.click("#race-start")
    message = page.locator("#race-families .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert "families: pick at least one" in message.inner_text(), message.inner_text()
    _above_label(page, "#race-families")
    assert page.locator("#race-progress .error").count() == 0 and page.inner_text("#race-table").strip() == ""
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_a_lesson_leaves_the_race_fields_checks(browser_page):
    """A race lesson's click fills the fields with updates, after which gradio gives the session
    its own copies of them; the copies keep the fields' checks: a fraction typed into the steps
    slider is refused beside it under its own label (not the race's own wording), nothing raced."""
    page, js_errors = browser_page
    _tab(page, "race")
    page.click("#race-examples [data-testid=dataset-cell-1-0]")  # the eight_gaussians lesson
    page.wait_for_function("() => document.querySelector('#race-data input').value === 'eight_gaussians'")
    _type_number(page, "race-steps", "1550.5")
    page.click("#race-start")
    message = page.locator("#race-steps .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert message.inner_text().startswith("steps per family: 1550.5 is not a whole number"), message.inner_text()
    assert page.inner_text("#race-table").strip() == ""
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_a_race_stop_with_no_race_leaves_the_page_working(browser_page):
    """Stop on the race tab with no race running answers without harm: Start on the live tab then
    trains in the same browser session (live samples drawn, no error anywhere in the page). A race
    pressed meanwhile is refused beside the families; after the live run's Stop that refusal is
    no longer shown."""
    page, js_errors = browser_page
    _tab(page, "race")
    page.click("#race-stop")
    page.wait_for_timeout(1000)  # Stop's answer lands
    _tab(page, "train")
    page.click("#btn-start")
    samples = page.locator("#plot-samples")
    page.wait_for_function(f"el => ({POINTS_JS})(el)[0] > 1000", arg=samples.element_handle(), timeout=_slow(30_000))
    page.wait_for_function(
        "() => /training · LSD on checkerboard · step [1-9]/.test(document.querySelector('#live-status').innerText)",
        timeout=_slow(30_000),
    )
    # a race while the live run goes: refused, saying where to stop it; once stopped, the refusal
    # no longer shows (gradio would keep it above the families until their next event)
    _tab(page, "race")
    page.click("#race-start")
    busy = page.locator("#race-families .validation-error")
    busy.wait_for(timeout=_slow(20_000))
    assert busy.inner_text().startswith("this session is training live"), busy.inner_text()
    _tab(page, "train")
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    _tab(page, "race")
    busy.wait_for(state="hidden", timeout=_slow(10_000))
    assert "failed" not in page.inner_text("body") and page.locator("[data-testid=toast-body]").count() == 0
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_compare_mistake_beside_the_field_and_lessons_keep_custom_times(browser_page):
    """Flow map vs ODE: the heat map's placeholder fits in its plot on a phone, before the first draw
    and after a draw of a model without a Gaussian mixture. After a first draw, a fraction
    typed into the whole-number steps slider is refused beside the slider (gradio's validator),
    with no error badge and the plots from before kept, point for point. A one-click lesson on a
    uniform grid then draws, and leaves the custom times the user typed in their box."""
    page, js_errors = browser_page
    _tab(page, "compare")
    _fits_on_a_phone(page, "#plot-error .annotation-text", "#plot-error .js-plotly-plot")
    page.click("#btn-trajectories")
    page.wait_for_function(
        "() => /network evaluations/.test(document.querySelector('#cmp-info').innerText)", timeout=_slow(60_000)
    )
    page.wait_for_function(f"() => ({LINES_JS})(document.querySelector('#plot-trajectories')) >= 10")
    page.wait_for_selector("#plot-error .heatmaplayer image")
    traj = page.locator("#plot-trajectories")
    drawn, info = traj.evaluate(POINTS_JS), page.inner_text("#cmp-info")
    assert drawn[0] > 0

    _type_number(page, "cmp-steps", "2.5")
    page.click("#btn-trajectories")
    message = page.locator("#cmp-steps .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert message.inner_text().startswith("Flow-map steps N: 2.5 is not a whole number"), message.inner_text()
    _above_label(page, "#cmp-steps")
    page.wait_for_timeout(1000)  # anything still on its way lands
    _no_error_badge(page, "#plot-trajectories", "#cmp-info", "#plot-error")
    assert traj.evaluate(POINTS_JS) == drawn and page.inner_text("#cmp-info") == info  # the plots from before
    assert page.locator("#plot-error .heatmaplayer image").count() == 1

    # ---- a lesson on a uniform grid: it fills the fields and draws; the typed custom times stay
    times = page.locator("#cmp-times textarea")
    times.fill("0, 0.2, 1")
    page.locator("#cmp-examples button.gallery-item").first.click()  # "one jump against the exact map"
    page.wait_for_function(
        "() => /the flow map took 1\\./.test(document.querySelector('#cmp-info').innerText)", timeout=_slow(60_000)
    )
    assert page.locator("#cmp-steps input[type=number]").input_value() == "1"
    message.wait_for(state="detached", timeout=_slow(15_000))  # the lesson's good draw clears the message
    assert times.input_value() == "0, 0.2, 1"

    # ---- a model without a Gaussian mixture: no heat map, and a sentence that says why, whole
    _choose(page, "cmp-model", LSD_CHECKERBOARD)
    page.click("#btn-trajectories")
    page.wait_for_function(
        "() => document.querySelector('#cmp-info').innerText.includes('checkerboard-lsd')", timeout=_slow(60_000)
    )
    page.wait_for_selector("#plot-error .annotation-text")
    assert "Gaussian-mixture data" in page.inner_text("#plot-error")
    _fits_on_a_phone(page, "#plot-error .annotation-text", "#plot-error .js-plotly-plot")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_images_mistake_beside_the_field_keeps_the_picture(browser_page):
    """Images: after a first picture, a fraction typed into the whole-number Images slider is
    refused beside the slider, then a bad custom grid beside the custom times (gradio's
    validator); no error badge, and the picture and its table from before stay."""
    page, js_errors = browser_page
    _tab(page, "images")
    _set_number(page, "img-steps", 1)
    _set_number(page, "img-count", 2)
    page.click("#btn-images")
    page.wait_for_function(
        "() => { const i = document.querySelector('#img-output img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=_slow(60_000),
    )
    page.wait_for_function("() => /ms per image/.test(document.querySelector('#img-info').innerText)")
    image = page.locator("#img-output img")
    last_good, info = image.get_attribute("src"), page.inner_text("#img-info")

    _type_number(page, "img-count", "2.5")
    page.click("#btn-images")
    message = page.locator("#img-count .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert message.inner_text().startswith("Images: 2.5 is not a whole number"), message.inner_text()
    _above_label(page, "#img-count")
    page.wait_for_timeout(1000)
    _no_error_badge(page, "#img-output", "#img-info")
    assert image.get_attribute("src") == last_good and page.inner_text("#img-info") == info

    _type_number(page, "img-count", "2")
    _choose(page, "img-grid", "custom")
    page.locator("#img-times textarea").fill(BAD_GRID)
    page.click("#btn-images")
    grid_message = page.locator("#img-times div.validation-error")
    grid_message.wait_for(timeout=_slow(20_000))
    assert grid_message.inner_text().startswith("custom times: "), grid_message.inner_text()
    assert "increas" in grid_message.inner_text() and message.count() == 0  # one message, beside its field
    page.wait_for_timeout(1000)
    _no_error_badge(page, "#img-output", "#img-info")
    assert image.get_attribute("src") == last_good and page.inner_text("#img-info") == info
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_quality_mistake_beside_the_field_keeps_the_plot(browser_page):
    """Steps vs quality: after a first evaluation, a fraction typed into the samples slider is
    refused beside the slider by both buttons (gradio's validator; "Compare the shipped models"
    has that slider as its only input); no error badge, and the plot and its summary stay."""
    page, js_errors = browser_page
    _tab(page, "quality")
    _set_number(page, "q-samples", 500)
    page.click("#btn-quality")
    page.wait_for_function(
        f"el => ({LINES_JS})(el) > 0",
        arg=page.locator("#plot-quality .js-plotly-plot").first.element_handle(timeout=_slow(90_000)),
        timeout=_slow(90_000),
    )
    # the evaluation streams its curves with "computing..." in the summary; wait for its last
    # update (a button's click is ignored while its event runs, so clicking earlier tests nothing)
    _quality_done(page, 90_000)
    summary = page.inner_text("#q-summary")
    for button in ("#btn-quality", "#btn-quality-shipped"):
        _type_number(page, "q-samples", "750.5")
        page.click(button)
        message = page.locator("#q-samples .validation-error")
        message.wait_for(timeout=_slow(20_000))
        assert message.inner_text().startswith("Samples per point: 750.5 is not a whole number"), message.inner_text()
        _above_label(page, "#q-samples")
        page.wait_for_timeout(1000)
        _no_error_badge(page, "#plot-quality", "#q-summary", "#q-message")
        assert page.inner_text("#q-summary") == summary
        _type_number(page, "q-samples", "500")
        message.wait_for(state="hidden", timeout=_slow(20_000))
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_a_second_evaluation_in_a_page_is_refused_until_the_first_ends(browser_page):
    """Steps vs quality: "Evaluate this model" pressed while the shipped comparison still computes
    is refused beside the model with what to wait for (both would write the same plot, and the
    second would show nothing until the first ended); once the comparison is done it runs."""
    page, js_errors = browser_page
    _tab(page, "quality")
    # a sample count no other test uses: the app caches each comparison, and a cached one never computes
    _set_number(page, "q-samples", 1000)
    page.click("#btn-quality-shipped")
    page.wait_for_function(
        "() => document.querySelector('#q-summary').innerText.includes('computing')", timeout=_slow(90_000)
    )
    page.click("#btn-quality")
    message = page.locator("#q-model .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert "already computing in this page" in message.inner_text().lower(), message.inner_text()
    _quality_done(page, 180_000)
    shipped = page.inner_text("#q-summary")
    page.click("#btn-quality")
    message.wait_for(state="hidden", timeout=_slow(20_000))
    page.wait_for_function(
        "s => { const t = document.querySelector('#q-summary').innerText.trim();"
        " return t.length > 0 && t !== s && !t.includes('computing'); }",
        arg=shipped,
        timeout=_slow(120_000),
    )
    _no_error_badge(page, "#plot-quality", "#q-summary", "#q-message")
    _no_traceback(page)
    assert not js_errors, js_errors


# Each tab's main button on a fresh page, nothing else touched: the tab must open on a shipped
# model and draw on the first click (no error badge, no traceback, no JavaScript error).
FIRST_CLICKS = {
    "compare": ("#btn-trajectories", "#plot-trajectories"),
    "quality": ("#btn-quality", "#plot-quality"),
    "images": ("#btn-images", "#img-output"),
}


@pytest.mark.parametrize("tab", sorted(FIRST_CLICKS))
def test_browser_first_click_on_a_fresh_page(browser_page, tab):
    page, js_errors = browser_page
    button, output = FIRST_CLICKS[tab]
    _tab(page, tab)
    page.click(button)
    if tab == "images":
        page.wait_for_selector(f"{output} img", timeout=_slow(90_000))
    else:  # a plotly figure with drawn lines or points
        page.wait_for_function(
            f"el => ({LINES_JS})(el) + ({POINTS_JS})(el)[0] > 0",
            arg=page.locator(f"{output} .js-plotly-plot").first.element_handle(timeout=_slow(90_000)),
            timeout=_slow(90_000),
        )
    assert "Error" not in page.inner_text(output), page.inner_text(output)
    _no_traceback(page)
    assert not js_errors, js_errors


def _wait_step_above(page, step: int, timeout: int = 20_000) -> None:
    """Wait until the live status says "training" at a step beyond ``step``."""
    page.wait_for_function(
        "(s) => { const t = document.querySelector('#live-status').innerText;"
        " const m = /training · .* step (\\d+)/.exec(t); return m && +m[1] > s; }",
        arg=step,
        timeout=timeout,
    )


def test_browser_one_click_on_continue_after_stop_resumes(browser_page):
    """Start, Stop, and as soon as the status says "stopped", ONE click on Continue: training
    resumes (the step count rises past the stopped step), with no message beside Method. Done
    four times in a row, Continue after Continue, since a click that lands while the last run's
    stream is still ending is the one that a user saw dropped."""
    page, js_errors = browser_page
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    for k in range(4):
        page.click("#btn-stop")
        page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
        stopped_at = _step(page)
        page.click("#btn-continue")  # once, right away, as a user does on reading "press Continue"
        try:
            _wait_step_above(page, stopped_at, timeout=_slow(20_000))
        except Exception:
            pytest.fail(
                f"round {k}: one click on Continue did not resume training; status "
                f"{page.inner_text('#live-status')!r}, beside Method {page.inner_text('#method')!r}"
            )
        assert page.locator("#method .validation-error").count() == 0, page.inner_text("#method")
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_continue_trains_what_the_dropdowns_show(browser_page):
    """Load a shipped eight_gaussians model: the Data set dropdown shows eight_gaussians. A lesson
    that fills the checkerboard, then Continue: refused beside Data set, naming both data sets and
    what to press, and nowhere else (not beside Method); nothing trains (the status still reads "loaded").
    A later event of the page (a change of method) leaves the message where it is; the model's
    data set picked again takes it away."""
    page, js_errors = browser_page
    _choose(page, "pretrained", "eight_gaussians")
    page.click("#btn-load")
    page.wait_for_function(
        "() => /loaded/.test(document.querySelector('#live-status').innerText)", timeout=_slow(30_000)
    )
    page.wait_for_function("() => document.querySelector('#data-set input').value === 'eight_gaussians'")
    page.click("#train-examples [data-testid=dataset-cell-0-0]")  # the checkerboard lesson
    page.wait_for_function("() => document.querySelector('#data-set input').value === 'checkerboard'")
    page.click("#btn-continue")
    message = page.locator("#data-set .validation-error")
    message.wait_for(timeout=_slow(20_000))
    text = message.inner_text()
    assert "learns eight_gaussians" in text and "shows checkerboard" in text and "press Start" in text, text
    page.wait_for_timeout(1000)  # anything still on its way lands
    assert "loaded" in page.inner_text("#live-status")
    # shown once, beside its field: not again beside Method, nor under the buttons
    assert page.locator(".validation-error").count() == 1, page.inner_text("#method")
    # a later event of the page (the method's help after a change of method) leaves it in view:
    # gradio's page drops the message of a field that took part in an earlier event (here Load's
    # Data set) at the next update of any event; the page script keeps it (app/events.FIELD_NOTE_JS)
    _choose(page, "method", "ESD")
    page.wait_for_function("() => /Eulerian/.test(document.querySelector('#method-help').innerText)")
    page.wait_for_timeout(1000)  # anything still on its way lands
    assert message.inner_text() == text
    assert page.locator(".validation-error").count() == 1
    # the model's data set picked again with the mouse: the message goes, and stays gone
    _choose(page, "data-set", "eight_gaussians")
    message.wait_for(state="hidden", timeout=_slow(10_000))
    page.wait_for_timeout(1000)
    assert page.locator(".validation-error:visible").count() == 0
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_continue_on_a_redrawn_pad_is_refused_and_on_the_same_pad_resumes(browser_page):
    """Draw, Start, Stop, Continue: the same pad resumes (twice, so the pad's value sent again at a
    later event reads as the same drawing). Then a second stroke and Continue: refused once,
    beside Data set, saying the pad changed since the run started and to press Start; nothing
    trains (the status still reads "stopped" at the same step)."""
    page, js_errors = browser_page
    _choose(page, "data-set", "draw")
    page.locator("#draw-pad canvas").first.wait_for(state="visible")
    _stroke(page, at=(0.3, 0.3))
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    for _ in range(2):
        page.click("#btn-stop")
        page.wait_for_function("() => /stopped · LSD on draw/.test(document.querySelector('#live-status').innerText)")
        stopped_at = _step(page)
        page.click("#btn-continue")
        _wait_step_above(page, stopped_at, timeout=_slow(20_000))
        assert page.locator(".validation-error").count() == 0, page.inner_text("#data-set")
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · LSD on draw/.test(document.querySelector('#live-status').innerText)")
    stopped_at = _step(page)
    _stroke(page, at=(0.6, 0.2))
    page.click("#btn-continue")
    message = page.locator("#data-set .validation-error")
    message.wait_for(timeout=_slow(20_000))
    text = message.inner_text()
    assert "the sketch pad was changed since this run started" in text and "press Start" in text, text
    page.wait_for_timeout(1000)  # anything still on its way lands
    assert page.locator(".validation-error").count() == 1  # once, beside Data set
    status = page.inner_text("#live-status")
    assert status.strip().startswith("stopped · ") and _step(page) == stopped_at, status
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_load_during_a_run_says_why_under_the_buttons_and_the_message_stays(browser_page):
    """Load pressed while a run streams: refused under the run buttons (a message that names no
    field), saying to press Stop and that the model shown was not loaded; the message is still
    there seconds later, while the run's updates keep arriving (they used to wipe it within a
    second), and nothing is shown beside Method or the dropdown. Stop, then Load: it loads and the
    message goes."""
    page, js_errors = browser_page
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    page.click("#btn-load")
    message = page.locator("#run-note")
    message.wait_for(timeout=_slow(20_000))
    text = message.inner_text()
    assert "already training: press Stop first" in text and "was not loaded" in text, text
    step = _step(page)
    _wait_step_above(page, step, timeout=_slow(20_000))  # the run's stream goes on...
    page.wait_for_timeout(2000)
    assert message.is_visible() and "was not loaded" in message.inner_text()  # ...and the message stays
    assert page.locator(".validation-error:visible").count() == 0  # shown once: under the buttons only
    message_box = page.locator("#run-note").bounding_box()
    boxes = [page.locator(f"#btn-{b}").bounding_box() for b in ("start", "stop", "continue")]
    below = max(b["y"] + b["height"] for b in boxes)  # the buttons' row (stacked in a narrow column)
    assert message_box and 0 <= message_box["y"] - below <= 40, (message_box, boxes)
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    page.click("#btn-load")
    page.wait_for_function(
        "() => /loaded/.test(document.querySelector('#live-status').innerText)", timeout=_slow(30_000)
    )
    message.wait_for(state="hidden", timeout=_slow(15_000))  # empty: takes no room
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_download_with_no_model_says_so_beside_the_button(browser_page):
    """Download (zip) on a fresh page, before any model: the reason shows in the Checkpoint box
    under the button (gradio's validator), with no error toast and no red "Error" badge; after a
    Load, the same button gives the zip."""
    page, js_errors = browser_page
    page.click("#btn-download")
    message = page.locator("#download-file .validation-error")
    message.wait_for(timeout=_slow(20_000))
    assert "nothing to download yet: press Start" in message.inner_text(), message.inner_text()
    page.wait_for_timeout(1000)  # anything still on its way lands
    assert page.locator("[data-testid=toast-body]").count() == 0
    assert page.locator("#download-file .error").count() == 0
    page.click("#btn-load")
    page.wait_for_function(
        "() => /loaded/.test(document.querySelector('#live-status').innerText)", timeout=_slow(30_000)
    )
    page.click("#btn-download")
    page.wait_for_function(
        "() => /\\.zip/.test(document.querySelector('#download-file').innerText)", timeout=_slow(30_000)
    )
    assert page.locator("#download-file .validation-error").count() == 0
    _no_error_badge(page, "#download-file")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_start_during_a_race_names_the_race_and_clears_after_it(browser_page):
    """With a race running, Start on the live tab is refused under the run buttons with a message that
    names the "Race the families" tab and says to stop the race there; once the race is stopped,
    a Start trains and the message goes."""
    page, js_errors = browser_page
    _tab(page, "race")
    page.click("#race-start")
    page.wait_for_function(
        "() => /racing/.test(document.querySelector('#race-status').innerText)", timeout=_slow(60_000)
    )
    _tab(page, "train")
    page.click("#btn-start")
    message = page.locator("#run-note")
    message.wait_for(timeout=_slow(20_000))
    assert 'a race is running in this session, in the "Race the families" tab: stop it there' in (
        message.inner_text()
    ), message.inner_text()
    assert "press Stop first" not in message.inner_text()
    _tab(page, "race")
    page.click("#race-stop")
    page.wait_for_function(
        "() => /stopped/.test(document.querySelector('#race-status').innerText)", timeout=_slow(30_000)
    )
    _tab(page, "train")
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    message.wait_for(state="hidden", timeout=_slow(15_000))
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_a_spreadsheets_tab_separated_utf16_export_uploads_and_trains(browser_page, tmp_path):
    """A spreadsheet's "Unicode text" export (UTF-16 with a byte-order mark, tab-separated), saved as
    .tsv: the box takes it (gradio once refused the name) and Start trains on it (the reader once
    refused its bytes as binary)."""
    page, js_errors = browser_page
    export = tmp_path / "ring.tsv"
    angles = [2 * math.pi * k / 300 for k in range(300)]
    export.write_bytes(
        ("x\ty\r\n" + "".join(f"{math.cos(a):.5f}\t{math.sin(a):.5f}\r\n" for a in angles)).encode("utf-16")
    )
    _choose(page, "data-set", "csv")
    page.wait_for_selector("#csv-upload", state="visible")
    page.set_input_files("#csv-upload input[type=file]", str(export))
    page.wait_for_function(
        "() => /ring\\.tsv/.test(document.querySelector('#csv-upload').innerText)", timeout=_slow(20_000)
    )
    assert page.locator("[data-testid=toast-body]").count() == 0
    _no_error_badge(page, "#csv-upload")
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    assert " on ring.tsv " in page.inner_text("#live-status"), page.inner_text("#live-status")
    page.click("#btn-stop")
    assert not js_errors


def test_browser_a_csv_over_the_upload_limit_is_explained_beside_the_box(browser_page, tmp_path):
    """A 2.5 MB CSV (over the 2 MB limit): the page says beside the CSV box how large the file is,
    the limit and what to do (subsample to 100,000 rows), with no gradio toast or "Error" box;
    a valid CSV chosen right after uploads, clears the note, and Start trains on it."""
    page, js_errors = browser_page
    big = tmp_path / "big.csv"
    big.write_text("x,y\n" + "0.123456,-0.654321\n" * 138_000)  # 2.62e6 bytes: 2.5 MB of 2**20
    good = tmp_path / "ring.csv"
    angles = [2 * math.pi * k / 400 for k in range(400)]
    good.write_text("x,y\n" + "".join(f"{3 + math.cos(a):.5f},{math.sin(a):.5f}\n" for a in angles))
    _choose(page, "data-set", "csv")
    page.wait_for_selector("#csv-upload", state="visible")
    page.set_input_files("#csv-upload input[type=file]", str(big))
    note = page.locator("#csv-size-note")
    note.wait_for(state="visible", timeout=_slow(10_000))
    text = note.inner_text()
    assert "big.csv is 2.5 MB; the limit is 2 MB" in text and "at most 100,000 rows" in text, text
    just_over = tmp_path / "just_over.csv"  # 2,100,000 bytes would read "2.0 MB" against 2 MB: in bytes
    just_over.write_bytes(b"x,y\n" + b"0.123456,-0.654321\n" * 110_526 + b"\n\n")
    assert just_over.stat().st_size == 2_100_000
    page.set_input_files("#csv-upload input[type=file]", str(just_over))
    page.wait_for_function(
        "() => /just_over\\.csv is 2,100,000 bytes; the limit is 2 MB \\(2,097,152 bytes\\)/"
        ".test(document.querySelector('#csv-size-note').innerText)",
        timeout=_slow(10_000),
    )
    page.wait_for_timeout(1000)  # a toast or an upload, if one was on its way, lands
    assert page.locator("[data-testid=toast-body]").count() == 0
    _no_error_badge(page, "#csv-upload")
    page.set_input_files("#csv-upload input[type=file]", str(good))
    page.wait_for_function(
        "() => /ring\\.csv/.test(document.querySelector('#csv-upload').innerText)", timeout=_slow(20_000)
    )
    assert not note.is_visible()
    _no_error_badge(page, "#csv-upload")
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    assert " on ring.csv " in page.inner_text("#live-status"), page.inner_text("#live-status")
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    _no_traceback(page)
    assert not js_errors, js_errors


def _leave_dialogs(page, answer: dict) -> list[str]:
    """Record the type of every dialog the page opens and answer it: ``answer["stay"]`` true
    dismisses it (the user stays), false accepts it (the page goes)."""
    seen: list[str] = []

    def on_dialog(dialog):
        seen.append(dialog.type)
        if answer["stay"]:
            dialog.dismiss()
        else:
            dialog.accept()

    page.on("dialog", on_dialog)
    return seen


def test_browser_a_reload_mid_run_warns_and_a_downloaded_model_does_not(browser_page):
    """A reload ends the session's run, so the page warns first (a ``beforeunload`` dialog) while
    it holds a model that trained and was not downloaded since: none on a fresh page (after a
    click, so the browser would show one); one after Start, and "Stay" keeps the run streaming
    and the page working (Stop, Continue twice and Download reach the session); none after
    Download and a click on the zip's link; one again after Start, and "Leave" reloads to a fresh
    page."""
    page, js_errors = browser_page
    answer = {"stay": True}
    seen = _leave_dialogs(page, answer)
    page.click("#intro")  # a user's click: the browser shows a beforeunload dialog only after one
    page.reload()
    page.wait_for_selector("#btn-start")
    assert seen == [], seen
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    page.evaluate("() => { setTimeout(() => location.reload(), 0); }")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert seen == ["beforeunload"], seen
    step = _step(page)
    try:
        _wait_step_above(page, step, timeout=_slow(20_000))  # stayed: the run goes on streaming to this page
    except Exception:
        pytest.fail(f"after Stay the run stopped streaming at step {step}: {page.inner_text('#live-status')!r}")
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    # the session survived the question: later events reach it (Continue trains on from its step)
    for _ in range(2):
        step = _step(page)
        page.click("#btn-continue")
        try:
            _wait_step_above(page, step, timeout=_slow(30_000))
        except Exception:
            pytest.fail(f"after Stay, Continue did not train on from step {step}: {page.inner_text('#live-status')!r}")
        page.click("#btn-stop")
        page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    page.click("#btn-download")
    page.wait_for_function(
        "() => /\\.zip/.test(document.querySelector('#download-file').innerText)", timeout=_slow(30_000)
    )
    link = page.locator("#download-file td.download a").first  # the zip's size, a link to the file
    with page.expect_download():
        link.click()
    page.reload()
    page.wait_for_selector("#btn-start")
    assert seen == ["beforeunload"], seen  # downloaded: nothing to lose, no question
    # a fresh page: Start, then Leave
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    answer["stay"] = False
    page.reload()
    page.wait_for_selector("#btn-start")
    assert seen == ["beforeunload", "beforeunload"], seen
    page.wait_for_function("() => /press Start/i.test(document.querySelector('#live-status').innerText)")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_start_on_a_phone_scrolls_to_the_progress_bar(browser_page):
    """On a 390 px wide phone the plots sit in one column far below the buttons: Start brings
    the progress bar into view (it used to stay some 2000 px below). On a desktop window the page
    does not move."""
    page, js_errors = browser_page
    page.click("#btn-start")  # desktop: the plots are beside the buttons; nothing scrolls
    _wait_step_above(page, 0, timeout=_slow(30_000))
    assert page.evaluate("() => window.scrollY") == 0
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(800)
    start = page.locator("#btn-start")
    start.scroll_into_view_if_needed()
    in_view = (
        "() => { const r = document.querySelector('#live-progress').getBoundingClientRect();"
        " return r.height > 0 && r.top >= -2 && r.bottom <= window.innerHeight + 2; }"
    )
    assert not page.evaluate(in_view)  # far below the buttons
    start.click()
    page.wait_for_function(in_view, timeout=_slow(30_000))
    _wait_step_above(page, 0, timeout=_slow(30_000))
    page.click("#btn-stop")


def test_browser_a_refused_start_brings_the_field_that_says_why_into_view(browser_page):
    """A fresh user typed 0 as the learning rate and pressed Start: the refusal sat beside the
    field, below the fold, and nothing on screen changed. The field that says why now scrolls into
    view (on a window where it starts out of sight), with its message."""
    page, js_errors = browser_page
    page.set_viewport_size({"width": 1400, "height": 640})
    page.wait_for_timeout(500)
    _type_number(page, "lr", "0")
    page.evaluate("() => window.scrollTo(0, 0)")
    start = page.locator("#btn-start")
    start.scroll_into_view_if_needed()
    in_view = (
        "() => { const r = document.querySelector('#lr').getBoundingClientRect();"
        " return r.height > 0 && r.top >= -2 && r.bottom <= window.innerHeight + 2; }"
    )
    assert not page.evaluate(in_view)  # the test's premise: the field is out of sight at the click
    start.click()
    message = page.locator("#lr div.validation-error")  # the message (the box gets the class too)
    message.wait_for(timeout=_slow(20_000))
    assert "learning rate: 0 is outside the allowed range" in message.inner_text().lower(), message.inner_text()
    page.wait_for_function(in_view, timeout=_slow(10_000))
    assert "nothing is training" in page.inner_text("#live-status")  # refused: no run started
    _no_traceback(page)
    assert not js_errors, js_errors


# Record, every 50 ms for ``ms`` milliseconds, the refusal text shown under the run buttons ("" when
# none shows), as a list of [milliseconds since the call, text] at each change.
WATCH_MESSAGE_JS = """ms => new Promise(done => {
  const t0 = performance.now(), seen = [];
  const tick = () => {
    const el = document.querySelector('#run-note');
    const text = el && el.offsetParent !== null ? el.innerText.trim() : '';
    if (!seen.length || seen[seen.length - 1][1] !== text) seen.push([Math.round(performance.now() - t0), text]);
    if (performance.now() - t0 < ms) setTimeout(tick, 50); else done(seen);
  };
  tick();
})"""


def _refusal_shows_and_stays(page, button: str, words: str, clicks: int = 1) -> None:
    """Press ``button`` ``clicks`` times 0.7 s apart while a run streams: after the last press the
    refusal containing ``words`` shows under the run buttons within 3 s, and from then on stays
    (never blank, never another text) for 3 s more."""
    for _ in range(clicks - 1):
        page.click(button)
        page.wait_for_timeout(700)
    page.click(button)
    seen = page.evaluate(WATCH_MESSAGE_JS, 6000)
    shown = [i for i, (_, text) in enumerate(seen) if words in text]
    assert shown and seen[shown[0]][0] <= 3000, (button, seen)
    assert all(words in text for _, text in seen[shown[0] :]), (button, seen)


def test_browser_refusals_during_a_run_show_promptly_and_stay(browser_page):
    """After a first run (Start, Stop), a second run streams: Load, Continue and Start (three
    presses 0.7 s apart) are each refused under the run buttons; the message shows within 3 s and
    stays, unchanged, while the run's updates keep arriving; the run goes on throughout."""
    page, js_errors = browser_page
    page.click("#btn-start")
    _wait_step_above(page, 0, timeout=_slow(30_000))
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    # a second run; Load is pressed once the run shows. Pressed at once, the two clicks may reach
    # the server in either order under load (a Load first loads the model and Start is refused),
    # which this page cannot force: that Load's validator refuses while Start's claim holds is
    # pinned through gradio's validator by test_app_logic's
    # test_an_accepted_start_or_load_claims_the_session_until_its_callback_takes_it, and that a
    # refusal reaching the page before the run's first updates ("starting", "training") stays
    # through them by test_run_note_rules_in_order_without_waiting_on_a_server
    page.click("#btn-start")
    page.wait_for_function("() => /(starting|training) · /.test(document.querySelector('#live-status').innerText)")
    _refusal_shows_and_stays(page, "#btn-load", "was not loaded")
    _refusal_shows_and_stays(page, "#btn-continue", "already training")
    _refusal_shows_and_stays(page, "#btn-start", "already training", clicks=3)
    step = _step(page)
    _wait_step_above(page, step, timeout=_slow(20_000))  # the run was never stopped by them
    page.click("#btn-stop")
    page.wait_for_function("() => /stopped · /.test(document.querySelector('#live-status').innerText)")
    _no_traceback(page)
    assert not js_errors, js_errors


# A bare page with the three elements the run note reads: gradio's message box for run-message,
# the status line, and an action's button beside a tab's.
RUN_NOTE_PAGE = """
<div id="run-message"></div>
<div id="live-status"><div data-testid="markdown">stopped · lsd on checkerboard · step 40</div></div>
<button id="act">Load</button><button role="tab" id="tab">Tab</button>
"""


def test_run_note_rules_in_order_without_waiting_on_a_server():
    """The run note's rules (app/tabs/train.RUN_NOTE_JS) on a bare page, where the test sets the
    order of events that load reorders on the real page: a refusal that reaches the page before the
    first updates of a run started earlier stays through "starting" and "training" and after gradio
    blanks its own copy; a run's end clears it; a click on an action's button clears it (a tab's does
    not), and the same words refused again after that click show again."""
    from playwright.sync_api import sync_playwright

    from app.events import PAGE_EVENTS_JS
    from app.tabs.train import RUN_NOTE_JS

    def note(pg) -> str:
        return pg.evaluate(
            "() => { const n = document.querySelector('#run-note');"
            " return n && n.style.display !== 'none' ? n.textContent : ''; }"
        )

    def refuse(pg, text: str) -> None:  # gradio shows (or blanks, with "") its message
        pg.evaluate(
            "t => { document.querySelector('#run-message').innerHTML ="
            " t ? `<div class=\"validation-error\">${t}</div>` : ''; }",
            text,
        )

    def status(pg, kind: str) -> None:
        pg.evaluate(
            "k => { document.querySelector('#live-status [data-testid=markdown]').textContent ="
            " k + ' · lsd on checkerboard · step 41'; }",
            kind,
        )

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page()
        # served from a made-up origin (no network: the route answers), so that fetch has a base URL
        pg.route("http://run-note.test/", lambda route: route.fulfill(body=RUN_NOTE_PAGE, content_type="text/html"))
        pg.route("http://run-note.test/refuse", lambda route: route.fulfill(status=422, body="{}"))
        pg.goto("http://run-note.test/")
        pg.evaluate(f"({PAGE_EVENTS_JS})()")  # the clicks and refusals the note hears, as in the app
        pg.evaluate(f"({RUN_NOTE_JS})()")
        words = "this session is already training: press Stop first; checkerboard-lsd was not loaded"
        refuse(pg, words)
        pg.wait_for_function("() => document.querySelector('#run-note').textContent !== ''")
        assert note(pg) == words
        for kind in ("starting", "training"):  # the earlier Start's run arrives after the refusal
            status(pg, kind)
            pg.wait_for_timeout(50)
            assert note(pg) == words, kind
        refuse(pg, "")  # gradio wipes its own copy at the next update: the note keeps it
        pg.wait_for_timeout(50)
        assert note(pg) == words
        pg.click("#tab")  # a tab's button is no new try
        assert note(pg) == words
        status(pg, "stopped")  # the run ended: the refusal is no longer true
        pg.wait_for_timeout(50)
        assert note(pg) == ""
        refuse(pg, words)
        pg.wait_for_timeout(50)
        assert note(pg) == words
        pg.click("#act")  # a new try: cleared at once, and gradio's old words are not copied back...
        pg.wait_for_timeout(50)
        assert note(pg) == ""
        pg.evaluate("() => fetch('/refuse')")  # ...until the validator refuses again, in the same words
        pg.wait_for_function("() => document.querySelector('#run-note').textContent !== ''")
        assert note(pg) == words
        # a Load's click, then a Start refused while the model loads: the model's "loaded" is the
        # moment the note's advice applies, so it stays (it was wiped there)
        loading = "this session is loading a shipped model: press the button again once it has loaded"
        pg.click("#act")
        refuse(pg, loading)
        pg.wait_for_function("() => document.querySelector('#run-note').textContent !== ''")
        status(pg, "loaded")
        pg.wait_for_timeout(50)
        assert note(pg) == loading
        status(pg, "stopped")  # any other change of kind still answers it
        pg.wait_for_timeout(50)
        assert note(pg) == ""
        browser.close()


def test_browser_a_refused_field_keeps_its_box_after_another_button(browser_page):
    """A fresh user emptied Seed (or typed 0 as the learning rate), pressed Start (refused beside the
    field), then Stop: the field's box vanished, leaving its label with nowhere to type. gradio
    gives the refused input the class validation-error too, and the rule that hides a message after
    another button's click hid the input. Now the message is hidden and the box stays, typeable."""
    page, js_errors = browser_page
    for field, value in (("seed", ""), ("lr", "0")):
        box = page.locator(f"#{field} input")
        box.fill(value)
        page.click("#btn-start")
        page.locator(f"#{field} div.validation-error").wait_for(timeout=_slow(20_000))
        page.click("#btn-stop")
        page.wait_for_function(
            f"() => document.querySelector('#{field}').hasAttribute('data-edited')", timeout=_slow(10_000)
        )
        page.wait_for_timeout(500)
        assert box.is_visible(), field  # the box stays...
        assert not page.locator(f"#{field} div.validation-error").is_visible(), field  # ...its old message goes
        box.fill("7" if field == "seed" else "0.001")  # and it takes a value
        assert box.input_value() == ("7" if field == "seed" else "0.001")
    _no_traceback(page)
    assert not js_errors, js_errors


def test_browser_the_learning_rate_arrow_keys_stay_in_range(browser_page):
    """A fresh user pressed ArrowUp in the learning-rate box at 0.01 and got 1 (then -1 after two
    ArrowDowns), both outside the allowed range: the box's step was gradio's default of 1. One press
    now moves it by the smallest allowed rate."""
    page, js_errors = browser_page
    box = page.locator("#lr input")
    box.fill("0.01")
    box.press("ArrowUp")
    up = float(box.input_value())
    assert 0.01 < up <= 0.0101, up
    box.press("ArrowDown")
    box.press("ArrowDown")
    down = float(box.input_value())
    assert 0.0099 <= down < 0.01, down
    _no_traceback(page)
    assert not js_errors, js_errors
