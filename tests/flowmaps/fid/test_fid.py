"""Tests for flowmaps.fid: Frechet distance against closed forms, KID, the feature network's
training / saving / loading, and the cached reference statistics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowmaps import fid as F
from flowmaps.data.images import IDX_FILES, write_idx
from flowmaps.fid import metric as fid_metric


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ------------------------------------------------------------------ Frechet distance


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_diagonal_closed_form(method: str) -> None:
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = F.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_frechet_distance_commuting_rotated_closed_form() -> None:
    """Covariances sharing eigenvectors (commuting): FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(1)
    d = 5
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = rng.standard_normal(d)
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert F.frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)
    assert F.frechet_distance(mu, s1, mu, s2, method="sqrtm") == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_zero_symmetric_and_methods_agree() -> None:
    rng = np.random.default_rng(2)
    d = 10
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(d, rng), _spd(d, rng)
    assert abs(F.frechet_distance(mu1, s1, mu1, s1)) < 1e-10
    ab, ba = F.frechet_distance(mu1, s1, mu2, s2), F.frechet_distance(mu2, s2, mu1, s1)
    assert ab == pytest.approx(ba, rel=1e-10)
    assert ab == pytest.approx(F.frechet_distance(mu1, s1, mu2, s2, method="sqrtm"), rel=1e-8)
    assert ab > np.sum((mu1 - mu2) ** 2)  # the covariances differ, so they add a positive part
    # One dimension: (mu1 - mu2)^2 + (sqrt(a) - sqrt(b))^2 with scalar inputs.
    assert F.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_distance_singular_covariance_is_finite() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((8, 3))
    s1 = v @ v.T  # rank 3
    s2 = _spd(8, rng)
    for method in ("eigh", "sqrtm"):
        val = F.frechet_distance(np.zeros(8), s1, np.zeros(8), s2, method=method)
        assert np.isfinite(val) and val > 0
    # sqrt of eigenvalues that are zero up to rounding (~1e-15) leaves errors of ~1e-7.
    assert abs(F.frechet_distance(np.zeros(8), s1, np.zeros(8), s1)) < 1e-5 * np.trace(s1)
    with pytest.raises(ValueError):
        F.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        F.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method="magic")


def test_fid_of_gaussian_samples_matches_closed_form() -> None:
    rng = np.random.default_rng(4)
    d, n = 4, 100_000
    mu2 = np.array([0.5, -0.3, 0.0, 0.2])
    a, b = np.array([1.0, 0.5, 2.0, 1.0]), np.array([0.25, 0.5, 1.0, 3.0])
    x = rng.standard_normal((n, d)) * np.sqrt(a)
    y = mu2 + rng.standard_normal((n, d)) * np.sqrt(b)
    expected = np.sum(mu2**2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = F.fid_from_features(x, y)
    assert got == pytest.approx(expected, abs=0.02)
    # Two samples of one distribution: FID is small (bias of order d / n).
    assert F.fid_from_features(x[: n // 2], x[n // 2 :]) < 5e-3


# ------------------------------------------------------------------ KID


def test_kid_near_zero_for_same_distribution_and_positive_for_shift() -> None:
    rng = np.random.default_rng(5)
    d = 16
    x = rng.standard_normal((3000, d))
    y = rng.standard_normal((3000, d))
    z = rng.standard_normal((3000, d)) + 0.5
    same, same_std = F.kid_from_features(x, y, num_subsets=20, subset_size=500)
    shifted, shifted_std = F.kid_from_features(x, z, num_subsets=20, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.05 and shifted > 10 * (abs(same) + same_std)


def test_kid_unbiased_estimator_by_hand() -> None:
    """With subsets covering all samples, KID is the plain unbiased MMD^2 formula."""
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) + 1.0

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / 3 + 1.0) ** 3

    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = F.kid_from_features(x, y, num_subsets=3, subset_size=5)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


# ------------------------------------------------------------------ feature network


def _toy_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: a bright top half or a bright bottom half, plus noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.full((n, 1, 28, 28), -0.8)
    x[y == 0, :, :14] = 0.8
    x[y == 1, :, 14:] = 0.8
    x = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def test_feature_net_shapes_and_augment() -> None:
    net = F.FeatureNet(width=4, feature_dim=12, num_classes=3)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert net(x).shape == (5, 3)
    assert net.features(x).shape == (5, 12)
    feats = F.features(x, net, batch_size=2)
    assert feats.shape == (5, 12) and feats.dtype == np.float64
    aug = F.augment_images(x, torch.Generator().manual_seed(0), max_shift=2)
    assert aug.shape == x.shape
    # Without shifts, augmentation only flips: every row keeps its multiset of values.
    flip = F.augment_images(x, torch.Generator().manual_seed(0), max_shift=0)
    torch.testing.assert_close(flip.sort(dim=-1).values, x.sort(dim=-1).values)


@pytest.fixture(scope="module")
def toy_classifier() -> tuple[F.FeatureNet, dict]:
    x, y = _toy_images(256, 0)
    xt, yt = _toy_images(128, 1)
    config = {"width": 4, "feature_dim": 8, "num_classes": 2}
    return F.train_classifier(x, y, xt, yt, epochs=4, batch_size=64, lr=2e-2, config=config, log=None)


def test_train_save_load_roundtrip(tmp_path: Path, toy_classifier: tuple[F.FeatureNet, dict]) -> None:
    net, metrics = toy_classifier
    xt, _ = _toy_images(128, 1)
    assert metrics["test_accuracy"] > 0.9
    out = F.save_feature_network(net, tmp_path / "clf", {**metrics, "fid_sanity": {"train_vs_test": 0.1}})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    assert "Test accuracy" in card and f"{100 * metrics['test_accuracy']:.2f} %" in card
    assert json.loads((out / "config.json").read_text())["feature_dim"] == 8
    net2 = F.load_feature_network(out)
    np.testing.assert_allclose(F.features(xt, net2), F.features(xt, net), rtol=1e-6, atol=1e-6)


def test_load_missing_network_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_fid_classifier"):
        F.load_feature_network(tmp_path / "missing")


def test_reference_statistics_cache_and_fid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_classifier: tuple[F.FeatureNet, dict]
) -> None:
    x, y = _toy_images(64, 2)
    u8 = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    img_stem, lab_stem = IDX_FILES["test"]
    write_idx(tmp_path / (img_stem + ".gz"), u8)
    write_idx(tmp_path / (lab_stem + ".gz"), y.numpy().astype(np.uint8))

    net = copy.deepcopy(toy_classifier[0])
    cache = tmp_path / "ref.npz"
    ref = F.reference_statistics(net, "test", root=tmp_path, cache=cache)
    assert cache.exists() and ref.mu.shape == (8,) and ref.sigma.shape == (8, 8) and ref.n == 64

    # The second call reads the cache (computing features would fail now).
    def boom(*args, **kwargs):
        raise AssertionError("cache not used")

    monkeypatch.setattr(fid_metric, "features", boom)
    ref2 = F.reference_statistics(net, "test", root=tmp_path, cache=cache)
    np.testing.assert_allclose(ref2.mu, ref.mu)
    monkeypatch.undo()

    # Other weights invalidate the cache.
    with torch.no_grad():
        net.feature.bias.add_(1.0)
    ref3 = F.reference_statistics(net, "test", root=tmp_path, cache=cache)
    np.testing.assert_allclose(ref3.mu, ref.mu + 1.0, rtol=1e-5, atol=1e-5)

    # The images behind the reference have FID ~ 0 against it; noised images score higher.
    pixels = torch.from_numpy(u8).float().div(127.5).sub(1).unsqueeze(1)
    assert abs(F.fid(pixels, ref3, net)) < 1e-6
    noisy = (pixels + 0.5 * torch.randn(pixels.shape)).clamp(-1, 1)
    assert F.fid(noisy, ref3, net) > 1e-3
    mean, _ = F.kid(noisy, ref3, net, num_subsets=5, subset_size=32)
    assert np.isfinite(mean)
