"""Where the N-step error of a flow map comes from, on the mixture of bench/composition.py.

Time convention: t = 0 is noise, t = 1 is data.

    python -m bench.composition_probe amplification
    python -m bench.composition_probe pairs runs/models/base_1.pt   # saved by --save-dir
    python -m bench.composition_probe midpoint runs/models/base_1.pt
    python -m bench.composition_probe tail runs/models/base_1.pt

- amplification: how much the exact flow X_{s,1} magnifies a small random kick (std 0.02 per
  coordinate) of a state x ~ p_s: mean of |X(x + d) - X(x)|^2 over mean |d|^2, and per-sample
  quantiles of that ratio.
- pairs: for jumps (s, t), the mean squared error of the learned X_{s,t} against the exact map,
  against the model's own velocity's flow (RK4, 64 steps) and of that flow against the exact map,
  on exact states X_{0,s}(x0); then the N = 2 error split into its parts.
- midpoint: the error of two-jump sampling on the grid [0, m, 1] for several m.
- tail: how much of each N-step error comes from samples that land far off (error > 0.25).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

from bench.composition import exact_states, mixture  # noqa: E402
from flowmaps import MLP, FlowMap  # noqa: E402
from flowmaps.sampling import flowmap_sample, ode_solve  # noqa: E402


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum(1).mean())


def load(path: str, weights: str) -> FlowMap:
    gmm = mixture()
    model = FlowMap(MLP(dim=2, width=256, depth=3, sigma=gmm.sigma), sigma=gmm.sigma)
    model.load_state_dict(torch.load(path)[weights])
    return model.eval()


def amplification(n: int) -> None:
    gmm = mixture()
    _, states = exact_states(gmm, n)
    g = torch.Generator().manual_seed(3)
    print("s      mean-square amplification   per-sample ratio 50% / 90% / 99%")
    for s in (0.0, 0.25, 0.5, 0.625, 0.75, 0.875):
        x = states[s]
        d = 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        moved = gmm.exact_flow_map(x + d, s, 1.0, rtol=1e-9, atol=1e-11)
        ratio = (moved - states[1.0]).pow(2).sum(1) / d.pow(2).sum(1)
        q = torch.quantile(ratio, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
        print(f"{s:.3f}  {float(ratio.mean()):8.2f}   " + " / ".join(f"{v:.3g}" for v in q))


def pairs(model: FlowMap, n: int) -> None:
    gmm = mixture()
    _, st = exact_states(gmm, n)
    S = {k: v.float() for k, v in st.items()}
    print("jump (s, t)    map vs exact   map vs own ODE   own ODE vs exact")
    with torch.no_grad():
        for a, b in [(0, 0.25), (0, 0.5), (0, 0.75), (0, 1), (0.25, 0.5), (0.5, 0.75), (0.75, 1), (0.5, 1), (0.25, 1)]:
            m = model.jump(S[a], a, b)
            o = ode_solve(model.velocity, S[a], method="rk4", n_steps=64, t0=a, t1=b).x
            print(f"({a:.2f}, {b:.2f})   {mse(m, S[b]):.5f}        {mse(m, o):.5f}          {mse(o, S[b]):.5f}")
        y1 = model.jump(S[0], 0.0, 0.5)
        y2 = model.jump(y1, 0.5, 1.0)
        carried = gmm.exact_flow_map(y1.double(), 0.5, 1.0).float()
        print(f"N = 1: {mse(model.jump(S[0], 0.0, 1.0), S[1]):.5f}")
        print(
            f"N = 2: {mse(y2, S[1]):.5f}; first jump alone {mse(y1, S[0.5]):.5f}, carried to t = 1 by the exact "
            f"flow {mse(carried, S[1]):.5f}, by the model's X_(1/2,1) {mse(y2, model.jump(S[0.5], 0.5, 1.0)):.5f}; "
            f"second jump from the exact state {mse(model.jump(S[0.5], 0.5, 1.0), S[1]):.5f}"
        )


def midpoint(model: FlowMap, n: int) -> None:
    gmm = mixture()
    x0, st = exact_states(gmm, n)
    x0, target = x0.float(), st[1.0].float()

    def err(grid: list[float]) -> float:
        with torch.no_grad():
            return mse(flowmap_sample(model, x0, torch.tensor(grid, dtype=torch.float64)).x, target)

    print(f"N = 1: {err([0.0, 1.0]):.4f}")
    print("  ".join(f"m = {m}: {err([0.0, m, 1.0]):.4f}" for m in (0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)))


def tail(model: FlowMap, n: int) -> None:
    gmm = mixture()
    x0, st = exact_states(gmm, n)
    x0, target = x0.float(), st[1.0].float()
    with torch.no_grad():
        outs = {
            f"N = {k}": flowmap_sample(model, x0, torch.linspace(0, 1, k + 1, dtype=torch.float64)).x
            for k in (1, 2, 4, 8)
        }
        outs["ODE"] = ode_solve(model.velocity, x0, method="rk4", n_steps=64).x
    print("         error   far off (> 0.25)   their share   error of the rest   median")
    for name, x in outs.items():
        e = (x - target).pow(2).sum(1)
        far = e > 0.25
        print(
            f"{name:7s}  {float(e.mean()):.5f}   {int(far.sum()):4d} of {len(e)}       "
            f"{float(e[far].sum() / e.sum()):.2f}          {float(e[~far].mean()):.5f}          {float(e.median()):.1e}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("amplification", "pairs", "midpoint", "tail"))
    ap.add_argument("checkpoint", nargs="?", help="a file saved by bench/composition.py --save-dir")
    ap.add_argument("--weights", default="ema", choices=("ema", "raw"))
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "amplification":
        amplification(args.n)
        return
    if not args.checkpoint:
        ap.error(f"{args.what} needs a checkpoint (bench/composition.py --save-dir DIR writes DIR/<variant>_<seed>.pt)")
    model = load(args.checkpoint, args.weights)
    {"pairs": pairs, "midpoint": midpoint, "tail": tail}[args.what](model, args.n)


if __name__ == "__main__":
    main()
