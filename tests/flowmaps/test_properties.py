"""Property-based tests of every parser that reads user input (grids, points, CSV, app settings).

The property: any input either parses to a valid result or raises ValueError with a message;
never another exception, never a result that breaks the contract. Valid means

- a time grid (t = 0 noise, t = 1 data): float64, one dimension, finite, strictly increasing,
  inside [0, 1], starting at 0 and ending at 1 (unless partial), at most ``max_steps`` steps;
- a point cloud: an (N, 2) finite tensor of the requested dtype with 2 <= N <= the cap.

Example counts are modest (CI has 2 cores); the strategies mix structured inputs that are
likely to be valid with arbitrary junk.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import Limits
from app.validation import InputError, parse_time_grid, parse_train_settings, points_from_drawing
from flowmaps.data.point_cloud import parse_csv_text, points_from_array, points_from_csv
from flowmaps.sampling import parse_grid, validate_grid

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_STEPS = 16
MAX_ROWS = 50

# ------------------------------------------------------------------------------ strategies
special_floats = st.sampled_from(
    [0.0, 1.0, 0.5, -0.0, 1e-12, 1 - 1e-12, -1e-10, 1 + 1e-10, math.nan, math.inf, -math.inf]
)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), special_floats)
numbers = st.one_of(floats, st.integers(-(10**400), 10**400), st.booleans())
junk = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.complex_numbers(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@st.composite
def sorted_grids(draw) -> list[float]:
    """Mostly valid grids: 0, sorted interior times, 1; sometimes perturbed."""
    inner = draw(st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), max_size=MAX_STEPS + 2))
    return [0.0, *sorted(inner), 1.0]


grid_values = st.one_of(
    sorted_grids(),
    st.lists(numbers, max_size=MAX_STEPS + 3),
    st.lists(st.one_of(numbers, junk), max_size=5),
    st.lists(st.lists(floats, max_size=3), max_size=3),
    hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64, np.int64, np.complex64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=MAX_STEPS + 3),
    ),
    junk,
)

grid_alphabet = "0123456789.,;: \t\n-+eE[]()nafINxj_"
grid_text = st.one_of(
    st.text(alphabet=grid_alphabet, max_size=60),
    st.text(max_size=30),
    sorted_grids().map(lambda g: ", ".join(repr(v) for v in g)),
    sorted_grids().map(lambda g: "[" + " ; ".join(f"{v:.6g}" for v in g) + "]"),
)


def assert_valid_grid(g: torch.Tensor, max_steps: int, partial: bool = False) -> None:
    assert isinstance(g, torch.Tensor) and g.dtype == torch.float64 and g.ndim == 1
    assert 2 <= g.numel() <= max_steps + 1
    assert torch.isfinite(g).all()
    assert (g >= 0).all() and (g <= 1).all()
    assert (g[1:] > g[:-1]).all(), g
    if not partial:
        assert g[0].item() == 0.0 and g[-1].item() == 1.0


def assert_message(err: Exception) -> None:
    assert type(err) in (ValueError, InputError), type(err)
    assert len(str(err)) > 10, repr(err)


# ------------------------------------------------------------------------------ grids
@PROPS
@given(grid_text, st.booleans())
def test_parse_grid_text(text: str, partial: bool) -> None:
    try:
        g = parse_grid(text, max_steps=MAX_STEPS, partial=partial)
    except ValueError as err:
        assert_message(err)
        return
    assert_valid_grid(g, MAX_STEPS, partial)


@PROPS
@given(grid_values, st.booleans())
def test_validate_grid_any_value(value, partial: bool) -> None:
    try:
        g = validate_grid(value, max_steps=MAX_STEPS, partial=partial)
    except ValueError as err:
        assert_message(err)
        return
    assert_valid_grid(g, MAX_STEPS, partial)


@PROPS
@given(sorted_grids())
def test_sorted_grids_within_the_cap_are_accepted(grid: list[float]) -> None:
    """The positive side: a strictly increasing grid from 0 to 1 within the cap always parses."""
    assume(all(b > a for a, b in zip(grid, grid[1:])) and len(grid) - 1 <= MAX_STEPS)
    g = parse_grid(", ".join(repr(v) for v in grid), max_steps=MAX_STEPS)
    assert torch.equal(g, torch.tensor(grid, dtype=torch.float64))


@PROPS
@given(
    st.sampled_from(["uniform", "edm", "cosine", "custom", "Uniform", "log", None, 3]),
    st.one_of(numbers, junk),
    grid_text,
)
def test_app_time_grid(kind, steps, custom) -> None:
    try:
        g = parse_time_grid(kind, steps, custom, max_steps=MAX_STEPS)
    except InputError as err:
        assert_message(err)
        assert str(err).split(":")[0] in ("time grid", "custom times", "steps"), str(err)
        return
    assert_valid_grid(g, MAX_STEPS)


# ------------------------------------------------------------------------------ points
point_arrays = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint64, np.bool_, np.complex128]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=MAX_ROWS + 5),
    ),
    hnp.arrays(np.float64, st.tuples(st.integers(0, MAX_ROWS + 5), st.just(2)), elements=floats),
    st.lists(st.lists(st.one_of(numbers, junk), max_size=3), max_size=6),
    st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), max_size=8),
    st.sampled_from(
        [torch.zeros(3, 2, dtype=torch.bfloat16), torch.ones(4, 2, dtype=torch.complex64), torch.zeros(5, 2)]
    ),
    junk,
)


def assert_valid_points(points: torch.Tensor, dtype: torch.dtype, cap: int) -> None:
    assert isinstance(points, torch.Tensor) and points.dtype == dtype
    assert points.ndim == 2 and points.shape[1] == 2 and 2 <= points.shape[0] <= cap
    assert torch.isfinite(points).all()


@PROPS
@given(point_arrays, st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_points_from_array_any_value(value, dtype: torch.dtype) -> None:
    try:
        cloud = points_from_array(value, max_points=MAX_ROWS, dtype=dtype)
    except ValueError as err:
        assert_message(err)
        return
    assert_valid_points(cloud.points, dtype, MAX_ROWS)


cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**45), 10**45).map(str),
    st.sampled_from(["x", "y", "", " ", "nan", "1e39", "-1e400", "0x1", "1_000", "\ufeff1", "#"]),
    st.text(max_size=4),
)
csv_rows = st.lists(st.lists(cell, min_size=0, max_size=3), max_size=MAX_ROWS + 3)
csv_text = st.one_of(
    st.tuples(
        csv_rows, st.sampled_from([",", ";", "\t", " ", ", "]), st.sampled_from(["\n", "\r\n", "\r", "\x0c"])
    ).map(lambda t: t[2].join(t[1].join(r) for r in t[0])),
    st.text(alphabet="0123456789.,;\t -eE\nnaif#xy\r", max_size=120),
    st.text(max_size=60),
)


@PROPS
@given(csv_text)
def test_csv_text_any_value(text: str) -> None:
    for parse in (parse_csv_text, points_from_csv):
        try:
            cloud = parse(text, max_rows=MAX_ROWS)
        except ValueError as err:
            assert_message(err)
            continue
        assert_valid_points(cloud.points, torch.float32, MAX_ROWS)


def test_csv_text_that_names_a_file_is_never_opened(tmp_path) -> None:
    """parse_csv_text reads its argument as CSV text even when it is the name of a file."""
    secret = tmp_path / "secret.csv"
    secret.write_text("x,y\n1,2\n3,4\n")
    assert points_from_csv(str(secret)).points.shape == (2, 2)  # the library call may name a file
    with pytest.raises(ValueError) as err:
        parse_csv_text(str(secret))
    assert "0 data rows" in str(err.value)


# ------------------------------------------------------------------------------ app settings
@PROPS
@given(
    st.sampled_from(["LSD (Lagrangian)", "fm", "psd-m", "nope", "", None]),
    st.one_of(st.integers(-5, 30_000), numbers, junk),
    st.one_of(st.integers(-5, 10_000), numbers, junk),
    st.one_of(st.floats(-1, 1), numbers, junk),
    st.one_of(st.floats(-0.5, 1.5), numbers, junk),
    st.one_of(st.integers(0, 10**6), numbers, junk),
    st.one_of(st.integers(-1, 10), numbers, junk),
)
def test_train_settings_any_value(method, steps, batch, lr, eta, width, depth) -> None:
    lim = Limits()
    try:
        s = parse_train_settings(method, steps, batch, lr, eta, width, depth, 0, lim)
    except InputError as err:
        assert_message(err)
        return
    assert 1 <= s.steps <= lim.max_steps and lim.min_batch <= s.batch <= lim.max_batch
    assert lim.min_lr <= s.lr <= lim.max_lr and 0.0 <= s.eta <= 1.0
    assert lim.min_width <= s.width <= lim.max_width and 1 <= s.depth <= lim.max_depth


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        hnp.arrays(
            st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]),
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
        ),
        st.fixed_dictionaries({"layers": st.lists(st.none(), max_size=2), "composite": st.none()}),
        junk,
    )
)
def test_drawing_any_value(value) -> None:
    """The sketch pad is the app's only image input: any array gives points or a clear message."""
    try:
        pts = points_from_drawing(value, n_points=64)
    except InputError as err:
        assert_message(err)
        assert str(err).startswith("drawing:"), str(err)
        return
    assert pts.shape == (64, 2) and np.isfinite(pts).all() and np.abs(pts).max() <= 1.0
