"""Image data sets: Fashion-MNIST (and MNIST) read from the standard IDX files.

The IDX format stores a big-endian header followed by raw bytes:

- 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``; we read unsigned bytes (code 0x08);
- ``ndim`` big-endian uint32 sizes;
- ``prod(sizes)`` bytes of data.

For images the header is 16 bytes (magic + N, H, W); for labels it is 8 bytes (magic + N).
Files may be gzip-compressed (``.gz``) or raw.

Images are returned as float32 tensors of shape (N, 1, 28, 28) scaled to [-1, 1], the scale for
which the flow-map models use sigma = 0.5 for the noise at t = 0 (time convention everywhere:
t = 0 noise, t = 1 data).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FLOWMAPS_DATA"

#: File names of the four standard IDX files, per split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Class names of Fashion-MNIST, in label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """Raised when an IDX file is truncated, corrupt or of an unexpected layout."""


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:  # gzip raises these for truncated / corrupt streams
        raise IDXFormatError(
            f"cannot read IDX file {path}: {err}. The file is truncated or corrupt; "
            "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or replace it."
        ) from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Validates the magic number (two zero bytes, a known dtype code, ndim >= 1) and that the data
    length equals the product of the sizes in the header.

    Args:
        path: a ``.gz`` or raw IDX file.

    Returns:
        array of shape given by the header (e.g. (N, 28, 28) uint8 for images, (N,) for labels).

    Raises:
        FileNotFoundError: the file does not exist.
        IDXFormatError: the file is truncated, corrupt, or not IDX.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim < 1:
        raise IDXFormatError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000<dtype><ndim>, "
            f"dtype one of {sorted(hex(c) for c in _IDX_DTYPES)})"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IDXFormatError(f"{path}: truncated header ({len(raw)} < {header_len} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{path}: file {kind}: header says shape {shape} ({expected} data bytes), found {actual} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if the name ends in ``.gz``).

    Used by the tests and to export small subsets; the inverse of :func:`read_idx` for uint8.
    """
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    return None


def _missing_message(dataset: str, tried: list[Path]) -> str:
    names = ", ".join(f"{a}.gz" for pair in IDX_FILES.values() for a in pair)
    where = "; ".join(str(p) for p in tried) or "(none)"
    install = (
        "install it with `apt-get install dataset-fashion-mnist` (Debian), or " if dataset == "fashion-mnist" else ""
    )
    return (
        f"{dataset} IDX files not found (looked in: {where}). To fix: {install}pass root=<folder> "
        f"or set the environment variable {ENV_VAR}=<folder>, the folder holding the four files "
        f"{names} (gzip-compressed or not)."
    )


def resolve_root(root: str | os.PathLike | None = None, dataset: str = "fashion-mnist") -> Path:
    """Find the folder holding the IDX files.

    Search order: the ``root`` argument, the environment variable ``FLOWMAPS_DATA`` (either the
    folder itself or a folder with a ``<dataset>`` sub-folder), then for Fashion-MNIST the
    Debian folder ``/usr/share/datasets/fashion-mnist``.

    Raises:
        FileNotFoundError: with instructions on how to install or point to the data.
    """
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root))
    else:
        env = os.environ.get(ENV_VAR)
        if env:
            candidates += [Path(env), Path(env) / dataset]
        if dataset == "fashion-mnist":
            candidates.append(DEBIAN_FASHION_MNIST)
    needed = [IDX_FILES["train"][0], IDX_FILES["test"][0]]
    for cand in candidates:
        if any(_find_file(cand, stem) is not None for stem in needed):
            return cand
    raise FileNotFoundError(_missing_message(dataset, candidates))


def _load_idx_pair(split: str, root: str | os.PathLike | None, dataset: str) -> tuple[Tensor, Tensor]:
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, dataset)
    img_stem, lab_stem = IDX_FILES[split]
    img_path = _find_file(folder, img_stem)
    lab_path = _find_file(folder, lab_stem)
    if img_path is None or lab_path is None:
        raise FileNotFoundError(_missing_message(dataset, [folder]))
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{folder}: images of shape {images.shape} and labels of shape {labels.shape} "
            "do not form an (N, H, W) / (N,) pair"
        )
    x = torch.from_numpy(images).to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Load Fashion-MNIST.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder with the four IDX files; defaults to ``$FLOWMAPS_DATA``, then the Debian
            folder ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).

    Returns:
        images: float32 (N, 1, 28, 28) in [-1, 1] (pixel / 127.5 - 1; data at t = 1);
        labels: int64 (N,) in 0..9 (see :data:`FASHION_MNIST_CLASSES`).
    """
    return _load_idx_pair(split, root, "fashion-mnist")


def load_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Load MNIST digits from the same four-file IDX layout as :func:`load_fashion_mnist`.

    There is no system package for MNIST IDX files here: pass ``root`` or set
    ``$FLOWMAPS_DATA`` (the folder itself or its ``mnist`` sub-folder).

    Returns:
        images float32 (N, 1, 28, 28) in [-1, 1], labels int64 (N,).
    """
    return _load_idx_pair(split, root, "mnist")


def to_uint8(images: Tensor | np.ndarray) -> np.ndarray:
    """Map images from [-1, 1] to uint8 [0, 255] (values outside are clipped).

    Args:
        images: any shape, values nominally in [-1, 1].

    Returns:
        uint8 numpy array of the same shape: round((x + 1) * 127.5).
    """
    if isinstance(images, Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    arr = (np.asarray(images, dtype=np.float32) + 1.0) * 127.5
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def image_grid(images: Tensor | np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile a batch of single-channel images into one uint8 picture for display.

    Args:
        images: (N, 1, H, W) or (N, H, W) in [-1, 1].
        nrow: images per row.
        padding: pixels between tiles and around the border.
        pad_value: uint8 value of the padding.

    Returns:
        uint8 numpy array of shape (rows * (H + p) + p, nrow' * (W + p) + p), with
        rows = ceil(N / nrow) and nrow' = min(nrow, N).

    Raises:
        ValueError: images of another shape or with more than one channel, or ``nrow < 1``.

    (A grid of pictures; time grids for sampling are :func:`flowmaps.sampling.make_grid`.)
    """
    arr = to_uint8(images)
    if arr.ndim == 4:
        if arr.shape[1] != 1:
            raise ValueError(f"expected one channel, got shape {arr.shape}")
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"expected (N, 1, H, W) or (N, H, W), got shape {arr.shape}")
    if nrow < 1:
        raise ValueError("nrow must be >= 1")
    n, h, w = arr.shape
    cols = max(1, min(nrow, n))
    rows = max(1, -(-n // cols))
    p = padding
    grid = np.full((rows * (h + p) + p, cols * (w + p) + p), pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = p + r * (h + p), p + c * (w + p)
        grid[top : top + h, left : left + w] = arr[i]
    return grid


def image_batch_sampler(images: Tensor):
    """data_sampler(n, generator) -> a batch of n images drawn with replacement from ``images``.

    ``images`` (N, C, H, W) stays where it is (move it to the training device first); indices are
    drawn on the generator's device, so the trainer's generator alone fixes the batches.
    """

    def sample(n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, images.shape[0], (n,), generator=generator, device=generator.device)
        return images[idx.to(images.device)]

    return sample
