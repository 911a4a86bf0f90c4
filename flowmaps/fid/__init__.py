"""FID and KID for Fashion-MNIST with the project's own feature network.

- :mod:`flowmaps.fid.metric`: the Frechet distance, KID, feature statistics, the cached
  reference statistics of the test split, and :func:`fid` / :func:`kid` of samples;
- :mod:`flowmaps.fid.feature_net`: :class:`FeatureNet` (a small classifier whose penultimate
  layer gives the features), its training and its checkpoint (through :mod:`flowmaps.hub`).

Images are (N, 1, 28, 28) floats in [-1, 1] (t = 1 data in the flow-map time convention).
"""

from flowmaps.fid.feature_net import (
    DEFAULT_PATH,
    FeatureNet,
    accuracy,
    augment_images,
    load_feature_network,
    save_feature_network,
    train_classifier,
)
from flowmaps.fid.metric import (
    ReferenceStats,
    feature_statistics,
    features,
    fid,
    fid_from_features,
    fid_sanity,
    frechet_distance,
    kid,
    kid_from_features,
    reference_statistics,
)

__all__ = [
    "DEFAULT_PATH",
    "FeatureNet",
    "ReferenceStats",
    "accuracy",
    "augment_images",
    "feature_statistics",
    "features",
    "fid",
    "fid_from_features",
    "fid_sanity",
    "frechet_distance",
    "kid",
    "kid_from_features",
    "load_feature_network",
    "reference_statistics",
    "save_feature_network",
    "train_classifier",
]
