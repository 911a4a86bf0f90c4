"""The map-against-its-own-ODE diagnostic (bench/own_ode.py), on a flow map whose errors have a closed form."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench import own_ode
from flowmaps.data.toy import checkerboard_density
from flowmaps.flowmap import FlowMap


class _Identity(nn.Module):
    """v_{s,t}(x) = x: its diagonal velocity b_t(x) = x has the flow y_t = y_0 exp(t - s), while its
    jump is X_{s,t}(x) = (1 + t - s) x, the flow's first-order Taylor step."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


def test_segment_and_composed_errors_match_the_closed_form() -> None:
    model = FlowMap(_Identity(), sigma=0.5)
    x0 = 0.5 * torch.randn(4096, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = own_ode.measure(model, x0)
    norm2 = float((x0**2).sum(dim=1).mean())
    for a, b in own_ode.SEGMENTS:
        d = b - a
        want = norm2 * math.exp(2 * a) * (math.exp(d) - 1 - d) ** 2
        move = norm2 * math.exp(2 * a) * (math.exp(d) - 1) ** 2
        seg = r["segments"][f"{a:g}-{b:g}"]
        assert abs(seg["error"] - want) < 1e-5 * max(want, 1e-3), (a, b, seg, want)
        assert abs(seg["move"] - move) < 1e-5 * move
    for k in (1, 2, 4):
        want = norm2 * (math.e - (1 + 1 / k) ** k) ** 2
        assert abs(r["composed"][str(k)]["error"] - want) < 1e-5 * want
    # the composed error falls with N here (the Taylor steps converge to exp), and the table says so
    kl_rows, seg_rows = own_ode.summarise({"identity": [r, r]})
    assert kl_rows[0]["error N=1"].startswith(f"{norm2 * (math.e - 2) ** 2:.2e}")
    assert set(seg_rows[0]) == {"model"} | {f"[{a:g}, {b:g}]" for a, b in own_ode.SEGMENTS}


def test_disagreement_counts_bins_and_sides() -> None:
    # bins are 0.04 wide; the squares of the checkerboard are 0.5 wide, (0.1, 0.1) lies on one
    ode = torch.tensor([[0.10, 0.10], [0.10, 0.10], [0.10, 0.10], [0.30, 0.30]], dtype=torch.float64)
    jump = torch.tensor([[0.11, 0.10], [0.15, 0.10], [-0.10, 0.10], [1.50, 0.30]], dtype=torch.float64)
    on = (checkerboard_density(ode) > 0).tolist()
    on_j = (checkerboard_density(jump) > 0).tolist()
    want_side = sum(a != b for a, b in zip(on, on_j)) / 4
    d = own_ode.disagreement(jump, ode)
    assert d["other_bin"] == 0.75  # the first stays in its bin; the others move (one off the grid)
    assert d["other_side"] == want_side and 0 < want_side < 1
