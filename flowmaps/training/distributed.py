"""torch.distributed helpers for the trainer: process group, broadcasts and reductions.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Multi-GPU (torchrun): call :func:`init_distributed` first. ``batch_size`` is the *global* batch:
each of the W ranks draws batch_size / W samples with its own generator (seeded
seed + 1_000_003 * rank), and the objective splits its own part into diagonal and off-diagonal
samples, so every device keeps the fraction eta on the diagonal. The initial weights are
broadcast from rank 0 (:func:`broadcast_from_rank0`), and after backward the gradients are
averaged with one explicit all_reduce (:func:`all_reduce_mean`). The model is not wrapped in
DistributedDataParallel: the Lagrangian and Eulerian objectives differentiate the network in
forward mode (torch.func.jvp or a tangent pass), which calls the module functionally and bypasses
DDP's forward hooks, so DDP's gradient hooks fire out of order or not at all. Averaging the
gradients ourselves is equivalent and works for every objective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "RANK_SEED_STRIDE",
    "DistInfo",
    "agree_to_stop",
    "all_reduce_mean",
    "broadcast_from_rank0",
    "close_distributed",
    "dist_world",
    "gather_rng",
    "init_distributed",
]

RANK_SEED_STRIDE = 1_000_003
"""Rank r's generator is seeded ``seed + RANK_SEED_STRIDE * r``."""


@dataclass
class DistInfo:
    """Where this process sits in a torch.distributed job (rank 0 of 1 without one)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Uses nccl when CUDA is available, gloo otherwise (MASTER_ADDR / MASTER_PORT come from the
    environment, as torchrun sets them). Without WORLD_SIZE > 1 nothing is initialised and the
    result is rank 0 of 1. The device is cuda:LOCAL_RANK with CUDA, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return DistInfo(0, 1, 0, device)


def close_distributed(wait: bool = True) -> None:
    """Close the process group that :func:`init_distributed` opened (nothing if none is open).

    Call it on every rank at the end of a torchrun run, after the last collective (NCCL warns at
    exit otherwise). With ``wait`` (the default) the ranks first meet at a barrier, so none tears
    its connections down while another still works (rank 0 writing the checkpoint): with gloo a
    rank that left early could abort at exit (docs/reliability.md). Pass ``wait=False`` on an
    error path, where the other ranks may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def dist_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_rank0(*modules: nn.Module) -> None:
    """Overwrite every tensor of the modules' state dicts with rank 0's (in place)."""
    with torch.no_grad():
        for module in modules:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)


def all_reduce_mean(
    params: list[nn.Parameter], logs: dict[str, float], device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Average the gradients of ``params`` and the numbers ``logs`` over ranks with one all_reduce
    of one flat buffer; returns the averaged logs.

    A parameter without a gradient on every rank keeps grad None (as in one process). An existing
    .grad tensor is written in place (a CUDA graph replays into the same tensors).
    """
    world = dist.get_world_size()
    keys = sorted(logs)
    parts = [
        torch.zeros(p.numel(), device=device, dtype=dtype) if p.grad is None else p.grad.reshape(-1).to(dtype)
        for p in params
    ]
    has_grad = torch.tensor([p.grad is not None for p in params], device=device, dtype=dtype)
    values = torch.tensor([logs[k] for k in keys], device=device, dtype=dtype)
    flat = torch.cat(parts + [has_grad, values])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
        if p.grad is None:
            p.grad = grad.clone()
        else:
            p.grad.copy_(grad)
    for p, flag in zip(params, flat[offset : offset + len(params)].tolist()):
        if flag == 0:
            p.grad = None
    offset += len(params)
    return dict(zip(keys, flat[offset:].tolist()))


def agree_to_stop(elapsed: float, stop: bool, device: torch.device) -> tuple[float, bool]:
    """The largest elapsed time of any rank, and whether any rank wants to stop (one all_reduce):
    a rank that left the training loop alone would leave the others waiting in their next all-reduce."""
    flags = torch.tensor([elapsed, float(stop)], device=device, dtype=torch.float64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    elapsed_max, any_stop = flags.tolist()
    return elapsed_max, any_stop > 0


def gather_rng(mine: dict[str, Tensor], device: torch.device) -> dict[str, dict[str, Tensor]]:
    """Every rank's RNG states {rank: {name: state}} (a collective with several ranks)."""
    rank, world = dist_world()
    if world == 1:
        return {"0": mine}
    out: dict[str, dict[str, Tensor]] = {str(r): {} for r in range(world)}
    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for name in sorted(mine):
        local = mine[name].to(comm_device)
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        for r, g in enumerate(gathered):
            out[str(r)][name] = g.cpu()
    return out
