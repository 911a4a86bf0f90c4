"""A diagnostic ESD between the two gradient placements (docs/benchmarks.md, "The released code's
sampler and ESD placement"). Not a method of the paper: a probe of why ESD's long jumps blur.

Time convention: t = 0 is noise, t = 1 is data. The Eulerian residual at I_s is

    r = d/ds X_{s,t}(I_s) + T,    T = grad_x X_{s,t}(I_s) . sg(v_{s,s}(I_s)),

and the `esd` preset lets the gradient through both terms (lam = 1), the semigradient through
d/ds X only (lam = 0). Here the residual keeps its value and its gradient takes the fraction lam of
the transport term's: r = d/ds X + lam T + (1 - lam) sg(T), so grad |r|^2 = 2 r . (grad d/ds X +
lam grad T), linear in lam between the two placements. It runs the two JVPs apart (no branch
fusion), so a step costs about one more JVP than the preset's.
"""

from __future__ import annotations

from torch import Tensor

from flowmaps.objectives.eulerian import Eulerian


class PartialTransportESD(Eulerian):
    """ESD whose gradient takes the fraction lam in [0, 1] of the transport term's (see the module).

    Raises:
        ValueError: lam outside [0, 1].
    """

    def __init__(self, lam: float, **kw) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam (the transport term's share of the gradient) must lie in [0, 1]; got {lam}")
        super().__init__(stopgrad="none", fuse_branches=False, **kw)
        self.lam = float(lam)
        self.method = "esd"

    def _eulerian_residual(self, model, x0, x1, s, t) -> Tensor:
        it = model.interpolant.sample(x0, x1, s)
        b = self._transport_velocity(model, it, s)
        kw = {"backend": self.backend, "fd_step": self.fd_step}
        _, dX_ds = model.jvp(it.x_t, s, t, ds=1.0, **kw)
        _, transport = model.jvp(it.x_t, s, t, dx=b, **kw)
        return dX_ds + self.lam * transport + (1.0 - self.lam) * transport.detach()
