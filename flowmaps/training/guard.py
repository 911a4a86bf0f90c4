"""The divergence guard: non-finite values, spikes and slow drift of the loss or gradient norm.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

The guard watches two numbers per optimiser step, the loss and the global gradient norm (before
clipping), and keeps copies of the training state in memory:

- a step with a non-finite loss or gradient norm, or a spike (more than ``spike_factor`` times the
  running median over ``spike_window`` steps), is rejected: the trainer restores the last good
  snapshot (taken every ``guard_every`` good steps) and halves the learning rate. A restored state
  whose first step is rejected again is bad itself (that step's gradient is taken at the restored
  weights, whatever the rate): e.g. a snapshot taken while the guard was not yet armed (its window
  holds fewer than min(50, ``spike_window``) steps) in a run that was already blowing up. The next
  recovery then goes back to the newest older kept snapshot (the drift guard's, below; the run's
  start at the latest) rather than retrying the same state; with none older it retries it;
- a slow divergence: the *level* of a run is the running median of each quantity, the
  *reference* the lowest level seen so far. A level above ``drift_factor`` times its reference
  (the loss only while its reference is positive) counts as drift, whether it came as a spike or
  crept up. The run then goes back to the newest kept snapshot from before the drift's onset,
  estimated from the level's history (:meth:`DivergenceGuard.drift_onset`), and the learning rate
  is halved;
- after ``max_recoveries`` recoveries, or ``max_drift_rollbacks`` drift rollbacks, in a row the
  guard gives up with :class:`DivergenceError`.

Snapshots for the drift guard are taken at multiples of ``drift_snapshot_every`` steps and
thinned with age: the three newest at multiples of ``drift_snapshot_every * 2^i`` for i = 0 .. 4,
plus the state the run (or its resume) started from: at most 12 copies of the state, reaching
back 32 to 48 intervals. An onset older than that rolls back to the run's start.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from flowmaps.training.config import TrainConfig

__all__ = ["DivergenceError", "DivergenceGuard"]

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


class DivergenceGuard:
    """The guard's statistics and its snapshots of the training state.

    Args:
        config: the :class:`TrainConfig` (spike_factor, spike_window, drift_factor, guard_every,
            drift_snapshot_every, max_recoveries, max_drift_rollbacks).
        capture: ``capture() -> dict`` copies the trainer's state; the dict holds "step" and
            whatever ``restore`` needs.
        restore: ``restore(snapshot)`` loads such a copy into the trainer (its step included).

    Attributes:
        level: running medians (loss, gradient norm), None until the window holds
            min(50, spike_window) steps. reference: their lowest values in the run.
        kept: the drift guard's snapshots, oldest first. recoveries: rollbacks of any kind so far;
        drift_rollbacks: those for a slow drift.
    """

    def __init__(
        self, config: TrainConfig, capture: Callable[[], dict[str, Any]], restore: Callable[[dict[str, Any]], None]
    ) -> None:
        self.config = config
        self._capture, self._restore = capture, restore
        self.grad_norms: deque[float] = deque(maxlen=config.spike_window)
        self.losses: deque[float] = deque(maxlen=config.spike_window)
        self.level: tuple[float, float] | None = None
        self.reference: tuple[float, float] = (math.inf, math.inf)
        self.level_history: deque[tuple[int, float, float]] = deque(maxlen=_LEVEL_HISTORY)
        self.recoveries = 0
        self.drift_rollbacks = 0
        self.consecutive_recoveries = 0
        self.last_rejected_step = -1  # the step of the last rejection: a row of recoveries ends past it
        self.drift_rollbacks_in_a_row = 0
        self.last_drift_step = -1
        self.restored: dict[str, Any] | None = None  # the state the last recovery restored, until a good step
        self.good: dict[str, Any] | None = None
        self.kept: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, Any]:
        """Copy the current state (the trainer's and the running windows) as the last good state."""
        self.good = {**self._capture(), "grad_norms": list(self.grad_norms), "losses": list(self.losses)}
        return self.good

    def start(self) -> None:
        """Forget the kept snapshots and keep the current state as the run's start."""
        self.kept = [self.snapshot()]

    def restore(self, snap: dict[str, Any] | None = None) -> None:
        """Load a snapshot (the last good one by default), its running windows included."""
        good = self.good if snap is None else snap
        assert good is not None
        self._restore(good)
        step = good["step"]
        self.grad_norms = deque(good["grad_norms"], maxlen=self.config.spike_window)
        self.losses = deque(good["losses"], maxlen=self.config.spike_window)
        while self.level_history and self.level_history[-1][0] > step:
            self.level_history.pop()
        self.update_level(step)

    def keep(self, snap: dict[str, Any]) -> None:
        """Add a snapshot to the drift guard's kept set and thin it (see the module docstring)."""
        every = self.config.drift_snapshot_every
        first = self.kept[0]
        kept = [k for k in self.kept if k["step"] < snap["step"]] + [snap]
        keep_steps = set()
        for tier in range(_DRIFT_TIERS):
            multiples = [k["step"] for k in kept if k["step"] % (every * 2**tier) == 0]
            keep_steps.update(multiples[-_DRIFT_PER_TIER:])
        self.kept = [first] + [k for k in kept if k is not first and k["step"] in keep_steps]

    # ------------------------------------------------------------------ statistics
    def update_level(self, step: int) -> None:
        """Running medians of the loss and gradient norm over the window (None until it holds
        min(50, spike_window) steps); the reference (lowest level) moves once the window is full."""
        c = self.config
        if len(self.grad_norms) < min(50, c.spike_window) or (c.spike_factor is None and c.drift_factor is None):
            self.level = None
            return
        self.level = (statistics.median(self.losses), statistics.median(self.grad_norms))
        if len(self.grad_norms) == c.spike_window:
            ref = self.reference
            self.reference = (min(ref[0], self.level[0]), min(ref[1], self.level[1]))
            if not self.level_history or self.level_history[-1][0] < step:
                self.level_history.append((step, *self.level))

    def bad_step(self, loss: float, grad_norm: float) -> str | None:
        """Why this step must be rejected (non-finite or spike), or None."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradient norm ({grad_norm})"
        factor = self.config.spike_factor
        if factor is not None and self.level is not None:
            med_loss, med = self.level
            if med > 0 and grad_norm > factor * med:
                return f"gradient-norm spike ({grad_norm:.4g} > {factor:g} x median {med:.4g})"
            med = med_loss
            if med > 0 and loss > factor * med:
                return f"loss spike ({loss:.4g} > {factor:g} x median {med:.4g})"
        return None

    def record(self, step: int, loss: float, grad_norm: float) -> None:
        """Count a good step (``step`` = steps completed) into the running windows.

        A row of recoveries ends only once the run gets past the step that was last rejected: a run
        that is rolled back, takes a few good steps and is rejected again at or before the same step
        (a blow-up the spike guard, not yet armed, lets through for a while) is still in that row."""
        if step > self.last_rejected_step:
            self.consecutive_recoveries = 0
        self.restored = None
        self.grad_norms.append(grad_norm)
        self.losses.append(loss)
        self.update_level(step)

    def drift(self) -> str | None:
        """Why the run counts as drifting away (slow divergence), or None."""
        factor = self.config.drift_factor
        if factor is None or self.level is None or not math.isfinite(self.reference[1]):
            return None
        (lvl_loss, lvl_grad), (ref_loss, ref_grad) = self.level, self.reference
        if ref_loss > 0 and lvl_loss / ref_loss > factor:
            return f"slow divergence: loss median {lvl_loss:.4g} > {factor:g} x its lowest median {ref_loss:.4g}"
        if ref_grad > 0 and lvl_grad / ref_grad > factor:
            return (
                f"slow divergence: gradient-norm median {lvl_grad:.4g} > {factor:g} x its lowest median {ref_grad:.4g}"
            )
        return None

    def drift_onset(self, now: int) -> int:
        """Estimated last step before the drift began.

        For each drifting quantity (loss, gradient norm): the ratio r = level / reference over the
        kept history; tau_h = the start of the final stretch with r > sqrt(drift_factor) = h;
        growth rate b = log(r_now / h) / (now - tau_h); onset = tau_h - log(h) / b (where a steady
        geometric growth would have left the reference: exact for a steady growth, earlier for a
        slower start), less one window (the median's lag). The earliest of the quantities' onsets.
        """
        c = self.config
        factor = c.drift_factor or 10.0
        h = math.sqrt(factor)
        onsets = []
        for q, ref in ((1, self.reference[0]), (2, self.reference[1])):
            if not ref > 0 or not self.level_history or self.level_history[-1][q] / ref <= factor:
                continue
            r_now = self.level_history[-1][q] / ref
            tau_h = self.level_history[-1][0]
            for entry in reversed(self.level_history):
                if entry[q] / ref <= h:
                    break
                tau_h = entry[0]
            rate = math.log(r_now / h) / max(now - tau_h, 1)
            onsets.append(tau_h - math.log(h) / rate - c.spike_window)
        return int(math.floor(min(onsets))) if onsets else now - c.spike_window

    # ------------------------------------------------------------------ actions
    def recover(self, reason: str, step: int) -> int:
        """Reject the step: restore the last good snapshot and return its step, or raise
        :class:`DivergenceError` after ``max_recoveries`` recoveries in a row.

        When the state the previous recovery restored was rejected at its first step, the newest
        kept snapshot older than it is restored instead (and becomes the last good one; newer kept
        ones are dropped); with none older, the same state is tried again."""
        self.recoveries += 1
        self.consecutive_recoveries += 1
        self.last_rejected_step = max(self.last_rejected_step, step) if self.consecutive_recoveries > 1 else step
        if self.consecutive_recoveries > self.config.max_recoveries:
            at = self.restored["step"] if self.restored is not None else step
            raise DivergenceError(
                step,
                f"{reason} after {self.config.max_recoveries} recoveries in a row, each halving the learning "
                f"rate (the trainer holds the state of step {at}); lower the learning rate",
            )
        target = self.good
        if self.restored is not None:  # rejected at once: that state is bad too, go further back
            older = [k for k in self.kept if k["step"] < self.restored["step"]]
            if older:
                target = self.good = older[-1]
                self.kept = [k for k in self.kept if k["step"] <= target["step"]]
        assert target is not None
        self.restored = target
        self.restore(target)
        return int(target["step"])

    def roll_back_drift(self, reason: str, step: int) -> int:
        """Restore the newest kept snapshot from before the drift's onset and return the onset;
        raise :class:`DivergenceError` after ``max_drift_rollbacks`` rollbacks in a row (the
        trainer then holds the pre-drift state)."""
        onset = self.drift_onset(step)
        before = [k for k in self.kept if k["step"] <= onset]
        target = before[-1] if before else self.kept[0]
        self.recoveries += 1
        self.drift_rollbacks += 1
        self.drift_rollbacks_in_a_row += 1
        self.last_drift_step = step
        self.restore(target)
        self.good = target
        self.kept = [k for k in self.kept if k["step"] <= target["step"]]
        if self.drift_rollbacks_in_a_row > self.config.max_drift_rollbacks:
            raise DivergenceError(
                step,
                f"{reason}, after {self.config.max_drift_rollbacks} rollbacks in a row "
                f"(the trainer holds the state of step {target['step']}, from before the drift)",
            )
        return onset

    def after_good_step(self, step: int) -> None:
        """End of a good step: start a new row of drift rollbacks one window past the last drift,
        and take the periodic snapshots (``guard_every``, ``drift_snapshot_every``)."""
        c = self.config
        if self.drift_rollbacks_in_a_row and step >= self.last_drift_step + c.spike_window:
            self.drift_rollbacks_in_a_row = 0
        keep = c.drift_factor is not None and step % c.drift_snapshot_every == 0
        if keep or step % c.guard_every == 0:
            snap = self.snapshot()
            if keep:
                self.keep(snap)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The windows and the reference (what a resumed run needs to keep guarding)."""
        return {"grad_norms": list(self.grad_norms), "losses": list(self.losses), "reference": list(self.reference)}

    def load_state_dict(self, guard: dict[str, Any], recoveries: int, step: int) -> None:
        """Restore :meth:`state_dict` at ``step`` (the rows of rollbacks and the level history start afresh)."""
        self.recoveries = recoveries
        self.consecutive_recoveries = 0
        self.grad_norms = deque(guard.get("grad_norms", []), maxlen=self.config.spike_window)
        self.losses = deque(guard.get("losses", []), maxlen=self.config.spike_window)
        ref = guard.get("reference", [math.inf, math.inf])
        self.reference = (float(ref[0]), float(ref[1]))
        self.update_level(step)
        self.drift_rollbacks_in_a_row = 0
        self.level_history.clear()
