"""Input parsing for the app: every value a user (or an API client) sends is checked here.

Each function raises :class:`InputError` with a message that names the field and the allowed
range; the UI turns it into a ``gr.Error`` shown in the page. Nothing here imports gradio, so
the rules are tested directly (tests/test_app_logic.py).

Time convention (as everywhere in flowmaps): t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.config import Limits

#: Method label shown in the page -> objective name of flowmaps.objectives.make_objective.
METHODS: dict[str, str] = {
    "LSD (Lagrangian)": "lsd",
    "ESD (Eulerian)": "esd",
    "PSD-U (progressive, gamma ~ U[0,1])": "psd-u",
    "PSD-M (progressive, gamma = 1/2)": "psd-m",
    "Flow matching only": "fm",
    "MeanFlow": "meanflow",
    "Consistency training (CT)": "ct",
    "Shortcut": "shortcut",
}
METHOD_LABELS = {v: k for k, v in METHODS.items()}

#: Grid kinds of the samplers; "custom" reads typed times.
GRID_CHOICES = ("uniform", "edm", "cosine", "custom")

#: Smallest number of marked pixels / points a drawing must have.
MIN_DRAWN_POINTS = 20

#: Points sampled from a drawing's strokes.
DRAWING_POINTS = 4000


class InputError(ValueError):
    """A user input is wrong; the message says which field and what is allowed."""


# ------------------------------------------------------------------------------------ numbers
def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or value is None:
        raise InputError(f"{field}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{field}: {value!r} is not a number") from None
    try:
        x = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise InputError(f"{field}: the number is far too large (more than 1e308)") from None
    except (TypeError, ValueError):
        raise InputError(f"{field}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{field}: must be a finite number, got {x}")
    return x


def parse_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer in ``[low, high]``; a float with a fractional part is refused."""
    try:
        x = _number(value, field)
    except InputError as err:
        raise InputError(f"{err}; allowed range [{low}, {high}]") from None
    if x != int(x):
        raise InputError(f"{field}: must be a whole number in [{low}, {high}], got {x:g}")
    n = int(x)
    if not low <= n <= high:
        raise InputError(f"{field}: {n} is outside the allowed range [{low}, {high}]")
    return n


def parse_float(value: Any, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    try:
        x = _number(value, field)
    except InputError as err:
        raise InputError(f"{err}; allowed range {'(' if low_open else '['}{low:g}, {high:g}]") from None
    bad = (x <= low) if low_open else (x < low)
    if bad or x > high:
        left = "(" if low_open else "["
        raise InputError(f"{field}: {x:g} is outside the allowed range {left}{low:g}, {high:g}]")
    return x


def parse_method(value: Any) -> str:
    """A method label or objective name -> objective name (e.g. ``"lsd"``)."""
    if isinstance(value, str):
        v = value.strip()
        if v in METHODS:
            return METHODS[v]
        key = v.lower().replace("_", "-")
        if key in METHOD_LABELS:
            return key
    raise InputError(f"method: {value!r} is not one of {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainSettings:
    """Checked settings of one live-training run.

    The defaults are the app's, chosen on a 2-core CPU (bench/live_cpu.py) so that LSD on the
    checkerboard shows a recognisable board within a minute: a small deep net (64 x 4) at a
    large learning rate, half the batch on the diagonal (more off-diagonal pairs sharpen the
    1-step map), about 8,000 steps (about a minute), and the learning rate decaying linearly
    to 0 over the run (app/live.py, ``live_lr_factor``).
    """

    method: str = "lsd"
    steps: int = 8000
    batch: int = 1024
    lr: float = 1e-2
    eta: float = 0.5
    width: int = 64
    depth: int = 4
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_train_settings(
    method: Any,
    steps: Any,
    batch: Any,
    lr: Any,
    eta: Any,
    width: Any,
    depth: Any = 3,
    seed: Any = 0,
    limits: Limits | None = None,
) -> TrainSettings:
    """Check every live-training setting against ``limits``; see :class:`TrainSettings`."""
    lim = limits or Limits()
    m = parse_method(method)
    eta_v = parse_float(eta, "eta (fraction of the batch on the diagonal)", 0.0, 1.0)
    if m != "fm" and eta_v >= 1.0:
        raise InputError(
            "eta (fraction of the batch on the diagonal): must be below 1 for a flow-map method, "
            "else nothing trains the off-diagonal map; allowed range [0, 1) (the paper uses 0.75)"
        )
    if m != "fm" and eta_v <= 0.0:
        raise InputError(
            "eta (fraction of the batch on the diagonal): must be above 0, since the diagonal "
            "(flow matching) term is what the self-distillation teacher learns from; "
            "allowed range (0, 1) (the paper uses 0.75)"
        )
    return TrainSettings(
        method=m,
        steps=parse_int(steps, "steps", 1, lim.max_steps),
        batch=parse_int(batch, "batch size", lim.min_batch, lim.max_batch),
        lr=parse_float(lr, "learning rate", lim.min_lr, lim.max_lr),
        eta=eta_v,
        width=parse_int(width, "width", lim.min_width, lim.max_width),
        depth=parse_int(depth, "depth", 1, lim.max_depth),
        seed=parse_int(seed, "seed", 0, 2**31 - 1),
    )


# ------------------------------------------------------------------------------------ grids
def parse_time_grid(kind: Any, steps: Any, custom: Any = "", max_steps: int = 256) -> torch.Tensor:
    """A sampling grid ``0 = t_0 < ... < t_N = 1`` (t = 0 noise, t = 1 data), float64 ``(N + 1,)``.

    ``kind`` is "uniform", "edm", "cosine" (with ``steps`` steps) or "custom" (``custom`` holds
    typed times such as ``"0, 0.4, 0.75, 1"``; ``steps`` is then ignored).
    """
    from flowmaps.sampling import make_grid, parse_grid

    k = str(kind).strip().lower() if kind is not None else ""
    if k not in GRID_CHOICES:
        raise InputError(f"time grid: kind {kind!r} is not one of {', '.join(GRID_CHOICES)}")
    if k == "custom":
        text = "" if custom is None else str(custom)
        if len(text) > 20_000:
            raise InputError(
                f"custom times: the text is too long ({len(text)} characters, at most 20000); "
                f"type at most {max_steps + 1} times"
            )
        try:
            return parse_grid(text, max_steps=max_steps)
        except ValueError as err:
            # The library's advice on sub-intervals (a keyword argument) means nothing in a text box.
            why = re.sub(r", or pass partial=True [^;]*", "", str(err))
            for lib, field in (("time grid entry", "entry"), ("time grid needs", "needs"), ("time grid", "the times")):
                why = why.replace(lib, field, 1)
            raise InputError(f"custom times: {why}") from None
    n = parse_int(steps, "steps", 1, max_steps)
    try:
        return make_grid(k, n)
    except ValueError as err:
        raise InputError(f"time grid: {err}") from None


def format_grid(grid: torch.Tensor, max_items: int = 12) -> str:
    """Short text of a grid's times for the page, e.g. ``0, 0.25, 0.5, 0.75, 1``."""
    vals = [f"{v:.3g}" for v in grid.tolist()]
    if len(vals) > max_items:
        vals = vals[: max_items // 2] + ["..."] + vals[-max_items // 2 :]
    return ", ".join(vals)


# ------------------------------------------------------------------------------------ data
def _stroke_mask(image: np.ndarray) -> np.ndarray:
    """Marked pixels of a drawn layer or composite: opaque and not white."""
    a = np.asarray(image)
    if a.ndim == 2:
        return a < 200
    if a.ndim != 3:
        raise InputError(f"drawing: expected an image, got an array of shape {a.shape}")
    if a.shape[2] == 4:
        alpha = a[..., 3] > 32
        rgb = a[..., :3].astype(np.float32).mean(axis=2)
        # On a transparent layer every opaque pixel is a stroke; on an opaque composite only the
        # dark ones are (the white background is opaque too).
        if alpha.mean() > 0.95:
            return rgb < 200
        return alpha
    return a[..., :3].astype(np.float32).mean(axis=2) < 200


def points_from_drawing(
    value: Any, n_points: int = DRAWING_POINTS, seed: int = 0, min_pixels: int = MIN_DRAWN_POINTS
) -> np.ndarray:
    """Points sampled uniformly from the strokes of a sketch pad, in ``[-1, 1]^2``.

    ``value`` is the sketch pad's value (a dict with "layers" and "composite" arrays) or an image
    array. Pixel (row, col) of an H x W canvas maps to x = 2 col / W - 1, y = 1 - 2 row / H, with a
    uniform jitter inside the pixel. Returns float32 ``(n_points, 2)``.

    Raises:
        InputError: for an empty drawing, too few marked pixels, or a single dot/line of zero spread.
    """
    images: list[np.ndarray] = []
    if value is None:
        raise InputError("drawing: the sketch pad is empty; draw a shape on it first")
    if isinstance(value, dict):
        for layer in value.get("layers") or []:
            if layer is not None:
                images.append(np.asarray(layer))
        if not images and value.get("composite") is not None:
            images.append(np.asarray(value["composite"]))
    else:
        images.append(np.asarray(value))
    if not images:
        raise InputError("drawing: the sketch pad is empty; draw a shape on it first")
    mask = None
    for img in images:
        if img.ndim < 2 or img.size == 0:
            continue
        m = _stroke_mask(img)
        mask = m if mask is None or mask.shape != m.shape else (mask | m)
    if mask is None or not mask.any():
        raise InputError("drawing: nothing is drawn on the sketch pad; draw a shape with the brush first")
    rows, cols = np.nonzero(mask)
    if rows.size < min_pixels:
        raise InputError(
            f"drawing: only {rows.size} pixels are marked; draw a larger shape (at least {min_pixels} pixels)"
        )
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, rows.size, size=n_points)
    x = 2.0 * (cols[pick] + rng.random(n_points)) / w - 1.0
    y = 1.0 - 2.0 * (rows[pick] + rng.random(n_points)) / h
    pts = np.stack([x, y], axis=1).astype(np.float32)
    spread = pts.std(axis=0)
    if spread.max() < 0.02:
        raise InputError("drawing: the strokes cover almost a single point; draw a shape with some extent")
    return pts


#: Image formats the server opens: the drawing pad sends PNG; an API client may send JPEG or WebP.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


def cap_decoded_pixels(max_pixels: int) -> None:
    """Make PIL refuse, for the whole process, any image of more than ``max_pixels`` pixels.

    PIL reads the size from the file's header when it opens it and raises
    ``DecompressionBombError`` above twice ``Image.MAX_IMAGE_PIXELS`` before decoding anything,
    so the threshold is set to half the cap; its warning between the two is silenced (the
    app's own per-input checks, :func:`check_image_size`, are the tighter rule)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(1, int(max_pixels) // 2)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_image_size(source: Any, field: str, max_width: int, max_height: int, need: str = "") -> tuple[int, int]:
    """The ``(width, height)`` of an image file or bytes, read from its header without decoding it.

    Args:
        source: a path, or the file's bytes.
        field: the input's name, for messages.
        max_width, max_height: the largest size accepted, in pixels.
        need: why that is enough (ends the message), e.g. "the canvas is 320 x 320".

    Raises:
        InputError: for a file that is not a PNG, JPEG or WebP image, that PIL's global pixel
            cap refuses (:func:`cap_decoded_pixels`), or that is larger than the limits.
    """
    from PIL import Image, UnidentifiedImageError

    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    png = _png_size(fp)  # a PNG's size from its IHDR chunk, before PIL's own pixel cap can refuse it
    if png is not None:
        _refuse_larger(png, field, max_width, max_height, need)
    try:
        with Image.open(fp, formats=IMAGE_FORMATS) as im:  # reads the header only
            width, height = im.size
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL names the size it refused
        size = f" ({int(found.group(1)):,} pixels)" if found else ""
        raise InputError(
            f"{field}: the image{size} has more pixels than the server decodes ({2 * Image.MAX_IMAGE_PIXELS:,}); "
            f"at most {max_width} x {max_height} is accepted. Draw on the pad, or send a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"{field}: not a readable PNG, JPEG or WebP image") from None
    _refuse_larger((width, height), field, max_width, max_height, need)
    return width, height


def _png_size(fp: Any) -> tuple[int, int] | None:
    """(width, height) from a PNG's signature and IHDR chunk (the first 24 bytes), else None."""
    try:
        if hasattr(fp, "read"):
            pos = fp.tell()
            head = fp.read(24)
            fp.seek(pos)
        else:
            with open(fp, "rb") as f:
                head = f.read(24)
    except (OSError, TypeError, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _refuse_larger(size: tuple[int, int], field: str, max_width: int, max_height: int, need: str) -> None:
    width, height = size
    if width > max_width or height > max_height:
        why = f" ({need})" if need else ""
        raise InputError(
            f"{field}: the image is {width} x {height} pixels; at most {max_width} x {max_height} is "
            f"accepted{why}. Draw on the pad, or send a smaller image"
        )


def _parse_size(text: str) -> int:
    t = text.strip().lower()
    units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "b": 1}
    for unit, mult in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    return int(float(t))


def upload_path(value: Any) -> Path:
    """The local path of an uploaded file (gradio passes a path string or an object with .name)."""
    if value is None:
        raise InputError("CSV file: no file uploaded; upload a CSV of x, y rows")
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    name = getattr(value, "name", value)
    if not isinstance(name, str | os.PathLike):
        raise InputError("CSV file: could not read the upload; upload a CSV of x, y rows")
    return Path(name)


def points_from_upload(value: Any, max_rows: int = 100_000, max_bytes: str | int = "2mb") -> np.ndarray:
    """Read an uploaded CSV of ``x, y`` rows; returns float32 ``(N, 2)`` centred with std 0.5.

    Raises:
        InputError: for a missing, oversized, binary or malformed file (the message gives the
            line and what is wrong), NaN values, too few or too many rows, or all-equal points.
    """
    from flowmaps.data.point_cloud import parse_csv_text

    path = upload_path(value)
    if not path.is_file():
        raise InputError("CSV file: the upload is missing on the server; upload it again")
    cap = _parse_size(max_bytes) if isinstance(max_bytes, str) else int(max_bytes)
    size = path.stat().st_size
    if size > cap:
        raise InputError(f"CSV file: {size / 1e6:.1f} MB is above the cap of {cap / 1e6:.1f} MB")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise InputError("CSV file: this looks like a binary file, not text; upload a CSV of x, y rows")
    text = raw.decode("utf-8", errors="replace")
    try:
        # parse_csv_text, not points_from_csv: an upload whose content is a server path (e.g.
        # "/etc/passwd") must be read as CSV text, never as the name of a file to open.
        cloud = parse_csv_text(text, max_rows=max_rows)
    except ValueError as err:
        raise InputError(f"CSV file: {err}") from None
    return standardize_points(cloud.points.numpy(), "CSV file")


def standardize_points(points: np.ndarray, field: str = "points", scale: float = 0.5) -> np.ndarray:
    """Centre ``(N, 2)`` points and scale them so that ``sqrt(mean_j Var[x_j]) = scale``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
        raise InputError(f"{field}: need at least 2 points of 2 coordinates; got shape {p.shape}")
    if not np.isfinite(p).all():
        raise InputError(f"{field}: every value must be finite")
    centred = p - p.mean(axis=0)
    sd = float(np.sqrt(centred.var(axis=0).mean()))
    if sd < 1e-9 * max(1.0, float(np.abs(p).max())):
        raise InputError(f"{field}: all points are (nearly) the same; give points that spread out")
    return (centred * (scale / sd)).astype(np.float32)


def parse_seed(value: Any) -> int:
    return parse_int(value, "seed", 0, 2**31 - 1)
