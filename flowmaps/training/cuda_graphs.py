"""CUDA graphs and torch.compile for training steps: capture the loss and its backward once, replay it every step.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A training step of a small network issues hundreds of small kernels (the image UNet: several
hundred per call, and a self-distillation step makes three or four calls). Eager PyTorch pays
host time for each; a CUDA graph records the whole sequence once and the GPU replays it with one
launch. What is computed does not change: the objective draws its noise and times on the GPU
inside the graph (from the generator it is given, registered with the graph so that every replay
draws fresh numbers and the generator's state advances as in eager mode), the data batch is
copied into a fixed input buffer, and the gradients land in the same ``.grad`` tensors every
replay. Clipping and the optimizer step stay outside (eager, foreach kernels), so learning-rate
schedules and the trainer's divergence guard work as before.

Constraints of capture: fixed shapes (the batch size and the diagonal/off-diagonal split are
fixed), no host synchronisation inside the loss (objectives skip their ``.item()`` logs while
being captured; per-term logs come back as tensors), CUDA only, and the ``.grad`` tensors must not
be replaced (zero them in place or let the next replay overwrite them, never set them to None).

Example::

    >>> step = GraphedLoss(model, objective, x1_example, generator=g)   # captures
    >>> loss = step(x1)          # replays: fresh noise and times, gradients in p.grad
    >>> optimizer.step()
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import Tensor, nn

__all__ = ["GraphedLoss", "bf16_autocast", "compile_network", "graphs_available", "resolve_amp"]

logger = logging.getLogger("flowmaps.training")


def bf16_autocast(enabled: bool, cache_enabled: bool = True):
    """bf16 autocast on CUDA when enabled, else a no-op context. Inside a CUDA graph capture pass
    ``cache_enabled=False`` (autocast's weight cache does not survive capture)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)


def resolve_amp(amp: bool | None, device: torch.device, uses_jvp: bool) -> bool:
    """Whether to train under bf16 autocast: ``amp`` (``TrainConfig.amp``) with its default (None: on
    CUDA for objectives without forward-mode derivatives) and its limits (CUDA only, with a warning
    elsewhere; a warning for a JVP objective, whose bf16 backprop may be unreliable)."""
    if amp is None:
        return device.type == "cuda" and not uses_jvp
    if amp and device.type != "cuda":
        logger.warning("amp (bf16 autocast) is CUDA only; training on %s without it", device)
        return False
    if amp and uses_jvp:
        logger.warning("amp with a JVP objective: backprop through a bf16 JVP may be unreliable")
    return bool(amp)


def graphs_available(device: torch.device | str) -> bool:
    """Whether CUDA graphs can be captured on this device."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class GraphedLoss:
    """objective(model, x1).loss and its backward, captured in one CUDA graph.

    Args:
        model: the FlowMap being trained (on a CUDA device).
        objective: an objective module, objective(model, x1, generator=...) -> LossOutput; while
            it is captured its logs are switched to tensors (``return_logs="tensor"``) or off.
        x1_example: a batch of the shape and dtype that every call will pass.
        generator: the CUDA generator the objective draws from (None: the default one).
        amp: bf16 autocast of the loss (its weight cache off, as capture requires).
        warmup: eager forward/backward passes on a side stream before capture (they draw from a
            generator of their own and leave no gradients behind).

    Calling it with a batch x1 copies x1 into the captured input, replays the graph and returns
    the loss (a tensor that the next replay overwrites). The parameters' ``.grad`` then hold this
    batch's gradients; ``logs`` holds the objective's per-term logs as 0-d tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        x1_example: Tensor,
        *,
        generator: torch.Generator | None = None,
        amp: bool = False,
        warmup: int = 3,
    ) -> None:
        if not graphs_available(x1_example.device):
            raise ValueError(f"CUDA graphs need a CUDA device; the batch is on {x1_example.device}")
        self.model, self.objective, self.generator, self.amp = model, objective, generator, bool(amp)
        self.x1 = x1_example.detach().clone()
        self.params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        self.logs: dict[str, Tensor] = {}
        old_logs = getattr(objective, "return_logs", None)
        try:
            if old_logs is not None:
                objective.return_logs = "tensor" if _tensor_logs(objective) else False
            # Warm-up draws from a generator of its own, so the caller's stream of random
            # numbers is the one an eager run would see (capture itself draws nothing).
            warm = torch.Generator(device=self.x1.device).manual_seed(0)
            side = torch.cuda.Stream(device=self.x1.device)
            side.wait_stream(torch.cuda.current_stream(self.x1.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._clear_grads()
                    self._loss(warm)[0].backward()
            torch.cuda.current_stream(self.x1.device).wait_stream(side)
            self._clear_grads()
            self.graph = torch.cuda.CUDAGraph()
            if generator is not None:
                self.graph.register_generator_state(generator)
            with torch.cuda.graph(self.graph):
                self.loss, self.logs = self._loss(generator)
                self.loss.backward()
        finally:
            if old_logs is not None:
                objective.return_logs = old_logs

    def _clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def _loss(self, generator: torch.Generator | None) -> tuple[Tensor, dict[str, Tensor]]:
        with bf16_autocast(self.amp, cache_enabled=False):
            out = self.objective(self.model, self.x1, generator=generator)
        logs = {k: v for k, v in out.logs.items() if isinstance(v, Tensor)}
        return out.loss.float(), logs

    def __call__(self, x1: Tensor) -> Tensor:
        if x1.shape != self.x1.shape:
            raise ValueError(
                f"a captured step takes batches of shape {tuple(self.x1.shape)}; got {tuple(x1.shape)} "
                "(keep the batch size fixed, or run without CUDA graphs)"
            )
        self.x1.copy_(x1)
        self.graph.replay()
        return self.loss.detach()


def compile_network(net: nn.Module, **compile_kwargs) -> nn.Module:
    """torch.compile the network's forward and, if it has one, its tangent pass ``jvp``, in place.

    The UNet's tangent pass is a long chain of small elementwise ops (closed-form derivatives of
    GroupNorm, SiLU and the scale/shift modulation); compiled, they fuse into a few kernels
    (measured in docs/benchmarks.md). The first calls compile (minutes for the UNet); weights and
    state_dict keys are unchanged. The compiled functions are bound to this
    module object: compile after any deepcopy of it (a copy would still call the original's).
    ``compile_kwargs`` go to torch.compile (e.g. ``backend="aot_eager"`` where no compiler is).
    """
    net.forward = torch.compile(net.forward, **compile_kwargs)
    if hasattr(net, "jvp"):
        net.jvp = torch.compile(net.jvp, **compile_kwargs)
    return net


def _tensor_logs(objective: nn.Module) -> bool:
    """Whether the objective can return its logs as tensors (flowmaps.objectives.Objective can)."""
    return getattr(objective, "supports_tensor_logs", False)
