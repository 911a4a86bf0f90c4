"""Data for flowmaps: 2-D toy sets (:mod:`~flowmaps.data.toy`), user point clouds
(:mod:`~flowmaps.data.point_cloud`) and Gaussian mixtures with exact flows (:mod:`~flowmaps.data.gmm`).

Time convention: t = 0 noise, t = 1 data (these sets are the t = 1 end).
Image sets live in :mod:`flowmaps.data.images` (imported on demand).
"""

from flowmaps.data.gmm import GMM_PRESETS, GaussianMixture, gmm_preset
from flowmaps.data.named import POINT_SETS, base_sigma, sample_points
from flowmaps.data.point_cloud import (
    MinibatchSampler,
    PointCloud,
    parse_csv_text,
    points_from_array,
    points_from_csv,
)
from flowmaps.data.toy import TOY_SETS, checkerboard_density, data_std, sample_toy

__all__ = [
    "POINT_SETS",
    "base_sigma",
    "sample_points",
    "GMM_PRESETS",
    "GaussianMixture",
    "gmm_preset",
    "TOY_SETS",
    "MinibatchSampler",
    "PointCloud",
    "checkerboard_density",
    "data_std",
    "parse_csv_text",
    "points_from_array",
    "points_from_csv",
    "sample_toy",
]
