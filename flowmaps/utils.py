"""Small helpers shared by the library, its command line, the app and the benchmarks.

One home for what would otherwise be written in several places:

- ``atomic_write`` / ``write_text_atomic``: a file appears whole or not at all (temporary file in the
  same folder, fsync, ``os.replace``, then fsync of the folder), so a crash or a full disk never
  leaves a half-written checkpoint, card or table.
- ``resolve_device``: ``"auto"`` means CUDA when present, else CPU; a CUDA device asked for on a
  machine without one is a ``ValueError`` that says so.
- ``markdown_table`` / ``text_table``: rows of dicts as a markdown or an aligned plain-text table,
  floats to 4 significant digits.
- ``Range``: the allowed values of a number, stated once, checked by a config and by the command line.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Range",
    "current_umask",
    "atomic_write",
    "write_text_atomic",
    "fsync_dir",
    "resolve_device",
    "markdown_table",
    "text_table",
]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk (after a rename into it); a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read by setting and restoring it): files a user shares get ``0o666 & ~umask``."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Write ``path`` through ``write(tmp_path)`` so that it appears whole or not at all.

    ``write`` receives the name of a temporary file in the same folder and must write the full
    content there (and may fsync it); the file then gets permission ``mode`` (mkstemp makes it
    0600, and shipped files must be readable), is renamed over ``path`` and the folder is fsynced.
    Any exception, KeyboardInterrupt included, removes the temporary file and leaves an existing
    ``path`` untouched. Missing parent folders are created. Returns ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``: ``"auto"`` is CUDA when available, else CPU.

    Raises:
        ValueError: ``name`` is not a device torch knows, or names CUDA on a machine without it.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as err:
            msg = f"device {name!r} is not a device torch knows ({err}); use cpu, cuda, cuda:N or auto"
            raise ValueError(msg) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asks for CUDA, which is not available here; use cpu or auto")
    return device


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]], cols: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    if cols:
        return list(cols)
    return [c for c in dict.fromkeys(k for row in rows for k in row) if c not in skip]


def markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str] | None = None, skip: Sequence[str] = ()) -> str:
    """A markdown table of row dicts: columns in first-seen order (or ``cols``), floats to 4 significant digits."""
    if not rows:
        return "(no rows)"
    cols = _columns(rows, cols, skip)
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    out += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(out)


def text_table(rows: Sequence[dict[str, Any]], cols: Sequence[str] | None = None, skip: Sequence[str] = ()) -> str:
    """The same rows as a right-aligned plain-text table for a terminal."""
    if not rows:
        return "(no rows)"
    cols = _columns(rows, cols, skip)
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


@dataclass(frozen=True)
class Range:
    """The values a number may take, stated once and read by every check of it.

    ``low``/``high`` bound the value (None: unbounded), ``low_open``/``high_open`` exclude the bound,
    ``integer`` asks for a whole number and ``off`` also allows None (the setting switched off; a
    command line spells it 0). :class:`flowmaps.training.TrainConfig` keeps one per field in its
    field metadata; its own check and the ``flowmaps train`` flags both read it from there.

    Example::

        >>> Range(low=0, low_open=True).problem(-1.0)
        'must be > 0, got -1'
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    off: bool = False

    def describe(self, off_word: str = "None") -> str:
        """What the value must be, e.g. "a positive integer (>= 1)", "in [0, 1)", "> 1 or None"."""
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            text = f"in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"
        elif lo is not None:
            text = f"{'>' if self.low_open else '>='} {lo:g}"
            if self.integer and lo == 1 and not self.low_open:
                text = "a positive integer (>= 1)"
        elif hi is not None:
            text = f"{'<' if self.high_open else '<='} {hi:g}"
        else:
            text = "a whole number" if self.integer else "a finite number"
        if self.off:
            return f"0 (off) or {text}" if off_word == "0" else f"{text} or None"
        return text

    def problem(self, value: Any, off_word: str = "None") -> str | None:
        """None when ``value`` is allowed, else "must be ..., got value" (no field name)."""
        if value is None and self.off:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.integer:
            ok = float(value).is_integer()
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if ok:
            return None
        got = f"{value:g}" if isinstance(value, float) else repr(value)
        return f"must be {self.describe(off_word)}, got {got}"
