"""Command line: ``flowmaps train | sample | evaluate`` (also ``python -m flowmaps``).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data. A sampling grid runs
0 = t_0 < t_1 < ... < t_N = 1 and one flow-map jump is taken per step.

Examples::

    flowmaps train --data checkerboard --method lsd --steps 20000 --out checkpoints/cb-lsd
    flowmaps train --data checkerboard --preset quick --out checkpoints/cb-quick  # about a minute on an idle CPU core
    flowmaps train --data checkerboard --method lsd --steps 40000 --out checkpoints/cb-lsd --resume
    flowmaps sample --checkpoint checkpoints/cb-lsd --steps 1,2,4 --n 4000 --out samples.png
    flowmaps sample --checkpoint checkpoints/cb-lsd --grid 0,0.3,0.7,1 --out samples.npy
    flowmaps evaluate --checkpoint checkpoints/cb-lsd --n 64000 --seeds 0,1,2
    torchrun --nproc-per-node 2 -m flowmaps train --data fashion-mnist --method lsd --out runs/fm

Sub-commands: :mod:`~flowmaps.cli.train` (the flags, derived from TrainConfig's fields, and the
defaults) with :mod:`~flowmaps.cli.train_run` (the run), :mod:`~flowmaps.cli.pace` (its duration
estimate) and :mod:`~flowmaps.cli.lineage` (``--init-from``); :mod:`~flowmaps.cli.sample`;
:mod:`~flowmaps.cli.evaluate`. Every option is typed
and range-checked (:mod:`~flowmaps.cli.options`); a bad value exits with status 2 and a message
that names the option.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from flowmaps.cli import evaluate, sample, train, train_run

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a short error: the one line naming the option and a pointer to
    ``--help``, without the usage block (thirty lines for ``flowmaps train``) in front of it.
    Sub-command parsers are of this class too (argparse builds them with the parent's class)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every option)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``flowmaps`` (and ``python -m flowmaps``)."""
    parser = _Parser(
        prog="flowmaps",
        description="Flow maps by self-distillation: train, sample and evaluate (t = 0 noise, t = 1 data).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,evaluate}")
    train.add_parser(sub).set_defaults(run=train_run.cmd_train)  # flags in train, the run in train_run
    sample.add_parser(sub)
    evaluate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (argparse errors exit with status 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # huggingface_hub's logger prints through a handler of its own: passed on to ours too, each of
    # its lines (e.g. a retry of an unreachable Hub) showed twice
    logging.getLogger("huggingface_hub").propagate = False
    return args.run(args)
