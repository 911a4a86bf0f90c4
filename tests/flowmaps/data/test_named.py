"""The 2-D sets by name (flowmaps.data.named): toy sets and Gaussian mixtures in one namespace.

Time convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import pytest
import torch

from flowmaps.data import GMM_PRESETS, POINT_SETS, TOY_SETS, base_sigma, data_std, gmm_preset, sample_points, sample_toy


def test_every_toy_set_and_mixture_is_named_once():
    assert set(POINT_SETS) == set(TOY_SETS) | set(GMM_PRESETS)
    assert len(POINT_SETS) == len(TOY_SETS) + len(GMM_PRESETS) - len(set(TOY_SETS) & set(GMM_PRESETS))


@pytest.mark.parametrize("name", sorted(set(GMM_PRESETS) - set(TOY_SETS)))
def test_a_mixture_samples_as_its_preset_and_keeps_its_own_sigma(name):
    got = sample_points(name, 500, torch.Generator().manual_seed(3), dtype=torch.float64)
    want = gmm_preset(name).sample(500, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert got.shape == (500, 2) and got.dtype == torch.float64 and torch.equal(got, want)
    assert base_sigma(name) == gmm_preset(name).sigma


def test_a_toy_set_samples_as_before_with_the_data_std():
    got = sample_points("checkerboard", 300, torch.Generator().manual_seed(1))
    assert torch.equal(got, sample_toy("checkerboard", 300, torch.Generator().manual_seed(1)))
    assert base_sigma("checkerboard") == data_std("checkerboard")
    # the shared name is one distribution: the toy set's sigma is the mixture's
    assert base_sigma("eight_gaussians") == pytest.approx(gmm_preset("eight_gaussians").sigma)


def test_an_unknown_name_lists_the_sets():
    with pytest.raises(ValueError, match="unknown 2-D data set 'mandelbrot'; choose one of checkerboard"):
        sample_points("mandelbrot", 10)
    with pytest.raises(ValueError, match="tilted_mixture"):
        base_sigma("nope")
