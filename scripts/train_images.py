"""Train a Fashion-MNIST flow map (the recipe behind the shipped image checkpoints).

Time convention: t = 0 is noise, t = 1 is data.

    python scripts/train_images.py --method lsd --out runs/fmnist-lsd --device cuda
    torchrun --nproc_per_node=2 scripts/train_images.py --method lsd --out runs/ddp ...

The whole training set sits on the device; each step draws a batch with the trainer's
generator. Under torchrun every rank draws its own share of the global batch and splits it
into diagonal and off-diagonal parts itself; gradients are averaged by one all_reduce (see
flowmaps.training). Writes a resumable trainer state, a JSONL log, and at the end the EMA
weights as a checkpoint folder (safetensors + config.json + model card).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowmaps.cli import positive_float, unit_interval  # noqa: E402
from flowmaps.data.images import image_batch_sampler, load_fashion_mnist  # noqa: E402
from flowmaps.hub import save_pretrained  # noqa: E402
from flowmaps.objectives import DESCRIPTIONS, make_objective  # noqa: E402
from flowmaps.registry import build_model  # noqa: E402
from flowmaps.training import (  # noqa: E402
    DivergenceError,
    TrainConfig,
    Trainer,
    close_distributed,
    init_distributed,
)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        n = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return f"{n} x {torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _leading_int(value) -> int:
    """Steps from a model card: an int, or a string that starts with one ("8547 in all ...")."""
    if isinstance(value, (int, float)):
        return int(value)
    digits = str(value).strip().split(" ")[0].replace(",", "")
    return int(digits) if digits.isdigit() else 0


def _stages_of(config: dict) -> list[str]:
    """The training stages behind a checkpoint, oldest first, from its config (and its init's)."""
    card = config.get("card", {})
    if card.get("stages"):
        return list(card["stages"])
    total = _leading_int(card.get("steps", 0))
    parent = config.get("init_from")
    if not parent:
        return [f"{total} steps of {config.get('method', '?')}"]
    before = _leading_int(parent.get("steps", 0))
    parent_method = str(parent.get("card", {}).get("method", "?")).split(":")[0]
    return [f"{before} steps of {parent_method}", f"{total - before} steps of {config.get('method', '?')}"]


def _backend_name(objective, model) -> str:
    """The derivative backend the objective really uses ("auto" resolved), for the model card."""
    if not getattr(objective, "uses_jvp", False):
        return "no JVP"
    backend = model.resolve_backend(objective.backend)
    return {"tangent": "UNet tangent pass", "jvp": "torch.func.jvp", "dual": "forward-AD dual tensors"}.get(
        backend, f"central difference, step {model.resolve_fd_step(objective.fd_step):g}"
    )


def main(argv: list[str] | None = None) -> Path | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="lsd", help="fm, lsd, esd, psd-m, psd-u, ...")
    p.add_argument("--out", required=True, help="output folder (checkpoint, state, log)")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much training time")
    p.add_argument("--batch-size", type=int, default=256, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay-start", type=int, default=35_000)
    p.add_argument(
        "--anneal-from",
        type=unit_interval,
        default=1.0,
        help="from this fraction of the run (steps or --max-seconds) the lr falls linearly to 0; 1: off",
    )
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--eta", type=float, default=0.75)
    p.add_argument("--base-channels", type=int, default=48)
    p.add_argument("--mults", default="1,2,2")
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--no-learned-weight", action="store_true")
    p.add_argument(
        "--backend",
        default="auto",
        help="derivative backend: auto (the UNet's tangent pass), tangent, jvp, dual or fd",
    )
    p.add_argument(
        "--fd-step",
        type=positive_float,
        default=None,
        help="central-difference step for --backend fd (default: the UNet's own, 0.1 / its embedding scale = 1e-4)",
    )
    p.add_argument("--init-from", default=None, help="start from the weights of this checkpoint folder")
    p.add_argument(
        "--spike-factor",
        type=float,
        default=None,
        help="reject steps whose gradient norm exceeds this factor x the running median (default: off; "
        "with clipping at 1 a large gradient cannot make a large update, and early in training the "
        "norm rises for good reasons)",
    )
    p.add_argument(
        "--drift-factor",
        type=float,
        default=10.0,
        help="slow-divergence guard: roll back when the running median of the loss or gradient norm passes "
        "this many times its lowest value in the run (default 10; 0 turns it off)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=2000)
    p.add_argument("--data-root", default=None)
    p.add_argument("--train-subset", type=int, default=0, help="use only the first N images (tests)")
    p.add_argument("--resume", action="store_true", help="resume from <out>/state.safetensors")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cuda-graph", action="store_true", help="replay the loss and backward as a CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet's forward and tangent pass")
    p.add_argument("--note", default=None, help="a sentence for the model card's notes")
    args = p.parse_args(argv)

    dist_info = init_distributed() if "RANK" in os.environ else None
    device = torch.device(
        dist_info.device
        if dist_info
        else (
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else ("cpu" if args.device == "auto" else args.device)
        )
    )
    if device.type == "cuda":
        # TF32 rounds to 10 mantissa bits: fine for a JVP, fatal for a finite difference.
        tf32 = args.backend != "fd"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    rank0 = dist_info is None or dist_info.rank == 0

    images, _ = load_fashion_mnist("train", root=args.data_root)
    if args.train_subset:
        images = images[: args.train_subset]
    sampler = image_batch_sampler(images.to(device))

    mults = [int(m) for m in args.mults.split(",")]
    config = {
        "net": {
            "name": "unet",
            "base_channels": args.base_channels,
            "channel_mults": mults,
            "num_res_blocks": args.res_blocks,
            "dropout": args.dropout,
            "sigma": 0.5,
        },
        "sigma": 0.5,
        "learn_loss_weight": not args.no_learned_weight,
        "data": "fashion-mnist",
        "method": args.method,
    }
    model = build_model(config)
    steps_before, seconds_before, stages = 0, 0.0, []
    if args.init_from:
        from flowmaps.hub import from_pretrained

        init, init_config = from_pretrained(args.init_from)
        model.net.load_state_dict(init.net.state_dict())  # the loss weight, if any, starts afresh
        init_card = init_config.get("card", {})
        steps_before = _leading_int(init_card.get("steps", 0))
        seconds_before = float(init_card.get("wall_time", 0.0))
        stages = _stages_of(init_config)
        config["init_from"] = {"steps": steps_before, "card": init_card}
    objective = make_objective(args.method, eta=args.eta, backend=args.backend, fd_step=args.fd_step)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tc = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay_start=args.lr_decay_start,
        grad_clip=args.grad_clip,
        ema_decay=args.ema,
        seed=args.seed,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        checkpoint_path=str(out / "state.safetensors"),
        log_path=str(out / "log.jsonl"),
        device=str(device),
        amp=False,
        cuda_graph=args.cuda_graph,
        compile=args.compile,
        max_seconds=args.max_seconds,
        anneal_from=args.anneal_from,
        spike_factor=args.spike_factor,
        drift_factor=args.drift_factor or None,
    )
    trainer = Trainer(model, objective, sampler, tc)
    if args.resume and (out / "state.safetensors").exists():
        trainer.resume(out / "state.safetensors")
    n_params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    try:
        history = trainer.train(progress=not args.no_progress)
    except DivergenceError as err:  # the guard gave up: no model is written
        print(f"error: {err}; try a lower --lr, or --drift-factor 0 to turn the drift guard off", file=sys.stderr)
        close_distributed(wait=False)
        sys.exit(1)
    seconds = time.perf_counter() - start
    if not rank0:
        close_distributed()  # no collective follows the training loop
        return None
    config["training"] = {**tc.to_dict(), "eta": args.eta, "backend": args.backend}
    if args.backend == "fd":
        config["training"]["fd_step"] = model.resolve_fd_step(args.fd_step)
    card = config["card"] = {
        "title": f"Fashion-MNIST flow map ({args.method.upper()})",
        "method": f"{args.method}: {DESCRIPTIONS.get(args.method, '')}",
        "data": "Fashion-MNIST train split (60,000 images, 28x28, scaled to [-1, 1]), MIT licence",
        "network": f"UNet, {n_params / 1e6:.2f}M parameters, base {args.base_channels}, mults {mults}",
        "steps": steps_before + trainer.global_step,
        "stages": [*stages, f"{trainer.global_step} steps of {args.method} ({_backend_name(objective, model)})"],
        "batch_size": args.batch_size,
        "wall_time": round(seconds_before + seconds, 1),
        "hardware": hardware(device),
        "final_loss": history[-1]["loss"] if history else None,
        "time_convention": "t = 0 noise, t = 1 data",
    }
    if args.note:
        card["notes"] = args.note
    folder = save_pretrained(trainer, out / "model", config=config, card=card, dtype="float16")
    summary = {**card, "seconds_per_step": seconds / max(1, trainer.global_step), "n_params": n_params}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(card))
    close_distributed()  # no collective follows the training loop
    return folder


if __name__ == "__main__":
    main()
