"""Self-distillation objectives for flow maps (Boffi, Albergo, Vanden-Eijnden, 2025).

Time convention: t = 0 is noise, t = 1 is data. x0 ~ N(0, sigma^2 I) is noise, x1 is data,
I_t = alpha_t x0 + beta_t x1 the interpolant (linear by default: I_t = (1 - t) x0 + t x1).

Every objective is the sum of two branches, each computed only on its own part of the batch:

- diagonal (flow matching), a fraction eta of the batch, t ~ U[0, 1]:
      r = v_{t,t}(I_t) - dI_t/dt
- off-diagonal (distillation), the rest, (s, t) uniform on s < t, all starting at I_s:
      Lagrangian (LSD):  r = d/dt X_{s,t}(I_s) - sg(v_{t,t}(sg(X_{s,t}(I_s))))
      Eulerian (ESD):    r = d/ds X_{s,t}(I_s) + grad_x X_{s,t}(I_s) . sg(v_{s,s}(I_s))
                         (the gradient flows through both terms; only the velocity is the teacher.
                         The semigradient with the whole transport term under sg is an option,
                         Eulerian(stopgrad="teacher"): it diverges on the paper's 2-D recipe)
      Progressive (PSD): u = gamma s + (1 - gamma) t,
                         r = v_{s,t}(I_s) - sg((1 - gamma) v_{s,u}(I_s) + gamma v_{u,t}(X_{s,u}(I_s)))

sg is stop-gradient; the teacher is the current weights under sg (self-distillation), or a
frozen pre-trained model (the distillation variants LMD, EMD, progressive distillation).

Each per-sample term is exp(-w_{s,t}) * sum(r^2) + w_{s,t} when the flow map has a learned
log-variance w, else sum(r^2); sum(r^2) sums over dimensions. Reduction "mean" averages all
samples of the batch (the released code: a 3:1 weight between the branches at eta = 0.75);
"sum_of_means" adds the mean of each branch (the paper's Algorithm 1).

One file per family: :mod:`~flowmaps.objectives.base` (the batch split, the diagonal term,
weighting, reductions, branch fusion), :mod:`~flowmaps.objectives.flow_matching`,
:mod:`~flowmaps.objectives.lagrangian`, :mod:`~flowmaps.objectives.eulerian`,
:mod:`~flowmaps.objectives.progressive`, and :mod:`~flowmaps.objectives.presets` (the named
methods and :func:`make_objective`)::

    >>> from flowmaps.objectives import make_objective
    >>> objective = make_objective("lsd")          # loss = objective(model, x1).loss
"""

from flowmaps.objectives.base import REDUCTIONS, LossOutput, Objective
from flowmaps.objectives.eulerian import Eulerian
from flowmaps.objectives.flow_matching import FlowMatching
from flowmaps.objectives.lagrangian import Lagrangian
from flowmaps.objectives.presets import DESCRIPTIONS, DISTILLATION, PRESETS, SELF_DISTILLATION, make_objective
from flowmaps.objectives.progressive import Progressive

__all__ = [
    "DESCRIPTIONS",
    "DISTILLATION",
    "PRESETS",
    "REDUCTIONS",
    "SELF_DISTILLATION",
    "Eulerian",
    "FlowMatching",
    "Lagrangian",
    "LossOutput",
    "Objective",
    "Progressive",
    "make_objective",
]
