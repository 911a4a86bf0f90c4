"""What a live run is given: its learning-rate schedule, its refresh rate, and the settings of a
loaded checkpoint. Pure functions (no session, no gradio); app/live.py and app/race.py use them.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math
import os
from typing import Any

from app.validation import TrainSettings
from flowmaps.objectives import make_objective
from flowmaps.training import anneal_factor

#: Seconds between live updates on an idle machine, and the most when the CPU is loaded.
REFRESH_SECONDS = (1.0, 3.0)

#: Rate factor at which a Continue starts once the previous run's schedule has reached 0 (a run
#: that ended "done" or at its time cap, or a loaded checkpoint, whose own training decayed its
#: rate): a tenth of the set rate, so the loss does not jump as a restart at the full rate makes it.
CONTINUE_FACTOR = 0.1


def live_lr_factor(progress: float) -> float:
    """Learning-rate factor of a live run at ``progress`` in [0, 1]: a straight line from 1 down to 0.

    A live run has a known length (its steps, or its seconds, whichever ends it first), so the
    learning rate can decay to zero over it: at a constant rate the last weights keep a noise of
    size ~lr that the EMA only partly averages out. A line rather than a cosine spends less of
    the run at a small rate (docs/live_training.md compares them). A Continue resumes the line
    where the last run left it (:attr:`app.live.LiveSession.lr_left`). It is the trainer's own
    anneal (:func:`flowmaps.training.anneal_factor`) from the run's start.
    """
    return anneal_factor(float(progress), anneal_from=0.0)


#: Fraction of a run's time cap during which its schedule counts steps only (see :func:`run_progress`).
TIME_GRACE = 0.5


def run_progress(
    steps_done: int, steps: int, elapsed: float = 0.0, max_seconds: float = math.inf, grace: float = TIME_GRACE
) -> float:
    """How far a run is, in [0, 1]: the larger of the fraction of its steps done and the fraction
    of its time cap used after a grace of ``grace * max_seconds`` (1 at the end either way).

    The time term, ``(elapsed / max_seconds - grace) / (1 - grace)``, makes a run that the cap ends
    early (a slow or busy CPU) still decay its learning rate to 0 by its last step. It is 0 for the
    first ``grace`` of the cap, so a run that finishes its steps within that time follows the step
    schedule exactly: two such runs with the same seed and settings train the same model whatever
    the machine's load. (A run the cap ends stops at a load-dependent step anyway.)"""
    by_steps = steps_done / steps if steps > 0 else 1.0
    by_time = 0.0
    if max_seconds > 0 and math.isfinite(max_seconds):
        by_time = (elapsed / max_seconds - grace) / (1.0 - grace) if grace < 1.0 else 0.0
    return min(1.0, max(by_steps, by_time))


def refresh_seconds(load: float | None = None, cores: int | None = None) -> float:
    """Seconds between a live run's updates: 1 s while the 1-minute load average per core is
    below 1, else the load per core, at most 3 s, so a busy machine (which may run the browser
    too) redraws the plots less often. Stop is seen at the next step whatever this is."""
    low, high = REFRESH_SECONDS
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return low
    cores = cores or os.cpu_count() or 1
    per_core = load / cores
    return low if per_core < 1.0 else min(high, max(low, per_core))


def settings_from_checkpoint(config: dict[str, Any], page: TrainSettings, limits: Any = None) -> TrainSettings:
    """The live settings of a loaded checkpoint: its method, network (width, depth), learning
    rate, eta and batch size from its config (``net`` and ``training`` sections), each kept in
    the page's allowed range (``limits``: an :class:`app.config.Limits`; a field the config lacks
    or that is out of range keeps the page's value); steps and seed stay the page's."""
    net = config.get("net") if isinstance(config.get("net"), dict) else {}
    train = config.get("training") or config.get("train") or {}
    train = train if isinstance(train, dict) else {}
    out = page.as_dict()

    def take(key: str, value: Any, low: float, high: float, kind: type) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(float(value)):
            return
        v = kind(value)
        if kind is int and v != value:
            return
        out[key] = min(max(v, kind(low)), kind(high))

    lo_w, hi_w = (limits.min_width, limits.max_width) if limits else (1, 10**6)
    take("width", net.get("width"), lo_w, hi_w, int)
    take("depth", net.get("depth"), 1, limits.max_depth if limits else 10**6, int)
    lo_lr, hi_lr = (limits.min_lr, limits.max_lr) if limits else (1e-12, 1.0)
    take("lr", train.get("lr"), lo_lr, hi_lr, float)
    lo_b, hi_b = (limits.min_batch, limits.max_batch) if limits else (1, 10**9)
    take("batch", train.get("batch_size"), lo_b, hi_b, int)
    method = config.get("method")
    if isinstance(method, str):
        try:
            make_objective(method)
            out["method"] = method
        except ValueError:
            pass
    take("eta", train.get("eta"), 0.05, 1.0 if out["method"] == "fm" else 0.95, float)
    return TrainSettings(**out)


def live_model_config(s: TrainSettings, sigma: float, data_name: str) -> dict[str, Any]:
    """Model config of a fresh live run: an MLP of the chosen width and depth on [s, t, x / sigma].

    Its hidden layers start from the "he" initialisation (variance 2 / fan_in, zero biases)
    rather than PyTorch's default (variance 1 / (3 fan_in)): in the short live runs the larger
    start lets the 1-step map sharpen sooner (docs/live_training.md)."""
    return {
        "net": {"name": "mlp", "dim": 2, "width": s.width, "depth": s.depth, "init": "he"},
        "sigma": sigma,
        "data": data_name,
        "method": s.method,
    }
