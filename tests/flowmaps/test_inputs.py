"""Tests of the input checks in flowmaps.inputs that the samplers and metrics share (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.inputs import check_count, check_entry_state, check_points
from flowmaps.nets.mlp import MLP


def _model() -> FlowMap:
    torch.manual_seed(0)
    return FlowMap(MLP(dim=2, width=8, depth=2, sigma=1.0), sigma=1.0)


def test_entry_state_is_checked_against_the_model_behind_a_bound_method() -> None:
    model = _model()
    x = torch.randn(4, 2, dtype=torch.float64)
    for owner in (model, model.velocity):
        out = check_entry_state(owner, x)
        assert out.dtype == torch.float32 and torch.equal(out, x.float())  # cast to the model's dtype
        with pytest.raises(ValueError, match=r"x0 has shape \(4, 3\); this model takes states of shape \(B, 2\)"):
            check_entry_state(owner, torch.zeros(4, 3))
    bare = check_entry_state(lambda x, t: x, x)  # no model behind it: shape and dtype kept
    assert bare is x
    with pytest.raises(ValueError, match=r"x0 has 1 non-finite entry"):
        check_entry_state(model.velocity, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"x0 has 2 non-finite entries"):
        check_entry_state(lambda x, t: x, torch.full((1, 2), float("inf")))


def test_points_become_float64_cpu_rows_or_a_clear_error() -> None:
    pts = check_points([[1, 2], [3, 4]])
    assert pts.dtype == torch.float64 and pts.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert torch.equal(check_points(np.ones((3, 5), dtype=np.float32)), torch.ones(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 2\); got \(3, 3\)"):
        check_points(torch.zeros(3, 3), dim=2)
    with pytest.raises(ValueError, match=r"a must have shape \(N, d\); got \(4,\)"):
        check_points(torch.zeros(4), "a")
    with pytest.raises(ValueError, match="points is empty"):
        check_points(torch.zeros(0, 2), "points")


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10", None])
def test_count_refuses_what_is_not_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="number of samples must be a positive integer"):
        check_count(bad, "samples")


def test_count_accepts_python_and_numpy_integers() -> None:
    assert check_count(7) == 7 and type(check_count(np.int64(7))) is int
