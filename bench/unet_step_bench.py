"""Time one training step of the image UNet for each objective and derivative backend.

    python -m bench.unet_step_bench --device cuda --batch 256

Kept because GPU session 2 (docs/gpu_runs.md) ran it; the benchmark of record is
``python -m bench.step_cost --device cuda``, whose UNet rows cover the same cases with TF32 and
peak-memory columns and write docs/benchmarks.md.

Prints one JSON line per (method, backend) with the median step time (forward + backward +
RAdam step) and its ratio to flow matching, and the fastest exact JVP backend last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from flowmaps.objectives import make_objective
from flowmaps.registry import build_model

CASES = [
    ("fm", "jvp"),
    ("lsd", "tangent"),
    ("esd", "tangent"),
    ("psd-m", "jvp"),
    ("psd-u", "jvp"),
    ("lsd", "jvp"),
    ("lsd", "dual"),
    ("lsd", "fd"),
    ("esd", "jvp"),
]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--base-channels", type=int, default=48)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    results = {}
    for method, backend in CASES:
        torch.manual_seed(0)
        model = build_model(
            {
                "net": {"name": "unet", "base_channels": args.base_channels, "sigma": 0.5},
                "sigma": 0.5,
                "learn_loss_weight": True,
            }
        ).to(dev)
        opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
        obj = make_objective(method, backend=backend)
        x1 = torch.rand(args.batch, 1, 28, 28, device=dev) * 2 - 1
        times = []
        for i in range(args.repeats + 3):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            obj(model, x1).loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
        results[f"{method}/{backend}"] = statistics.median(times)
    fm = results["fm/jvp"]
    for key, sec in results.items():
        print(
            json.dumps(
                {
                    "case": key,
                    "ms": round(1000 * sec, 2),
                    "ratio_to_fm": round(sec / fm, 2),
                    "batch": args.batch,
                    "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                }
            )
        )
    best = min(("tangent", "jvp", "dual"), key=lambda b: results[f"lsd/{b}"])
    print(json.dumps({"fastest_lsd_backend": best}))
    return results


if __name__ == "__main__":
    main()
