"""Gaussian mixtures with their exact velocity and exact flow map.

Time convention: **t = 0 is noise, t = 1 is data.**

Data ``x1 ~ sum_k pi_k N(mu_k, Sigma_k)`` in ``d`` dimensions, with any positive-definite
covariance ``Sigma_k`` per component (diagonal ``diag(s_k^2)`` when built from ``stds``), base
noise ``x0 ~ N(0, sigma^2 I)`` independent of ``x1``, linear interpolant ``I_t = (1 - t) x0 + t x1``.

Exact velocity. Given the component ``k``, ``(x1 - x0, I_t)`` is jointly Gaussian with

    E[I_t | k] = t mu_k,          Var[I_t | k] = V_k(t) = (1 - t)^2 sigma^2 I + t^2 Sigma_k,
    E[x1 - x0 | k] = mu_k,        Cov[x1 - x0, I_t | k] = C_k(t) = t Sigma_k - (1 - t) sigma^2 I.

Gaussian conditioning gives ``E[x1 - x0 | I_t = x, k] = mu_k + C_k V_k^{-1} (x - t mu_k)``, and the
posterior over components is ``w_k(x, t) ∝ pi_k N(x; t mu_k, V_k(t))``, the marginal density of
``I_t`` under component ``k``. Hence

    b_t(x) = E[x1 - x0 | I_t = x] = sum_k w_k(x, t) [mu_k + C_k(t) V_k(t)^{-1} (x - t mu_k)].

The weights are computed with a log-sum-exp. For diagonal covariances every coordinate is
independent and ``C_k V_k^{-1}`` is the per-coordinate ratio ``c_k / v_k``; for full covariances
``V_k(t)`` is factored by Cholesky (``V = L L^T``) and every inverse is a triangular solve, in
float64. As the eigenvalues of ``V_k(t)`` are at least ``sigma^2 l / (sigma^2 + l)`` (``l`` the
smallest eigenvalue of ``Sigma_k``) for every t in [0, 1], the formula is finite at both ends:
``b_0(x) = sum_k pi_k mu_k - x`` and ``b_1(x) = x``.

The exact flow map ``X_{s,t}`` integrates ``dx/dt = b_t(x)`` with the adaptive Dormand-Prince
solver of :mod:`flowmaps.sampling.dopri5` in float64 at tight tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowmaps.sampling import ode_solve

__all__ = ["GaussianMixture", "gmm_preset", "GMM_PRESETS", "rotated_covariance"]


def _as_tensor(v: Tensor | Sequence | float, name: str) -> Tensor:
    try:
        return torch.as_tensor(v, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be numbers; could not read it ({err})") from None


def _check_covs(c: Tensor, k: int, d: int) -> Tensor:
    """Validate covariances: ``(K, d, d)`` or one shared ``(d, d)``, finite, symmetric, positive definite."""
    if c.ndim == 2 and tuple(c.shape) == (d, d):
        c = c.expand(k, d, d)
    if tuple(c.shape) != (k, d, d):
        raise ValueError(
            f"covs must have shape (K, d, d) = ({k}, {d}, {d}) (or one shared (d, d)); got {tuple(c.shape)}"
        )
    if not torch.isfinite(c).all():
        raise ValueError("covs must be finite")
    for i in range(k):
        ci = c[i]
        scale = float(ci.abs().max())
        asym = float((ci - ci.T).abs().max())
        if asym > 1e-10 * max(scale, 1e-300):
            raise ValueError(
                f"covs[{i}] is not symmetric (largest |C - C^T| = {asym:.3g}); pass a symmetric matrix, "
                "e.g. (C + C.T) / 2"
            )
        sym = 0.5 * (ci + ci.T)
        if torch.linalg.cholesky_ex(sym).info != 0:
            low = float(torch.linalg.eigvalsh(sym)[0])
            raise ValueError(
                f"covs[{i}] is not positive definite (smallest eigenvalue {low:.3g}); every covariance "
                "needs eigenvalues > 0"
            )
    return (0.5 * (c + c.transpose(-1, -2))).contiguous().clone()


class GaussianMixture:
    """Mixture of Gaussians with diagonal or full covariances, and its exact flow from noise.

    Args:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, d)`` component means.
        stds: component standard deviations (diagonal covariances ``diag(s_k^2)``): a number (all
            components, all coordinates), ``(K,)`` (isotropic per component) or ``(K, d)``
            (diagonal); all positive. Give either ``stds`` or ``covs``.
        sigma: standard deviation of the base noise ``x0 ~ N(0, sigma^2 I)`` at t = 0. ``None``
            uses the data's std, ``sqrt(mean_j Var[x1_j])`` (the paper's choice for 2-D sets).
        covs: full covariances, ``(K, d, d)`` (or one ``(d, d)`` shared by all components):
            symmetric and positive definite. The velocity then uses Cholesky solves in float64.

    Attributes:
        weights ``(K,)``, means ``(K, d)``, covs ``(K, d, d)`` (always set; diagonal when built from
        ``stds``), stds ``(K, d)`` (the per-coordinate standard deviations, ``sqrt(diag Sigma_k)``),
        full_covariance (True when built from ``covs``), dim, sigma.

    Raises:
        ValueError: shapes that do not match, non-finite or negative weights, non-positive stds,
            covariances that are not symmetric or not positive definite, both or neither of
            ``stds`` and ``covs``.

    Parameters are stored in float64; methods compute in the dtype and device of their input
    (the full-covariance linear algebra runs in float64 and is cast back).
    Time convention: t = 0 noise, t = 1 data.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor | Sequence[Sequence[float]],
        stds: Tensor | Sequence | float | None = None,
        sigma: float | None = None,
        *,
        covs: Tensor | Sequence | None = None,
    ) -> None:
        w = _as_tensor(weights, "weights")
        mu = _as_tensor(means, "means")
        if mu.ndim == 1:
            mu = mu[:, None]
        if w.ndim != 1 or mu.ndim != 2 or mu.shape[0] != w.shape[0] or w.numel() == 0:
            raise ValueError(
                f"need weights of shape (K,) and means of shape (K, d); got {tuple(w.shape)} and {tuple(mu.shape)}"
            )
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if not torch.isfinite(mu).all():
            raise ValueError("means must be finite")
        k, d = mu.shape
        if (stds is None) == (covs is None):
            raise ValueError(
                "give the components' spread as stds=... (diagonal) or covs=... (full covariances), exactly one"
            )
        if covs is not None:
            c = _check_covs(_as_tensor(covs, "covs"), k, d)
            self.covs = c
            self.stds = torch.sqrt(torch.diagonal(c, dim1=-2, dim2=-1)).contiguous()
            self._chol = torch.linalg.cholesky(c)
            self.full_covariance = True
        else:
            s = _as_tensor(stds, "stds")
            if s.ndim == 0:
                s = s.expand(k, d)
            elif s.ndim == 1:
                if s.shape[0] != k:
                    raise ValueError(f"stds of shape (K,) must have K={k} entries; got {s.shape[0]}")
                s = s[:, None].expand(k, d)
            elif tuple(s.shape) != (k, d):
                raise ValueError(f"stds must have shape (K,) or (K, d) = ({k}, {d}); got {tuple(s.shape)}")
            if not torch.isfinite(s).all() or (s <= 0).any():
                raise ValueError("stds must be finite and positive")
            self.stds = s.contiguous().clone()
            self.covs = torch.diag_embed(self.stds**2)
            self._chol = torch.diag_embed(self.stds)
            self.full_covariance = False
        self.weights = w / w.sum()
        self.means = mu
        self.dim = d
        if sigma is None:
            sigma = float(self.data_std())
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive number; got {sigma}")
        self.sigma = float(sigma)

    # ---------------------------------------------------------------- data distribution
    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def mean(self) -> Tensor:
        """Mean of the data, ``sum_k pi_k mu_k``, shape ``(d,)`` (float64)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Covariance of the data, ``(d, d)`` float64:
        ``sum_k pi_k (Sigma_k + mu_k mu_k^T) - m m^T``."""
        m = self.mean()
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        if self.full_covariance:
            second = second + torch.einsum("k,kij->ij", self.weights, self.covs)
        else:
            second = second + torch.diag(self.weights @ self.stds**2)
        return second - torch.outer(m, m)

    def data_std(self) -> float:
        """``sqrt(mean_j Var[x1_j])``: the data's std averaged over coordinates."""
        return float(torch.sqrt(torch.diagonal(self.covariance()).mean()))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` data points ``x1`` (t = 1), shape ``(n, d)``: ``mu_k + L_k z`` with
        ``Sigma_k = L_k L_k^T`` (Cholesky) and ``z ~ N(0, I)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if self.full_covariance:
            return (self.means[comp] + (self._chol[comp] @ z[:, :, None])[:, :, 0]).to(dtype)
        return (self.means[comp] + self.stds[comp] * z).to(dtype)

    def sample_base(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Draw ``n`` noise points ``x0 ~ N(0, sigma^2 I)`` (t = 0), shape ``(n, d)``."""
        return (self.sigma * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)).to(dtype)

    def sample_marginal(
        self,
        n: int,
        t: float,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` points of the time-t marginal ``p_t`` (law of ``I_t``), shape ``(n, d)``.

        Exact: ``I_t = (1 - t) x0 + t x1`` has the law of the ODE's state at time t started from
        noise at t = 0 (t = 0 noise, t = 1 data).
        """
        x0 = self.sample_base(n, generator, torch.float64)
        x1 = self.sample(n, generator, torch.float64)
        return ((1.0 - t) * x0 + t * x1).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the data at ``x`` of shape ``(B, d)``; returns ``(B,)``."""
        return self.marginal_log_prob(x, 1.0)

    # ---------------------------------------------------------------- time-t quantities
    def _time(self, t: Tensor | float, x: Tensor) -> Tensor:
        """Times as a ``(B, 1, 1)`` tensor broadcastable against ``(B, K, d)``."""
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        if tt.shape != (x.shape[0],):
            raise ValueError(f"t must be a number or a (B,) tensor with B={x.shape[0]}; got {tuple(tt.shape)}")
        return tt[:, None, None]

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}); got {tuple(x.shape)}")

    def _component_terms(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-component quantities at time t (t = 0 noise, t = 1 data), in the dtype of ``x``:

        ``log_w`` ``(B, K)``: ``log pi_k + log N(x; t mu_k, V_k(t))`` (unnormalised posterior);
        ``mu`` ``(1, K, d)``; ``v_inv_diff`` ``(B, K, d)``: ``V_k^{-1} (x - t mu_k)``;
        ``c_v_inv_diff`` ``(B, K, d)``: ``C_k V_k^{-1} (x - t mu_k)``.
        """
        self._check_x(x)
        tt = self._time(t, x)
        if self.full_covariance:
            return self._full_terms(x, tt)
        mu = self.means.to(x)[None]  # (1, K, d)
        s2 = (self.stds.to(x) ** 2)[None]
        sig2 = self.sigma**2
        var = (1.0 - tt) ** 2 * sig2 + tt**2 * s2  # v_k(t)
        cov = tt * s2 - (1.0 - tt) * sig2  # c_k(t)
        diff = x[:, None, :] - tt * mu  # x - t mu_k
        log_norm = -0.5 * (diff**2 / var + torch.log(2.0 * math.pi * var)).sum(-1)  # (B, K)
        log_w = torch.log(self.weights.to(x))[None] + log_norm
        v_inv_diff = diff / var
        return log_w, mu, v_inv_diff, cov * v_inv_diff

    def _full_terms(self, x: Tensor, tt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`_component_terms` for full covariances: Cholesky solves in float64."""
        f64 = torch.float64
        x64, t64 = x.to(f64), tt.to(f64)[..., None]  # t as (B, 1, 1, 1) against (B, K, d, d)
        mu = self.means.to(x64)[None]
        cov_k = self.covs.to(x64)[None]  # (1, K, d, d)
        eye = torch.eye(self.dim, dtype=f64, device=x.device)
        sig2 = self.sigma**2
        var = (1.0 - t64) ** 2 * sig2 * eye + t64**2 * cov_k  # V_k(t), (B, K, d, d)
        chol = torch.linalg.cholesky(var)
        diff = x64[:, None, :] - tt.to(f64) * mu  # (B, K, d)
        z = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)  # L^{-1} diff
        v_inv_diff = torch.linalg.solve_triangular(chol.transpose(-1, -2), z, upper=True)[..., 0]
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # log |V_k|
        log_norm = -0.5 * ((z[..., 0] ** 2).sum(-1) + log_det + self.dim * math.log(2.0 * math.pi))
        log_w = torch.log(self.weights.to(x64))[None] + log_norm
        # C_k V_k^{-1} diff = t Sigma_k V_k^{-1} diff - (1 - t) sigma^2 V_k^{-1} diff
        t3 = tt.to(f64)
        c_v_inv_diff = t3 * (cov_k @ v_inv_diff[..., None])[..., 0] - (1.0 - t3) * sig2 * v_inv_diff
        return log_w.to(x.dtype), mu.to(x.dtype), v_inv_diff.to(x.dtype), c_v_inv_diff.to(x.dtype)

    def marginal_log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``log p_t(x)`` of ``I_t`` (t = 0 noise, t = 1 data); ``x`` ``(B, d)`` -> ``(B,)``.

        ``p_t = sum_k pi_k N(t mu_k, (1 - t)^2 sigma^2 I + t^2 Sigma_k)``.
        """
        log_w = self._component_terms(x, t)[0]
        return torch.logsumexp(log_w, dim=-1)

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact velocity ``b_t(x) = E[x1 - x0 | I_t = x]`` (t = 0 noise, t = 1 data).

        ``x`` of shape ``(B, d)``, ``t`` a number or a ``(B,)`` tensor; returns ``(B, d)``.
        See the module docstring for the derivation.
        """
        log_w, mu, _, c_v_inv_diff = self._component_terms(x, t)
        post = torch.softmax(log_w, dim=-1)  # (B, K)
        cond = mu + c_v_inv_diff  # (B, K, d)
        return (post[..., None] * cond).sum(1)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``grad_x log p_t(x)`` (t = 0 noise, t = 1 data); ``(B, d)`` -> ``(B, d)``."""
        log_w, _, v_inv_diff, _ = self._component_terms(x, t)
        post = torch.softmax(log_w, dim=-1)
        return (post[..., None] * (-v_inv_diff)).sum(1)

    def exact_flow_map(
        self,
        x: Tensor,
        s: Tensor | float,
        t: Tensor | float,
        rtol: float = 1e-7,
        atol: float = 1e-9,
    ) -> Tensor:
        """Exact flow map ``X_{s,t}(x)``: the state at time t of the ODE ``dx/dt = b_t(x)`` started
        from ``x`` at time s (t = 0 noise, t = 1 data; ``t < s`` runs backwards).

        ``s`` and ``t`` may be numbers or ``(B,)`` tensors (different intervals per sample). The
        solve rescales time, ``u in [0, 1]``, ``tau(u) = s + u (t - s)``,
        ``dx/du = (t - s) b_tau(x)``, so that one adaptive Dormand-Prince solve in float64
        covers every interval. Returns ``(B, d)`` in the dtype of ``x``.
        """
        self._check_x(x)
        y = x.detach().to(torch.float64)
        ss = self._time(s, y)[:, 0, 0]
        tt = self._time(t, y)[:, 0, 0]
        if not (((ss >= 0) & (ss <= 1) & (tt >= 0) & (tt <= 1)).all()):
            raise ValueError("times s and t must lie in [0, 1] (t = 0 noise, t = 1 data)")
        span = (tt - ss)[:, None]

        def rescaled(z: Tensor, u: Tensor) -> Tensor:
            return span * self.velocity(z, ss + u * (tt - ss))

        if bool((span == 0).all()):
            return x.clone()
        out = ode_solve(rescaled, y, method="dopri5", t0=0.0, t1=1.0, rtol=rtol, atol=atol)
        return out.x.to(x.dtype)

    def __repr__(self) -> str:
        kind = "full" if self.full_covariance else "diagonal"
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, {kind} covariances, sigma={self.sigma:.4g})"


# ------------------------------------------------------------------------------ presets


def _eight_gaussians(radius: float = 0.8, std: float = 0.08) -> GaussianMixture:
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return GaussianMixture(torch.ones(8), means, std)


def _gaussian() -> GaussianMixture:
    return GaussianMixture([1.0], [[0.5, -0.25]], [[0.3, 0.6]], sigma=1.0)


def _two_gaussians() -> GaussianMixture:
    return GaussianMixture([0.3, 0.7], [[-0.6, 0.2], [0.5, -0.3]], [0.2, 0.35], sigma=1.0)


def rotated_covariance(angle: float, major: float, minor: float) -> Tensor:
    """2-D covariance ``R diag(major^2, minor^2) R^T`` with ``R`` the rotation by ``angle`` (radians):
    standard deviation ``major`` along the direction ``(cos angle, sin angle)``, ``minor`` across it.
    Returns ``(2, 2)`` float64."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return rot @ torch.diag(torch.tensor([major**2, minor**2], dtype=torch.float64)) @ rot.T


def _tilted_mixture() -> GaussianMixture:
    covs = torch.stack(
        [
            rotated_covariance(math.radians(35.0), 0.30, 0.06),
            rotated_covariance(math.radians(-50.0), 0.25, 0.05),
            rotated_covariance(math.radians(80.0), 0.22, 0.08),
        ]
    )
    means = [[-0.45, -0.35], [0.5, -0.25], [0.05, 0.5]]
    return GaussianMixture([0.35, 0.35, 0.3], means, covs=covs)


GMM_PRESETS = {
    "eight_gaussians": "8 equal components (std 0.08) on a circle of radius 0.8; sigma = data std",
    "gaussian": "one diagonal Gaussian, mean (0.5, -0.25), stds (0.3, 0.6); sigma = 1",
    "two_gaussians": "two components (weights 0.3, 0.7, stds 0.2, 0.35); sigma = 1",
    "tilted_mixture": "three elongated components tilted 35, -50, 80 degrees (full covariances); sigma = data std",
}


def gmm_preset(name: str) -> GaussianMixture:
    """A named 2-D mixture: ``"eight_gaussians"``, ``"gaussian"``, ``"two_gaussians"`` or
    ``"tilted_mixture"`` (full covariances); see :data:`GMM_PRESETS`."""
    builders = {
        "eight_gaussians": _eight_gaussians,
        "gaussian": _gaussian,
        "two_gaussians": _two_gaussians,
        "tilted_mixture": _tilted_mixture,
    }
    key = str(name).strip().lower()
    if key not in builders:
        raise ValueError(f"unknown mixture preset {name!r}; choose one of {', '.join(builders)}")
    return builders[key]()
