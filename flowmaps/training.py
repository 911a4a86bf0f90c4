"""The training loop: RAdam, lr schedule, clipping, EMA, a NaN/spike guard, checkpoints, resume.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

One optimiser step (:meth:`Trainer.step`):

1. draw a batch x1 = data_sampler(local_batch_size, generator) of shape (B, *D);
2. loss = objective(model, x1, generator=generator).loss (the objective draws the noise x0, the
   times and splits the batch into its diagonal / off-diagonal parts itself);
3. backward; with torch.distributed, average the gradients over ranks (see below);
4. clip the global gradient norm to ``grad_clip``;
5. guard: a non-finite loss or gradient norm, or a spike (more than ``spike_factor`` times the
   running median), restores the last good state, halves the learning rate and goes on; a slow
   divergence (the running median itself more than ``drift_factor`` times its lowest value in the
   run) rolls back to a snapshot from before the drift's estimated onset and halves the learning rate;
   when the guard gives up it raises :class:`DivergenceError` (see :class:`Trainer`);
6. RAdam step with lr(k) = lr0 for k < k0 and lr0 / sqrt(k / k0) after (k0 = lr_decay_start);
7. EMA of the weights, ema <- d_k * ema + (1 - d_k) * params, d_k = min(decay, (1 + k) / (10 + k))
   (the warm-up can be switched off). Sample with ``ema_model``.

Checkpoints are a single safetensors file: every tensor (model, EMA, optimiser state, RNG
states) is stored by name and the rest (step, scalars, the layout of the optimiser state) as JSON
in the file's metadata. Nothing is pickled. A run killed at step k and resumed from its
checkpoint continues with exactly the losses of an uninterrupted run (on the CPU).

Multi-GPU (torchrun): call :func:`init_distributed` first. ``batch_size`` is the *global*
batch: each of the W ranks draws batch_size / W samples with its own generator (seeded
seed + 1_000_003 * rank), and the objective splits its own part into diagonal and off-diagonal
samples, so every device keeps the fraction eta on the diagonal. The initial weights are
broadcast from rank 0, and after backward the gradients are averaged with one explicit
all_reduce. We do not wrap the model in DistributedDataParallel: the Lagrangian and Eulerian
objectives differentiate the network with torch.func.jvp, which calls the module functionally
and bypasses DDP's forward hooks, so DDP's gradient hooks fire out of order or not at all (and
jvp on a DDP module fails outright). Averaging the gradients ourselves is equivalent and works
for every objective. Only rank 0 logs, shows the progress bar and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowmaps.graphs import GraphedLoss, bf16_autocast, compile_network

logger = logging.getLogger("flowmaps.training")

DataSampler = Callable[[int, torch.Generator], Tensor]
"""data_sampler(batch_size, generator) -> x1 of shape (batch_size, *D)."""

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_META_KEY = "flowmaps_trainer"
_RANK_SEED_STRIDE = 1_000_003
_DRIFT_TIERS = 5  # the drift guard keeps the 3 newest snapshots at multiples of 1, 2, 4, 8, 16 intervals
_DRIFT_PER_TIER = 3
_LEVEL_HISTORY = 20_000  # steps of running medians kept to date a drift's onset


class DivergenceError(FloatingPointError):
    """Training diverged and the guard gave up (:meth:`Trainer.step` and :meth:`Trainer.train` raise it).

    Attributes:
        step: the step at which the guard gave up (before any rollback).
        reason: what it saw (non-finite values, a spike, or a slow drift of the loss or gradient norm).
    """

    def __init__(self, step: int, reason: str) -> None:
        self.step = int(step)
        self.reason = str(reason)
        super().__init__(f"training diverged at step {self.step}: {self.reason}")


# ---------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Training settings (defaults: the paper's 2-D recipe).

    Attributes:
        steps: total optimiser steps.
        batch_size: global batch size (divided evenly among torch.distributed ranks).
        lr: base learning rate lr0 (1e-3 for 2-D; 1e-2 for images with the learned weight).
        lr_decay_start: k0: constant lr for k < k0, then lr0 / sqrt(k / k0); 0 disables decay.
        grad_clip: global gradient-norm clip (10 for 2-D, 1 for images); 0 disables.
        ema_decay: EMA decay of the weights (0.999 for 2-D, 0.9999 for images).
        ema_warmup: use min(ema_decay, (1 + k) / (10 + k)) at step k, so that a short run's EMA
            is not dominated by the random initial weights (0.999^1500 still leaves 22% of them).
            The long runs of the paper are unaffected (the cap binds after 9k steps at 0.999).
        seed: seed of the training generator (data, noise, times).
        log_every: log (JSONL, progress bar) every this many steps.
        checkpoint_every: write ``checkpoint_path`` every this many steps (0: only at the end).
        checkpoint_path: trainer-state file (safetensors) or None.
        log_path: JSONL log file (one JSON object per logged step) or None.
        device: "cpu", "cuda", "cuda:1", ...; "auto" picks cuda when available.
        dtype: "float32" or "float64".
        amp: bf16 autocast of the forward pass, CUDA only. None (default) enables it on CUDA for
            objectives without forward-mode derivatives (fm, psd); JVP objectives stay in fp32
            because backprop through a bf16 JVP was not reliable in our probes.
        cuda_graph: capture the loss and its backward in a CUDA graph once and replay it every
            step (flowmaps.graphs.GraphedLoss): the same computation with one launch instead of
            hundreds, for small networks whose eager step is bound by kernel launches. Needs CUDA
            and a fixed batch size; per-term logs still come back. Under torch.distributed each
            rank replays its own graph and the gradient all-reduce runs after it. Off on the CPU
            (with a warning).
        compile: torch.compile the network's forward and tangent pass (flowmaps.graphs.
            compile_network): the tangent pass's elementwise chains fuse into few kernels. The
            first steps compile (minutes for the UNet). Best with cuda_graph on CUDA. True uses
            torch.compile's default backend; a string names another (e.g. "aot_eager").
        max_seconds: stop train() after this much wall time (None: no cap).
        anneal_from: from this fraction of a call to train() on, the learning rate falls linearly
            to 0 at the call's end (1.0, the default, keeps the schedule as it is). The call's
            length is its remaining steps or ``max_seconds``, whichever ends it first, so a
            time-limited run anneals over its last seconds. Short runs end better this way: the
            EMA only partly averages out the weight noise of a constant rate. For chunked
            training, give it to the last chunk.
        guard_every: keep an in-memory copy of the state every this many good steps.
        spike_factor: a gradient norm (or positive loss) above this factor times the running
            median counts as a spike; None disables spike detection (non-finite values are
            always caught).
        spike_window: length of the running window for the median (also the drift guard's).
        max_recoveries: give up (:class:`DivergenceError`) after this many recoveries in a row.
        drift_factor: slow-divergence guard. The level of a run is the running median (over
            ``spike_window`` steps) of the loss and of the gradient norm; the reference is the
            lowest level seen so far in the run (the healthiest period). A level above
            ``drift_factor`` times its reference (the loss only while its reference is positive)
            counts as drift, whether it came as a spike or crept up. None disables it.
            On a drift the run goes back to the newest kept snapshot from before the drift's
            onset, estimated from the level's history: the last time the level crossed
            ``sqrt(drift_factor)`` times the reference, extrapolated back to the reference at the
            growth rate seen since (exact for a steady geometric growth, earlier for a slower
            start), less one window for the median's lag.
        drift_snapshot_every: the drift guard keeps snapshots taken at multiples of this many
            steps, thinned with age: the three newest at multiples of ``drift_snapshot_every * 2^i``
            for i = 0 .. 4, plus the state the run (or its resume) started from: at most 12
            copies of the state (weights, EMA, optimiser), reaching back 32 to 48 intervals. An
            onset older than that rolls back to the run's start.
        max_drift_rollbacks: give up (:class:`DivergenceError`) after this many drift rollbacks in
            a row (a run that gets one window past the step where it last drifted starts a new row).
    """

    steps: int = 10_000
    batch_size: int = 1024
    lr: float = 1e-3
    lr_decay_start: int = 35_000
    grad_clip: float = 10.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 0
    checkpoint_path: str | None = None
    log_path: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    amp: bool | None = None
    cuda_graph: bool = False
    compile: bool | str = False
    max_seconds: float | None = None
    anneal_from: float = 1.0
    guard_every: int = 100
    spike_factor: float | None = 20.0
    spike_window: int = 200
    max_recoveries: int = 8
    drift_factor: float | None = 10.0
    drift_snapshot_every: int = 500
    max_drift_rollbacks: int = 3

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 0, "steps must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.lr_decay_start >= 0, "lr_decay_start must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)}"),
            (self.guard_every >= 1, "guard_every must be >= 1"),
            (self.spike_factor is None or self.spike_factor > 1, "spike_factor must be > 1 or None"),
            (self.spike_window >= 1, "spike_window must be >= 1"),
            (self.drift_factor is None or self.drift_factor > 1, "drift_factor must be > 1 or None"),
            (self.drift_snapshot_every >= 1, "drift_snapshot_every must be >= 1"),
            (self.max_drift_rollbacks >= 0, "max_drift_rollbacks must be >= 0"),
            (self.max_seconds is None or self.max_seconds > 0, "max_seconds must be > 0 or None"),
            (0.0 <= self.anneal_from <= 1.0, "anneal_from must be in [0, 1] (1 turns the anneal off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def anneal_factor(progress: float, anneal_from: float) -> float:
    """Factor on the learning rate at ``progress`` in [0, 1] through a run: 1 until
    ``anneal_from``, then a straight line down to 0 at progress 1 (``anneal_from`` = 1: always 1)."""
    if anneal_from >= 1.0 or progress <= anneal_from:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - anneal_from))


def learning_rate(step: int, lr: float, decay_start: int) -> float:
    """lr(k) = lr for k < k0, lr / sqrt(k / k0) for k >= k0 (k0 = decay_start; 0 means constant)."""
    if decay_start <= 0 or step < decay_start:
        return lr
    return lr / math.sqrt(step / decay_start)


# ---------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    """Where this process sits in a torch.distributed job (rank 0 of 1 without one)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Uses nccl when CUDA is available, gloo otherwise (MASTER_ADDR / MASTER_PORT come from the
    environment, as torchrun sets them). Without WORLD_SIZE > 1 nothing is initialised and the
    result is rank 0 of 1. The device is cuda:LOCAL_RANK with CUDA, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return DistInfo(0, 1, 0, device)


def close_distributed(wait: bool = True) -> None:
    """Close the process group that :func:`init_distributed` opened (nothing if none is open).

    Call it on every rank at the end of a torchrun run, after the last collective; without it NCCL
    warns at exit that destroy_process_group() was never called. With ``wait`` (the default) the
    ranks first meet at a barrier, so none tears its connections down while another still works
    (rank 0 writing the checkpoint): with gloo, a rank that left early sometimes aborted at exit
    (SIGABRT, 3 of 15 two-rank CPU runs of ``flowmaps train``; 0 of 50 with the barrier). Pass
    ``wait=False`` on an error path, where the other ranks may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _dist_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------- flattening
def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Nested containers -> a JSON skeleton; tensors go to ``tensors`` under their path."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        items = []
        for i, (k, v) in enumerate(obj.items()):
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot store a dict key of type {type(k).__name__} at {prefix}")
            items.append([k, _flatten(v, f"{prefix}/{i}", tensors)])
        return {"__items__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store an object of type {type(obj).__name__} at {prefix}")


def _unflatten(skel: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__items__" in skel:
            return {k: _unflatten(v, tensors) for k, v in skel["__items__"]}
        if "__tuple__" in skel:
            return tuple(_unflatten(v, tensors) for v in skel["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in skel.items()}
    if isinstance(skel, list):
        return [_unflatten(v, tensors) for v in skel]
    return skel


def save_state_file(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a nested state (tensors + JSON-able values) to one safetensors file, atomically.

    The bytes go to a temporary file in the same folder, which is fsynced and then renamed over
    ``path`` (os.replace), so a crash never leaves a half-written checkpoint.
    """
    from safetensors.torch import save as st_save

    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    data = st_save(tensors, metadata={_META_KEY: json.dumps(skeleton)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_state_file` (safetensors only; nothing is unpickled).

    Raises:
        FileNotFoundError: missing file. ValueError: not a valid trainer checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trainer checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a valid safetensors file ({type(err).__name__}: {err})") from err
    if _META_KEY not in meta:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a flowmaps trainer checkpoint")
    return _unflatten(json.loads(meta[_META_KEY]), tensors)


# ---------------------------------------------------------------------------------- trainer
def _uses_jvp(objective: nn.Module) -> bool:
    """Whether the objective differentiates the network in forward mode (Lagrangian, Eulerian)."""
    flag = getattr(objective, "uses_jvp", None)
    if flag is not None:
        return bool(flag)
    return getattr(objective, "name", "") in ("lagrangian", "eulerian")


def _draw_batch(data_sampler: DataSampler, n: int, generator: torch.Generator) -> Tensor:
    """``data_sampler(n, generator)`` as a tensor. A sampler factory such as ``PointCloud.sampler``
    returns a sampler object instead of a batch: its ``sample()`` then draws the batch (with the
    trainer's generator, which the factory was given)."""
    out = data_sampler(n, generator)
    if not isinstance(out, Tensor):
        draw = getattr(out, "sample", None)
        if callable(draw):
            out = draw()
    if not isinstance(out, Tensor):
        raise TypeError(
            f"data_sampler(n, generator) must return a tensor of shape (n, *D) (or an object whose sample() "
            f"does); got {type(out).__name__}"
        )
    return out


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Train a flow map with a self-distillation objective.

    Args:
        model: the FlowMap to train (moved to config.device / config.dtype).
        objective: callable module, objective(model, x1, generator=g) -> LossOutput(loss, logs).
        data_sampler: data_sampler(batch_size, generator) -> x1 of shape (batch_size, *D).
        config: :class:`TrainConfig`.

    Attributes:
        model, ema_model (sample with this one), optimizer, generator, global_step,
        rank, world_size, local_batch_size, recoveries (rollbacks of any kind so far),
        drift_rollbacks (those for a slow divergence).

    Divergence. The guard (see :class:`TrainConfig`: ``spike_factor``, ``drift_factor``) rolls a
    run that goes bad back to a saved state and halves the learning rate: a non-finite or spiking
    step to the last snapshot, a slow drift of the loss or gradient norm to a kept snapshot from
    before the drift's estimated onset. When it gives up (``max_recoveries`` recoveries or
    ``max_drift_rollbacks`` drift rollbacks in a row) :meth:`step` and :meth:`train` raise
    :class:`DivergenceError` (a ``FloatingPointError``, with ``.step`` and ``.reason``); after a
    drift the trainer then holds that pre-drift state. So :meth:`train` never returns normally with
    a run whose running median is more than ``drift_factor`` times its best; a rollback shows in the
    logs (and the callback's logs) as ``"recovered"``, with the restored ``"step"``. The CLI
    (``flowmaps train``) reports a DivergenceError and exits with status 1.

    Example::

        >>> from flowmaps.registry import build_model
        >>> from flowmaps.objectives import make_objective
        >>> model = build_model({"net": {"name": "mlp", "width": 64, "depth": 2}, "sigma": 1.0})
        >>> trainer = Trainer(model, make_objective("lsd"),
        ...                   lambda n, g: torch.randn(n, 2, generator=g), TrainConfig(steps=5))
        >>> history = trainer.train(progress=False)
    """

    def __init__(
        self, model: nn.Module, objective: nn.Module, data_sampler: DataSampler, config: TrainConfig | None = None
    ) -> None:
        self.config = config = config or TrainConfig()
        self.rank, self.world_size = _dist_world()
        if config.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} (global) must divide evenly among {self.world_size} ranks"
            )
        self.local_batch_size = config.batch_size // self.world_size
        check_batch = getattr(objective, "check_batch_size", None)
        if callable(check_batch):  # e.g. a batch of one leaves the off-diagonal branch empty
            check_batch(self.local_batch_size, world_size=self.world_size)
        self.device = _resolve_device(config.device)
        self.dtype = _DTYPES[config.dtype]
        self.model = model.to(device=self.device, dtype=self.dtype).train()
        self.objective = objective.to(device=self.device, dtype=self.dtype)
        self.data_sampler = data_sampler
        if self.world_size > 1:
            self._broadcast_from_rank0()
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        if config.compile:  # after the EMA copy: compiled functions are bound to this module
            kw = {"backend": config.compile} if isinstance(config.compile, str) else {}
            compile_network(getattr(self.model, "net", self.model), **kw)
        seen: set[int] = set()
        self.params: list[nn.Parameter] = []
        for p in list(self.model.parameters()) + list(self.objective.parameters()):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
        self.optimizer = torch.optim.RAdam(self.params, lr=config.lr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + _RANK_SEED_STRIDE * self.rank)
        amp = config.amp
        if amp is None:
            amp = self.device.type == "cuda" and not _uses_jvp(objective)
        elif amp and self.device.type != "cuda":
            logger.warning("amp (bf16 autocast) is CUDA only; training on %s without it", self.device)
            amp = False
        elif amp and _uses_jvp(objective):
            logger.warning("amp with a JVP objective: backprop through a bf16 JVP may be unreliable")
        self.amp = bool(amp)
        graph = bool(config.cuda_graph)
        if graph and self.device.type != "cuda":
            logger.warning("cuda_graph: CUDA graphs need a CUDA device; training on %s eagerly", self.device)
            graph = False
        self.cuda_graph = graph
        self._graphed: GraphedLoss | None = None
        self.global_step = 0
        self.lr_scale = 1.0
        self.run_progress = 0.0  # how far the current train() call is (for anneal_from)
        self.recoveries = 0
        self._consecutive_recoveries = 0
        self._grad_norms: deque[float] = deque(maxlen=config.spike_window)
        self._losses: deque[float] = deque(maxlen=config.spike_window)
        self._level: tuple[float, float] | None = None  # running medians (loss, grad norm)
        self._reference: tuple[float, float] = (math.inf, math.inf)  # their lowest values in the run
        self._level_history: deque[tuple[int, float, float]] = deque(maxlen=_LEVEL_HISTORY)
        self.drift_rollbacks = 0
        self._drift_rollbacks_in_a_row = 0
        self._last_drift_step = -1
        self._stop = False
        self._good: dict[str, Any] | None = None
        self._kept: list[dict[str, Any]] = [self._snapshot()]  # the drift guard's snapshots, oldest first

    # ------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes files)."""
        return self.rank == 0

    @property
    def lr(self) -> float:
        """The learning rate of the next step: schedule times the anneal times the guard's scale."""
        c = self.config
        anneal = anneal_factor(self.run_progress, c.anneal_from)
        return learning_rate(self.global_step, c.lr, c.lr_decay_start) * anneal * self.lr_scale

    def request_stop(self) -> None:
        """Ask train() to return after the current step (e.g. from a callback)."""
        self._stop = True

    def _broadcast_from_rank0(self) -> None:
        with torch.no_grad():
            for module in (self.model, self.objective):
                for tensor in module.state_dict().values():
                    dist.broadcast(tensor, src=0)

    def _snapshot(self) -> dict[str, Any]:
        """Keep a copy of the current state in memory (the guard's last good state), with the
        guard's running windows; returns it."""
        self._good = {
            "step": self.global_step,
            "model": copy.deepcopy(self.model.state_dict()),
            "ema": copy.deepcopy(self.ema_model.state_dict()),
            "objective": copy.deepcopy(self.objective.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "grad_norms": list(self._grad_norms),
            "losses": list(self._losses),
        }
        return self._good

    def _restore_snapshot(self, snap: dict[str, Any] | None = None) -> None:
        """Load a snapshot (the last good one by default), its running windows included."""
        good = self._good if snap is None else snap
        assert good is not None
        self.model.load_state_dict(good["model"])
        self.ema_model.load_state_dict(good["ema"])
        self.objective.load_state_dict(good["objective"])
        self.optimizer.load_state_dict(copy.deepcopy(good["optimizer"]))
        self.global_step = good["step"]
        self._grad_norms = deque(good["grad_norms"], maxlen=self.config.spike_window)
        self._losses = deque(good["losses"], maxlen=self.config.spike_window)
        while self._level_history and self._level_history[-1][0] > self.global_step:
            self._level_history.pop()
        self._update_level()

    # ------------------------------------------------------------------ one step
    def forward_backward(self, x1: Tensor) -> tuple[float, dict[str, float]]:
        """Loss and gradients on a local batch x1 (local_batch_size, *D); returns (loss, logs).

        With several ranks the gradients are averaged over ranks (one all_reduce), and so are
        the loss and the logs, so every rank sees the same numbers. With ``cuda_graph`` each rank
        replays its own graph and the all-reduce runs eagerly after it, into the graph's .grad
        tensors.
        """
        if self.cuda_graph:
            if self._graphed is None:
                self.optimizer.zero_grad(set_to_none=True)
                self._graphed = GraphedLoss(self.model, self.objective, x1, generator=self.generator, amp=self.amp)
            loss = self._graphed(x1)  # the .grad tensors now hold this batch's gradients
            logs = {k: float(v) for k, v in self._graphed.logs.items()}
            logs["loss"] = float(loss)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with bf16_autocast(self.amp):
                out = self.objective(self.model, x1, generator=self.generator)
            out.loss.backward()
            logs = {k: float(v) for k, v in out.logs.items()}
            logs["loss"] = float(out.loss.detach())
        if self.world_size > 1:
            logs = self._all_reduce(logs)
        return logs["loss"], logs

    def _all_reduce(self, logs: dict[str, float]) -> dict[str, float]:
        """Average gradients and logs over ranks with a single all_reduce of one flat buffer.

        A parameter without a gradient on every rank keeps grad None (as in one process). An
        existing .grad tensor is written in place (a CUDA graph replays into the same tensors).
        """
        keys = sorted(logs)
        parts = [
            torch.zeros(p.numel(), device=self.device, dtype=self.dtype)
            if p.grad is None
            else p.grad.reshape(-1).to(self.dtype)
            for p in self.params
        ]
        has_grad = torch.tensor([p.grad is not None for p in self.params], device=self.device, dtype=self.dtype)
        values = torch.tensor([logs[k] for k in keys], device=self.device, dtype=self.dtype)
        flat = torch.cat(parts + [has_grad, values])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in self.params:
            n = p.numel()
            grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        for p, flag in zip(self.params, flat[offset : offset + len(self.params)].tolist()):
            if flag == 0:
                p.grad = None
        offset += len(self.params)
        return dict(zip(keys, flat[offset:].tolist()))

    def _agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """The largest elapsed time of any rank, and whether any rank wants to stop (one all_reduce):
        a rank that left the loop alone would leave the others waiting in their next all-reduce."""
        flags = torch.tensor([elapsed, float(stop)], device=self.device, dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        elapsed_max, any_stop = flags.tolist()
        return elapsed_max, any_stop > 0

    def _update_level(self) -> None:
        """Running medians of the loss and gradient norm over the window (None until it holds
        min(50, spike_window) steps); the reference (lowest level) moves once the window is full."""
        c = self.config
        if len(self._grad_norms) < min(50, c.spike_window) or (c.spike_factor is None and c.drift_factor is None):
            self._level = None
            return
        self._level = (statistics.median(self._losses), statistics.median(self._grad_norms))
        if len(self._grad_norms) == c.spike_window:
            ref = self._reference
            self._reference = (min(ref[0], self._level[0]), min(ref[1], self._level[1]))
            if not self._level_history or self._level_history[-1][0] < self.global_step:
                self._level_history.append((self.global_step, *self._level))

    def _bad_step(self, loss: float, grad_norm: float) -> str | None:
        """Why this step must be rejected (non-finite or spike), or None."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradient norm ({grad_norm})"
        factor = self.config.spike_factor
        if factor is not None and self._level is not None:
            med_loss, med = self._level
            if med > 0 and grad_norm > factor * med:
                return f"gradient-norm spike ({grad_norm:.4g} > {factor:g} x median {med:.4g})"
            med = med_loss
            if med > 0 and loss > factor * med:
                return f"loss spike ({loss:.4g} > {factor:g} x median {med:.4g})"
        return None

    def _drift_ratios(self) -> tuple[float, float]:
        """Level over reference for the loss (0 while its reference is not positive) and the
        gradient norm; (0, 0) before the window is full."""
        if self._level is None or not math.isfinite(self._reference[1]):
            return 0.0, 0.0
        (lvl_loss, lvl_grad), (ref_loss, ref_grad) = self._level, self._reference
        r_loss = lvl_loss / ref_loss if ref_loss > 0 else 0.0
        r_grad = lvl_grad / ref_grad if ref_grad > 0 else 0.0
        return r_loss, r_grad

    def _drift(self) -> str | None:
        """Why the run counts as drifting away (slow divergence), or None."""
        factor = self.config.drift_factor
        if factor is None:
            return None
        r_loss, r_grad = self._drift_ratios()
        (lvl_loss, lvl_grad), (ref_loss, ref_grad) = self._level or (0.0, 0.0), self._reference
        if r_loss > factor:
            return f"slow divergence: loss median {lvl_loss:.4g} > {factor:g} x its lowest median {ref_loss:.4g}"
        if r_grad > factor:
            return (
                f"slow divergence: gradient-norm median {lvl_grad:.4g} > {factor:g} x its lowest median {ref_grad:.4g}"
            )
        return None

    def _drift_onset(self) -> int:
        """Estimated last step before the drift began (see ``TrainConfig.drift_factor``).

        For each drifting quantity (loss, gradient norm): the ratio r = level / reference over the
        kept history; tau_h = the start of the final stretch with r > sqrt(drift_factor) = h;
        growth rate b = log(r_now / h) / (now - tau_h); onset = tau_h - log(h) / b (where a steady
        geometric growth would have left the reference), less one window (the median's lag).
        The earliest of the quantities' onsets."""
        c = self.config
        factor = c.drift_factor or 10.0
        h = math.sqrt(factor)
        now = self.global_step
        onsets = []
        for q, ref in ((1, self._reference[0]), (2, self._reference[1])):
            if not ref > 0 or not self._level_history or self._level_history[-1][q] / ref <= factor:
                continue
            r_now = self._level_history[-1][q] / ref
            tau_h = self._level_history[-1][0]
            for entry in reversed(self._level_history):
                if entry[q] / ref <= h:
                    break
                tau_h = entry[0]
            rate = math.log(r_now / h) / max(now - tau_h, 1)
            onsets.append(tau_h - math.log(h) / rate - c.spike_window)
        return int(math.floor(min(onsets))) if onsets else now - c.spike_window

    def _keep_snapshot(self, snap: dict[str, Any]) -> None:
        """Add a snapshot to the drift guard's kept set and thin it (see ``drift_snapshot_every``)."""
        every = self.config.drift_snapshot_every
        first = self._kept[0]
        kept = [k for k in self._kept if k["step"] < snap["step"]] + [snap]
        keep_steps = set()
        for tier in range(_DRIFT_TIERS):
            multiples = [k["step"] for k in kept if k["step"] % (every * 2**tier) == 0]
            keep_steps.update(multiples[-_DRIFT_PER_TIER:])
        self._kept = [first] + [k for k in kept if k is not first and k["step"] in keep_steps]

    def _roll_back_drift(self, reason: str) -> str:
        """Restore the newest kept snapshot from before the drift's onset and halve the learning
        rate; raise DivergenceError after ``max_drift_rollbacks`` in a row. Returns the reason."""
        self.optimizer.zero_grad(set_to_none=not self.cuda_graph)
        bad_step = self.global_step
        onset = self._drift_onset()
        before = [k for k in self._kept if k["step"] <= onset]
        target = before[-1] if before else self._kept[0]
        self.recoveries += 1
        self.drift_rollbacks += 1
        self._drift_rollbacks_in_a_row += 1
        self._last_drift_step = bad_step
        self._restore_snapshot(target)
        self._good = target
        self._kept = [k for k in self._kept if k["step"] <= target["step"]]
        if self._drift_rollbacks_in_a_row > self.config.max_drift_rollbacks:
            raise DivergenceError(
                bad_step,
                f"{reason}, after {self.config.max_drift_rollbacks} rollbacks in a row "
                f"(the trainer holds the state of step {self.global_step}, from before the drift)",
            )
        self.lr_scale *= 0.5
        if self.is_main:
            logger.warning(
                "step %d: %s; the drift began about step %d: rolled back to the state of step %d and halved the "
                "learning rate to %.3g",
                bad_step,
                reason,
                max(onset, 0),
                self.global_step,
                self.lr,
            )
        return reason

    def _recover(self, reason: str) -> None:
        # A captured graph writes into the same .grad tensors every replay: zero them, keep them.
        self.optimizer.zero_grad(set_to_none=not self.cuda_graph)
        self.recoveries += 1
        self._consecutive_recoveries += 1
        if self._consecutive_recoveries > self.config.max_recoveries:
            raise DivergenceError(self.global_step, f"{reason} after {self.config.max_recoveries} recoveries in a row")
        bad_step = self.global_step
        self._restore_snapshot()
        self.lr_scale *= 0.5
        if self.is_main:
            logger.warning(
                "step %d: %s; restored the state of step %d and halved the learning rate to %.3g",
                bad_step,
                reason,
                self.global_step,
                self.lr,
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.config.ema_decay
        if self.config.ema_warmup:
            decay = min(decay, (1.0 + self.global_step) / (10.0 + self.global_step))
        ema_params = [p for p in self.ema_model.parameters()]
        params = [p.detach() for p in self.model.parameters()]
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(self.ema_model.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    def step(self) -> dict[str, Any]:
        """One optimiser step; returns its logs.

        Logs: "step" (steps completed), "loss" and the objective's per-term logs, "grad_norm"
        (before clipping), "lr", "step_time" (seconds, without the guard's periodic state copy);
        after a rejected step also "recovered" (the reason), and "step" is the restored step.
        """
        start = time.perf_counter()
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x1 = _draw_batch(self.data_sampler, self.local_batch_size, self.generator)
        x1 = x1.to(device=self.device, dtype=self.dtype)
        loss, logs = self.forward_backward(x1)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        reason = self._bad_step(loss, grad_norm)
        if reason is not None:
            self._recover(reason)
            logs.update(step=self.global_step, grad_norm=grad_norm, lr=self.lr, recovered=reason)
            logs["step_time"] = time.perf_counter() - start
            return logs
        self.optimizer.step()
        self._update_ema()
        self.global_step += 1
        self._consecutive_recoveries = 0
        self._grad_norms.append(grad_norm)
        self._losses.append(loss)
        self._update_level()
        logs.update(step=self.global_step, grad_norm=grad_norm, lr=lr)
        drift = self._drift()
        if drift is not None:
            logs["recovered"] = self._roll_back_drift(drift)
            logs.update(step=self.global_step, lr=self.lr, step_time=time.perf_counter() - start)
            return logs
        # The guard's periodic copy of the state is not part of the step's time (on a GPU it cost
        # as much as a whole step, and it falls on every logged step when log_every is a multiple).
        logs["step_time"] = time.perf_counter() - start
        if self._drift_rollbacks_in_a_row and self.global_step >= self._last_drift_step + self.config.spike_window:
            self._drift_rollbacks_in_a_row = 0  # past the point where it drifted: a new row
        c = self.config
        keep = c.drift_factor is not None and self.global_step % c.drift_snapshot_every == 0
        if keep or self.global_step % c.guard_every == 0:
            snap = self._snapshot()
            if keep:
                self._keep_snapshot(snap)
        return logs

    # ------------------------------------------------------------------ the loop
    def train(
        self,
        callback: Callable[[Trainer, dict[str, Any]], None] | None = None,
        callback_every: int = 1,
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Run until ``config.steps`` steps, ``config.max_seconds`` or :meth:`request_stop`.

        Args:
            callback: called as callback(trainer, logs) every ``callback_every`` completed
                steps (and after a recovery), on every rank; it may call trainer.request_stop().
            progress: show a tqdm bar (rank 0 only).

        Returns:
            The logged entries (every ``log_every`` steps), also appended to ``config.log_path``
            as JSON lines by rank 0. A checkpoint is written to ``config.checkpoint_path`` every
            ``checkpoint_every`` steps and at the end.
        """
        from tqdm.auto import tqdm

        c = self.config
        if callback_every < 1:
            raise ValueError("callback_every must be >= 1")
        self._stop = False
        history: list[dict[str, Any]] = []
        log_file = None
        if c.log_path and self.is_main:
            Path(c.log_path).parent.mkdir(parents=True, exist_ok=True)
            log_file = open(c.log_path, "a")
        bar = tqdm(
            total=c.steps,
            initial=self.global_step,
            disable=not (progress and self.is_main),
            desc="train",
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        first_step = self.global_step
        self.run_progress = 0.0
        try:
            while True:
                elapsed = time.perf_counter() - start
                stop = self._stop or self.global_step >= c.steps
                stop = stop or (c.max_seconds is not None and elapsed >= c.max_seconds)
                if self.world_size > 1:  # ranks stop together and anneal on one clock
                    elapsed, stop = self._agree(elapsed, stop)
                if stop:
                    break
                progress = (self.global_step - first_step) / max(1, c.steps - first_step)
                if c.max_seconds is not None:
                    progress = max(progress, elapsed / c.max_seconds)
                self.run_progress = min(1.0, progress)
                before = self.global_step
                logs = self.step()
                step = self.global_step
                bar.update(step - before)
                recovered = "recovered" in logs
                if recovered or step % c.log_every == 0:
                    entry = {"step": step, "time": time.perf_counter() - start, **logs}
                    history.append(entry)
                    if log_file is not None:
                        log_file.write(json.dumps(entry) + "\n")
                        log_file.flush()
                    bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.3g}", refresh=False)
                if callback is not None and (recovered or step % callback_every == 0):
                    callback(self, logs)
                if not recovered and c.checkpoint_path and c.checkpoint_every and step % c.checkpoint_every == 0:
                    self.save_checkpoint(c.checkpoint_path)
            if c.checkpoint_path:
                self.save_checkpoint(c.checkpoint_path)
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        return history

    # ------------------------------------------------------------------ state
    def _rng_state(self) -> dict[str, Tensor]:
        state = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)

    def _gather_rng(self) -> dict[str, dict[str, Tensor]]:
        """Every rank's RNG states (a collective with several ranks)."""
        mine = self._rng_state()
        if self.world_size == 1:
            return {"0": mine}
        out: dict[str, dict[str, Tensor]] = {str(r): {} for r in range(self.world_size)}
        comm_device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        for name in sorted(mine):
            local = mine[name].to(comm_device)
            gathered = [torch.empty_like(local) for _ in range(self.world_size)]
            dist.all_gather(gathered, local)
            for r, g in enumerate(gathered):
                out[str(r)][name] = g.cpu()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, EMA, optimiser, step, RNGs."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.global_step,
            "lr_scale": self.lr_scale,
            "recoveries": self.recoveries,
            "guard": {
                "grad_norms": list(self._grad_norms),
                "losses": list(self._losses),
                "reference": list(self._reference),
            },
            "rng": self._gather_rng(),
            "world_size": self.world_size,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the config of this trainer is kept, not the saved one)."""
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["step"])
        self.lr_scale = float(state["lr_scale"])
        self.recoveries = int(state.get("recoveries", 0))
        self._consecutive_recoveries = 0
        guard = state.get("guard", {})
        self._grad_norms = deque(guard.get("grad_norms", []), maxlen=self.config.spike_window)
        self._losses = deque(guard.get("losses", []), maxlen=self.config.spike_window)
        ref = guard.get("reference", [math.inf, math.inf])
        self._reference = (float(ref[0]), float(ref[1]))
        self._update_level()
        self._drift_rollbacks_in_a_row = 0
        self._level_history.clear()
        rng = state.get("rng", {})
        if str(self.rank) in rng and int(state.get("world_size", 1)) == self.world_size:
            self._set_rng_state(rng[str(self.rank)])
        else:
            logger.warning("no RNG state for rank %d of %d: reseeding from the step", self.rank, self.world_size)
            self.generator.manual_seed(self.config.seed + _RANK_SEED_STRIDE * self.rank + self.global_step)
        self._kept = [self._snapshot()]

    def save_checkpoint(self, path: str | os.PathLike) -> Path | None:
        """Write the trainer state to ``path`` (safetensors + JSON metadata), atomically.

        With several ranks every rank must call this (the RNG states are gathered); only rank 0
        writes. Returns the path on rank 0, None elsewhere.
        """
        state = self.state_dict()
        if not self.is_main:
            return None
        return save_state_file(state, path)

    def resume(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` and continue from its step."""
        self.load_state_dict(load_state_file(path))
        if self.is_main:
            logger.info("resumed from %s at step %d", path, self.global_step)
