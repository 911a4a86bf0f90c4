"""The training loop: exact resume, the NaN/spike guard, schedule, clipping, EMA, torch.distributed."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flowmaps.data.point_cloud import points_from_array
from flowmaps.data.toy import sample_toy
from flowmaps.objectives import LossOutput, make_objective
from flowmaps.registry import build_model
from flowmaps.training import (
    DivergenceError,
    TrainConfig,
    Trainer,
    anneal_factor,
    close_distributed,
    init_distributed,
    learning_rate,
    load_state_file,
)

torch.set_num_threads(2)

CONFIG = {"net": {"name": "mlp", "dim": 2, "width": 16, "depth": 2}, "sigma": 0.5}


def _model(seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model({**CONFIG, **extra})


def _sampler(n: int, g: torch.Generator) -> torch.Tensor:
    return sample_toy("checkerboard", n, g, dtype=torch.float64)


def _config(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=32, dtype="float64", log_every=1, guard_every=3, lr_decay_start=4, grad_clip=0.5)
    return TrainConfig(**{**base, **kw})


def _losses(trainer: Trainer, **kw) -> list[float]:
    out: list[float] = []
    trainer.train(callback=lambda tr, logs: out.append(logs["loss"]), progress=False, **kw)
    return out


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in module.state_dict().values()])


# ---------------------------------------------------------------------------------- resume
def test_resume_continues_with_identical_losses(tmp_path):
    """Killed at step 6 and resumed, the run gives bit-identical losses and weights."""
    extra = {"learn_loss_weight": True, "loss_weight": {"dim": 8, "hidden": 4}}
    full = Trainer(_model(0, **extra), make_objective("lsd"), _sampler, _config())
    ref = _losses(full)
    assert len(ref) == 12 and len(set(ref)) == 12

    ckpt = tmp_path / "run" / "trainer.safetensors"
    first = Trainer(_model(0, **extra), make_objective("lsd"), _sampler, _config(steps=6))
    head = _losses(first)
    first.save_checkpoint(ckpt)
    assert head == ref[:6]

    second = Trainer(_model(123, **extra), make_objective("lsd"), _sampler, _config(log_path=str(tmp_path / "l.jsonl")))
    second.resume(ckpt)
    assert second.global_step == 6
    tail = _losses(second)
    assert tail == ref[6:]  # exact equality, not a tolerance
    assert torch.equal(_flat(second.model), _flat(full.model))
    assert torch.equal(_flat(second.ema_model), _flat(full.ema_model))
    opt_a, opt_b = full.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    for i in opt_a:
        for name in opt_a[i]:
            assert torch.equal(opt_a[i][name], opt_b[i][name])
    lines = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == list(range(7, 13))
    assert [e["loss"] for e in lines] == ref[6:]
    assert {"lagrangian", "diagonal", "grad_norm", "lr", "step_time"} <= set(lines[0])


def test_checkpoint_is_safetensors_written_atomically(tmp_path):
    trainer = Trainer(_model(), make_objective("psd-m"), _sampler, _config(steps=3))
    trainer.train(progress=False)
    path = trainer.save_checkpoint(tmp_path / "t.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # no temp file left
    with safe_open(str(path), "pt") as fh:
        keys = set(fh.keys())
        meta = json.loads(fh.metadata()["flowmaps_trainer"])
    assert "/model/net.out.weight" in keys and "/ema/net.out.weight" in keys and "/rng/0/generator" in keys
    assert meta["step"] == 3 and meta["optimizer"]["param_groups"][0]["betas"] == {"__tuple__": [0.9, 0.999]}
    state = load_state_file(path)
    assert isinstance(state["optimizer"]["param_groups"][0]["betas"], tuple)
    assert set(state["optimizer"]["state"]) == set(range(len(trainer.params)))  # int keys survive
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        trainer.resume(path)
    with pytest.raises(FileNotFoundError):
        trainer.resume(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------- guard
class _PoisonOnce:
    """The checkerboard, except that call number `at` returns NaN (or data scaled by `scale`)."""

    def __init__(self, at: int, scale: float | None = None) -> None:
        self.at, self.scale, self.calls = at, scale, 0

    def __call__(self, n: int, g: torch.Generator) -> torch.Tensor:
        x = _sampler(n, g)
        self.calls += 1
        if self.calls == self.at:
            x = x * self.scale if self.scale is not None else x.fill_(math.nan)
        return x


def test_nan_restores_last_good_state_and_halves_lr(caplog):
    reference = Trainer(_model(), make_objective("lsd"), _sampler, _config(steps=3, guard_every=3))
    _losses(reference)  # the state at step 3: the snapshot the guard must restore

    poisoned = _PoisonOnce(at=5)  # steps 0..3 succeed, the 5th batch is NaN
    trainer = Trainer(_model(), make_objective("lsd"), poisoned, _config(guard_every=3))
    seen: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="flowmaps.training"):
        trainer.train(callback=lambda tr, logs: seen.append(dict(logs)), progress=False)
    events = [e for e in seen if "recovered" in e]
    assert len(events) == 1
    assert "non-finite loss" in events[0]["recovered"]
    assert events[0]["step"] == 3  # rolled back from step 4 to the snapshot at step 3
    assert "halved the learning rate" in caplog.text and "restored the state of step 3" in caplog.text
    # Right after the recovery the weights were those of step 3 of a clean run:
    after = [e for e in seen if "recovered" not in e]
    assert [e["step"] for e in after] == [1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert trainer.lr_scale == 0.5 and trainer.global_step == 12
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert after[4]["lr"] == pytest.approx(0.5 * learning_rate(3, 1e-3, 4))


def test_restored_weights_equal_the_snapshot():
    reference = Trainer(_model(), make_objective("fm"), _sampler, _config(steps=3, guard_every=3))
    reference.train(progress=False)
    trainer = Trainer(_model(), make_objective("fm"), _PoisonOnce(at=5), _config(guard_every=3))
    for _ in range(4):
        trainer.step()
    logs = trainer.step()  # the NaN batch
    assert "recovered" in logs and trainer.global_step == 3
    assert torch.equal(_flat(trainer.model), _flat(reference.model))
    assert torch.equal(_flat(trainer.ema_model), _flat(reference.ema_model))


def test_spike_is_caught():
    cfg = _config(steps=30, spike_window=10, spike_factor=5.0, grad_clip=10.0, guard_every=5)
    trainer = Trainer(_model(), make_objective("fm"), _PoisonOnce(at=25, scale=1e4), cfg)
    seen: list[dict] = []
    trainer.train(callback=lambda tr, logs: seen.append(logs), progress=False)
    events = [e["recovered"] for e in seen if "recovered" in e]
    assert len(events) == 1 and "spike" in events[0]
    assert trainer.global_step == 30 and trainer.lr_scale == 0.5


def test_persistent_nan_gives_up():
    trainer = Trainer(
        _model(), make_objective("fm"), lambda n, g: torch.full((n, 2), math.nan), _config(max_recoveries=3)
    )
    with pytest.raises(FloatingPointError, match="diverged"):
        trainer.train(progress=False)
    assert trainer.recoveries == 4


def test_persistent_nan_gives_up_saying_what_to_change():
    trainer = Trainer(
        _model(), make_objective("fm"), lambda n, g: torch.full((n, 2), math.nan), _config(max_recoveries=3)
    )
    with pytest.raises(DivergenceError) as info:
        trainer.train(progress=False)
    assert "after 3 recoveries in a row" in str(info.value) and "lower the learning rate" in str(info.value)
    assert "holds the state of step 0" in str(info.value) and trainer.global_step == 0


class _BlowsUp(torch.nn.Module):
    """loss = level * (1 + 0.2 u) * (1 + |w - mean(x1)|^2) (u uniform), ``level`` a buffer of the
    objective's state (so a snapshot holds it) that grows by ``rate`` per call from call ``start``
    on while the trainer's learning rate has never been lowered: an instability of the state that a
    lower rate stops, but a state restored after it grew is bad whatever the rate (its first step's
    gradient is taken there). Gradual (below the spike factor per step), so the guard, unarmed for
    its first window, lets it grow into the snapshot it takes at the window's end."""

    def __init__(self, start: int, rate: float) -> None:
        super().__init__()
        self.start, self.rate, self.trainer = start, rate, None
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("level", torch.ones((), dtype=torch.float64))

    def forward(self, model, x1, generator=None):
        self.calls += 1
        if int(self.calls) > self.start and self.trainer.lr_scale == 1.0:
            self.level *= self.rate
        u = torch.rand((), generator=generator, dtype=x1.dtype)
        loss = self.level * (1 + 0.2 * u) * (1 + ((model.w - x1.mean(0)) ** 2).sum())
        return LossOutput(loss, {})


def test_a_restored_state_that_spikes_at_once_gives_way_to_an_older_one():
    """The guard arms once its window holds 40 steps; by then the loss has grown 1.2^20 = 38-fold
    from step 20 on, and the snapshot of step 40 holds that state. The first spike restores it; its
    first step is rejected again (38 > 20 x the median, whatever the rate), so the next recovery
    goes back to the newest older kept snapshot (step 30, 6-fold) instead of retrying step 40 until
    the guard gives up, and the run finishes at a quarter of the rate."""
    cfg = _drift_config(steps=200, spike_window=40, spike_factor=20.0, guard_every=5, drift_snapshot_every=10)
    objective = _BlowsUp(start=20, rate=1.2)
    trainer = Trainer(_Point(), objective, _sampler, cfg)
    objective.trainer = trainer
    restored: list[int] = []
    trainer.train(
        callback=lambda tr, logs: restored.append(logs["step"]) if "recovered" in logs else None, progress=False
    )
    assert restored == [40, 30], restored
    assert trainer.global_step == 200 and trainer.lr_scale == 0.25 and trainer.recoveries == 2
    assert float(objective.level) == pytest.approx(1.2**10)  # the state of step 30, grown no further


def test_point_cloud_sampler_can_be_handed_to_the_trainer():
    """``Trainer(..., cloud.sampler)`` (the method) and ``cloud.sampler(b)`` (a sampler) both draw the
    cloud's points with the trainer's generator: the same losses as an explicit index draw."""
    cloud = points_from_array(sample_toy("checkerboard", 500, torch.Generator().manual_seed(3)), dtype=torch.float64)

    def explicit(n: int, g: torch.Generator) -> torch.Tensor:
        return cloud.points[torch.randint(0, len(cloud), (n,), generator=g)]

    ref = _losses(Trainer(_model(), make_objective("fm"), explicit, _config(steps=5)))
    by_method = _losses(Trainer(_model(), make_objective("fm"), cloud.sampler, _config(steps=5)))
    by_object = _losses(Trainer(_model(), make_objective("fm"), cloud.sampler(7), _config(steps=5)))
    assert len(ref) == 5 and len(set(ref)) == 5
    assert by_method == ref and by_object == ref
    bad = Trainer(_model(), make_objective("fm"), lambda n, g: [[0.0, 0.0]] * n, _config(steps=1))
    with pytest.raises(TypeError, match="must return a tensor"):
        bad.step()


class _Point(torch.nn.Module):
    """A two-parameter 'model' for the guard's tests (the trainer needs only parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))


class _Drifting(torch.nn.Module):
    """loss = rate^max(0, k - start) * (1 + 0.2 u) * (1 + |w - mean(x1)|^2) at its k-th call (u uniform):
    a flat noisy loss that, from call ``start`` on, grows by ``rate`` per step (loss and gradient norm)
    and never spikes. The call count is a buffer, part of the objective's state, so a rollback to a
    snapshot of step k <= start ends the drift until the run reaches ``start`` again."""

    def __init__(self, start: int, rate: float = 1.002, once: bool = False) -> None:
        super().__init__()
        self.start, self.rate, self.once, self.peak = start, rate, once, 0
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, model, x1, generator=None):
        self.calls += 1
        if self.once and int(self.calls) < self.peak:  # rolled back: with once=True the drift is over
            self.start = 10**12
        self.peak = max(self.peak, int(self.calls))
        growth = self.rate ** max(0, int(self.calls) - self.start)
        u = torch.rand((), generator=generator, dtype=x1.dtype)
        loss = growth * (1 + 0.2 * u) * (1 + ((model.w - x1.mean(0)) ** 2).sum())
        return LossOutput(loss, {})


def _drift_config(**kw) -> TrainConfig:
    base = dict(steps=10**6, batch_size=16, dtype="float64", log_every=10**9, lr=1e-3, lr_decay_start=0, grad_clip=0.0)
    base.update(spike_window=100, guard_every=20, drift_snapshot_every=100)
    return TrainConfig(**{**base, **kw})


def test_slow_divergence_rolls_back_before_the_drift_then_raises():
    """A loss creeping up x1.002 per step from step 1000 (never a spike) is caught, rolled back to a
    snapshot from before step 1000, and when it keeps drifting train() raises DivergenceError."""
    start = 1000
    trainer = Trainer(_Point(), _Drifting(start), _sampler, _drift_config(max_drift_rollbacks=2))
    seen: list[dict] = []
    with pytest.raises(DivergenceError, match="slow divergence") as info:
        trainer.train(callback=lambda tr, logs: seen.append(logs) if "recovered" in logs else None, progress=False)
    events = [e["recovered"] for e in seen]
    assert len(events) == 2 and all("slow divergence" in e and "spike" not in e for e in events), events
    for e in seen:
        assert e["step"] <= start  # restored a state from before the drift began
        assert e["step"] >= start - 200  # and not a needlessly old one: the kept snapshot at 800
    # the last detection: after the drift began (again), within the time a x1.002 growth takes to pass
    # 10x (1150 steps) plus half the window (the median's lag)
    err = info.value
    assert isinstance(err, FloatingPointError) and start < err.step <= start + 1300, err.step
    assert trainer.drift_rollbacks == 3 and trainer.global_step <= start  # it holds the healthy state
    assert abs(trainer.model.w).max() < 1.0 and int(trainer.objective.calls) <= start


def test_a_rollback_that_ends_the_drift_lets_the_run_finish():
    trainer = Trainer(_Point(), _Drifting(400, rate=1.01, once=True), _sampler, _drift_config(steps=1500))
    losses = _losses(trainer)
    assert trainer.drift_rollbacks == 1 and trainer.recoveries == 1 and trainer.global_step == 1500
    assert trainer.lr_scale == 0.5 and max(losses[-100:]) < 2.0  # healthy again at the end


def test_old_spike_guard_alone_lets_the_slow_drift_through():
    """Without the drift guard the same run returns normally with a loss grown some 50-fold: the spike
    test compares with a running median that rises along with the loss."""
    trainer = Trainer(_Point(), _Drifting(200), _sampler, _drift_config(steps=2200, drift_factor=None))
    losses = _losses(trainer)
    assert trainer.recoveries == 0 and min(losses[-50:]) > 20 * max(losses[100:200])


def test_healthy_runs_are_not_flagged():
    cfg = _config(steps=150, spike_window=40, guard_every=20, drift_snapshot_every=50, log_every=10**9, grad_clip=10.0)
    trainer = Trainer(_model(), make_objective("esd"), _sampler, cfg)  # the family that drifted at scale
    trainer.train(progress=False)
    assert trainer.global_step == 150 and trainer.recoveries == 0 and trainer.drift_rollbacks == 0
    assert math.isfinite(trainer.guard.reference[0])  # the guard was armed
    flat = Trainer(_Point(), _Drifting(10**9), _sampler, _drift_config(steps=800))
    flat.train(progress=False)
    assert flat.recoveries == 0 and flat.global_step == 800
    assert len(flat.guard.kept) <= 12 and flat.guard.kept[0]["step"] == 0  # thinned, the start kept


# ---------------------------------------------------------------------------------- pieces
def test_learning_rate_schedule():
    assert learning_rate(0, 1e-3, 35_000) == 1e-3
    assert learning_rate(34_999, 1e-3, 35_000) == 1e-3
    assert learning_rate(140_000, 1e-3, 35_000) == pytest.approx(5e-4)
    assert learning_rate(10**6, 1e-3, 0) == 1e-3
    trainer = Trainer(_model(), make_objective("fm"), _sampler, _config(steps=8, lr=0.01, lr_decay_start=2))
    seen = []
    trainer.train(callback=lambda tr, logs: seen.append(logs["lr"]), progress=False)
    assert seen == [0.01, 0.01] + [0.01 / math.sqrt(k / 2) for k in range(2, 8)]


def test_anneal_over_the_last_part_of_a_run():
    assert anneal_factor(0.3, 1.0) == 1.0 and anneal_factor(0.99, 1.0) == 1.0
    assert anneal_factor(0.5, 0.5) == 1.0
    assert anneal_factor(0.75, 0.5) == pytest.approx(0.5) and anneal_factor(1.0, 0.5) == 0.0
    assert anneal_factor(0.4, 0.0) == pytest.approx(0.6)
    # 10 steps, anneal from half-way: before step k the run is k / 10 done.
    trainer = Trainer(
        _model(), make_objective("fm"), _sampler, _config(steps=10, lr=0.01, lr_decay_start=0, anneal_from=0.5)
    )
    seen = []
    trainer.train(callback=lambda tr, logs: seen.append(logs["lr"]), progress=False)
    assert seen == pytest.approx([0.01] * 6 + [0.008, 0.006, 0.004, 0.002])
    # A resumed run anneals over its own remaining steps, on top of the sqrt decay.
    more = Trainer(
        _model(), make_objective("fm"), _sampler, _config(steps=14, lr=0.01, lr_decay_start=4, anneal_from=0.5)
    )
    more.global_step = 10
    seen = []
    more.train(callback=lambda tr, logs: seen.append(logs["lr"]), progress=False)
    decayed = [0.01 / math.sqrt(k / 4) for k in (10, 11, 12, 13)]
    assert seen == pytest.approx(decayed[:3] + [decayed[3] * 0.5])
    # A time-limited run anneals on the clock: its last steps run at a small fraction of the rate.
    timed = Trainer(
        _model(),
        make_objective("fm"),
        _sampler,
        _config(steps=10**6, lr=0.01, lr_decay_start=0, max_seconds=0.4, anneal_from=0.5),
    )
    history = timed.train(progress=False)  # log_every=1: every step, with the time after it
    # The rate of a step follows the clock read just before it, which lies between the times
    # logged after the previous step and after this one (the anneal factor falls with time).
    after = [e["time"] for e in history]
    before = [0.0] + after[:-1]
    for e, t0, t1 in zip(history, before, after):
        assert 0.01 * anneal_factor(t1 / 0.4, 0.5) - 1e-12 <= e["lr"] <= 0.01 * anneal_factor(t0 / 0.4, 0.5) + 1e-12
    assert history[0]["lr"] == 0.01 and history[-1]["lr"] < 0.01
    with pytest.raises(ValueError, match="anneal_from"):
        TrainConfig(anneal_from=1.5)


def test_first_step_is_a_clipped_gradient_step():
    """RAdam's first update is lr * g (no rectification yet), with g clipped to norm grad_clip."""
    lr, clip = 1e-2, 1e-3
    trainer = Trainer(_model(), make_objective("fm"), _sampler, _config(lr=lr, grad_clip=clip, ema_warmup=False))
    before = [p.detach().clone() for p in trainer.params]
    logs = trainer.step()
    assert logs["grad_norm"] > clip  # clipping is active
    delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(trainer.params, before)])
    assert float(delta.norm()) == pytest.approx(lr * clip, rel=1e-4)  # clip_grad_norm_ adds 1e-6 to the norm


def test_ema_closed_form():
    d = 0.9
    trainer = Trainer(_model(), make_objective("fm"), _sampler, _config(ema_decay=d, ema_warmup=False))
    p0 = _flat(trainer.model)
    trainer.step()
    p1 = _flat(trainer.model)
    trainer.step()
    p2 = _flat(trainer.model)
    expected = d * (d * p0 + (1 - d) * p1) + (1 - d) * p2
    torch.testing.assert_close(_flat(trainer.ema_model), expected, rtol=0, atol=1e-15)
    warm = Trainer(_model(), make_objective("fm"), _sampler, _config())  # warm-up: d_0 = 1/10
    q0 = _flat(warm.model)
    warm.step()
    torch.testing.assert_close(_flat(warm.ema_model), 0.1 * q0 + 0.9 * _flat(warm.model), rtol=0, atol=1e-15)


def test_stop_requests_and_time_cap():
    trainer = Trainer(_model(), make_objective("fm"), _sampler, _config(steps=100))
    trainer.train(callback=lambda tr, logs: tr.request_stop() if logs["step"] == 4 else None, progress=False)
    assert trainer.global_step == 4
    capped = Trainer(_model(), make_objective("fm"), _sampler, _config(steps=10**6, max_seconds=0.3))
    capped.train(progress=False)
    assert 0 < capped.global_step < 10**6


def test_config_validation():
    for bad in [dict(batch_size=0), dict(lr=-1.0), dict(ema_decay=1.0), dict(dtype="float16"), dict(grad_clip=-1)]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    assert TrainConfig.from_dict(TrainConfig(steps=7).to_dict()) == TrainConfig(steps=7)


# ---------------------------------------------------------------------------------- distributed
GLOBAL_BATCH = 8


def _fixed_batch():
    g = torch.Generator().manual_seed(7)
    x1 = _sampler(GLOBAL_BATCH, g)
    x0 = 0.5 * torch.randn(GLOBAL_BATCH, 2, generator=g, dtype=torch.float64)
    a, b = (
        torch.rand(GLOBAL_BATCH, generator=g, dtype=torch.float64),
        torch.rand(GLOBAL_BATCH, generator=g, dtype=torch.float64),
    )
    return x0, x1, torch.minimum(a, b), torch.maximum(a, b)


class _FixedLagrangian(torch.nn.Module):
    """Deterministic per-sample loss: flow matching at t plus the LSD residual on (s, t),
    averaged over the batch (so averaging over ranks equals the mean over the whole batch).
    Uses torch.func.jvp: the path that DDP wrapping cannot take."""

    def __init__(self, x0, s, t) -> None:
        super().__init__()
        self.x0, self.s, self.t = x0, s, t

    def forward(self, model, x1, x0=None, generator=None):
        x0, s, t = self.x0, self.s, self.t
        it = model.interpolant.sample(x0, x1, t)
        diag = (model.velocity(it.x_t, t) - it.dx_t).pow(2).sum(1)
        x_s = model.interpolant.sample(x0, x1, s).x_t
        X, dX = model.jvp(x_s, s, t, dt=1.0, backend="jvp")
        with torch.no_grad():
            target = model.velocity(X.detach(), t)
        loss = (diag + (dX - target).pow(2).sum(1)).mean()
        return LossOutput(loss=loss, logs={"diag": float(diag.detach().mean())})


def _rank_main(rank: int, body, world: int, port: int, out_dir: str) -> None:
    """One gloo rank of a test: set up torch.distributed, run ``body(rank, world, out_dir)``, tear down.

    After a body that succeeded the process leaves with os._exit(0): at a normal interpreter exit
    gloo's worker threads are sometimes still being torn down while C++ static objects are
    destroyed, and the process aborts ("terminate called without an active exception", no Python
    frame, about one run in thirty on a loaded 2-core machine) after every result has been saved.
    A body that fails still raises, so mp.spawn reports its traceback.
    """
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    info = init_distributed()
    try:
        assert (info.rank, info.world_size) == (rank, world) and dist.get_backend() == "gloo"
        body(rank, world, out_dir)
    except BaseException:
        close_distributed(wait=False)  # the other rank may never reach the barrier
        raise
    close_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn_ranks(body, world: int, out_dir) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(body, world, _free_port(), str(out_dir)), nprocs=world, join=True)


def _dist_worker(rank: int, world: int, out_dir: str) -> None:
    torch.manual_seed(1000 + rank)  # different weights on each rank: the trainer must broadcast rank 0's
    model = build_model(CONFIG)
    x0, x1, s, t = _fixed_batch()
    part = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    objective = _FixedLagrangian(x0[part], s[part], t[part])
    cfg = TrainConfig(steps=1, batch_size=GLOBAL_BATCH, dtype="float64", grad_clip=0.0, log_every=1)
    trainer = Trainer(model, objective, lambda n, g: x1[part][:n], cfg)
    assert trainer.local_batch_size == GLOBAL_BATCH // world
    out = {f"init/{k}": v.clone() for k, v in model.state_dict().items()}
    trainer.forward_backward(x1[part])
    out.update({f"grad/{i}": p.grad.clone() for i, p in enumerate(trainer.params)})
    trainer.train(progress=False)
    out.update({f"after/{k}": v.clone() for k, v in model.state_dict().items()})
    save_file(out, os.path.join(out_dir, f"rank{rank}.safetensors"))
    trainer.save_checkpoint(os.path.join(out_dir, "ckpt.safetensors"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_worker(rank: int, world: int, out_dir: str) -> None:
    import time

    delay = 0.01 * rank  # the ranks run at different speeds, so their clocks disagree

    def sampler(n, g):
        time.sleep(delay)
        return _sampler(n, g)

    cfg = TrainConfig(
        steps=10**6,
        batch_size=16,
        dtype="float64",
        max_seconds=2.0,  # long enough for a few steps on a loaded 2-core machine
        anneal_from=0.5,
        lr_decay_start=0,
        log_every=1,
    )
    trainer = Trainer(_model(), make_objective("fm"), sampler, cfg)
    lrs = [e["lr"] for e in trainer.train(progress=False)]
    save_file(
        {
            "step": torch.tensor([trainer.global_step]),
            "lr": torch.tensor(lrs, dtype=torch.float64),
            **{f"w/{k}": v for k, v in trainer.model.state_dict().items()},
        },
        os.path.join(out_dir, f"timed{rank}.safetensors"),
    )


def test_ranks_stop_together_and_anneal_on_one_clock(tmp_path):
    """Under max_seconds each rank's clock says a different thing; the ranks must still take the
    same number of steps (one leaving early would hang the other in its all-reduce) with the same
    learning rates, so that their weights stay equal."""
    _spawn_ranks(_timed_worker, 2, tmp_path)
    r0, r1 = (load_file(str(tmp_path / f"timed{r}.safetensors")) for r in range(2))
    assert int(r0["step"]) == int(r1["step"]) > 2
    assert torch.equal(r0["lr"], r1["lr"]) and float(r0["lr"][-1]) < float(r0["lr"][0])  # annealed, in step
    for k in r0:
        if k.startswith("w/"):
            assert torch.equal(r0[k], r1[k])


def test_two_process_gloo_gradients_equal_the_full_batch_gradient(tmp_path):
    world = 2
    _spawn_ranks(_dist_worker, world, tmp_path)
    results = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(world)]

    torch.manual_seed(1000)  # rank 0's initial weights
    model = build_model(CONFIG).double()
    x0, x1, s, t = _fixed_batch()
    _FixedLagrangian(x0, s, t)(model, x1).loss.backward()
    params = list(model.parameters())
    for res in results:
        for k, v in model.state_dict().items():
            assert torch.equal(res[f"init/{k}"], v), f"weights not broadcast from rank 0: {k}"
        for i, p in enumerate(params):
            torch.testing.assert_close(res[f"grad/{i}"], p.grad, rtol=1e-10, atol=1e-13)
    for k in model.state_dict():  # the ranks stay in sync after an optimiser step
        assert torch.equal(results[0][f"after/{k}"], results[1][f"after/{k}"])
        assert not torch.equal(results[0][f"after/{k}"], results[0][f"init/{k}"]) or "bias" in k
    state = load_state_file(tmp_path / "ckpt.safetensors")
    assert state["world_size"] == 2 and set(state["rng"]) == {"0", "1"}
    assert not torch.equal(state["rng"]["0"]["generator"], state["rng"]["1"]["generator"])


def test_close_distributed_closes_an_open_group_and_is_a_no_op_without_one(tmp_path):
    assert not dist.is_initialized()
    close_distributed()  # nothing open: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        close_distributed()  # one rank: the barrier returns at once
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_every_range_in_the_config_metadata_is_enforced_at_its_edge():
    """Each field's range (its metadata) accepts its bound where the bound is closed and refuses the
    value just past it with a message naming the field; an "off" range takes None."""
    from dataclasses import fields

    checked = 0
    for f in fields(TrainConfig):
        rng = f.metadata.get("range")
        if rng is None:
            continue
        step = 1 if rng.integer else 1e-9
        for bound, open_, outside in ((rng.low, rng.low_open, -step), (rng.high, rng.high_open, step)):
            if bound is None:
                continue
            bad = bound if open_ else bound + outside
            with pytest.raises(ValueError, match=f"^{f.name} must be"):
                TrainConfig(**{f.name: bad})
            good = bound - outside if open_ else bound
            assert getattr(TrainConfig(**{f.name: good}), f.name) == good
            checked += 1
        if rng.off:
            assert getattr(TrainConfig(**{f.name: None}), f.name) is None
    assert checked >= 20
