"""ESD's two stop-gradient placements on a Gaussian mixture with its exact flow map (CPU).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Trains the "esd" objective with the transport term under stop-gradient (``stopgrad="teacher"``,
the old preset) and with the gradient through both terms (``stopgrad="none"``, the preset now) on
a three-component anisotropic 2-D mixture, and prints the mean squared error of the 1-step map
X_{0,1} against the exact map and the number of guard rollbacks, per training seed. The figures
are discussed in docs/esd_stability.md.

Usage::

    python -m bench.esd_placement --steps 6000 --seeds 1 2
    python -m bench.esd_placement --quick
"""

from __future__ import annotations

import argparse

import torch

from bench.common import md_table, print_table
from flowmaps import MLP, FlowMap, TrainConfig, Trainer, make_objective
from flowmaps.data.gmm import GaussianMixture
from flowmaps.metrics import flowmap_error


def mixture() -> GaussianMixture:
    return GaussianMixture(
        [0.3, 0.5, 0.2], [[-1.0, 0.5], [1.0, 1.0], [0.5, -1.0]], [[0.2, 0.6], [0.5, 0.15], [0.3, 0.3]]
    )


def run(placement: str, seed: int, steps: int, width: int, batch: int) -> dict:
    gmm = mixture()
    torch.manual_seed(seed)
    model = FlowMap(MLP(dim=2, width=width, depth=3, sigma=gmm.sigma), sigma=gmm.sigma)
    trainer = Trainer(
        model,
        make_objective("esd", stopgrad=placement),
        lambda n, g: gmm.sample(n, generator=g).float(),
        TrainConfig(
            steps=steps, batch_size=batch, seed=seed, log_every=max(1, steps // 10), drift_factor=None
        ),  # the spike guard only, as before,
    )
    trainer.train(progress=False)
    err = flowmap_error(trainer.ema_model, gmm, 0.0, 1.0, generator=torch.Generator().manual_seed(1))
    return {"placement": placement, "seed": seed, "steps": steps, "X_01 mse": err, "rollbacks": trainer.recoveries}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.width, args.batch = 20, [0], 16, 64
    torch.set_num_threads(args.threads)
    rows = [run(pl, s, args.steps, args.width, args.batch) for pl in ("teacher", "none") for s in args.seeds]
    print_table("ESD placements: 1-step exact-map error", rows)
    if not args.quick:
        print(md_table(rows))
    return rows


if __name__ == "__main__":
    main()
