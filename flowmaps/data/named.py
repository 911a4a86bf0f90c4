"""The 2-D data sets by name: the toy sets and the Gaussian mixtures, one namespace.

Time convention: t = 0 noise, t = 1 data (these sets are the t = 1 end).

The toy sets (:data:`flowmaps.data.toy.TOY_SETS`) and the mixture presets
(:data:`flowmaps.data.gmm.GMM_PRESETS`) share one name, ``eight_gaussians``, which is the same
distribution in both (the toy set samples the preset). For a mixture the base noise scale is the
preset's own ``sigma`` (the one its exact velocity and flow map are written for: the data's std, or 1
for ``gaussian`` and ``two_gaussians``); for a toy set it is the data's std.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmaps.data.gmm import GMM_PRESETS, gmm_preset
from flowmaps.data.toy import TOY_SETS, data_std, sample_toy

__all__ = ["POINT_SETS", "base_sigma", "sample_points"]

#: Every named 2-D set: name -> one-line description.
POINT_SETS: dict[str, str] = {**TOY_SETS, **{k: v for k, v in GMM_PRESETS.items() if k not in TOY_SETS}}


def _key(name: str) -> str:
    key = str(name).strip().lower()
    if key not in POINT_SETS:
        raise ValueError(f"unknown 2-D data set {name!r}; choose one of {', '.join(POINT_SETS)}")
    return key


def sample_points(
    name: str, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n`` points of the named set (the data end, t = 1), shape ``(n, 2)``, of ``dtype``.

    Raises:
        ValueError: a name in neither :data:`POINT_SETS` table (the message lists them).
    """
    key = _key(name)
    if key in TOY_SETS:
        return sample_toy(key, n, generator, dtype=dtype)
    return gmm_preset(key).sample(n, generator, dtype=dtype)


def base_sigma(name: str) -> float:
    """The std sigma of the base noise x0 ~ N(0, sigma^2 I) at t = 0 for the named set: a mixture's
    own sigma (its exact flow map is written for it), else the data's std.

    Raises:
        ValueError: an unknown name.
    """
    key = _key(name)
    if key in TOY_SETS:
        return float(data_std(key))
    return float(gmm_preset(key).sigma)
