"""Tests of the 2-D toy sets (the data end, t = 1)."""

from __future__ import annotations

import math

import pytest
import torch

from flowmaps.data.toy import CHECKERBOARD_CELLS, TOY_SETS, checkerboard_density, data_std, sample_toy


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
