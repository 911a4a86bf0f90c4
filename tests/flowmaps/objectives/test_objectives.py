"""Objectives: zero residual at the exact map, stop-gradient placement, batch split, presets."""

import copy

import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import (
    PRESETS,
    SELF_DISTILLATION,
    Eulerian,
    Lagrangian,
    Progressive,
    make_objective,
)
from flowmaps.timesampling import off_diagonal_times, split_batch
from tests.gaussian_flow import GaussianFlowNet

MEAN = torch.tensor([0.8, -0.4], dtype=torch.float64)
FAMILIES = ["lsd", "esd", "psd-u", "psd-m"]


pytestmark = pytest.mark.usefixtures("float64")


def gaussian_model(eps=0.0):
    return FlowMap(GaussianFlowNet(MEAN, c=0.3, sigma=1.0, eps=eps), sigma=1.0)


def gaussian_batch(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MEAN + 0.3 * torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("method", FAMILIES + ["ct", "meanflow", "shortcut"])
@pytest.mark.parametrize("backend", ["jvp", "fd"])
def test_exact_map_has_zero_residual_and_perturbed_positive(method, backend):
    x1, x0 = gaussian_batch()
    kw = {"backend": backend, "fd_step": 1e-5}
    if method == "shortcut":
        # The semigroup alone: the preset takes its finest level's half-steps with Euler steps of
        # the diagonal velocity, which the exact map satisfies only up to O(step^2).
        kw["min_step"] = 0.0
    obj = make_objective(method, **kw)
    exact = obj(gaussian_model(0.0), x1, x0, generator=torch.Generator().manual_seed(1))
    perturbed = obj(gaussian_model(0.1), x1, x0, generator=torch.Generator().manual_seed(1))
    off = obj.name
    if method in ("ct", "meanflow"):
        # The one-sample velocity x1 - x0 is noisy: its residual is zero only in expectation,
        # so it cannot vanish per sample. The exact map still beats a perturbed one.
        assert perturbed.logs[off] > exact.logs[off]
    else:
        tol = 1e-16 if backend == "jvp" else 1e-12
        assert exact.logs[off] < tol, exact.logs
        assert perturbed.logs[off] > 1e-4, perturbed.logs


def test_diagonal_term_is_flow_matching():
    """On the diagonal the exact velocity leaves only the conditional variance."""
    x1, x0 = gaussian_batch(4096)
    fm = make_objective("fm")
    out = fm(gaussian_model(0.0), x1, x0, generator=torch.Generator().manual_seed(0))
    # E|b_t(I_t) - (x1 - x0)|^2 > 0; a perturbed velocity does worse.
    worse = fm(gaussian_model(0.3), x1, x0, generator=torch.Generator().manual_seed(0))
    assert 0 < out.logs["diagonal"] < worse.logs["diagonal"]


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("method", FAMILIES)
def test_teacher_sends_no_gradient(method):
    """Self-distillation under stop-gradient == distillation from a frozen copy of the weights.

    A frozen copy can send no gradient into the student by construction; equal gradients show
    the self-distillation teacher sends none either. The stopgrad="none" variant must differ.
    """
    torch.manual_seed(0)
    student = FlowMap(MLP(dim=2, width=16, depth=2, sigma=1.0), sigma=1.0)
    frozen = copy.deepcopy(student).requires_grad_(False)
    x1, x0 = gaussian_batch(64)
    cls, preset = PRESETS[method]
    results = {}
    for label, kw in {
        "self": {},
        "frozen": {"teacher": frozen, "diagonal_target": "interpolant"},
        # the other stop-gradient placement must change the gradient ("esd" already lets the
        # gradient through its transport term: its other placement stops it there)
        "no_sg": {"stopgrad": "teacher" if method == "esd" else "none"},
    }.items():
        student.zero_grad()
        obj = cls(**{**preset, **kw})
        obj(student, x1, x0, generator=torch.Generator().manual_seed(3)).loss.backward()
        results[label] = grads(student)
    torch.testing.assert_close(results["self"], results["frozen"], rtol=1e-10, atol=1e-12)
    assert (results["self"] - results["no_sg"]).abs().max() > 1e-6


def test_lsd_gradient_flows_only_through_the_time_derivative():
    """With the teacher's target frozen, LSD's gradient is that of |d/dt X - const|^2."""
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=16, depth=2), sigma=1.0)
    obj = Lagrangian(eta=0.0)
    x1, x0 = gaussian_batch(32)
    g = torch.Generator().manual_seed(5)
    obj(model, x1, x0, generator=g).loss.backward()
    auto = grads(model)
    # Recompute by hand with the same times.
    model.zero_grad()
    s, t = off_diagonal_times(32, generator=torch.Generator().manual_seed(5))
    x_s = (1 - s[:, None]) * x0 + s[:, None] * x1
    X, dX = model.jvp(x_s, s, t, dt=1.0, backend="jvp")
    target = model.velocity(X, t).detach()
    ((dX - target) ** 2).sum(1).mean().backward()
    torch.testing.assert_close(auto, grads(model), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("net", ["mlp", "unet"])
@pytest.mark.parametrize("method", ["lsd", "esd", "meanflow"])
def test_tangent_and_jvp_backends_give_the_same_loss_and_gradient(method, net):
    torch.manual_seed(0)
    if net == "mlp":
        model = FlowMap(MLP(dim=2, width=16, depth=2), sigma=1.0)
        x1, x0 = gaussian_batch(64)
    else:
        from flowmaps.nets.unet import UNet

        unet = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, attn_levels=(1,))
        with torch.no_grad():  # leave the zero-initialised init, so every layer matters
            for p in unet.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model = FlowMap(unet, sigma=0.5)
        x1, x0 = torch.rand(8, 1, 28, 28) * 2 - 1, 0.5 * torch.randn(8, 1, 28, 28)
    out = []
    for backend in ("jvp", "tangent"):
        model.zero_grad()
        loss = make_objective(method, backend=backend)(model, x1, x0, generator=torch.Generator().manual_seed(0))
        loss.loss.backward()
        out.append((loss.loss.detach(), grads(model)))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-9, atol=1e-12)


# network calls (forward, jvp) per loss without and with fused branches
ONE_CALL = {
    "lsd": ({"forward": 2, "jvp": 1}, {"forward": 1, "jvp": 1}),  # teacher; diagonal and JVP rows together
    "esd": ({"forward": 2, "jvp": 1}, {"forward": 1, "jvp": 1}),  # b; diagonal and (d/ds + transport) rows
    "psd-m": ({"forward": 4, "jvp": 0}, {"forward": 3, "jvp": 0}),  # two teacher calls; diagonal and student
    "psd-u": ({"forward": 4, "jvp": 0}, {"forward": 3, "jvp": 0}),
    # ESD in X-space with the sample velocity (the old "ct" preset): b = x1 - x0 needs no call
    "esd-sample": ({"forward": 1, "jvp": 2}, {"forward": 0, "jvp": 2}),
}
VARIANTS = {"esd-sample": ("esd", {"velocity": "sample", "stopgrad": "teacher"})}


@pytest.mark.parametrize("net", ["unet", "mlp"])
@pytest.mark.parametrize("method", sorted(ONE_CALL))
def test_fused_branches_equal_the_separate_calls(method, net):
    """On a net with partial tangents (the UNet, the MLP) the diagonal rows and the off-diagonal
    rows that carry gradients run in one call; loss, logs and gradients equal the unfused
    objective's, with one call fewer."""
    from flowmaps.nets.unet import UNet

    torch.manual_seed(0)
    if net == "unet":
        network = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, attn_levels=(1,))
        with torch.no_grad():
            for p in network.parameters():
                p.add_(0.05 * torch.randn_like(p))
        x1, x0 = torch.rand(8, 1, 28, 28) * 2 - 1, 0.5 * torch.randn(8, 1, 28, 28)
    else:
        network = MLP(dim=2, width=16, depth=3, sigma=0.5)
        x1, x0 = gaussian_batch(24)
    model = FlowMap(network, sigma=0.5)
    calls = {"forward": 0, "jvp": 0}
    network.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    plain_jvp = network.jvp

    def counted_jvp(*args):
        calls["jvp"] += 1
        return plain_jvp(*args)

    network.jvp = counted_jvp
    out = {}
    for fuse in (False, True):
        calls.update(forward=0, jvp=0)
        model.zero_grad()
        name, kw = VARIANTS.get(method, (method, {}))
        obj = make_objective(name, fuse_branches=fuse, **kw)
        res = obj(model, x1, x0, generator=torch.Generator().manual_seed(3))
        res.loss.backward()
        out[fuse] = (res.loss.detach(), grads(model), dict(calls), res.logs)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-9, atol=1e-12)
    assert out[True][3] == pytest.approx(out[False][3], rel=1e-10)
    assert (out[False][2], out[True][2]) == ONE_CALL[method]


def test_fused_branches_stay_apart_under_dropout():
    """Dropout belongs to the diagonal branch alone, so an active dropout turns fusion off."""
    from flowmaps.nets.unet import UNet

    unet = UNet(base_channels=8, channel_mults=(1,), num_res_blocks=1, emb_dim=16, dropout=0.1)
    model = FlowMap(unet, sigma=0.5)
    obj = make_objective("psd-m")
    assert not obj._can_fuse(model, 6, 2, tangent=False)
    model.eval()
    assert obj._can_fuse(model, 6, 2, tangent=False)
    assert obj._can_fuse(model, 6, 2, tangent=True)
    assert not obj._can_fuse(model, 8, 0, tangent=False)  # no off-diagonal rows
    assert not make_objective("lsd", backend="fd")._can_fuse(model, 6, 2, tangent=True)  # inexact derivative
    full_only = FlowMap(FullTangentMLP(dim=2, width=8, depth=1))
    assert not obj._can_fuse(full_only, 6, 2, tangent=True)  # a net that takes full tangents only
    assert obj._can_fuse(full_only, 6, 2, tangent=False)
    mlp = FlowMap(MLP(dim=2, width=8, depth=1))
    assert obj._can_fuse(mlp, 6, 2, tangent=True)  # the MLP takes a tangent on its last rows
    assert not make_objective("lsd", fuse_branches=False)._can_fuse(mlp, 6, 2, tangent=True)


class FullTangentMLP(MLP):
    """An MLP whose tangent pass is used as if it took full tangents only (as a user's net may)."""

    partial_tangent = False


@pytest.mark.parametrize("method", ["fm", "lsd", "esd", "psd-u"])
def test_return_logs_off_changes_only_the_logs(method):
    """return_logs=False or "tensor" (no host sync, for CUDA graphs) gives the same loss and no
    logs, or the same logs as 0-d tensors."""
    model = FlowMap(MLP(dim=2, width=16, depth=2), sigma=1.0)
    x1, x0 = gaussian_batch(32)
    on = make_objective(method)(model, x1, x0, generator=torch.Generator().manual_seed(1))
    off = make_objective(method, return_logs=False)(model, x1, x0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(on.loss, off.loss, rtol=0, atol=0)
    assert on.logs and off.logs == {}
    as_tensors = make_objective(method, return_logs="tensor")(
        model, x1, x0, generator=torch.Generator().manual_seed(1)
    ).logs
    assert set(as_tensors) == set(on.logs)
    for key, value in as_tensors.items():
        assert isinstance(value, torch.Tensor) and value.ndim == 0 and not value.requires_grad
        assert float(value) == pytest.approx(on.logs[key], rel=1e-12)
    with pytest.raises(ValueError, match="return_logs"):
        make_objective(method, return_logs="floats")


@pytest.mark.parametrize("method", ["lsd", "esd", "psd-m"])
def test_finite_difference_backend_matches_jvp(method):
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=16, depth=2), sigma=1.0)
    x1, x0 = gaussian_batch(64)
    losses = [
        make_objective(method, backend=b, fd_step=1e-4)(model, x1, x0, generator=torch.Generator().manual_seed(0)).loss
        for b in ("jvp", "fd")
    ]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-8)


def test_batch_split_and_each_branch_sees_only_its_part():
    assert split_batch(100, 0.75) == (75, 25)
    assert split_batch(3, 0.99) == (2, 1)  # both branches kept
    assert split_batch(10, 1.0) == (10, 0)
    with pytest.raises(ValueError, match="eta"):
        split_batch(10, 1.5)

    calls = []

    class Spy(Lagrangian):
        def diagonal_residual(self, model, x0, x1, t):
            calls.append(("diag", x1.shape[0]))
            return super().diagonal_residual(model, x0, x1, t)

        def off_diagonal_residual(self, model, x0, x1, s, t, generator=None):
            calls.append(("off", x1.shape[0]))
            return super().off_diagonal_residual(model, x0, x1, s, t, generator)

    x1, x0 = gaussian_batch(40)
    Spy()(gaussian_model(), x1, x0)
    assert calls == [("diag", 30), ("off", 10)]


def test_reductions():
    x1, x0 = gaussian_batch(40)
    model = gaussian_model(0.2)
    m = Lagrangian(reduction="mean")(model, x1, x0, generator=torch.Generator().manual_seed(0))
    s = Lagrangian(reduction="sum_of_means")(model, x1, x0, generator=torch.Generator().manual_seed(0))
    d, o = m.logs["diagonal"], m.logs["lagrangian"]
    assert m.loss.item() == pytest.approx(0.75 * d + 0.25 * o)
    assert s.loss.item() == pytest.approx(d + o)


def test_learned_weight_enters_as_log_variance():
    class ConstWeight(torch.nn.Module):
        def forward(self, s, t):
            return torch.full_like(s, 0.5)

    x1, x0 = gaussian_batch(40)
    net = GaussianFlowNet(MEAN, c=0.3, sigma=1.0, eps=0.2)
    plain = FlowMap(net, sigma=1.0)
    weighted = FlowMap(net, sigma=1.0, loss_weight=ConstWeight())
    a = make_objective("psd-m")(plain, x1, x0, generator=torch.Generator().manual_seed(0)).loss
    b = make_objective("psd-m")(weighted, x1, x0, generator=torch.Generator().manual_seed(0)).loss
    torch.testing.assert_close(b, torch.exp(torch.tensor(-0.5)) * a + 0.5)


def test_dyadic_times_lie_on_the_grid():
    s, t = off_diagonal_times(1000, kind="dyadic", generator=torch.Generator().manual_seed(0))
    d = t - s
    k = -torch.log2(d)
    torch.testing.assert_close(k, k.round())
    torch.testing.assert_close(s / d, (s / d).round())
    assert (t <= 1).all() and (s >= 0).all()


def test_gap_uniform_times_weigh_every_jump_length_alike():
    """kind="gap_uniform": t - s uniform on [0, 1] (Kolmogorov-Smirnov distance to U[0, 1] small),
    s uniform on [0, 1 - d] given d, pairs inside the unit square; the triangle sampler's jump length
    has density 2 (1 - d) instead, which the same distance tells apart."""
    n = 20_000
    s, t = off_diagonal_times(n, kind="gap_uniform", generator=torch.Generator().manual_seed(0))
    d = t - s
    assert (s >= 0).all() and (t <= 1 + 1e-7).all() and (d >= 0).all()

    def ks(sample, cdf):
        x = sample.sort().values
        grid = torch.arange(1, n + 1, dtype=x.dtype) / n
        return (grid - cdf(x)).abs().max().item()

    assert ks(d, lambda x: x) < 0.02
    assert ks(s / (1 - d), lambda x: x) < 0.02  # s / (1 - d) ~ U[0, 1] given d
    s_tri, t_tri = off_diagonal_times(n, kind="uniform", generator=torch.Generator().manual_seed(0))
    assert ks(t_tri - s_tri, lambda x: x) > 0.2  # the triangle's jump lengths are not uniform
    assert ks(t_tri - s_tri, lambda x: 2 * x - x * x) < 0.02  # their CDF is 2d - d^2
    with pytest.raises(ValueError, match="gap_uniform"):
        off_diagonal_times(4, kind="log")
    with pytest.raises(ValueError, match="square"):
        make_objective("lsd", times="log")


def test_late_times_move_the_triangles_pairs_towards_the_data():
    """kind="late": the triangle's (s, t) through u -> 1 - (1 - u)^2. The triangle's s is the min of
    two uniforms (CDF 1 - (1 - u)^2), so the late s is exactly U[0, 1]; its t is the max (CDF u^2),
    so the late t has CDF (1 - sqrt(1 - u))^2; s < t stays, and about 71% of the times lie above 1/2."""
    n = 20_000
    s, t = off_diagonal_times(n, kind="late", generator=torch.Generator().manual_seed(0))
    assert (s < t).all() and (s >= 0).all() and (t <= 1).all()

    def ks(sample, cdf):
        x = sample.double().sort().values
        grid = torch.arange(1, n + 1, dtype=x.dtype) / n
        return (grid - cdf(x)).abs().max().item()

    assert ks(s, lambda x: x) < 0.02
    assert ks(t, lambda x: (1 - torch.sqrt(1 - x)) ** 2) < 0.02
    assert ks(t, lambda x: x * x) > 0.1  # the triangle's own t is told apart
    share = float((torch.cat([s, t]) > 0.5).double().mean())
    assert abs(share - 2**-0.5) < 0.01


def test_square_times_draw_forward_and_backward_jumps():
    """kind="square" (the released checkerboard code's sampler): s and t each U[0, 1] and independent,
    so about half the pairs jump backwards (s > t); the triangle sampler never does."""
    n = 20_000
    s, t = off_diagonal_times(n, kind="square", generator=torch.Generator().manual_seed(0))

    def ks_uniform(sample):
        x = sample.sort().values
        return (torch.arange(1, n + 1, dtype=x.dtype) / n - x).abs().max().item()

    assert ks_uniform(s) < 0.02 and ks_uniform(t) < 0.02
    assert abs((s > t).double().mean().item() - 0.5) < 0.02
    assert abs(torch.corrcoef(torch.stack([s, t]))[0, 1].item()) < 0.03  # independent, not min / max
    s_tri, t_tri = off_diagonal_times(n, kind="uniform", generator=torch.Generator().manual_seed(0))
    assert (s_tri <= t_tri).all()


@pytest.mark.parametrize("method", FAMILIES)
def test_backward_jumps_keep_the_exact_map_a_zero_of_every_residual(method):
    """Each self-distillation residual holds for s > t as well (X_{s,t} = the inverse of X_{t,s}):
    with times="square" the exact Gaussian flow map still scores zero and a perturbed one does not."""
    x1, x0 = gaussian_batch()
    obj = make_objective(method, times="square")
    exact = obj(gaussian_model(0.0), x1, x0, generator=torch.Generator().manual_seed(1))
    perturbed = obj(gaussian_model(0.1), x1, x0, generator=torch.Generator().manual_seed(1))
    assert exact.logs[obj.name] < 1e-16, exact.logs
    assert perturbed.logs[obj.name] > 1e-4, perturbed.logs


def test_presets_and_errors():
    for name in SELF_DISTILLATION:
        assert make_objective(name).method == name
    with pytest.raises(ValueError, match="teacher"):
        make_objective("lmd")
    with pytest.raises(ValueError, match="unknown method"):
        make_objective("magic")
    with pytest.raises(ValueError, match="gamma"):
        Progressive(gamma=2.0)
    with pytest.raises(ValueError, match="velocity"):
        Eulerian(velocity="teacher")


def test_distillation_from_an_exact_teacher_is_zero_at_the_exact_map():
    """LMD / EMD / progressive distillation from the exact Gaussian flow: zero at the exact map."""
    x1, x0 = gaussian_batch()
    teacher = gaussian_model(0.0).requires_grad_(False)
    for name in ("lmd", "emd", "pd"):
        obj = make_objective(name, teacher=teacher)
        out = obj(gaussian_model(0.0), x1, x0, generator=torch.Generator().manual_seed(0))
        assert out.logs["diagonal"] < 1e-20 and out.logs[obj.name] < 1e-16, (name, out.logs)
