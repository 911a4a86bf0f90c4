"""200 training steps of one objective on the 2-D MLP (CPU, 2 threads, batch 1024): a whole process
to time from outside, under two versions of the library, with farm-bench running them in turn.

Usage (from the root of each tree)::

    python -m bench.steps_ab lsd 512 4

It takes the library's default path (the objectives fuse their branches through the MLP's tangent
pass); a tree older than the redesign had that path only in ``flowmaps.fast.FastObjective``, which
this script then wraps around the objective, so the two trees run the same maths. Figures: the
"before and after the redesign" table in docs/benchmarks.md.
"""

import sys

import torch

from flowmaps import MLP, FlowMap, make_objective


def main(argv: list[str]) -> None:
    method, width, depth = argv[0], int(argv[1]), int(argv[2])
    torch.set_num_threads(2)
    try:  # a tree from before the redesign
        from flowmaps.fast import FastObjective as wrap
    except ImportError:
        wrap = None
    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=width, depth=depth), sigma=3**-0.5)
    objective = make_objective(method)
    objective = wrap(objective) if wrap else objective
    opt = torch.optim.RAdam(model.parameters(), lr=1e-3)
    x = torch.rand(1024, 2) * 2 - 1
    for _ in range(200):
        opt.zero_grad(set_to_none=True)
        objective(model, x).loss.backward()
        opt.step()


if __name__ == "__main__":
    main(sys.argv[1:])
