"""A user's own 2-D points: checked, wrapped as a data set, and drawn in minibatches.

The points are the data end (t = 1) of the flow; noise is t = 0.

- :class:`PointCloud` holds ``(N, 2)`` points; :func:`points_from_array` and
  :func:`points_from_csv` build one from an array or from CSV text or a file, checking the input;
  :func:`parse_csv_text` reads CSV text only (never a path: safe for uploads).
- :class:`MinibatchSampler` draws minibatches with replacement, and is a data sampler for
  :class:`flowmaps.training.Trainer`.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowmaps.inputs import check_count

__all__ = [
    "CSV_MAX_BYTES",
    "CSV_MAX_ROWS",
    "BinaryFileError",
    "TooManyRowsError",
    "MAX_POINTS",
    "MinibatchSampler",
    "PointCloud",
    "parse_csv_bytes",
    "parse_csv_text",
    "points_from_array",
    "points_from_csv",
    "read_points_file",
]

#: Default cap on the number of rows of a user's point cloud.
MAX_POINTS = 1_000_000


class PointCloud(torch.utils.data.Dataset):
    """A user's 2-D points as a data set (the data end, t = 1 of the flow).

    Attributes:
        points: ``(N, 2)`` float tensor.

    ``len(cloud)``, ``cloud[i]`` (a ``(2,)`` tensor) and :meth:`std` (the noise scale sigma to
    use, ``sqrt(mean_j Var[x_j])``). Build one with :func:`points_from_array` or
    :func:`points_from_csv`, which check the input.
    """

    def __init__(self, points: Tensor) -> None:
        self.points = points

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.points[i]

    def std(self) -> float:
        return float(torch.sqrt(self.points.to(torch.float64).var(dim=0).mean()))

    def mean(self) -> Tensor:
        return self.points.mean(dim=0)

    def standardized(self, scale: float = 1.0) -> PointCloud:
        """A copy centred at 0 and scaled so that :meth:`std` equals ``scale``."""
        sd = self.std()
        if sd <= 0:
            raise ValueError("all points are identical; cannot standardise a cloud with std 0")
        return PointCloud((self.points - self.mean()) * (scale / sd))

    def sampler(self, batch_size: int, generator: torch.Generator | None = None) -> MinibatchSampler:
        return MinibatchSampler(self, batch_size, generator)


def points_from_array(
    arr: np.ndarray | Tensor | Sequence[Sequence[float]],
    *,
    max_points: int = MAX_POINTS,
    dtype: torch.dtype = torch.float32,
) -> PointCloud:
    """Check a user's array of 2-D points and wrap it as a :class:`PointCloud`.

    Requirements: shape ``(N, 2)``, numeric, every value finite, ``2 <= N <= max_points``.

    Raises:
        ValueError: naming what is wrong and what to fix.
    """
    if isinstance(arr, Tensor):
        t = arr.detach().cpu()
        if t.is_complex():
            raise ValueError(f"points must be real numbers; got a complex tensor ({t.dtype})")
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.double()  # bfloat16 and other types numpy cannot hold
        a = t.numpy()
    else:
        try:
            a = np.asarray(arr)
        except (ValueError, TypeError, OverflowError) as err:
            raise ValueError(f"points must be a table of numbers with 2 columns ({err})") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"points must be numbers; got values of type {a.dtype}: convert text to numbers first")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"points must be real numbers; got complex values ({a.dtype})")
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), one x, y pair per row; got shape {a.shape}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points; got {n}")
    if n > max_points:
        raise ValueError(f"got {n} points, above the cap of {max_points}; subsample them first")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        n_bad = int(bad.any(axis=1).sum())
        raise ValueError(  # an array's index, from 0 (a CSV's lines are checked by _parse_rows, from 1)
            f"points[{row}, {col}] ({'xy'[col]}) is {a[row, col]}; every value must be finite "
            f"({n_bad} {'row has' if n_bad == 1 else 'rows have'} NaN or infinite values): remove them"
        )
    out = torch.from_numpy(a).to(dtype)
    if not torch.isfinite(out).all():  # finite in float64 but too large for ``dtype``
        row, col = (~torch.isfinite(out)).nonzero()[0].tolist()
        limit = torch.finfo(dtype).max
        raise ValueError(
            f"points[{row}, {col}] ({'xy'[col]}) is {a[row, col]:g}, too large for {dtype} "
            f"(|value| at most {limit:.3g}); rescale the points"
        )
    return PointCloud(out)


def _split_cells(line: str) -> list[str]:
    for sep in (",", ";", "\t"):
        if sep in line:
            cells = [c.strip() for c in line.split(sep)]
            while cells and cells[-1] == "":
                cells.pop()  # tolerate a trailing separator
            return cells
    return line.split()


def _looks_like_path(text: str | os.PathLike) -> bool:
    if isinstance(text, os.PathLike):
        return True
    if "\n" in text or "," in text or len(text) >= 4096:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte, ...
        return False


#: Line boundaries of :meth:`str.splitlines`.
_LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` as :meth:`str.splitlines` gives them, one at a time (no list of
    millions of strings for a huge file: the row cap stops the reading early)."""
    start = 0
    for m in _LINE_BREAK.finditer(text):
        yield text[start : m.start()]
        start = m.end()
    if start < len(text):
        yield text[start:]


class TooManyRowsError(ValueError):
    """A CSV with more rows than the reader's ``max_rows`` (its message names that argument, so a
    caller with its own limit words its own advice)."""


class BinaryFileError(ValueError):
    """Bytes that look like a binary file (a NUL byte in the first 4 KiB), not CSV text."""


#: The app's limits on a CSV of points (app/config.py's defaults), also those of ``flowmaps train --data FILE.csv``.
CSV_MAX_ROWS = 100_000
CSV_MAX_BYTES = 2 << 20


def points_from_csv(
    text_or_path: str | os.PathLike,
    max_rows: int = CSV_MAX_ROWS,
    *,
    dtype: torch.dtype = torch.float32,
) -> PointCloud:
    """Read ``x, y`` rows from CSV text or a CSV file into a :class:`PointCloud`.

    A string without a line break or comma that names an existing file is read as that file;
    anything else is CSV text. For text from an untrusted source use :func:`parse_csv_text`,
    which never touches the file system. See :func:`parse_csv_text` for the format.

    Raises:
        ValueError: see :func:`parse_csv_text`; also for a missing file or a value that is
            neither text nor a path.
    """
    if not isinstance(text_or_path, str | os.PathLike):
        raise ValueError(f"CSV input must be text or a file path; got {type(text_or_path).__name__}")
    if _looks_like_path(text_or_path):
        path = Path(text_or_path)
        if not path.is_file():
            raise ValueError(f"no CSV file at {path}")
        # Streamed line by line, so the row cap stops the reading of a huge file early.
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            return _parse_rows((part for chunk in fh for part in _lines(chunk)), max_rows, dtype)
    return parse_csv_text(str(text_or_path), max_rows=max_rows, dtype=dtype)


def sizes_over_limit(size: int, max_bytes: int) -> tuple[str, str]:
    """A file's size and the limit it is over, as a message writes them: in MB (2**20 bytes; one
    decimal for the size), or both also in bytes where the size would round to the limit itself
    (a 2,100,000-byte file is "2.0 MB" against a limit of 2 MB)."""
    if max_bytes < 100 << 10:  # a small limit (tests, a tight deployment): bytes only
        return f"{size:,} bytes", f"{max_bytes:,} bytes"
    shown, limit = f"{size / (1 << 20):.1f} MB", f"{max_bytes / (1 << 20):g} MB"
    if round(size / (1 << 20), 1) <= max_bytes / (1 << 20):
        shown, limit = f"{size:,} bytes", f"{limit} ({max_bytes:,} bytes)"
    return shown, limit


def read_points_file(
    path: str | os.PathLike, max_rows: int = CSV_MAX_ROWS, max_bytes: int = CSV_MAX_BYTES
) -> PointCloud:
    """Read a CSV file of ``x, y`` rows (format of :func:`parse_csv_text`) into a float32
    :class:`PointCloud` of shape ``(N, 2)``, with the app's limits on its size and rows.

    Raises:
        ValueError: a missing file, one over ``max_bytes``, a binary file, or any error of
            :func:`parse_csv_text` (naming the line); every message starts with the file's name and
            says what to change.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give the path of a CSV of x, y rows")
    size = path.stat().st_size
    if size > max_bytes:
        shown, limit = sizes_over_limit(size, max_bytes)
        raise ValueError(
            f"{path}: the file is {shown}, above the limit of {limit}; "
            f"subsample it (at most {max_rows:,} rows, e.g. every second or every tenth row)"
        )
    try:
        return parse_csv_bytes(path.read_bytes(), max_rows=max_rows)
    except BinaryFileError:
        raise ValueError(f"{path}: this looks like a binary file, not text; give a CSV of x, y rows") from None
    except TooManyRowsError:
        raise ValueError(
            f"{path}: more than {max_rows:,} rows of points, the most that is read; keep at most {max_rows:,} "
            "of them (e.g. every second or every tenth row)"
        ) from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _utf16_order(head: bytes) -> str | None:
    """ "utf-16" for bytes that open with a UTF-16 byte-order mark, "utf-16-le" / "utf-16-be" for
    ASCII text written as UTF-16 without one (every second byte NUL, the others not), else None."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) == len(odd) and 0 not in even:
        return "utf-16-le"
    if even.count(0) == len(even) and 0 not in odd:
        return "utf-16-be"
    return None


def parse_csv_bytes(raw: bytes, max_rows: int = CSV_MAX_ROWS, *, dtype: torch.dtype = torch.float32) -> PointCloud:
    """:func:`parse_csv_text` of a file's bytes, after a check that they are text: UTF-16 (with a
    byte-order mark, as a spreadsheet's "Unicode text" export writes it, or ASCII text without one),
    else UTF-8; undecodable bytes are replaced (and then named by the line they spoil).

    Raises:
        BinaryFileError: a NUL byte in the first 4 KiB of bytes that are not UTF-16 text.
        TooManyRowsError: more than ``max_rows`` rows.
        ValueError: any other error of :func:`parse_csv_text` (naming the line).
    """
    head = raw[:4096]
    encoding = _utf16_order(head)
    if encoding is None and b"\x00" in head:
        raise BinaryFileError("this looks like a binary file, not text")
    text = raw.decode(encoding or "utf-8", errors="replace")
    return parse_csv_text(text, max_rows=max_rows, dtype=dtype)


def parse_csv_text(text: str, max_rows: int = 100_000, *, dtype: torch.dtype = torch.float32) -> PointCloud:
    """Read ``x, y`` rows from CSV *text* (never a path: safe for uploads) into a :class:`PointCloud`.

    Format: one point per line, two numbers separated by a comma (or semicolon, tab or spaces).
    An optional header line (e.g. ``x,y``) is skipped; blank lines and lines starting with ``#``
    are ignored. Reading stops at the first bad line or as soon as ``max_rows`` is exceeded.

    Raises:
        ValueError: for a cell that is not a number, a row without exactly two values, NaN or
            infinite values, values too large for ``dtype`` (each naming its line as the file
            shows it, counted from 1 with blank, comment and header lines, and its column), fewer
            than 2 rows or more than ``max_rows`` rows.
    """
    if not isinstance(text, str):
        raise ValueError(f"CSV text must be a string; got {type(text).__name__}")
    return _parse_rows(_lines(text), max_rows, dtype)


def _parse_rows(lines: Iterator[str], max_rows: int, dtype: torch.dtype) -> PointCloud:
    """Points from CSV lines; every message names a line as the file shows it (from 1, blank,
    comment and header lines counted)."""
    rows: list[tuple[float, float]] = []
    header: tuple[int, str] | None = None  # (line number, text) of the skipped header line
    largest = torch.finfo(dtype).max if dtype.is_floating_point else math.inf
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        cells = _split_cells(line)
        values = []
        bad_cell = None
        for col, cell in enumerate(cells, start=1):
            try:
                values.append(float(cell))
            except ValueError:
                bad_cell = (col, cell)
                break
        if bad_cell is not None:
            if not rows and header is None:
                header = (lineno, line)  # first non-blank line with text: a header
                continue
            col, cell = bad_cell
            raise ValueError(
                f"line {lineno}, column {col}: {cell!r} is not a number; each row must be two numbers x, y"
            )
        if len(values) != 2:
            raise ValueError(
                f"line {lineno} has {len(values)} value{'' if len(values) == 1 else 's'}; "
                "each row must have exactly 2 (x, y)"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"line {lineno} holds a non-finite value ({cells[0]}, {cells[1]}); remove rows with NaN or infinity"
            )
        big = next((i for i, v in enumerate(values) if abs(v) > largest), None)
        if big is not None:
            raise ValueError(
                f"line {lineno}, column {big + 1}: {cells[big]} is too large for {dtype} "
                f"(|value| at most {largest:.3g}); rescale the points"
            )
        rows.append((values[0], values[1]))
        if len(rows) > max_rows:
            raise TooManyRowsError(
                f"the CSV has more than {max_rows:,} rows, the most max_rows={max_rows} reads; "
                "subsample it, or pass a larger max_rows"
            )
    if len(rows) < 2:
        rows_held = f"{len(rows)} data row{'' if len(rows) == 1 else 's'}"
        if header is not None:  # a text file that is no CSV reads as a lone header: say which line
            lineno, text = header
            shown = text if len(text) <= 40 else text[:37] + "..."
            rows_held += f" (line {lineno}, {shown!r}, was read as a header)"
        raise ValueError(f"the CSV holds {rows_held}; need at least 2 rows of x, y")
    return points_from_array(np.asarray(rows), max_points=max_rows, dtype=dtype)


class MinibatchSampler:
    """Draws minibatches with replacement from a point cloud (the data end, t = 1).

    ``sampler.sample()`` (or ``next(sampler)``) returns ``(batch_size, 2)``; the iterator never
    ends. Pass a ``torch.Generator`` for reproducible batches. The indices are drawn on the
    generator's device (a CUDA generator works) and the points come back on the cloud's device.

    A sampler is also a data sampler for :class:`flowmaps.training.Trainer`:
    ``sampler(n, generator)`` draws ``n`` points with the given generator (the trainer's, so that
    a run is reproducible and resumable). ``Trainer(..., cloud.sampler)`` works as well: the
    trainer calls ``cloud.sampler(n, generator)`` and draws from the sampler it returns.
    """

    def __init__(
        self,
        cloud: PointCloud | Tensor,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> None:
        self.points = cloud.points if isinstance(cloud, PointCloud) else cloud
        if self.points.ndim != 2 or self.points.shape[0] < 1:
            raise ValueError(f"need points of shape (N, d); got {tuple(self.points.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.batch_size = batch_size
        self.generator = generator

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points (default ``batch_size``) drawn with replacement, ``(n, d)``; ``generator``
        overrides the sampler's own."""
        m = self.batch_size if n is None else check_count(n)
        g = generator if generator is not None else self.generator
        device = g.device if g is not None else self.points.device
        idx = torch.randint(0, self.points.shape[0], (m,), generator=g, device=device)
        return self.points[idx.to(self.points.device)]

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The data-sampler form, ``sampler(n, generator) -> (n, d)``, for :class:`~flowmaps.training.Trainer`."""
        return self.sample(n, generator)

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        return self.sample()
