"""The training loop (:class:`Trainer`).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

One optimiser step (:meth:`Trainer.step`): draw a batch x1 (B, *D) at t = 1; the objective's loss
(it draws the noise x0 at t = 0 and the times, and splits the batch into its diagonal and
off-diagonal parts); backward, averaged over ranks; clip; the divergence guard
(:mod:`flowmaps.training.guard`); RAdam with the schedule of :mod:`flowmaps.training.config`; EMA.
The full recipe, step by step, is in :mod:`flowmaps.training`. Only rank 0 logs, shows the progress
bar and writes checkpoints.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowmaps.training import distributed as dist_
from flowmaps.training.config import TrainConfig, anneal_factor, learning_rate
from flowmaps.training.cuda_graphs import GraphedLoss, bf16_autocast, compile_network, resolve_amp
from flowmaps.training.guard import DivergenceGuard
from flowmaps.training.state import load_state_file, load_trainer_state, save_state_file, trainer_state
from flowmaps.utils import resolve_device

logger = logging.getLogger("flowmaps.training")

DataSampler = Callable[[int, torch.Generator], Tensor]
"""data_sampler(batch_size, generator) -> x1 of shape (batch_size, *D)."""

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


class Trainer:
    """Train a flow map with a self-distillation objective.

    Args:
        model: the FlowMap to train (moved to config.device / config.dtype).
        objective: callable module, objective(model, x1, generator=g) -> LossOutput(loss, logs).
        data_sampler: data_sampler(batch_size, generator) -> x1 of shape (batch_size, *D).
        config: :class:`TrainConfig`.

    Attributes:
        model, ema_model (sample with this one), optimizer, generator, global_step,
        rank, world_size, local_batch_size, lr_scale (the guard's factor on the learning rate),
        guard (:class:`~flowmaps.training.guard.DivergenceGuard`), recoveries (rollbacks of any
        kind so far), drift_rollbacks (those for a slow divergence).

    Raises:
        ValueError: a global batch that does not divide among the ranks, or one the objective
            cannot split (``objective.check_batch_size``).

    Divergence: when the guard gives up, :meth:`step` and :meth:`train` raise
    :class:`~flowmaps.training.guard.DivergenceError` (after a drift the trainer holds the pre-drift
    state); a rollback shows in the logs (and the callback's) as ``"recovered"``, with the restored
    ``"step"``. So :meth:`train` never returns normally with a run whose running median is more than
    ``drift_factor`` times its best.

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
        self.rank, self.world_size = dist_.dist_world()
        if config.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} (global) must divide evenly among {self.world_size} ranks"
            )
        self.local_batch_size = config.batch_size // self.world_size
        check_batch = getattr(objective, "check_batch_size", None)
        if callable(check_batch):  # e.g. a batch of one leaves the off-diagonal branch empty
            check_batch(self.local_batch_size, world_size=self.world_size)
        self.device = resolve_device(config.device)
        self.dtype = _DTYPES[config.dtype]
        self.model = model.to(device=self.device, dtype=self.dtype).train()
        self.objective = objective.to(device=self.device, dtype=self.dtype)
        self.data_sampler = data_sampler
        if self.world_size > 1:
            dist_.broadcast_from_rank0(self.model, self.objective)
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
        self.generator.manual_seed(config.seed + dist_.RANK_SEED_STRIDE * self.rank)
        self.amp = resolve_amp(config.amp, self.device, _uses_jvp(objective))
        self.cuda_graph = bool(config.cuda_graph)
        if self.cuda_graph and self.device.type != "cuda":
            logger.warning("cuda_graph: CUDA graphs need a CUDA device; training on %s eagerly", self.device)
            self.cuda_graph = False
        self._graphed: GraphedLoss | None = None
        self.global_step = 0
        self.lr_scale = 1.0
        self.run_progress = 0.0  # how far the current train() call is (for anneal_from)
        self._stop = False
        self.guard = DivergenceGuard(config, self._capture, self._restore)
        self.guard.start()

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

    @property
    def recoveries(self) -> int:
        """Rollbacks of any kind so far (the guard's count)."""
        return self.guard.recoveries

    @property
    def drift_rollbacks(self) -> int:
        """Rollbacks for a slow divergence so far."""
        return self.guard.drift_rollbacks

    def request_stop(self) -> None:
        """Ask train() to return after the current step (e.g. from a callback)."""
        self._stop = True

    def _capture(self) -> dict[str, Any]:
        """A copy of the state the guard restores: weights, EMA, objective, optimiser, step."""
        return {
            "step": self.global_step,
            "model": copy.deepcopy(self.model.state_dict()),
            "ema": copy.deepcopy(self.ema_model.state_dict()),
            "objective": copy.deepcopy(self.objective.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        self.ema_model.load_state_dict(snap["ema"])
        self.objective.load_state_dict(snap["objective"])
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        self.global_step = snap["step"]

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
            logs = dist_.all_reduce_mean(self.params, logs, self.device, self.dtype)
        return logs["loss"], logs

    def _recover(self, reason: str) -> None:
        """Reject the step: restore the last good state (an older kept one when the state restored
        last was rejected at once; :meth:`DivergenceGuard.recover`) and halve the learning rate."""
        # A captured graph writes into the same .grad tensors every replay: zero them, keep them.
        self.optimizer.zero_grad(set_to_none=not self.cuda_graph)
        bad_step = self.global_step
        self.guard.recover(reason, bad_step)
        self.lr_scale *= 0.5
        if self.is_main:
            logger.warning(
                "step %d: %s; restored the state of step %d and halved the learning rate to %.3g",
                bad_step,
                reason,
                self.global_step,
                self.lr,
            )

    def _roll_back_drift(self, reason: str) -> str:
        """Roll back to before the drift's onset and halve the learning rate; returns the reason."""
        self.optimizer.zero_grad(set_to_none=not self.cuda_graph)
        bad_step = self.global_step
        onset = self.guard.roll_back_drift(reason, bad_step)
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

        Raises:
            DivergenceError: the guard gave up.
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
        reason = self.guard.bad_step(loss, grad_norm)
        if reason is not None:
            self._recover(reason)
            logs.update(step=self.global_step, grad_norm=grad_norm, lr=self.lr, recovered=reason)
            logs["step_time"] = time.perf_counter() - start
            return logs
        self.optimizer.step()
        self._update_ema()
        self.global_step += 1
        self.guard.record(self.global_step, loss, grad_norm)
        logs.update(step=self.global_step, grad_norm=grad_norm, lr=lr)
        drift = self.guard.drift()
        if drift is not None:
            logs["recovered"] = self._roll_back_drift(drift)
            logs.update(step=self.global_step, lr=self.lr, step_time=time.perf_counter() - start)
            return logs
        # The guard's periodic copy of the state is not part of the step's time (on a GPU it cost
        # as much as a whole step, and it falls on every logged step when log_every is a multiple).
        logs["step_time"] = time.perf_counter() - start
        self.guard.after_good_step(self.global_step)
        return logs

    # ------------------------------------------------------------------ the loop
    def _should_stop(self, start: float) -> tuple[float, bool]:
        """Seconds since ``start`` and whether to stop (steps, time cap or a request; agreed by all ranks)."""
        c = self.config
        elapsed = time.perf_counter() - start
        stop = self._stop or self.global_step >= c.steps
        stop = stop or (c.max_seconds is not None and elapsed >= c.max_seconds)
        if self.world_size > 1:  # ranks stop together and anneal on one clock
            elapsed, stop = dist_.agree_to_stop(elapsed, stop, self.device)
        return elapsed, stop

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

        Raises:
            ValueError: callback_every < 1. DivergenceError: the guard gave up.
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
        show = progress and self.is_main
        bar = tqdm(total=c.steps, initial=self.global_step, disable=not show, desc="train", dynamic_ncols=True)
        start = time.perf_counter()
        first_step = self.global_step
        self.run_progress = 0.0
        try:
            while True:
                elapsed, stop = self._should_stop(start)
                if stop:
                    break
                done = (self.global_step - first_step) / max(1, c.steps - first_step)
                if c.max_seconds is not None:
                    done = max(done, elapsed / c.max_seconds)
                self.run_progress = min(1.0, done)
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
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (:func:`~flowmaps.training.state.trainer_state`;
        a collective with several ranks)."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the config of this trainer is kept, not the saved one)."""
        load_trainer_state(self, state)

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
        """Load a checkpoint written by :meth:`save_checkpoint` and continue from its step.

        Raises:
            FileNotFoundError: no file at ``path``. ValueError: not a trainer checkpoint.
        """
        self.load_state_dict(load_state_file(path))
        if self.is_main:
            logger.info("resumed from %s at step %d", path, self.global_step)
