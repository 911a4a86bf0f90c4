"""Training settings (:class:`TrainConfig`) and the learning-rate schedule.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Each field's allowed values are stated once, as a :class:`flowmaps.utils.Range` in the field's
metadata (``metadata["range"]``, with a one-line ``metadata["help"]``); ``TrainConfig`` checks
itself against them and ``flowmaps train`` derives its flags, their types and their messages from
them (:func:`config_fields`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flowmaps.utils import Range

__all__ = ["DTYPES", "TrainConfig", "anneal_factor", "config_fields", "learning_rate"]

DTYPES = ("float32", "float64")
"""The training dtypes (``TrainConfig.dtype``)."""


def _spec(default: Any, help: str, range: Range | None = None, **meta: Any) -> Any:
    """A dataclass field with its default, its flag help, and its range (None: no numeric range)."""
    return field(default=default, metadata={"help": help, "range": range, **meta})


_COUNT = Range(low=1, integer=True)
_COUNT0 = Range(low=0, integer=True)


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
            (backprop through a bf16 JVP is not reliable).
        cuda_graph: capture the loss and its backward in a CUDA graph once and replay it every
            step (:class:`flowmaps.training.cuda_graphs.GraphedLoss`): the same computation with
            one launch instead of hundreds. Needs CUDA and a fixed batch size; per-term logs still
            come back. Under torch.distributed each rank replays its own graph and the gradient
            all-reduce runs after it. Off on the CPU (with a warning).
        compile: torch.compile the network's forward and tangent pass
            (:func:`flowmaps.training.cuda_graphs.compile_network`). The first steps compile.
            True uses torch.compile's default backend; a string names another (e.g. "aot_eager").
        max_seconds: stop train() after this much wall time (None: no cap).
        anneal_from: from this fraction of a call to train() on, the learning rate falls linearly
            to 0 at the call's end (1.0, the default, keeps the schedule as it is). The call's
            length is its remaining steps or ``max_seconds``, whichever ends it first. For chunked
            training, give it to the last chunk.
        guard_every: keep an in-memory copy of the state every this many good steps.
        spike_factor: a gradient norm (or positive loss) above this factor times the running
            median counts as a spike; None disables spike detection (non-finite values are
            always caught).
        spike_window: length of the running window for the median (also the drift guard's).
        max_recoveries: give up (:class:`~flowmaps.training.DivergenceError`) after this many
            recoveries in a row (a row ends only when the run gets past the step last rejected).
        drift_factor: slow-divergence guard (:mod:`flowmaps.training.guard`): a running median of
            the loss or gradient norm above this factor times its lowest value in the run counts
            as drift and rolls the run back to before the drift's estimated onset. None disables it.
        drift_snapshot_every: the drift guard keeps snapshots taken at multiples of this many
            steps, thinned with age (see :mod:`flowmaps.training.guard`).
        max_drift_rollbacks: give up after this many drift rollbacks in a row (a run that gets one
            window past the step where it last drifted starts a new row).

    Raises:
        ValueError: a field outside its range, naming the field and the range.
    """

    steps: int = _spec(10_000, "total optimiser steps", _COUNT0)
    batch_size: int = _spec(1024, "global batch size, split evenly among ranks", _COUNT)
    lr: float = _spec(1e-3, "base learning rate", Range(low=0, low_open=True))
    lr_decay_start: int = _spec(
        35_000, "constant lr up to this step, then lr / sqrt(step / this); 0 disables decay", _COUNT0
    )
    grad_clip: float = _spec(10.0, "global gradient-norm clip; 0 disables", Range(low=0))
    ema_decay: float = _spec(0.999, "EMA decay of the weights", Range(low=0, high=1, high_open=True))
    ema_warmup: bool = _spec(True, "EMA decay min(decay, (1 + k) / (10 + k)) at step k")
    seed: int = _spec(0, "seed of the training generator (data, noise, times)", _COUNT0)
    log_every: int = _spec(100, "log every this many steps", _COUNT)
    checkpoint_every: int = _spec(0, "write the trainer state every this many steps (0: only at the end)", _COUNT0)
    checkpoint_path: str | None = _spec(None, "trainer-state file", cli=False)
    log_path: str | None = _spec(None, "JSONL log file", cli=False)
    device: str = _spec("cpu", "cpu, cuda, cuda:1 or auto")
    dtype: str = _spec("float32", "training dtype", choices=DTYPES)
    amp: bool | None = _spec(None, "bf16 autocast on CUDA (default: on only for objectives without JVPs)")
    cuda_graph: bool = _spec(False, "replay the loss and its backward as a CUDA graph (CUDA; one per rank)")
    compile: bool | str = _spec(False, "torch.compile the network's forward and tangent pass")
    max_seconds: float | None = _spec(None, "stop after this much wall time", Range(low=0, low_open=True, off=True))
    anneal_from: float = _spec(
        1.0,
        "from this fraction of the run (its steps or the time cap, whichever ends it) the lr falls linearly to 0; "
        "1 turns the anneal off",
        Range(low=0, high=1),
    )
    guard_every: int = _spec(100, "keep an in-memory copy of the state every this many good steps", _COUNT)
    spike_factor: float | None = _spec(
        20.0,
        "reject a step whose gradient norm or loss passes this many times the running median",
        Range(low=1, low_open=True, off=True),
    )
    spike_window: int = _spec(200, "steps in the running median of the guards", _COUNT)
    max_recoveries: int = _spec(8, "give up after this many recoveries in a row", _COUNT0)
    drift_factor: float | None = _spec(
        10.0,
        "slow-divergence guard: roll back when the running median of the loss or gradient norm passes this many "
        "times its lowest value in the run",
        Range(low=1, low_open=True, off=True),
    )
    drift_snapshot_every: int = _spec(500, "the drift guard keeps snapshots at multiples of this many steps", _COUNT)
    max_drift_rollbacks: int = _spec(3, "give up after this many drift rollbacks in a row", _COUNT0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            rng = f.metadata.get("range")
            problem = rng.problem(value) if rng is not None else None
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                problem = f"must be one of {', '.join(choices)}, got {value!r}"
            if problem is not None:
                raise ValueError(f"{f.name} {problem}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from a dict, ignoring keys that are not fields (e.g. a checkpoint's extra entries)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def config_fields() -> list[Any]:
    """The fields of :class:`TrainConfig` that a command line offers as flags (dataclass Field
    objects: ``.name``, ``.default``, ``.type`` and ``.metadata`` with "help", "range", "choices")."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


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
