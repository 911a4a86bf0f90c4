"""The named methods: each a family of flowmaps.objectives with its settings, and make_objective.

Time convention: t = 0 is noise, t = 1 is data.

Known methods as presets of the same classes (see make_objective):
  MeanFlow              = Eulerian, velocity "sample" (dI_s/ds = x1 - x0), residual in v-space
  consistency training  = Eulerian, velocity "sample", residual in v-space, each term weighted
                          by t - s (the paper's appendix C.2)
  consistency distill.  = Eulerian, velocity "teacher" (a frozen velocity), residual in v-space,
                          weighted by t - s (appendix C.1; also Align Your Flow)
  Eulerian map distill. = Eulerian, velocity "teacher", residual in X-space (gradient through
                          d/ds X): a different update from consistency distillation
  shortcut models       = Progressive, gamma = 1/2 on the dyadic grid of step sizes 1 ... 1/64,
                          the finest level's half-steps (1/128) taken with the diagonal velocity
                          (the shortcut paper's 128-step setting, flow matching at its finest step)
The weight t - s of CT and CD is what makes their gradient the limit of a discrete step: for
L_D = |X_{s,t}(x_s) - sg(X_{s+D,t}(x_s + D b))|^2 (b = x1 - x0, or the teacher's velocity),
grad L_D / D -> (t - s) grad sum(r^2) with r the v-space residual, as D -> 0
(tests/flowmaps/objectives/test_presets.py checks this against discrete steps).
"""

from __future__ import annotations

from flowmaps.objectives.base import Objective
from flowmaps.objectives.eulerian import Eulerian
from flowmaps.objectives.flow_matching import FlowMatching
from flowmaps.objectives.lagrangian import Lagrangian
from flowmaps.objectives.progressive import Progressive
from flowmaps.timesampling import DYADIC_MIN_STEP

PRESETS: dict[str, tuple[type[Objective], dict]] = {
    "fm": (FlowMatching, {}),
    "lsd": (Lagrangian, {}),
    "esd": (Eulerian, {"stopgrad": "none"}),
    "psd-u": (Progressive, {"gamma": "uniform"}),
    "psd-m": (Progressive, {"gamma": 0.5}),
    "meanflow": (Eulerian, {"velocity": "sample", "space": "velocity"}),
    "ct": (Eulerian, {"velocity": "sample", "space": "velocity", "interval_weight": True}),
    "shortcut": (Progressive, {"gamma": 0.5, "times": "dyadic", "min_step": DYADIC_MIN_STEP}),
    # teacher distillation: pass teacher=<frozen FlowMap or velocity(x, t)>
    "lmd": (Lagrangian, {}),
    "emd": (Eulerian, {"velocity": "teacher"}),
    "cd": (Eulerian, {"velocity": "teacher", "space": "velocity", "interval_weight": True}),
    "pd": (Progressive, {"gamma": 0.5}),
}
SELF_DISTILLATION = ("fm", "lsd", "esd", "psd-u", "psd-m", "meanflow", "ct", "shortcut")
DISTILLATION = ("lmd", "emd", "cd", "pd")

DESCRIPTIONS = {
    "fm": "flow matching only (the diagonal); sample it with an ODE solver",
    "lsd": "Lagrangian self-distillation: d/dt X_{s,t} = v_{t,t}(X_{s,t})",
    "esd": "Eulerian self-distillation: d/ds X_{s,t} + grad X . v_{s,s} = 0",
    "psd-u": "progressive self-distillation, gamma ~ U[0, 1]",
    "psd-m": "progressive self-distillation, gamma = 1/2",
    "meanflow": "MeanFlow: Eulerian with the sample velocity x1 - x0, v-space residual",
    "ct": "consistency training (continuous time): MeanFlow's v-space residual weighted by t - s",
    "shortcut": "shortcut model: PSD-M on the dyadic steps 1 ... 1/64, the finest from the diagonal velocity",
    "lmd": "Lagrangian map distillation from a frozen velocity",
    "emd": "Eulerian map distillation from a frozen velocity (X-space residual)",
    "cd": "consistency distillation / Align Your Flow: v-space residual from a frozen velocity, weighted by t - s",
    "pd": "progressive distillation from a frozen flow map",
}


def make_objective(name: str, **kwargs) -> Objective:
    """Build an objective by name (see PRESETS); keyword arguments override the preset's.

    The distillation presets ("lmd", "emd", "cd", "pd") need teacher=...
    """
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(PRESETS)}")
    cls, preset = PRESETS[key]
    if key in DISTILLATION and kwargs.get("teacher") is None:
        raise ValueError(f"method {key!r} distils a frozen model: pass teacher=<model>")
    obj = cls(**{**preset, **kwargs})
    obj.method = key
    return obj
