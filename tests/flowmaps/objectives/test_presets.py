"""The named presets are the methods they are named after.

Time convention: t = 0 is noise, t = 1 is data; X_{s,t}(x) = x + (t - s) v_{s,t}(x).

- ``ct`` and ``cd`` against an independent discrete consistency-training / consistency-distillation
  step at a tiny Delta (float64): per-sample gradient of the discrete loss divided by Delta, and
  the preset's per-sample gradient, agree in direction (cosine) and in size.
- ``shortcut`` samples the step sizes of the shortcut paper's 128-step setting.
"""

from __future__ import annotations

import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import Eulerian, make_objective
from flowmaps.timesampling import off_diagonal_times

pytestmark = pytest.mark.usefixtures("float64")

DELTA = 1e-6


def _random_mlp(seed: int) -> FlowMap:
    torch.manual_seed(seed)
    net = MLP(dim=2, width=32, depth=2, sigma=1.0)
    with torch.no_grad():  # biases and weights away from the default init, so v is far from linear
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return FlowMap(net, sigma=1.0)


def _batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(n, 2, generator=g) * 2 - 1
    x0 = torch.randn(n, 2, generator=g)
    s = torch.rand(n, generator=g) * 0.8
    t = s + (1.0 - s) * torch.rand(n, generator=g).clamp_min(0.1)
    t[:2] = 1.0  # X_{s,1} is the consistency function of the flow map
    return x0, x1, s, t


def _flat_grad(loss: torch.Tensor, model: FlowMap) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, model.parameters())])


def _jump(model: FlowMap, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """X_{a,b}(x) = x + (b - a) v_{a,b}(x), written here from the network call alone."""
    return x + (b - a)[:, None] * model.net(a, b, x)


def _discrete_grads(model: FlowMap, x0, x1, s, t, step) -> list[torch.Tensor]:
    """Per-sample gradients of |X_{s,t}(x_s) - sg(X_{s+D,t}(x_{s+D}))|^2 / D, x_s = (1 - s) x0 + s x1
    and x_{s+D} = step(x_s, s) (one step of size D along the sample direction or the teacher)."""
    out = []
    for i in range(x0.shape[0]):
        a, b = s[i : i + 1], t[i : i + 1]
        x_s = (1 - a)[:, None] * x0[i : i + 1] + a[:, None] * x1[i : i + 1]
        with torch.no_grad():
            target = _jump(model, step(x_s, a, i), a + DELTA, b)
        loss = (_jump(model, x_s, a, b) - target).pow(2).sum() / DELTA
        out.append(_flat_grad(loss, model))
    return out


def _preset_grads(objective, model: FlowMap, x0, x1, s, t) -> list[torch.Tensor]:
    """Per-sample gradients of the preset's off-diagonal term (t - s given, no diagonal rows)."""
    out = []
    for i in range(x0.shape[0]):
        sl = slice(i, i + 1)
        _, r = objective.residuals(model, x0[sl], x1[sl], 0, None, s[sl], t[sl])
        out.append(_flat_grad(r.pow(2).sum(), model))
    return out


def _compare(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cosines and norm ratios |b| / |a|."""
    cos = torch.stack([torch.nn.functional.cosine_similarity(x, y, dim=0) for x, y in zip(a, b)])
    ratio = torch.stack([y.norm() / x.norm() for x, y in zip(a, b)])
    return cos, ratio


def test_ct_is_the_limit_of_a_discrete_consistency_training_step():
    """Discrete CT: x_{s+D} = I_{s+D} = x_s + D (x1 - x0) on the same pair; the preset's gradient
    equals the discrete one divided by D (direction and size). The X-space Eulerian residual with
    the sample velocity (the old ``ct``) and unweighted MeanFlow do not."""
    model = _random_mlp(0)
    x0, x1, s, t = _batch()
    disc = _discrete_grads(model, x0, x1, s, t, lambda x, a, i: x + DELTA * (x1[i : i + 1] - x0[i : i + 1]))
    cos, ratio = _compare(disc, _preset_grads(make_objective("ct"), model, x0, x1, s, t))
    assert (cos > 0.999).all(), cos
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=1e-3, atol=0)

    old = Eulerian(velocity="sample", space="map")
    cos_old, _ = _compare(disc, _preset_grads(old, model, x0, x1, s, t))
    assert cos_old.min() < 0.99, cos_old
    cos_mf, ratio_mf = _compare(disc, _preset_grads(make_objective("meanflow"), model, x0, x1, s, t))
    assert (cos_mf > 0.999).all()  # the same direction: CT is MeanFlow weighted by t - s
    torch.testing.assert_close(ratio_mf, 1.0 / (t - s), rtol=1e-3, atol=0)


def test_cd_is_the_limit_of_a_discrete_consistency_distillation_step():
    """Discrete CD: x_{s+D} = x_s + D b_s(x_s), one Euler step of a frozen teacher velocity; the
    preset's gradient equals the discrete one divided by D. Eulerian map distillation (X-space,
    ``emd``) is a different update and fails the same check."""
    model, teacher = _random_mlp(0), _random_mlp(7).requires_grad_(False)
    x0, x1, s, t = _batch()
    disc = _discrete_grads(model, x0, x1, s, t, lambda x, a, i: x + DELTA * teacher.velocity(x, a))
    cos, ratio = _compare(disc, _preset_grads(make_objective("cd", teacher=teacher), model, x0, x1, s, t))
    assert (cos > 0.999).all(), cos
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=1e-3, atol=0)

    cos_emd, _ = _compare(disc, _preset_grads(make_objective("emd", teacher=teacher), model, x0, x1, s, t))
    assert cos_emd.min() < 0.99, cos_emd


def test_interval_weight_enters_the_loss_once():
    """The (t - s) weight reaches the reported loss: ct's loss at eta = 0 equals the mean over
    samples of (t - s) times MeanFlow's squared residual on the same batch and times."""
    model = _random_mlp(3)
    x0, x1, _, _ = _batch(32, seed=4)
    g = {"generator": torch.Generator().manual_seed(5)}
    ct = make_objective("ct", eta=0.0)(model, x1, x0, **g).loss
    s, t = off_diagonal_times(32, generator=torch.Generator().manual_seed(5))
    _, r = make_objective("meanflow").residuals(model, x0, x1, 0, None, s, t)
    torch.testing.assert_close(ct, ((t - s) * r.pow(2).sum(dim=1)).mean())
    with pytest.raises(ValueError, match="interval_weight"):
        Eulerian(interval_weight="yes")


SHORTCUT_STEPS = {2.0**-k for k in range(7)}  # 1 ... 1/64: the shortcut paper's 128-step setting


def test_shortcut_samples_the_steps_1_to_1_64():
    s, t = off_diagonal_times(20_000, kind="dyadic", generator=torch.Generator().manual_seed(0))
    steps = set((t - s).tolist())
    assert steps == SHORTCUT_STEPS
    assert ((s / (t - s)) == (s / (t - s)).round()).all()  # s on the grid of its own step
    with pytest.raises(ValueError, match="max_level"):
        off_diagonal_times(4, kind="dyadic", max_level=-1)


def test_shortcut_bootstraps_only_from_trained_steps():
    """Every (s, t) at which the shortcut objective calls the network is trained: the diagonal
    (flow matching) or a sampled level. The finest level 1/64 bootstraps from two 1/128 Euler
    steps of the diagonal velocity; the level 1/32 from two steps of the level 1/64."""
    model = _random_mlp(2)
    asked: list[torch.Tensor] = []
    model.net.register_forward_pre_hook(lambda mod, args: asked.append((args[1] - args[0]).detach()))
    x0, x1 = torch.randn(256, 2), torch.rand(256, 2) * 2 - 1
    for fuse in (False, True):
        make_objective("shortcut", fuse_branches=fuse)(model, x1, x0, generator=torch.Generator().manual_seed(1))
    steps = set(torch.cat(asked).tolist())
    assert steps <= SHORTCUT_STEPS | {0.0}, sorted(steps)[:3]
    assert SHORTCUT_STEPS | {0.0} == steps  # each level (and the diagonal) was asked for

    obj = make_objective("shortcut")
    x_s = torch.randn(5, 2)
    s = torch.tensor([0.0, 0.25, 0.5, 0.75, 63 / 64])
    with torch.no_grad():
        target = obj._teacher_target(model, x_s, s, s + 1 / 64)
        v_s = model.velocity(x_s, s)
        u = s + 1 / 128
        euler_two = 0.5 * (v_s + model.velocity(x_s + v_s / 128, u))
        torch.testing.assert_close(target, euler_two)
        target = obj._teacher_target(model, x_s[:4], s[:4], s[:4] + 1 / 32)
        v_half = model(s[:4], s[:4] + 1 / 64, x_s[:4])
        u = s[:4] + 1 / 64
        two_steps = 0.5 * (v_half + model(u, u + 1 / 64, x_s[:4] + v_half / 64))
        torch.testing.assert_close(target, two_steps)
