"""FID and KID of Fashion-MNIST samples with the project's own feature network.

- Frechet distance between Gaussians N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017):

      FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}),

  where tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = tr((S1 S2)^{1/2}).
- KID (Binkowski et al. 2018): the unbiased estimator of MMD^2 with the cubic polynomial kernel
  k(x, y) = (x . y / d + 1)^3, averaged over random subsets.

The features are the penultimate layer of :class:`flowmaps.fid.feature_net.FeatureNet`. Images
passed to :func:`features`, :func:`fid` and :func:`kid` are (N, 1, 28, 28) in [-1, 1] (data at
t = 1 in the flow-map time convention, t = 0 noise). numpy and torch only; scipy is used only by
the optional ``method="sqrtm"`` of :func:`frechet_distance`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flowmaps.fid.feature_net import DEFAULT_PATH, FeatureNet, resolve_net
from flowmaps.utils import atomic_write


@torch.no_grad()
def features(
    images: Tensor | np.ndarray,
    net: FeatureNet | str | os.PathLike | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Penultimate features of images, computed in batches.

    Args:
        images: (N, 1, 28, 28) floats in [-1, 1] (values are clipped to [-1, 1] first, as samples
            would be when shown as pictures); integer or non-finite images raise ValueError.
        net: a :class:`FeatureNet`, a folder to load it from, or None for the default folder.
        batch_size: images per forward pass.
        device: where to run (default: the net's device).

    Returns:
        float64 array (N, feature_dim).
    """
    net = resolve_net(net)
    was_training = net.training
    net.eval()
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor or numpy array of shape (N, 1, 28, 28); got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 1, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"images have dtype {images.dtype}; they must be floats in [-1, 1] (for 8-bit pixels p: p / 127.5 - 1)"
        )
    n_bad = int((~torch.isfinite(images)).sum())
    if n_bad:
        raise ValueError(f"images have {n_bad} non-finite values (inf or NaN); every pixel must be finite")
    net.to(dev)
    out = []
    for i in range(0, len(images), batch_size):
        xb = images[i : i + batch_size].to(dev, torch.float32).clamp(-1.0, 1.0)
        out.append(net.features(xb).double().cpu().numpy())
    net.train(was_training)
    if not out:
        return np.zeros((0, net.config["feature_dim"]))
    return np.concatenate(out, axis=0)


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, d), got {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    method: str = "eigh",
    eps: float = 1e-6,
) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, S1) and N(mu2, S2).

        FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})

    Args:
        mu1, mu2: means (d,); sigma1, sigma2: covariances (d, d).
        method: ``"eigh"`` (default): ``S1^{1/2}`` by a symmetric eigendecomposition, then the
            eigenvalues of the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (clipped at 0);
            always real and numerically stable. ``"sqrtm"``: ``scipy.linalg.sqrtm(S1 S2)``; if
            it is not finite, ``eps * I`` is added to both covariances; small imaginary parts are
            dropped, large ones (> 1e-3 relative) raise.
        eps: diagonal offset used by ``"sqrtm"`` when the product is singular.

    Returns:
        the distance as a Python float (>= 0 up to rounding).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        r1 = _sym_sqrt(s1)
        m = r1 @ s2 @ r1
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum())
    elif method == "sqrtm":
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            scale = max(1.0, float(np.abs(covmean).max()))
            if np.abs(covmean.imag).max() > 1e-3 * scale:
                raise ValueError(f"matrix square root has a large imaginary part {np.abs(covmean.imag).max():.3g}")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets (N1, d) and (N2, d): Frechet distance of their Gaussians."""
    return frechet_distance(*feature_statistics(feats1), *feature_statistics(feats2))


def kid_from_features(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance between feature sets (N1, d) and (N2, d).

    For each of ``num_subsets`` random subsets of size m (without replacement, m =
    min(subset_size, N1, N2)), the unbiased estimator

        MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2,   with k(x, y) = (x . y / d + 1)^3.

    Returns:
        (mean, standard deviation) of MMD^2 over the subsets. Unbiased: can be slightly negative
        when the two distributions are equal.
    """
    x_all = np.asarray(feats1, np.float64)
    y_all = np.asarray(feats2, np.float64)
    d = x_all.shape[1]
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise ValueError("KID needs at least two samples in each set")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for k in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[k] = within - 2.0 * kxy.mean()
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------------------------
# Reference statistics of Fashion-MNIST
# --------------------------------------------------------------------------------------------


@dataclass
class ReferenceStats:
    """Feature statistics of a reference set: mean (d,), covariance (d, d), features (N, d)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    @property
    def n(self) -> int:
        return 0 if self.features is None else len(self.features)


def _weights_tag(net: FeatureNet) -> str:
    """A fingerprint of the network weights, to invalidate stale caches."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def reference_statistics(
    net: FeatureNet | str | os.PathLike | None = None,
    split: str = "test",
    root: str | os.PathLike | None = None,
    cache: str | os.PathLike | None | bool = True,
) -> ReferenceStats:
    """Feature statistics of a Fashion-MNIST split, cached as an .npz next to the classifier.

    Args:
        net: the feature network (or its folder; None: the default folder).
        split: ``"test"`` (10,000 images, the default reference) or ``"train"``.
        root: Fashion-MNIST folder (see :func:`flowmaps.data.images.load_fashion_mnist`).
        cache: True: ``<classifier folder>/reference-<split>.npz``; a path: that file; False or
            None: no cache. A cache made with other weights is recomputed. The cache holds mu and
            sigma in float64 (from float64 features) and the features in float16 (for KID; about
            2.5 MB for the test split).

    Returns:
        :class:`ReferenceStats` with mu, sigma and the features (for KID).
    """
    folder = Path(net) if isinstance(net, (str, os.PathLike)) else None
    net = resolve_net(net)
    tag = _weights_tag(net)
    if cache is True:
        folder = folder or Path(getattr(net, "_source_path", "") or DEFAULT_PATH)
        cache_path: Path | None = folder / f"reference-{split}.npz"
    elif cache:
        cache_path = Path(cache)
    else:
        cache_path = None
    if cache_path is not None and cache_path.exists():
        with np.load(cache_path) as z:
            if str(z["weights_tag"]) == tag:
                return ReferenceStats(z["mu"], z["sigma"], z["features"].astype(np.float64))
    from flowmaps.data.images import load_fashion_mnist

    images, _ = load_fashion_mnist(split, root=root)
    feats = features(images, net)
    mu, sigma = feature_statistics(feats)
    if cache_path is not None:

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, mu=mu, sigma=sigma, features=feats.astype(np.float16), weights_tag=tag)

        atomic_write(cache_path, write)
    return ReferenceStats(mu, sigma, feats)


def _as_stats(ref: ReferenceStats | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ref, ReferenceStats):
        return ref.mu, ref.sigma
    mu, sigma = ref
    return np.asarray(mu), np.asarray(sigma)


def fid(
    samples: Tensor | np.ndarray,
    reference_stats: ReferenceStats | tuple[np.ndarray, np.ndarray] | None = None,
    net: FeatureNet | str | os.PathLike | None = None,
    batch_size: int = 500,
) -> float:
    """FID of image samples (N, 1, 28, 28) in [-1, 1] against reference statistics.

    ``reference_stats`` defaults to the Fashion-MNIST test split (:func:`reference_statistics`).
    Like every FID, it is biased upwards for small N: compare scores at equal N.
    """
    net = resolve_net(net)
    if reference_stats is None:
        reference_stats = reference_statistics(net)
    mu2, sigma2 = _as_stats(reference_stats)
    mu1, sigma1 = feature_statistics(features(samples, net, batch_size=batch_size))
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def kid(
    samples: Tensor | np.ndarray,
    reference_features: ReferenceStats | np.ndarray | None = None,
    net: FeatureNet | str | os.PathLike | None = None,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over subsets) of samples (N, 1, 28, 28) in [-1, 1] against reference
    features (M, d) (default: the Fashion-MNIST test split). See :func:`kid_from_features`."""
    net = resolve_net(net)
    if reference_features is None:
        reference_features = reference_statistics(net)
    if isinstance(reference_features, ReferenceStats):
        if reference_features.features is None:
            raise ValueError("these reference statistics carry no features; KID needs them")
        reference_features = reference_features.features
    feats = features(samples, net)
    return kid_from_features(feats, reference_features, num_subsets, subset_size, seed)


def _blur(x: Tensor) -> Tensor:
    """3x3 binomial blur ([1, 2, 1] / 4 in each direction), edge-replicating."""
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4.0
    k = (k1[:, None] * k1[None, :]).reshape(1, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def fid_sanity(
    net: FeatureNet | str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    n: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """FIDs that a working feature network must order sensibly.

    Against the Fashion-MNIST test split (10,000 images):

    - ``train_vs_test``: n training images (should be small, the two splits share a distribution);
    - ``noise_0.1``, ``noise_0.3``: test images + Gaussian noise of std 0.1 / 0.3 (in [-1, 1]
      units, then clipped); should grow with the noise;
    - ``blur_1x``, ``blur_3x``: test images blurred once / three times by a 3x3 binomial filter;
    - ``train_one_class``: n training images of class 0 only (a mode collapse; large).

    Returns:
        a dict name -> FID.
    """
    from flowmaps.data.images import load_fashion_mnist

    net = resolve_net(net)
    ref = reference_statistics(net, "test", root=root)
    train_x, train_y = load_fashion_mnist("train", root=root)
    test_x, _ = load_fashion_mnist("test", root=root)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train_x), generator=g)[:n]
    out: dict[str, float] = {"train_vs_test": fid(train_x[pick], ref, net)}
    for std in (0.1, 0.3):
        noisy = (test_x + std * torch.randn(test_x.shape, generator=g)).clamp(-1, 1)
        out[f"noise_{std}"] = fid(noisy, ref, net)
    blur1 = _blur(test_x)
    out["blur_1x"] = fid(blur1, ref, net)
    out["blur_3x"] = fid(_blur(_blur(blur1)), ref, net)
    one = train_x[train_y == 0][:n]
    out["train_one_class"] = fid(one, ref, net)
    return out
