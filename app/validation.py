"""Input parsing for the app: every value a user (or an API client) sends is checked here.

Each function raises :class:`InputError` with a message that names the field and the allowed
range; the UI turns it into a ``gr.Error`` shown in the page. Nothing here imports gradio, so
the rules are tested directly (tests/app/test_app_logic.py).

Time convention (as everywhere in flowmaps): t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.config import Limits
from flowmaps.objectives import make_objective
from flowmaps.training import TrainConfig

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


def method_name(method: str | None) -> str:
    """A method's short name as the field writes it ("lsd" -> "LSD", "psd-m" -> "PSD-M",
    "meanflow" -> "MeanFlow", "shortcut" -> "Shortcut"); "" for None."""
    if not method:
        return ""
    names = {"fm": "FM", "meanflow": "MeanFlow", "shortcut": "Shortcut"}
    return names.get(method, method.upper())


#: Grid kinds of the samplers; "custom" reads typed times.
GRID_CHOICES = ("uniform", "edm", "cosine", "custom")

#: Smallest number of marked pixels / points a drawing must have.
MIN_DRAWN_POINTS = 20

#: Points sampled from a drawing's strokes.
DRAWING_POINTS = 4000


class InputError(ValueError):
    """A user input is wrong; the message says which field and what is allowed."""


# ------------------------------------------------------------------------------------ numbers
def _number(value: Any, field: str, allowed: str = "") -> float:
    """``value`` as a finite float; ``allowed`` (e.g. ``"[1, 10]"``) is named in each message.

    Raises:
        InputError: for an empty field (None or blank text), a bool, text that is no number,
            a number too large for a float, or NaN / infinity: naming the field and what to type.
    """
    what = f"type a number in the allowed range {allowed}" if allowed else "type a number"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{field}: the field is empty; {what}")
    if isinstance(value, bool):
        raise InputError(f"{field}: {value!r} is not a number; {what}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{field}: {value!r} is not a number; {what}") from None
    try:
        x = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise InputError(f"{field}: the number is far too large (more than 1e308); {what}") from None
    except (TypeError, ValueError):
        raise InputError(f"{field}: expected a number, got {type(value).__name__}; {what}") from None
    if not math.isfinite(x):
        raise InputError(f"{field}: must be a finite number, got {x}; {what}")
    return x


def parse_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer in ``[low, high]``; a float with a fractional part is refused."""
    x = _number(value, field, f"[{low}, {high}]")
    if x != int(x):
        raise InputError(f"{field}: must be a whole number in [{low}, {high}], got {_as_typed(value)}")
    if not low <= x <= high:  # compared as a float: int(-1e30) would echo 31 digits the user never typed
        raise InputError(f"{field}: {_as_typed(value)} is outside the allowed range [{low}, {high}]")
    return int(x)


def _as_typed(value: Any) -> str:
    """A number input for a message, as the user gave it: text stripped; an int (or a float of a
    whole number below 1e15) in digits; else the float's shortest form (-1e+30, not 31 digits)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    x = float(value)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def parse_float(value: Any, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    left = "(" if low_open else "["
    x = _number(value, field, f"{left}{low:g}, {high:g}]")
    bad = (x <= low) if low_open else (x < low)
    if bad or x > high:
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
#: EMA decay of live runs (short runs: a 0.999 average would lag about 1000 steps behind).
LIVE_EMA = 0.99

#: Fields of the library's TrainConfig -> the page's names for them (in messages).
_CONFIG_FIELDS = {"batch_size": "batch size", "lr": "learning rate", "steps": "steps", "seed": "seed"}
#: The eta field's name in the page.
ETA = "eta (fraction of the batch on the diagonal)"


@dataclass(frozen=True)
class TrainSettings:
    """Checked settings of one live-training run.

    The defaults are the app's, chosen on a 2-core CPU (bench/live_cpu.py) so that LSD on the
    checkerboard shows a recognisable board within a minute: a small deep net (64 x 4) at a
    large learning rate, half the batch on the diagonal (more off-diagonal pairs sharpen the
    1-step map), about 8,000 steps (about a minute), and the learning rate decaying linearly
    to 0 over the run (app/live_settings.py, ``live_lr_factor``).
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

    def train_config(self, ema_decay: float = LIVE_EMA) -> TrainConfig:
        """The library's :class:`flowmaps.training.TrainConfig` of a live run with these settings:
        RAdam at ``lr`` with no decay of its own (the run's schedule is applied per step), clip
        10, EMA ``ema_decay``, no logging or checkpoints, on the CPU.

        Raises:
            ValueError: where TrainConfig refuses a value (its own ranges).
        """
        return TrainConfig(
            steps=10**9,
            batch_size=self.batch,
            lr=self.lr,
            lr_decay_start=0,
            grad_clip=10.0,
            ema_decay=ema_decay,
            seed=self.seed,
            log_every=10**9,
            device="cpu",
            guard_every=50,
        )


def _library_message(err: ValueError) -> str:
    """A library ValueError's text without its own name of the field (the page names it)."""
    text = str(err)
    found = re.search(r"\bmust\b", text)
    return text[found.start() :] if found else text


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
    """Check every live-training setting: the library's ranges by building what a run builds (its
    objective, its :meth:`TrainSettings.train_config`), the app's rule that a flow-map method
    keeps both branches (0 < eta < 1), and the page's caps from ``limits`` (an
    :class:`app.config.Limits`). See :class:`TrainSettings`.

    Raises:
        InputError: naming the first field that is wrong and what is allowed.
    """
    lim = limits or Limits()
    m = parse_method(method)
    eta_v = _number(eta, ETA)
    try:
        make_objective(m, eta=eta_v)
    except ValueError as err:
        raise InputError(f"{ETA}: {_library_message(err)}") from None
    if m != "fm" and not 0.0 < eta_v < 1.0:
        raise InputError(
            f"{ETA}: must be below 1 for a flow-map method, else nothing trains the off-diagonal map; "
            "use 0.05 to 0.95 (the paper uses 0.75); 1 is for Flow matching only"
            if eta_v >= 1.0
            else f"{ETA}: must be above 0, since the diagonal (flow matching) term is what the "
            "self-distillation teacher learns from; use 0.05 to 0.95 (the paper uses 0.75)"
        )
    s = TrainSettings(
        method=m,
        steps=parse_int(steps, "steps", 1, lim.max_steps),
        batch=parse_int(batch, "batch size", lim.min_batch, lim.max_batch),
        lr=parse_float(lr, "learning rate", lim.min_lr, lim.max_lr),
        eta=eta_v,
        width=parse_int(width, "width", lim.min_width, lim.max_width),
        depth=parse_int(depth, "depth", 1, lim.max_depth),
        seed=parse_seed(seed),
    )
    try:
        s.train_config()
    except ValueError as err:
        name = next((page for key, page in _CONFIG_FIELDS.items() if str(err).startswith(key)), "training settings")
        raise InputError(f"{name}: {_library_message(err)}") from None
    return s


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
                f"custom times: the text is too long ({len(text)} characters, at most 20,000); "
                f"type at most {max_steps + 1} times"
            )
        try:
            return parse_grid(text, max_steps=max_steps)
        except ValueError as err:
            # The library's advice on sub-intervals (a keyword argument) means nothing in a text box.
            why = re.sub(r", or pass partial=True [^;]*", "", str(err))
            pairs = (
                ("time grid is empty", "the box is empty"),
                ("time grid entry", "entry"),
                ("time grid needs", "the box needs"),
                ("time grid has", "the box holds"),
            )
            for lib, field in (*pairs, ("time grid", "the times")):
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


def drawn_mask(value: Any) -> np.ndarray | None:
    """The marked pixels of a sketch pad's value (as :func:`points_from_drawing` reads it): a
    boolean ``(H, W)`` array, the union of its layers' strokes (of its composite where it has no
    layer); None where the value holds no image (None, or a cleared pad's empty dict).

    Raises:
        InputError: for an image that is not a 2-D or 3-D array.
    """
    if value is None:
        return None
    images: list[np.ndarray] = []
    if isinstance(value, dict):
        for layer in value.get("layers") or []:
            if layer is not None:
                images.append(np.asarray(layer))
        if not images and value.get("composite") is not None:
            images.append(np.asarray(value["composite"]))
    else:
        images.append(np.asarray(value))
    mask = None
    for img in images:
        if img.size == 0:
            continue
        if img.ndim < 2:
            raise InputError(f"drawing: expected an image, got an array of shape {img.shape}")
        m = _stroke_mask(img)
        mask = m if mask is None or mask.shape != m.shape else (mask | m)
    return mask


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
    return points_from_mask(drawn_mask(value), n_points, seed, min_pixels)


def points_from_mask(
    mask: np.ndarray | None, n_points: int = DRAWING_POINTS, seed: int = 0, min_pixels: int = MIN_DRAWN_POINTS
) -> np.ndarray:
    """:func:`points_from_drawing` from the pad's marked pixels (:func:`drawn_mask`, None for no
    image), for a caller that needs the mask too."""
    if mask is None:
        raise InputError("drawing: the sketch pad is empty; draw a shape on it first")
    if not mask.any():
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


def upload_bytes(limit: str | int) -> int:
    """An upload limit ("2mb", "500kb", a number of bytes) in bytes, as gradio reads max_file_size
    (1 mb = 2**20 bytes)."""
    return _parse_size(limit) if isinstance(limit, str) else int(limit)


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
            line as the file shows it, counted from 1, and what is wrong), NaN values, too few or
            too many rows, or all-equal points.
    """
    from flowmaps.data.point_cloud import BinaryFileError, TooManyRowsError, parse_csv_bytes, sizes_over_limit

    path = upload_path(value)
    if not path.is_file():
        raise InputError("CSV file: the upload is missing on the server; upload it again")
    cap = upload_bytes(max_bytes)
    size = path.stat().st_size
    if size > cap:
        shown, limit = sizes_over_limit(size, cap)
        raise InputError(
            f"CSV file: the file is {shown}, above the limit of {limit}; subsample it (at most {max_rows:,} rows, "
            "e.g. every second or every tenth row) and upload it again"
        )
    try:
        # the bytes parsed as CSV text, not points_from_csv: an upload whose content is a server
        # path (e.g. "/etc/passwd") must be read as text, never as the name of a file to open.
        cloud = parse_csv_bytes(path.read_bytes(), max_rows=max_rows)
    except BinaryFileError:
        raise InputError(
            "CSV file: this looks like a binary file, not text; "
            "upload a CSV of x, y rows saved as text (UTF-8 or UTF-16)"
        ) from None
    except TooManyRowsError:  # the library's advice names its argument
        raise InputError(
            f"CSV file: the file has more than {max_rows:,} rows of points, the most the app reads; "
            f"keep at most {max_rows:,} of them (e.g. every second or every tenth row) and upload it again"
        ) from None
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
