"""Typed, range-checked option values for the command line.

Each numeric option reads its allowed values from a :class:`flowmaps.utils.Range` (for training
settings: the one in :class:`flowmaps.training.TrainConfig`'s field metadata), so a range is
stated once. A bad value makes argparse exit with status 2 and "argument --name: must be ...".
Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from flowmaps.utils import Range

__all__ = [
    "OFF",
    "UNIT",
    "grid_spec",
    "int_list",
    "positive_float",
    "SEED",
    "folder_problem",
    "output_file_problem",
    "positive_int",
    "range_type",
    "seed_list",
    "seed_type",
    "step_list",
]

OFF = "off"
"""What a range option with ``Range.off`` returns for 0 (the setting switched off, None in the config)."""
UNIT = Range(low=0, high=1)


def _number(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def range_type(rng: Range, integer: bool | None = None) -> Callable[[str], Any]:
    """An argparse ``type`` that parses an int (``rng.integer`` or ``integer``) or a float and checks
    it against ``rng``; with ``rng.off`` the value 0 means off and gives :data:`OFF`."""
    whole = rng.integer if integer is None else integer

    def parse(text: str) -> Any:
        value = _number(int, text, "an integer") if whole else _number(float, text, "a number")
        if rng.off and value == 0:
            return OFF
        problem = rng.problem(value, off_word="0")
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer" if whole else "number"  # argparse names the type in some messages
    return parse


SEED = Range(low=0, high=2**63 - 1, integer=True)
"""Seeds: torch's generators take at most 2**64 - 1; the half kept free leaves room for the
streams derived as seed + offset (evaluation, ranks)."""


def seed_type(text: str) -> int:
    """``--seed``'s type: an integer in :data:`SEED`; a bad one is quoted as typed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {SEED.high}, got {text!r}") from None
    if not SEED.low <= value <= SEED.high:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {SEED.high}, got {text!r}")
    return value


positive_int = range_type(Range(low=1, integer=True))
nonnegative_int = range_type(Range(low=0, integer=True))
positive_float = range_type(Range(low=0, low_open=True))


def step_list(text: str) -> list[int]:
    """Comma-separated positive step counts, e.g. "1,2,4"."""
    items = [s for s in text.replace(" ", "").split(",") if s]
    if not items:
        raise argparse.ArgumentTypeError("expected step counts such as 1,2,4")
    values = [positive_int(s) for s in items]
    from flowmaps.sampling import MAX_STEPS

    if max(values) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} steps, got {max(values)}")
    return values


def int_list(text: str) -> list[int]:
    """Comma-separated non-negative integers, e.g. "1,2,2" (may be empty)."""
    return [nonnegative_int(s) for s in text.replace(" ", "").split(",") if s]


def seed_list(text: str) -> list[int]:
    """Comma-separated distinct non-negative seeds, e.g. "0,1,2" (at least one)."""
    values = [seed_type(s) for s in text.replace(" ", "").split(",") if s]
    if not values:
        raise argparse.ArgumentTypeError("expected seeds such as 0,1,2")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return values


def grid_spec(text: str) -> str | Tensor:
    """ "uniform", "edm", "cosine", or explicit times "0,0.5,1" (t = 0 noise, t = 1 data)."""
    from flowmaps.sampling import GRID_KINDS, parse_grid

    key = text.strip().lower()
    if key in GRID_KINDS:
        return key
    try:
        return parse_grid(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (or use one of {', '.join(GRID_KINDS)})") from None


def print_error(message: str, command: str = "train") -> int:
    """Print "flowmaps <command>: error: message" to stderr (the form of argparse's own errors);
    returns 2 (the status of a usage error)."""
    print(f"flowmaps {command}: error: {message}", file=sys.stderr)
    return 2


def folder_problem(folder: str | os.PathLike, what: str) -> str | None:
    """Why files cannot be written into ``folder`` (made here, with its parents, if missing), or None.

    Checked before long work starts: the folder is created and a temporary file is written into it
    and removed. ``what`` names the option in the message (e.g. "--out")."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{what} {str(folder)!r}: {str(path)!r} or a folder above it is a file, not a folder"
    except OSError as err:
        why = err.strerror or err
        return f"{what} {str(folder)!r}: cannot create the folder ({why}); choose a folder you can write to"
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".flowmaps-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        why = err.strerror or err
        return f"{what} {str(folder)!r}: cannot write into the folder ({why}); choose a folder you can write to"
    return None


def output_file_problem(file: str | os.PathLike, what: str) -> str | None:
    """Why the file ``file`` cannot be written (see :func:`folder_problem` for its folder), or None."""
    path = Path(file)
    if path.is_dir():
        return f"{what} {str(file)!r} is a folder; give a file name"
    problem = folder_problem(path.parent, what)
    return problem.replace(f"{what} {str(path.parent)!r}", f"{what} {str(file)!r}") if problem else None
