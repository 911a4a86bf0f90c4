"""Tests for flowmaps.data.images: IDX reading, Fashion-MNIST loading, image grids."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from flowmaps.data import images as im


def _write_split(root: Path, split: str, n: int, seed: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255  # make sure both ends of the range occur
    y = rng.integers(0, 10, size=n, dtype=np.uint8)
    img_stem, lab_stem = im.IDX_FILES[split]
    ext = ".gz" if gz else ""
    im.write_idx(root / (img_stem + ext), x)
    im.write_idx(root / (lab_stem + ext), y)
    return x, y


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    _write_split(tmp_path, "train", 7, seed=1)
    _write_split(tmp_path, "test", 5, seed=2)
    return tmp_path


def test_idx_roundtrip_gzip_and_raw(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    im.write_idx(tmp_path / "a.gz", a)
    im.write_idx(tmp_path / "a", a)
    # The header is big-endian: magic 0x00000803 then sizes 2, 3, 4.
    raw = gzip.open(tmp_path / "a.gz").read()
    assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    np.testing.assert_array_equal(im.read_idx(tmp_path / "a.gz"), a)
    np.testing.assert_array_equal(im.read_idx(tmp_path / "a"), a)


def test_load_scales_to_minus_one_one(fake_root: Path) -> None:
    x_np, y_np = _write_split(fake_root, "train", 7, seed=1)
    x, y = im.load_fashion_mnist("train", root=fake_root)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (7,) and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0].numpy(), x_np / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), y_np)
    assert x.min() == -1.0 and x.max() == 1.0
    xt, _ = im.load_fashion_mnist("test", root=fake_root)
    assert xt.shape == (5, 1, 28, 28)


def test_uncompressed_files_are_found(tmp_path: Path) -> None:
    _write_split(tmp_path, "test", 3, seed=3, gz=False)
    x, y = im.load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (3, 1, 28, 28) and y.shape == (3,)


def test_mnist_same_interface(fake_root: Path) -> None:
    x, y = im.load_mnist("test", root=fake_root)
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)


def test_truncated_file_raises_clear_error(tmp_path: Path) -> None:
    a = np.zeros((4, 28, 28), dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + np.asarray(a.shape, dtype=">u4").tobytes()
    with gzip.open(tmp_path / "t.gz", "wb") as f:
        f.write(header + a.tobytes()[:-10])
    with pytest.raises(im.IDXFormatError, match="truncated"):
        im.read_idx(tmp_path / "t.gz")


def test_truncated_gzip_stream_raises_clear_error(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    im.write_idx(tmp_path / "full.gz", a)
    data = (tmp_path / "full.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(im.IDXFormatError, match="truncated or corrupt"):
        im.read_idx(tmp_path / "cut.gz")


def test_bad_magic_raises(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(im.IDXFormatError, match="magic"):
        im.read_idx(tmp_path / "bad")


def test_mismatched_images_and_labels_raise(tmp_path: Path) -> None:
    im.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    im.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(im.IDXFormatError, match="do not form"):
        im.load_fashion_mnist("test", root=tmp_path)


def test_missing_data_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(im.ENV_VAR, raising=False)
    monkeypatch.setattr(im, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        im.load_fashion_mnist("train")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "FLOWMAPS_DATA" in msg and "root=" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_env_var_is_searched_before_debian_folder(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(im.ENV_VAR, str(fake_root))
    monkeypatch.setattr(im, "DEBIAN_FASHION_MNIST", Path("/nonexistent"))
    x, _ = im.load_fashion_mnist("test")
    assert x.shape[0] == 5


def test_bad_split_raises(fake_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        im.load_fashion_mnist("validation", root=fake_root)


def test_to_uint8_and_grid() -> None:
    assert im.to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0, -5.0])).tolist() == [0, 128, 255, 255, 0]
    x = torch.full((5, 1, 4, 3), -1.0)
    x[3] = 1.0  # the fourth tile is white
    grid = im.image_grid(x, nrow=2, padding=1, pad_value=7)
    # 3 rows of tiles, 2 columns: (3 * (4 + 1) + 1, 2 * (3 + 1) + 1).
    assert grid.shape == (16, 9) and grid.dtype == np.uint8
    assert (grid[6:10, 5:8] == 255).all()  # row 1, column 1
    assert (grid[1:5, 1:4] == 0).all()
    assert grid[0, 0] == 7 and (grid[11:15, 5:8] == 7).all()  # the sixth tile is empty padding
    assert im.image_grid(x[:1], nrow=8, padding=0).shape == (4, 3)
    with pytest.raises(ValueError):
        im.image_grid(torch.zeros(2, 3, 4, 4))


@pytest.mark.skipif(
    not (im.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed"
)
def test_real_fashion_mnist_test_split() -> None:
    x, y = im.load_fashion_mnist("test", root=im.DEBIAN_FASHION_MNIST)
    assert x.shape == (10_000, 1, 28, 28) and y.shape == (10_000,)
    assert set(y.unique().tolist()) == set(range(10))
    assert torch.bincount(y).tolist() == [1000] * 10
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_image_batch_sampler_draws_from_the_set_reproducibly():
    from flowmaps.data.images import image_batch_sampler

    images = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    sample = image_batch_sampler(images)
    a = sample(64, torch.Generator().manual_seed(3))
    b = sample(64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 1, 2, 2) and torch.equal(a, b)
    assert set(a[:, 0, 0, 0].tolist()) <= set(range(10)) and len(set(a[:, 0, 0, 0].tolist())) > 5
