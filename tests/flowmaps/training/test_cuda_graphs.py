"""CUDA-graph training steps (flowmaps.training.cuda_graphs): same loss, gradients and random numbers as eager.

The equality tests need a CUDA device (they run on the GPU machine; docs/gpu_runs.md records the
run); on a CPU-only machine the error paths are tested.
"""

import pytest
import torch

from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import make_objective
from flowmaps.training import TrainConfig, Trainer
from flowmaps.training.cuda_graphs import GraphedLoss, graphs_available


def cuda(test):
    """A GPU test: marked ``gpu`` and skipped without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def _unet_model(device):
    from flowmaps.nets.unet import UNet

    torch.manual_seed(0)
    unet = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, attn_levels=(1,))
    return FlowMap(unet, sigma=0.5).to(device)


def test_graphs_need_cuda():
    assert not graphs_available("cpu")
    model = FlowMap(MLP(dim=2, width=8, depth=1))
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedLoss(model, make_objective("lsd"), torch.zeros(4, 2))


def test_trainer_without_cuda_runs_eagerly_and_says_so(caplog):
    model = FlowMap(MLP(dim=2, width=8, depth=1))
    cfg = TrainConfig(steps=3, batch_size=8, cuda_graph=True, log_every=1)
    with caplog.at_level("WARNING"):
        trainer = Trainer(model, make_objective("lsd"), lambda n, g: torch.randn(n, 2, generator=g), cfg)
    assert not trainer.cuda_graph and "CUDA graph" in caplog.text
    logs = trainer.train(progress=False)
    assert trainer.global_step == 3 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)


@cuda
@pytest.mark.parametrize("method", ["fm", "lsd", "esd", "psd-u"])
def test_replay_equals_the_eager_loss_gradients_and_rng(method):
    """A replay draws the same noise and times as an eager call from the same generator state,
    gives the same loss and gradients, and advances the generator by the same amount."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        device = torch.device("cuda")
        model = _unet_model(device)
        objective = make_objective(method)
        x1 = torch.rand(16, 1, 28, 28, device=device) * 2 - 1
        gen = torch.Generator(device=device).manual_seed(5)
        graphed = GraphedLoss(model, objective, x1, generator=gen)
        assert objective.return_logs is True  # restored after capture
        batch = torch.rand(16, 1, 28, 28, device=device) * 2 - 1
        state = gen.get_state()
        loss_g = graphed(batch).clone()
        grads_g = [p.grad.clone() for p in model.parameters()]
        logs_g = {k: float(v) for k, v in graphed.logs.items()}
        after_graph = gen.get_state()

        twin = torch.Generator(device=device)
        twin.set_state(state)
        model.zero_grad(set_to_none=True)
        out = objective(model, batch, generator=twin)
        out.loss.backward()
        torch.testing.assert_close(loss_g, out.loss.detach(), rtol=1e-5, atol=1e-6)
        for a, p in zip(grads_g, model.parameters()):
            torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
        assert logs_g == pytest.approx(out.logs, rel=1e-5)
        assert torch.equal(after_graph, twin.get_state())
        again = graphed(batch).clone()
        assert not torch.equal(again, loss_g)  # fresh noise and times every replay
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@cuda
def test_trainer_with_cuda_graph_matches_eager_training():
    """Two trainers from the same seed, one eager and one replaying a graph, follow the same
    losses step by step (same random numbers, same updates) and the graph is captured once."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        data = torch.rand(64, 1, 28, 28) * 2 - 1
        losses = {}
        for graph in (False, True):
            model = _unet_model("cuda")
            cfg = TrainConfig(steps=6, batch_size=16, device="cuda", cuda_graph=graph, log_every=1, amp=False, seed=1)

            def sampler(n, g):
                idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
                return data.to(g.device)[idx]

            trainer = Trainer(model, make_objective("lsd"), sampler, cfg)
            losses[graph] = [e["loss"] for e in trainer.train(progress=False)]
            assert trainer.cuda_graph is graph
        assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("method", ["lsd", "esd"])
def test_compiled_network_gives_the_same_loss_and_gradients(method):
    """compile_network (traced by dynamo and AOTAutograd; the aot_eager backend needs no compiler)
    leaves the loss and the gradients of a JVP objective unchanged, and the weights where they were."""
    from flowmaps.training import compile_network

    out = {}
    for compiled in (False, True):
        model = _unet_model("cpu")
        if compiled:
            compile_network(model.net, backend="aot_eager")
            assert set(model.state_dict()) == set(_unet_model("cpu").state_dict())
        x1 = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
        res = make_objective(method)(model, x1, generator=torch.Generator().manual_seed(2))
        res.loss.backward()
        out[compiled] = (res.loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_trainer_compile_option_trains_and_keeps_the_ema_uncompiled():
    model = FlowMap(MLP(dim=2, width=16, depth=2))
    cfg = TrainConfig(steps=4, batch_size=32, compile="aot_eager", log_every=1)
    trainer = Trainer(model, make_objective("lsd"), lambda n, g: torch.randn(n, 2, generator=g), cfg)
    assert "forward" in vars(trainer.model.net) and "forward" not in vars(trainer.ema_model.net)
    logs = trainer.train(progress=False)
    assert trainer.global_step == 4 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)


def _two_gpu_worker(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from safetensors.torch import save_file

    from flowmaps.training import init_distributed

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    info = init_distributed()
    try:
        data = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1
        out = {}
        for graph in (False, True):
            model = _unet_model(info.device)
            cfg = TrainConfig(steps=5, batch_size=32, device=str(info.device), cuda_graph=graph, log_every=1, seed=1)

            def sampler(n, g):
                idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
                return data.to(g.device)[idx]

            trainer = Trainer(model, make_objective("lsd"), sampler, cfg)
            assert trainer.cuda_graph is graph
            out[f"loss/{graph}"] = torch.tensor([e["loss"] for e in trainer.train(progress=False)])
            out[f"w/{graph}"] = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
        save_file(out, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_replaying_graphs_match_eager_two_gpu_training(tmp_path):
    """Under torch.distributed each rank replays its own graph and the gradient all-reduce runs
    after it, into the graph's .grad tensors: the same losses and weights as the eager 2-GPU run,
    and the ranks stay in sync."""
    import socket

    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_two_gpu_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks differ in {key}"
    torch.testing.assert_close(r0["loss/True"], r0["loss/False"], rtol=1e-4, atol=0)
    torch.testing.assert_close(r0["w/True"], r0["w/False"], rtol=1e-3, atol=1e-5)
