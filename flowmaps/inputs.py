"""Checks of the states that users hand to the library (noise x0, a state x at some time).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A state is a floating tensor of shape ``(B, *D)``: a batch of ``B >= 1`` points whose shape
``D`` the network fixes (``(dim,)`` for the MLP, ``(C, H, W)`` for the UNet). :func:`check_state`
casts what can be cast without surprise and rejects the rest with a ``ValueError`` that names
what was given and what is needed:

- a floating dtype other than the model's (float64 noise into a float32 model, a float16 state
  into a float32 model) is cast to the model's dtype: the model computes in its own precision
  whatever it is given;
- an integer tensor is cast when every value is exactly representable in the target dtype,
  else refused; bool and complex tensors are refused (no real state has that type);
- a numpy array is taken as a tensor; anything else is refused;
- the number of dimensions and the sizes ``D`` must match the model's (``None`` in a model's
  shape accepts any size, as for the UNet's height and width);
- with ``finite=True`` (the samplers' entry points, once per call) inf and NaN are refused.
  The per-call checks inside :class:`flowmaps.flowmap.FlowMap` read only shapes and dtypes, so
  they never wait for the device and work inside CUDA graphs, torch.compile and forward-mode AD.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

#: A set of points: a ``(N, d)`` tensor, numpy array or nested list of numbers.
PointsLike = Tensor | np.ndarray | Sequence[Sequence[float]]

__all__ = ["PointsLike", "check_count", "check_entry_state", "check_points", "check_state", "describe_shape"]


def describe_shape(state_shape: Sequence[int | None] | None) -> str:
    """A readable ``(B, ...)`` for a model's state shape (``None`` entries print as a letter)."""
    if state_shape is None:
        return "(B, *D)"
    letters = iter("HWXYZUV")
    parts = ["B"] + [str(n) if n is not None else next(letters) for n in state_shape]
    return "(" + ", ".join(parts) + ")"


def _exactly_castable(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether every value of an integer tensor survives a round trip through ``dtype``."""
    if x.numel() == 0:
        return True
    return bool(torch.equal(x.to(dtype).to(x.dtype), x))


def check_state(
    x: object,
    name: str = "x",
    *,
    dtype: torch.dtype | None = None,
    state_shape: Sequence[int | None] | None = None,
    finite: bool = False,
) -> Tensor:
    """Validate a batch of states ``x`` of shape ``(B, *D)`` and return it in ``dtype``.

    Args:
        x: the states (a tensor, or a numpy array).
        name: what to call it in messages (``"x0"``, ``"x"``).
        dtype: the model's floating dtype (its parameters'); None keeps a floating ``x`` as it
            is and casts an integer one to the default dtype.
        state_shape: the model's ``D`` (``None`` entries: any size); None checks only that ``x``
            has a batch dimension.
        finite: also refuse inf and NaN (reads the values: a device sync on a GPU).

    Returns:
        ``x`` as a tensor of the target dtype (the same object when nothing changes).

    Raises:
        ValueError: for a non-tensor, a bool or complex tensor, an integer tensor that the
            target dtype cannot hold exactly, a wrong number of dimensions or a wrong size, an
            empty batch, or (``finite=True``) a non-finite value.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape {describe_shape(state_shape)}; got {type(x).__name__}"
        )
    want = describe_shape(state_shape)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} has dtype {x.dtype}; a state must be a real floating tensor of shape {want}")
    if not x.is_floating_point():
        target = dtype if dtype is not None else torch.get_default_dtype()
        if not _exactly_castable(x, target):
            raise ValueError(
                f"{name} has dtype {x.dtype} with values that {target} cannot hold exactly; "
                f"pass a floating tensor ({target})"
            )
        x = x.to(target)
    elif dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if state_shape is not None:
        if x.ndim != 1 + len(state_shape):
            dims = "1 dimension" if x.ndim == 1 else f"{x.ndim} dimensions"
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} ({dims}); this model takes states of shape {want} "
                f"({1 + len(state_shape)} dimensions, the first the batch)"
            )
        for got, need in zip(x.shape[1:], state_shape, strict=True):
            if need is not None and got != need:
                raise ValueError(f"{name} has shape {tuple(x.shape)}; this model takes states of shape {want}")
    elif x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, shape (B, *D); got a scalar")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one state, shape {want}; got {tuple(x.shape)}")
    if finite:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_bad = int(bad.sum())
            raise ValueError(
                f"{name} has {n_bad} non-finite entr{'y' if n_bad == 1 else 'ies'} (inf or NaN) out of {x.numel()}; "
                "every entry of a state must be finite"
            )
    return x


def check_entry_state(owner: object, x: object, name: str = "x0") -> Tensor:
    """Check a state once at a sampler's or solver's entry, against its model where one is known.

    ``owner`` is what the caller was handed: a :class:`flowmaps.flowmap.FlowMap`, a bound method of
    one such as ``model.velocity``, or any other callable. When it (or the object it is bound to)
    has a ``check_state`` method, ``x`` is checked against that model's state shape and cast to its
    dtype; otherwise :func:`check_state` checks only that ``x`` is a floating ``(B, *D)`` tensor.
    Non-finite values are refused in both cases (one device sync per call, not per step).

    Returns:
        ``x`` as a finite floating tensor, shape ``(B, *D)``.

    Raises:
        ValueError: as :func:`check_state` with ``finite=True``.
    """
    model = getattr(owner, "__self__", owner)  # model.velocity -> model
    check = getattr(model, "check_state", None)
    if callable(check):
        return check(x, name, finite=True)
    return check_state(x, name, finite=True)


def check_points(x: PointsLike, name: str = "samples", dim: int | None = None) -> Tensor:
    """A set of points for a metric, as a float64 CPU tensor of shape ``(N, d)``.

    Args:
        x: a tensor, numpy array or nested list of ``N >= 1`` rows of ``d`` numbers (detached and
            copied to the CPU in float64; the values are not checked for finiteness here).
        name: what to call it in messages.
        dim: the number of columns required (None: any).

    Raises:
        ValueError: ``x`` is not two-dimensional, has the wrong number of columns or no rows.
    """
    if isinstance(x, Tensor):
        t = x.detach().to("cpu", torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2 or (dim is not None and t.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, d)"
        raise ValueError(f"{name} must have shape {want}; got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    return t


def check_count(n: object, what: str = "points") -> int:
    """A number of things to draw (points, samples): a positive integer, bools refused.

    Returns:
        ``n`` as a Python int.

    Raises:
        ValueError: ``"number of {what} must be a positive integer; got ..."``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of {what} must be a positive integer; got {n!r}")
    return int(n)
