"""Tests of user point clouds: checks, CSV reading and minibatches (the data end, t = 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowmaps.data.point_cloud import MinibatchSampler, PointCloud, points_from_array, points_from_csv


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    with pytest.raises(ValueError, match=r"points\[1, 1\] \(y\) is nan; every value must be finite \(1 row has"):
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
        ("1,2\n3\n", "line 2 has 1 value;"),
        ("x,y\n1,2\n", "holds 1 data row (line 1, 'x,y', was read as a header); need at least 2"),
        ("hello, not a model\n", "holds 0 data rows (line 1, 'hello, not a model', was read as a header)"),
        ("", "holds 0 data rows"),
        ("1,2\n3,4\n5,6\n7,8\n", "the CSV has more than 3 rows, the most max_rows=3 reads; subsample it"),
        ("x,y\n\n# big\n1,2\n3,4e38\n", "line 5, column 2: 4e38 is too large for torch.float32"),
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


def test_parse_csv_bytes_raises_typed_errors():
    """The readers of the app and the CLI word their own advice from the error's type: a binary file
    and a row cap over max_rows each have their own ValueError subclass; good bytes parse as text."""
    from flowmaps.data.point_cloud import BinaryFileError, TooManyRowsError, parse_csv_bytes

    assert parse_csv_bytes(b"x,y\n1,2\n3,4\n").points.shape == (2, 2)
    with pytest.raises(BinaryFileError, match="binary"):
        parse_csv_bytes(b"\x00\x01\x02")
    with pytest.raises(TooManyRowsError, match="more than 3 rows"):
        parse_csv_bytes(b"1,2\n" * 4, max_rows=3)
    assert issubclass(BinaryFileError, ValueError) and issubclass(TooManyRowsError, ValueError)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_parse_csv_bytes_reads_utf16_text(encoding):
    """A spreadsheet's "Unicode text" export is UTF-16 with a byte-order mark (tab-separated); a fresh
    user's upload of one was refused as a binary file. UTF-16 with a mark, ASCII text as UTF-16
    without one, and UTF-8 with a mark all read as the same points; binary bytes are still refused."""
    from flowmaps.data.point_cloud import BinaryFileError, parse_csv_bytes

    text = "x\ty\r\n1.5\t-2\r\n3\t4.25\r\n-0.5\t0\r\n"
    cloud = parse_csv_bytes(text.encode(encoding))
    assert cloud.points.tolist() == [[1.5, -2.0], [3.0, 4.25], [-0.5, 0.0]]
    with pytest.raises(BinaryFileError, match="binary"):
        parse_csv_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="line 2"):  # UTF-16 text that is not numbers is named by its line
        parse_csv_bytes("x,y\nab,cd\n".encode("utf-16"))
