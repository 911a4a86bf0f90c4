"""Times for the two branches of a self-distillation batch.

Time convention: t = 0 is noise, t = 1 is data.

- Diagonal branch (flow matching): t ~ U[0, 1], s = t.
- Off-diagonal branch: (s, t) uniform on the triangle 0 <= s < t <= 1 (two uniforms, s the
  smaller), or, for shortcut models, on a dyadic grid of step sizes t - s = 2^-k, k = 0 ... 6
  (Frans et al., "One Step Diffusion via Shortcut Models", 128-step setting: self-consistency
  trains the steps 1 ... 1/64, each from two half-steps; the finest half-step, 1/128, is the
  flow-matching velocity, which this library trains on the diagonal s = t).
"""

from __future__ import annotations

import torch
from torch import Tensor

DYADIC_MAX_LEVEL = 6
"""Finest level of the dyadic (shortcut) grid: step sizes 2^-k, k = 0 ... 6, i.e. 1 ... 1/64."""

DYADIC_MIN_STEP = 2.0**-DYADIC_MAX_LEVEL
"""The finest dyadic step size, 1/64; its half-steps (1/128) are taken with the diagonal velocity."""


def split_batch(batch_size: int, eta: float) -> tuple[int, int]:
    """(n_diagonal, n_off_diagonal) for a batch: round(eta * B) samples go on the diagonal.

    With 0 < eta < 1 and B >= 2 each branch keeps at least one sample, so no step silently
    drops a term.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta (the diagonal fraction) must be in [0, 1]; got {eta}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1; got {batch_size}")
    n_diag = int(round(eta * batch_size))
    if 0.0 < eta < 1.0 and batch_size >= 2:
        n_diag = min(max(n_diag, 1), batch_size - 1)
    return n_diag, batch_size - n_diag


def diagonal_times(n: int, *, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
    """t ~ U[0, 1], shape (n,)."""
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


OFF_DIAGONAL_KINDS = ("uniform", "square", "dyadic", "gap_uniform", "late")


def off_diagonal_times(
    n: int,
    *,
    kind: str = "uniform",
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
    max_level: int = DYADIC_MAX_LEVEL,
) -> tuple[Tensor, Tensor]:
    """(s, t), each of shape (n,) (t = 0 noise, t = 1 data); s < t for every kind but "square".

    kind="uniform": uniform on the triangle 0 <= s < t <= 1.
    kind="square": s and t independent, each U[0, 1]: forward jumps (s < t) and backward jumps
    (s > t, towards the noise) half the time each. The authors' released code draws the
    off-diagonal times of its checkerboard runs this way (its min/max ordering is left out), so
    the map is trained in both directions; X_{s,t} with s > t is the inverse of X_{t,s}, and every
    self-distillation residual holds for it unchanged. Sampling still uses forward jumps only.
    kind="dyadic": step d = 2^-k with k uniform in {0, ..., max_level}, s a uniform multiple of
    d in [0, 1 - d], t = s + d (the shortcut-model grid). The default max_level 6 gives the steps
    1 ... 1/64 of the shortcut paper's 128-step setting; the shortcut objective takes the
    half-steps of the finest level with the diagonal (flow-matching) velocity, so every step it
    bootstraps from is trained.
    kind="gap_uniform": the jump d = t - s ~ U[0, 1], then s ~ U[0, 1 - d]. Not the paper's sampler:
    uniform on the triangle gives d the density 2 (1 - d), so one-jump pairs (d near 1) are the
    rarest; this one gives every jump length the same weight (a diagnostic of whether long jumps
    are under-trained; docs/benchmarks.md).

    kind="late": uniform on the triangle, then both times through u -> 1 - (1 - u)^2, which keeps
    s < t and the one-jump pair (0, 1) and puts about 71% of the times above 1/2 (against 50%):
    more pairs late in time, where every shipped checkerboard map is least accurate against its
    own ODE (bench/own_ode.py). Not the paper's sampler (a diagnostic; docs/benchmarks.md).

    Raises:
        ValueError: an unknown kind, or max_level < 0.
    """
    if kind in ("uniform", "late"):
        a = torch.rand(n, generator=generator, device=device, dtype=dtype)
        b = torch.rand(n, generator=generator, device=device, dtype=dtype)
        s, t = torch.minimum(a, b), torch.maximum(a, b)
        if kind == "late":
            s, t = 1.0 - (1.0 - s) ** 2, 1.0 - (1.0 - t) ** 2
        return s, t
    if kind == "dyadic":
        if max_level < 0:
            raise ValueError(f"max_level (finest dyadic level) must be >= 0; got {max_level}")
        k = torch.randint(0, max_level + 1, (n,), generator=generator, device=device)
        n_cells = (2**k).to(torch.float64)
        j = torch.floor(torch.rand(n, generator=generator, device=device, dtype=torch.float64) * n_cells)
        d = 1.0 / n_cells
        s = (j * d).to(dtype or torch.get_default_dtype())
        t = ((j + 1.0) * d).to(dtype or torch.get_default_dtype())
        return s, t
    if kind == "square":
        s = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return s, torch.rand(n, generator=generator, device=device, dtype=dtype)
    if kind == "gap_uniform":
        d = torch.rand(n, generator=generator, device=device, dtype=dtype)
        s = (1.0 - d) * torch.rand(n, generator=generator, device=device, dtype=dtype)
        return s, s + d
    raise ValueError(f"unknown off-diagonal time sampler {kind!r}; choose one of {OFF_DIAGONAL_KINDS}")
