"""Data for flowmaps: 2-D toy sets, user point clouds and Gaussian mixtures with exact flows.

Time convention: t = 0 noise, t = 1 data (these sets are the t = 1 end).
Image sets live in :mod:`flowmaps.data.images` (imported on demand).
"""

from flowmaps.data.gmm import GMM_PRESETS, GaussianMixture, gmm_preset
from flowmaps.data.toy import (
    TOY_SETS,
    MinibatchSampler,
    PointCloud,
    checkerboard_density,
    data_std,
    points_from_array,
    points_from_csv,
    sample_toy,
)

__all__ = [
    "GMM_PRESETS",
    "GaussianMixture",
    "gmm_preset",
    "TOY_SETS",
    "MinibatchSampler",
    "PointCloud",
    "checkerboard_density",
    "data_std",
    "points_from_array",
    "points_from_csv",
    "sample_toy",
]
