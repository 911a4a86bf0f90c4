"""Tests of the 2-D toy sets and user point clouds (the data end, t = 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowmaps.data.toy import (
    CHECKERBOARD_CELLS,
    TOY_SETS,
    MinibatchSampler,
    PointCloud,
    checkerboard_density,
    data_std,
    points_from_array,
    points_from_csv,
    sample_toy,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(TOY_SETS))
def test_each_set_shape_scale_and_seed(name: str) -> None:
    x = sample_toy(name, 5000, _gen(0))
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.abs().max().item() < 1.5  # roughly [-1, 1]^2
    assert x.std(0).min().item() > 0.2  # not collapsed
    assert torch.equal(x, sample_toy(name, 5000, _gen(0)))
    assert not torch.equal(x, sample_toy(name, 5000, _gen(1)))
    assert 0.3 < data_std(name) < 0.7
    assert isinstance(TOY_SETS[name], str) and TOY_SETS[name]


def test_unknown_set_and_bad_n() -> None:
    with pytest.raises(ValueError, match="unknown toy set 'mandelbrot'"):
        sample_toy("mandelbrot", 10)
    with pytest.raises(ValueError, match="positive integer"):
        sample_toy("checkerboard", 0)


def test_checkerboard_cells_parity() -> None:
    assert len(CHECKERBOARD_CELLS) == 8
    assert all((i + j) % 2 == 0 for i, j in CHECKERBOARD_CELLS)
    # bottom-left cell kept, its right neighbour not; density 1/2 integrates to 1 over 8 cells
    pts = torch.tensor([[-0.75, -0.75], [-0.25, -0.75], [0.25, 0.25], [0.75, -0.25], [1.2, 0.0]])
    assert checkerboard_density(pts).tolist() == [0.5, 0.0, 0.5, 0.5, 0.0]
    assert 8 * 0.25 * 0.5 == 1.0
    # half-open cells: a point on an inner edge belongs to the cell to its right / above
    edge = torch.tensor([[-0.5, -0.75], [-0.75, -0.5], [0.0, 0.0]])
    assert checkerboard_density(edge).tolist() == [0.0, 0.0, 0.5]


def test_checkerboard_support_and_equal_mass() -> None:
    n = 80_000
    x = sample_toy("checkerboard", n, _gen(3), dtype=torch.float64)
    assert (checkerboard_density(x) == 0.5).all()  # every point on a kept cell
    cells = torch.floor(2 * (x + 1)).long()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).reshape(4, 4)
    kept = torch.zeros(4, 4, dtype=torch.bool)
    for i, j in CHECKERBOARD_CELLS:
        kept[i, j] = True
    assert counts[~kept].sum() == 0
    expected, sd = n / 8, math.sqrt(n * (1 / 8) * (7 / 8))
    assert (counts[kept] - expected).abs().max().item() < 4 * sd
    # uniform inside each cell: positions within the cell have mean 1/2 and variance 1/12
    frac = 2 * (x + 1) - cells
    assert torch.allclose(frac.mean(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.005)
    assert torch.allclose(frac.var(0), torch.full((2,), 1 / 12, dtype=torch.float64), atol=0.002)
    # each coordinate uniform on [-1, 1]: the std is 1/sqrt(3), as data_std says
    assert abs(x.std(0).mean().item() - data_std("checkerboard")) < 0.005
    assert abs(data_std("checkerboard") - 0.57735) < 1e-5


# ------------------------------------------------------------------------- user point clouds


def test_points_from_array_accepts_and_rejects() -> None:
    cloud = points_from_array(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    assert isinstance(cloud, PointCloud) and len(cloud) == 3 and cloud[1].tolist() == [2.0, 3.0]
    assert points_from_array(torch.zeros(2, 2)).points.shape == (2, 2)
    with pytest.raises(ValueError, match=r"shape \(N, 2\).*got shape \(3, 3\)"):
        points_from_array(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        points_from_array(np.zeros(4))
    with pytest.raises(ValueError, match="at least 2 points; got 1"):
        points_from_array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="row 1, column y is nan.*finite"):
        points_from_array([[1.0, 2.0], [3.0, float("nan")]])
    with pytest.raises(ValueError, match="must be numbers"):
        points_from_array(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="cap of 5"):
        points_from_array(np.zeros((6, 2)), max_points=5)


def test_point_cloud_standardized() -> None:
    cloud = points_from_array(np.array([[0.0, 0.0], [4.0, 2.0], [2.0, 6.0]]))
    z = cloud.standardized()
    assert torch.allclose(z.mean(), torch.zeros(2), atol=1e-6)
    assert abs(z.std() - 1.0) < 1e-6


def test_points_from_csv_formats(tmp_path) -> None:
    text = "x,y\n0.5, -1\n\n# a comment\n2,3,\n1e-1,4\n"
    cloud = points_from_csv(text)
    want = torch.tensor([[0.5, -1.0], [2.0, 3.0], [0.1, 4.0]])
    assert torch.allclose(cloud.points, want)
    assert points_from_csv("1;2\n3;4").points.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert points_from_csv("1 2\n3\t4\n").points.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    path = tmp_path / "pts.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6\n")
    assert len(points_from_csv(path)) == 3
    assert len(points_from_csv(str(path))) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n3,abc\n", "line 3, column 2: 'abc' is not a number"),
        ("1,2\nx,y\n3,4\n", "line 2, column 1: 'x' is not a number"),
        ("x,y\n1,2\n3,nan\n", "line 3 holds a non-finite value"),
        ("1,2\n3,inf\n", "non-finite"),
        ("1,2\n3,4,5\n", "line 2 has 3 values; each row must have exactly 2"),
        ("1,2\n3\n", "line 2 has 1 values"),
        ("x,y\n1,2\n", "holds 1 data rows; need at least 2"),
        ("", "holds 0 data rows"),
        ("1,2\n3,4\n5,6\n7,8\n", "more than max_rows=3 rows"),
    ],
)
def test_points_from_csv_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        points_from_csv(text, max_rows=3)
    assert message in str(info.value)


def test_minibatch_sampler_draws_with_replacement() -> None:
    cloud = points_from_array(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    sampler = MinibatchSampler(cloud, batch_size=1000, generator=_gen(0))
    batch = next(sampler)
    assert batch.shape == (1000, 2)
    # every row is one of the cloud's points, and all three appear (batch > N: with replacement)
    assert set(batch[:, 0].tolist()) == {0.0, 1.0, 2.0}
    assert torch.equal(batch[:, 0], batch[:, 1])
    counts = torch.bincount(batch[:, 0].long(), minlength=3)
    assert (counts - 1000 / 3).abs().max() < 4 * math.sqrt(1000 * 2 / 9)
    again = cloud.sampler(1000, _gen(0)).sample()
    assert torch.equal(batch, again)
    assert sampler.sample(5).shape == (5, 2)
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchSampler(cloud, 0)
