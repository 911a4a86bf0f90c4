"""The 2-D data sets of the app: the library's toy sets, its Gaussian mixtures, and user points.

Time convention: t = 0 is noise, t = 1 is data (these are the t = 1 end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowmaps.data.gmm import GMM_PRESETS, GaussianMixture, gmm_preset
from flowmaps.data.toy import TOY_SETS, data_std, sample_toy

DRAW = "draw"
CSV = "csv"

#: Every choice of the data set dropdown, in order, with a one-line description.
DATA_CHOICES: dict[str, str] = {
    **TOY_SETS,
    **{k: f"Gaussian mixture: {v}" for k, v in GMM_PRESETS.items() if k not in TOY_SETS},
    DRAW: "your drawing: draw on the pad, then press Start (points come from the strokes)",
    CSV: "your CSV upload of x, y rows (centred, scaled to std 0.5)",
}


@dataclass
class DataSource:
    """A 2-D data distribution the live trainer can draw batches from.

    Attributes:
        name: a key of :data:`DATA_CHOICES`.
        sigma: std of the base noise x0 ~ N(0, sigma^2 I) at t = 0 (the data's std; the
            mixture's own sigma for Gaussian mixtures, so that its exact velocity applies).
        points: ``(N, 2)`` user points for "draw" / "csv", else None.
        gmm: the mixture, when the data is one (gives the exact velocity and flow map).
        jitter: std of the noise added to user points when sampling (keeps the target smooth).
        label: what the page calls the data, where it differs from ``name`` (an upload's file
            name, e.g. "circle.csv"); "" otherwise.
        digest: SHA-256 of the uploaded file's bytes for "csv" (Continue refuses another file), else "".
    """

    name: str
    sigma: float
    points: Tensor | None = None
    gmm: GaussianMixture | None = None
    jitter: float = 0.0
    label: str = ""
    digest: str = ""

    @property
    def shown_name(self) -> str:
        """The name the page shows: the upload's file name for "csv", else :attr:`name`."""
        return self.label or self.name

    @property
    def is_checkerboard(self) -> bool:
        return self.name == "checkerboard"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` data points (t = 1), float32 ``(n, 2)``."""
        if self.points is not None:
            idx = torch.randint(0, self.points.shape[0], (n,), generator=generator)
            x = self.points[idx]
            if self.jitter > 0:
                x = x + self.jitter * torch.randn(x.shape, generator=generator)
            return x.float()
        if self.gmm is not None and self.name not in TOY_SETS:
            return self.gmm.sample(n, generator=generator, dtype=torch.float32)
        return sample_toy(self.name, n, generator=generator, dtype=torch.float32)

    def describe(self) -> str:
        return DATA_CHOICES.get(self.name, self.name)


def toy_source(name: str) -> DataSource:
    """A named toy set or mixture preset as a :class:`DataSource`."""
    if name in GMM_PRESETS:
        gmm = gmm_preset(name)
        return DataSource(name=name, sigma=float(gmm.sigma), gmm=gmm)
    if name in TOY_SETS:
        return DataSource(name=name, sigma=float(data_std(name)))
    raise ValueError(f"data set {name!r} is not one of {', '.join(DATA_CHOICES)}")


def points_source(name: str, points: np.ndarray, label: str = "", digest: str = "") -> DataSource:
    """User points (already checked by app.validation) as a :class:`DataSource` (``label`` and
    ``digest`` as its attributes: an upload's file name and the hash of its bytes)."""
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32))
    sd = float(torch.sqrt(pts.double().var(dim=0).mean()))
    return DataSource(
        name=name, sigma=max(sd, 1e-3), points=pts, jitter=0.01 * max(sd, 1e-3), label=label, digest=digest
    )
