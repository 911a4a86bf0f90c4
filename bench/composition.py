"""Does N-step flow-map sampling get better with N? A harness on a Gaussian mixture with its exact map.

Time convention: t = 0 is noise, t = 1 is data.

Trains LSD flow maps (the README's Trainer defaults unless a variant changes one thing) on a 2-D
three-component anisotropic Gaussian mixture and scores, for the EMA and the raw weights:

- ``N = 1, 2, 4, 8, 16``: mean over base points x0 of ``|sample_N(x0) - X_{0,1}(x0)|^2`` with the
  exact ``X_{0,1}`` of the same x0 (uniform grid);
- ``ode``: the same for an RK4 solve (64 steps) of the model's own velocity ``v_{t,t}``;
- ``local``: for the N = 2 and N = 4 grids, each jump started from the exact state ``X_{0,t_i}(x0)``
  and compared with ``X_{0,t_{i+1}}(x0)``: how much each jump adds;
- ``grid``: ``flowmap_error_grid`` on s in {0, .25, .5, .75}, t in {.25, .5, .75, 1}.

Variants change one thing each (see VARIANTS). Results: one JSON line per (variant, seed).

    python -m bench.composition --variants base --seeds 0 1 --steps 4000 --out runs/comp.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

from flowmaps import MLP, FlowMap, TrainConfig, Trainer, make_objective  # noqa: E402
from flowmaps.data.gmm import GaussianMixture  # noqa: E402
from flowmaps.metrics import flowmap_error_grid  # noqa: E402
from flowmaps.sampling import flowmap_sample, ode_solve  # noqa: E402

NS = (1, 2, 4, 8, 16)
GRID_S = (0.0, 0.25, 0.5, 0.75)
GRID_T = (0.25, 0.5, 0.75, 1.0)


def mixture() -> GaussianMixture:
    """Three anisotropic components (diagonal covariances), base sigma = the data's std."""
    return GaussianMixture(
        [0.45, 0.35, 0.2],
        [[-0.9, -0.5], [0.8, -0.4], [0.1, 0.9]],
        [[0.25, 0.06], [0.07, 0.3], [0.15, 0.1]],
    )


# ------------------------------------------------------------------------ variant machinery
def _triangle(n, g, device, dtype):
    a = torch.rand(n, generator=g, device=device, dtype=dtype)
    b = torch.rand(n, generator=g, device=device, dtype=dtype)
    return torch.minimum(a, b), torch.maximum(a, b)


def _grid_pairs(n, g, device, dtype, levels=4):
    """Pairs the uniform N-step samplers use: N = 2^k, k in {0..levels}, a random step of the grid."""
    k = torch.randint(0, levels + 1, (n,), generator=g, device=device)
    cells = (2.0**k).to(dtype)
    j = torch.floor(torch.rand(n, generator=g, device=device, dtype=dtype) * cells)
    return j / cells, (j + 1) / cells


def make_time_sampler(kind: str):
    def sampler(n, *, kind_=None, generator=None, device=None, dtype=None, **kw):
        if kind == "uniform":
            return _triangle(n, generator, device, dtype)
        if kind == "late":  # both times pushed towards t = 1 (data): u -> 1 - (1 - u)^2
            s, t = _triangle(n, generator, device, dtype)
            return 1 - (1 - s) ** 2, 1 - (1 - t) ** 2
        if kind == "early":  # both times pushed towards t = 0 (noise): u -> u^2
            s, t = _triangle(n, generator, device, dtype)
            return s * s, t * t
        if kind == "short":  # t - s = (1 - s) u^2: more weight on short jumps, s with the triangle's law
            s, _ = _triangle(n, generator, device, dtype)
            u = torch.rand(n, generator=generator, device=device, dtype=dtype)
            return s, s + (1 - s) * u * u
        if kind == "mixgrid":  # half triangle, half the samplers' pairs
            s1, t1 = _triangle(n, generator, device, dtype)
            s2, t2 = _grid_pairs(n, generator, device, dtype)
            pick = torch.rand(n, generator=generator, device=device, dtype=dtype) < 0.5
            return torch.where(pick, s1, s2), torch.where(pick, t1, t2)
        raise ValueError(kind)

    return sampler


def _exact_diagonal_residual(gmm, model, x0, x1, t):
    """v_{t,t}(I_t) - b_t(I_t) with the mixture's exact velocity b (a diagnostic: real data has none)."""
    x_t = model.interpolant.sample(x0, x1, t).x_t
    with torch.no_grad():
        target = gmm.velocity(x_t.double().cpu(), t.double().cpu()).to(x_t)
    return model.velocity(x_t, t) - target


class MLPDelta(MLP):
    """MLP conditioned on [s, t - s, x / sigma] (the image net's (s, t - s) embedding, in 2-D)."""

    def _base_row(self, s, t, x):
        return torch.cat([s[:, None], (t - s)[:, None], x / self.sigma], dim=1)


# name -> overrides of the base setting
VARIANTS = {
    "base": {},
    "long": {"steps_mult": 2.0},
    "delta": {"cond": "delta"},
    "late": {"times": "late"},
    "early": {"times": "early"},
    "fm_exact": {"diagonal": "exact"},
    "short": {"times": "short"},
    "mixgrid": {"times": "mixgrid"},
    "eta50": {"eta": 0.5},
    "eta25": {"eta": 0.25},
    "ema9999": {"ema": 0.9999},
    "anneal": {"anneal": 0.5},
    "sg_input": {"stopgrad": "input"},
    "sg_none": {"stopgrad": "none"},
    "somean": {"reduction": "sum_of_means"},
    "long4": {"steps_mult": 4.0},
    "lr3e4": {"lr": 3e-4},
    "lr2e3": {"lr": 2e-3},
    "delta_long": {"cond": "delta", "steps_mult": 2.0},
    "four1": {"fourier": 64, "fscale": 1.0},
    "four3": {"fourier": 64, "fscale": 3.0},
    "four3_long": {"fourier": 64, "fscale": 3.0, "steps_mult": 2.0},
    "wide": {"width": 512, "depth": 4},
    "wide_long": {"width": 512, "depth": 4, "steps_mult": 2.0},
    "nowarm": {"ema_warmup": False},
    "ema9995nw": {"ema": 0.9995, "ema_warmup": False},
    "long_anneal": {"steps_mult": 2.0, "anneal": 0.5},
}


def build(variant: dict, gmm: GaussianMixture, steps: int, seed: int, device: str, width: int, depth: int):
    import flowmaps.objectives.base as objectives

    objectives.off_diagonal_times = make_time_sampler(variant.get("times", "uniform"))
    torch.manual_seed(seed)
    net_cls = MLPDelta if variant.get("cond") == "delta" else MLP
    net = net_cls(
        dim=2,
        width=variant.get("width", width),
        depth=variant.get("depth", depth),
        sigma=gmm.sigma,
        fourier=variant.get("fourier", 0),
        fourier_scale=variant.get("fscale", 1.0),
    )
    model = FlowMap(net, sigma=gmm.sigma)
    kw = {"eta": variant.get("eta", 0.75), "reduction": variant.get("reduction", "mean")}
    if "stopgrad" in variant:
        kw["stopgrad"] = variant["stopgrad"]
    objective = make_objective("lsd", **kw)
    if variant.get("diagonal") == "exact":  # flow matching on the exact velocity: no target noise
        objective.diagonal_residual = lambda model, x0, x1, t: _exact_diagonal_residual(gmm, model, x0, x1, t)
    cfg = TrainConfig(
        steps=int(steps * variant.get("steps_mult", 1.0)),
        batch_size=1024,
        lr=variant.get("lr", 1e-3),
        ema_decay=variant.get("ema", 0.999),
        ema_warmup=variant.get("ema_warmup", True),
        seed=seed,
        device=device,
        anneal_from=variant.get("anneal", 1.0),
        log_every=10**9,
    )
    return Trainer(
        model, objective, lambda n, g, _c=torch.Generator().manual_seed(seed): gmm.sample(n, generator=_c), cfg
    )


# ------------------------------------------------------------------------ evaluation
def exact_states(gmm: GaussianMixture, n: int, seed: int = 12345):
    """x0 and its exact states X_{0,k/16}(x0), k = 0..16 (float64, CPU)."""
    g = torch.Generator().manual_seed(seed)
    x0 = gmm.sample_base(n, g, torch.float64)
    times = [k / 16 for k in range(17)]
    states = [x0]
    for a, b in zip(times[:-1], times[1:]):
        states.append(gmm.exact_flow_map(states[-1], a, b, rtol=1e-9, atol=1e-11))
    return x0, dict(zip([round(t, 6) for t in times], states))


def evaluate(model, gmm, x0, states) -> dict:
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    xin = x0.to(dev, dt)
    target = states[1.0].to(dev, dt)
    out: dict = {}
    with torch.no_grad():
        for n in NS:
            grid = torch.linspace(0, 1, n + 1, dtype=torch.float64)
            x = flowmap_sample(model, xin, grid).x
            err = (x - target).pow(2).sum(1)
            out[f"N{n}"] = float(err.mean())
            out[f"N{n}_far"] = int((err > 0.25).sum())  # samples that landed far off (a basin swap)
        x = ode_solve(model.velocity, xin, method="rk4", n_steps=64).x
        out["ode"] = float((x - target).pow(2).sum(1).mean())
        for n in (2, 4):
            local = []
            for i in range(n):
                a, b = i / n, (i + 1) / n
                xa = states[round(a, 6)].to(dev, dt)
                y = model.jump(xa, a, b)
                local.append(float((y - states[round(b, 6)].to(dev, dt)).pow(2).sum(1).mean()))
            out[f"local{n}"] = local
    g = torch.Generator().manual_seed(7)
    grid = flowmap_error_grid(model, gmm, GRID_S, GRID_T, n=1024, generator=g)
    out["grid"] = [[None if math.isnan(v) else round(v, 6) for v in row] for row in grid.tolist()]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["base"], choices=sorted(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/composition.jsonl")
    ap.add_argument("--save-dir", default=None, help="also save each run's raw and EMA weights here")
    args = ap.parse_args(argv)
    gmm = mixture()
    x0, states = exact_states(gmm, args.n_eval)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        for seed in args.seeds:
            start = time.perf_counter()
            trainer = build(VARIANTS[name], gmm, args.steps, seed, args.device, args.width, args.depth)
            trainer.train(progress=False)
            row = {"variant": name, "seed": seed, "steps": trainer.global_step, "train_s": time.perf_counter() - start}
            if args.save_dir:
                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                torch.save(
                    {"ema": trainer.ema_model.state_dict(), "raw": trainer.model.state_dict()},
                    Path(args.save_dir) / f"{name}_{seed}.pt",
                )
            row["ema"] = evaluate(trainer.ema_model, gmm, x0, states)
            row["raw"] = evaluate(trainer.model.eval(), gmm, x0, states)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            e, r = row["ema"], row["raw"]
            print(
                f"{name:9s} seed {seed} steps {row['steps']} {row['train_s']:.0f}s | EMA "
                + " ".join(f"{e[f'N{n}']:.4f}" for n in NS)
                + f" ode {e['ode']:.4f} | raw "
                + " ".join(f"{r[f'N{n}']:.4f}" for n in NS)
                + f" ode {r['ode']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
