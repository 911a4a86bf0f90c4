"""Training: the loop, its settings, the divergence guard, the state file, torch.distributed, CUDA graphs.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

One optimiser step (:meth:`Trainer.step`):

1. draw a batch x1 = data_sampler(local_batch_size, generator) of shape (B, *D) (data, t = 1);
2. loss = objective(model, x1, generator=generator).loss (the objective draws the noise x0, the
   times and splits the batch into its diagonal / off-diagonal parts itself);
3. backward; with torch.distributed, average the gradients over ranks with one all_reduce
   (:mod:`~flowmaps.training.distributed`: why not DistributedDataParallel);
4. clip the global gradient norm to ``grad_clip``;
5. the guard (:mod:`~flowmaps.training.guard`): a non-finite loss or gradient norm, or a spike,
   restores the last good state and halves the learning rate; a slow drift rolls back to a
   snapshot from before its estimated onset and halves the learning rate; when the guard gives up
   it raises :class:`DivergenceError`;
6. RAdam step with lr(k) = lr0 for k < k0 and lr0 / sqrt(k / k0) after (k0 = lr_decay_start;
   :func:`learning_rate`), times the end-of-run anneal (:func:`anneal_factor`);
7. EMA of the weights, ema <- d_k * ema + (1 - d_k) * params, d_k = min(decay, (1 + k) / (10 + k))
   (the warm-up can be switched off). Sample with ``ema_model``.

Modules: :mod:`~flowmaps.training.config` (:class:`TrainConfig`, each field's range stated once,
the schedules), :mod:`~flowmaps.training.trainer` (:class:`Trainer`),
:mod:`~flowmaps.training.guard`, :mod:`~flowmaps.training.state` (the safetensors state file,
nothing pickled), :mod:`~flowmaps.training.distributed`, :mod:`~flowmaps.training.cuda_graphs`
(the step captured as one CUDA graph; torch.compile of the network).
"""

from flowmaps.training.config import TrainConfig, anneal_factor, config_fields, learning_rate
from flowmaps.training.cuda_graphs import GraphedLoss, bf16_autocast, compile_network, graphs_available
from flowmaps.training.distributed import DistInfo, close_distributed, init_distributed
from flowmaps.training.guard import DivergenceError, DivergenceGuard
from flowmaps.training.state import load_state_file, save_state_file
from flowmaps.training.trainer import DataSampler, Trainer

__all__ = [
    "DataSampler",
    "DistInfo",
    "DivergenceError",
    "DivergenceGuard",
    "GraphedLoss",
    "TrainConfig",
    "Trainer",
    "anneal_factor",
    "bf16_autocast",
    "close_distributed",
    "compile_network",
    "config_fields",
    "graphs_available",
    "init_distributed",
    "learning_rate",
    "load_state_file",
    "save_state_file",
]
