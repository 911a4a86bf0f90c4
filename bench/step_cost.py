"""Train-step cost of every objective as a ratio to a flow-matching step on the same net and batch.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

A step is forward + backward + optimizer step (RAdam): the objective draws noise and times,
computes its loss, backpropagates, and the optimizer updates the weights. Timing: warm-up steps,
then the median over repeated groups (``torch.cuda.synchronize`` around each group on GPU). On the
CPU the process (CPU) time is also recorded: other processes sharing the cores inflate the wall
time but much less the CPU time. On GPU the peak memory of each step is recorded
(``torch.cuda.max_memory_allocated``).

Variants (rows):
- method: fm, lsd, esd, psd-m, psd-u, meanflow.
- backend: the derivative backend of the objective: jvp (torch.func forward mode), tangent (the
  network's own tangent pass: MLP.jvp and UNet.jvp carry the tangent beside the primal, and the
  objective runs the diagonal rows and the off-diagonal rows that carry gradients in one call of
  it; the MLP's has a hand-written backward), fd (central difference in time), tangent-stacked /
  tangent-split (the UNet's tangent pass with each layer run once on primal and tangent stacked
  along the batch, or on each apart: the default since session 10; until then "tangent" was
  stacked), unfused (the diagonal rows and the off-diagonal rows that carry gradients in two
  network calls instead of one, the reference for the fused default of LSD, ESD and PSD; the
  same loss and gradients, see tests/flowmaps/objectives/test_objectives.py).
- GPU extras: TF32 matmuls, bf16 autocast, torch.compile of the loss (a failure is caught and
  reported), and a CUDA graph of the whole step (noise, times, loss, backward, RAdam) for the
  2-D MLP and the UNet. Each ratio is taken against the flow-matching row of the same variant
  (a graphed step against a graphed flow-matching step).
- ``--unet-compile``: UNet rows with torch.compile of the network's forward and tangent pass,
  inside the CUDA graph (``--tag compile`` keeps them in a section of their own).
- ``--unet-scaling``: flow-matching rows of the UNet at other batch sizes, to show where the
  step stops being bound by kernel launches.

Usage::

    python -m bench.step_cost --device cpu            # 2-D MLPs on 2 CPU threads
    python -m bench.step_cost --device cuda           # MLP 512x4 at batch 65,536 and the UNet
    python -m bench.step_cost --device cuda --no-mlp --unet-scaling 64 1024   # the UNet only
    python -m bench.step_cost --quick                 # smoke run, tiny sizes, writes nothing
"""

from __future__ import annotations

import argparse
import contextlib
import traceback
from typing import Any

import torch

from bench.common import (
    add_common_args,
    machine_info,
    machine_line,
    md_table,
    output_paths,
    print_table,
    setup,
    time_fn,
    update_docs,
    write_json,
)
from flowmaps.flowmap import FlowMap
from flowmaps.nets.mlp import MLP
from flowmaps.objectives import make_objective
from flowmaps.training import bf16_autocast, compile_network

NAME = "step_cost"
METHODS = ("fm", "lsd", "esd", "psd-m", "psd-u", "meanflow")
JVP_METHODS = ("lsd", "esd", "meanflow")
# UNet rows captured in a CUDA graph (TF32): each method fused and, for reference, unfused
UNET_GRAPH_ROWS = (
    ("fm", "-"),
    ("lsd", "tangent"),
    ("lsd", "unfused"),
    ("lsd", "tangent-stacked"),
    ("esd", "tangent"),
    ("esd", "tangent-stacked"),
    ("esd", "unfused"),
    ("psd-m", "-"),
    ("psd-m", "unfused"),
    ("psd-u", "-"),
)
TARGETS = {"lsd": 1.6, "esd": 2.0, "psd-m": 1.6, "psd-u": 1.6}
COLS = [
    "net",
    "batch",
    "method",
    "backend",
    "variant",
    "ms",
    "ms_min",
    "cpu_ms",
    "ratio_fm",
    "peak_mib",
    "target",
    "note",
]


def _mlp_model(width: int, depth: int, device: torch.device) -> FlowMap:
    sigma = 3**-0.5
    return FlowMap(MLP(dim=2, width=width, depth=depth, sigma=sigma, activation="gelu"), sigma=sigma).to(device)


def _unet_model(base: int, device: torch.device, tiny: bool = False) -> FlowMap:
    from flowmaps.nets.unet import UNet

    kw = {"channel_mults": (1, 2), "num_res_blocks": 1, "emb_dim": 16} if tiny else {}
    return FlowMap(UNet(base_channels=base, sigma=0.5, **kw), sigma=0.5).to(device)


def _data(kind: str, batch: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        from flowmaps.data.toy import sample_toy

        return sample_toy("checkerboard", batch, generator=g).to(device=device, dtype=torch.float32)
    return (torch.rand(batch, 1, 28, 28, generator=g) * 2 - 1).to(device)


def _objective(method: str, backend: str, return_logs: bool = True) -> torch.nn.Module:
    if backend == "-":
        return make_objective(method, return_logs=return_logs)
    if backend in ("tangent-split", "tangent-stacked"):  # unet_blocks.STACK_TANGENT forced off / on
        return make_objective(method, backend="tangent", return_logs=return_logs)
    if backend == "unfused":  # the diagonal rows and the rows with gradients in separate network calls
        extra = {"backend": "tangent"} if method in JVP_METHODS else {}
        return make_objective(method, fuse_branches=False, return_logs=return_logs, **extra)
    return make_objective(method, backend=backend, return_logs=return_logs)


def _autocast(variant: str):
    """bf16 autocast for the bf16 rows (weight cache off: CUDA graph capture needs it off)."""
    return bf16_autocast("bf16" in variant, cache_enabled=False)


def _plain_step(
    model: FlowMap,
    objective: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x1: torch.Tensor,
    loss_fn=None,
    variant: str = "eager",
):
    def step() -> None:
        with _autocast(variant):
            loss = loss_fn(x1) if loss_fn is not None else objective(model, x1).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _graphed_step(model: FlowMap, objective: torch.nn.Module, x1: torch.Tensor, lr: float, variant: str):
    """The whole step (noise, times, loss, backward, RAdam) captured in one CUDA graph."""
    opt = torch.optim.RAdam(model.parameters(), lr=lr, capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            with _autocast(variant):
                loss = objective(model, x1).loss
            loss.backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        with _autocast(variant):
            loss = objective(model, x1).loss
        loss.backward()
        opt.step()
    return graph.replay


def _measure(
    net_kind: str,
    make_model,
    batch: int,
    method: str,
    backend: str,
    variant: str,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "backend": backend, "variant": variant}
    torch.manual_seed(args.seed)
    model = make_model()
    x1 = _data(net_kind, batch, device, args.seed)
    tf32 = variant.startswith(("tf32", "bf16"))
    ctx = contextlib.ExitStack()
    if device.type == "cuda":
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        ctx.callback(lambda: _restore_tf32(old))
    if backend in ("tangent-split", "tangent-stacked"):
        import flowmaps.nets.unet_blocks as unet_blocks

        ctx.enter_context(_patched(unet_blocks, "STACK_TANGENT", backend == "tangent-stacked"))
    if "compile-net" in variant:  # torch.compile of the network's forward and tangent pass
        compile_network(model.net)
    with ctx:
        try:
            if variant.endswith("graph"):
                if device.type == "cuda":  # the peak then includes the graph's memory pool, set aside at capture
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                step = _graphed_step(model, _objective(method, backend, return_logs=False), x1, args.lr, variant)
            else:
                objective = _objective(method, backend)
                opt = torch.optim.RAdam(model.parameters(), lr=args.lr)
                loss_fn = None
                if variant.endswith("compile"):
                    compiled = torch.compile(lambda x, m=model, o=objective: o(m, x).loss)
                    loss_fn = compiled
                step = _plain_step(model, objective, opt, x1, loss_fn, variant)
                step()  # first call: compiles if asked, surfaces errors early
            if device.type == "cuda" and not variant.endswith("graph"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            res = time_fn(step, device, warmup=args.warmup, repeats=args.repeats, inner=args.inner)
            row.update(ms=1e3 * res["median"], ms_min=1e3 * res["min"], cpu_ms=1e3 * res["cpu_median"])
            if device.type == "cuda":
                row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as err:  # report, do not stop the table
            msg = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            row["note"] = f"failed: {msg}"
            if args.verbose:
                traceback.print_exc()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _restore_tf32(old: tuple[bool, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _variants(net_kind: str, device: torch.device, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(method, backend, variant) rows to measure for one network."""
    rows: list[tuple[str, str, str]] = []
    methods = [m for m in METHODS if m in args.methods]
    for m in methods:
        if m in JVP_METHODS:
            backends = ["jvp", "fd", "tangent"]
            if m in ("lsd", "esd"):  # the fused default's references
                backends += (["tangent-stacked"] if net_kind == "unet" else []) + ["unfused"]
        else:
            backends = ["-"] + (["unfused"] if net_kind == "unet" and m.startswith("psd") else [])
        rows += [(m, b, "eager") for b in backends]
    if device.type == "cuda" and net_kind == "unet":
        for m, b in (("fm", "-"), ("lsd", "tangent"), ("esd", "tangent"), ("psd-m", "-")):
            if m in methods:
                rows.append((m, b, "tf32"))
        if args.graphs:
            for m, b in UNET_GRAPH_ROWS:
                if m in methods:
                    rows.append((m, b, "tf32+graph"))
            for m, b in (("fm", "-"), ("lsd", "tangent"), ("esd", "tangent"), ("psd-m", "-")):
                if m in methods:
                    rows.append((m, b, "bf16+graph"))
        if args.unet_compile:
            for m, b in (("fm", "-"), ("lsd", "tangent"), ("esd", "tangent"), ("psd-m", "-")):
                if m in methods:
                    rows.append((m, b, "tf32+compile-net+graph"))
    if device.type == "cuda" and net_kind == "mlp":
        for m, b in (
            ("fm", "-"),
            ("lsd", "tangent"),
            ("esd", "tangent"),
            ("psd-m", "-"),
        ):
            if m in methods:
                rows.append((m, b, "tf32"))
        if args.graphs:
            if "fm" in methods:
                rows += [("fm", "-", "graph"), ("fm", "-", "tf32+graph")]
            for m in ("lsd", "esd"):
                if m in methods:
                    rows += [(m, "tangent", "graph"), (m, "tangent", "tf32+graph")]
    if args.compile:
        for m, b in (("fm", "-"), ("lsd", "jvp"), ("lsd", "fd"), ("lsd", "tangent"), ("psd-m", "-")):
            if m in methods:
                rows.append((m, b, "compile"))
    if args.variants:
        rows = [r for r in rows if r[2] in args.variants]
    return rows


def _nets(device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.quick:
        nets = [{"net": "mlp 32x2", "kind": "mlp", "make": lambda: _mlp_model(32, 2, device), "batch": 64}]
        if args.unet:
            nets.append(
                {"net": "unet base 8", "kind": "unet", "make": lambda: _unet_model(8, device, tiny=True), "batch": 2}
            )
        return nets
    if device.type == "cpu":
        nets = [
            {
                "net": "mlp 256x3",
                "kind": "mlp",
                "make": lambda: _mlp_model(256, 3, device),
                "batch": args.batch or 1024,
            },
            {
                "net": "mlp 512x4",
                "kind": "mlp",
                "make": lambda: _mlp_model(512, 4, device),
                "batch": args.batch or 1024,
            },
        ]
        if args.unet:
            nets.append({"net": "unet base 32", "kind": "unet", "make": lambda: _unet_model(32, device), "batch": 16})
        return nets
    nets = []
    if args.mlp:
        nets.append(
            {
                "net": "mlp 512x4",
                "kind": "mlp",
                "make": lambda: _mlp_model(512, 4, device),
                "batch": args.batch or 65536,
            }
        )
    if args.unet:
        unet = {
            "net": f"unet base {args.unet_base}",
            "kind": "unet",
            "make": lambda: _unet_model(args.unet_base, device),
        }
        nets.append({**unet, "batch": args.unet_batch})
        scaling = [("fm", "-", "eager"), ("fm", "-", "tf32")] + ([("fm", "-", "tf32+graph")] if args.graphs else [])
        nets += [{**unet, "batch": b, "rows": scaling} for b in args.unet_scaling]
    return nets


def _fm_reference(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The plain flow-matching row (`fm`, `-`) of the same net, batch and variant (precision,
    CUDA graph or not), so a ratio never credits one row with another row's speed-ups."""
    for r in rows:
        if (
            r["net"] == row["net"]
            and r["batch"] == row["batch"]
            and r["method"] == "fm"
            and r["backend"] == "-"
            and r["variant"] == row["variant"]
            and "ms" in r
        ):
            return r
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = setup(args)
    if args.quick:
        args.warmup, args.repeats, args.inner = 1, 2, 1
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    for spec in _nets(device, args):
        for method, backend, variant in spec.get("rows") or _variants(spec["kind"], device, args):
            row = {"net": spec["net"], "batch": spec["batch"]}
            row.update(_measure(spec["kind"], spec["make"], spec["batch"], method, backend, variant, device, args))
            rows.append(row)
            print(
                f"  {row['net']:>14s} b={row['batch']:<6d} {method:9s} {backend:8s} {variant:11s} "
                + (f"{row['ms']:8.2f} ms" if "ms" in row else row.get("note", "")),
                flush=True,
            )
            payload = _save(rows, device, args)  # after every row: a run cut short keeps what it measured
    cols = [c for c in _columns(device) if any(c in r for r in rows)]
    print_table(f"train-step cost on {device.type}", rows, cols)
    return payload


def _columns(device: torch.device) -> list[str]:
    return COLS + (["ratio_fm_cpu_time"] if device.type == "cpu" else [])


def _save(rows: list[dict[str, Any]], device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Ratios against the flow-matching rows, then the JSON and the docs section."""
    for row in rows:
        ref = _fm_reference(rows, row)
        if ref is not None and "ms" in row:
            row["ratio_fm"] = row["ms"] / ref["ms"]
            if device.type == "cpu":
                row["ratio_fm_cpu_time"] = row["cpu_ms"] / ref["cpu_ms"]
        if row["method"] in TARGETS:
            row["target"] = f"<= {TARGETS[row['method']]}x"
    info = machine_info(device)
    payload = {"name": NAME, "machine": info, "rows": rows, "quick": bool(args.quick)}
    cols = [c for c in _columns(device) if any(c in r for r in rows)]
    results_dir, docs = output_paths(args)
    key = f"{NAME}_{device.type}" + (f"_{args.tag}" if args.tag else "")
    write_json(results_dir, key, payload)
    md = (
        f"## Train-step cost ({device.type.upper()}{', ' + args.tag if args.tag else ''})\n\n"
        "Forward + backward + RAdam step; `ms` the median wall time per step, `ratio_fm` against the plain\n"
        "flow-matching step (`fm`, `-`) on the same network, batch and variant (precision, CUDA graph).\n"
        "Targets: LSD <= 1.6x, ESD <= 2.0x, PSD <= 1.6x. Backends: `jvp` torch.func, `tangent` the\n"
        "network's own tangent pass (MLP, UNet; the MLP's with a hand-written backward), run on the\n"
        "diagonal rows and the off-diagonal rows that carry gradients in one call (the default),\n"
        "`tangent-stacked` / `tangent-split` the UNet's with each layer run once on primal and tangent\n"
        "stacked, or apart (the default), `fd` central difference, `unfused` the diagonal rows in a\n"
        "network call of their own (same loss and gradients). Variants:\n"
        "`tf32` TF32 matmuls and convolutions, `bf16` bf16 autocast, `graph` the whole step in one CUDA\n"
        "graph (`peak_mib` then includes the memory the graph sets aside at capture; in tables before\n"
        "session 11 it counted only what the replays allocate), `compile-net` torch.compile of the\n"
        "network's forward and tangent pass. eta = 0.75.\n"
        + (
            "On this shared CPU, `cpu_ms` (process time) and `ratio_fm_cpu_time` are less disturbed by\n"
            "other processes than the wall time.\n"
            if device.type == "cpu"
            else "`peak_mib`: torch.cuda.max_memory_allocated during the timed steps.\n"
        )
        + "\n"
        + machine_line(info)
        + "\n\n"
        + md_table(rows, cols)
        + "\n"
    )
    update_docs(docs, key, md)
    return payload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch", type=int, default=None, help="MLP batch (default 1024 on CPU, 65,536 on GPU)")
    p.add_argument(
        "--unet", action=argparse.BooleanOptionalAction, default=None, help="include the UNet (default: on GPU)"
    )
    p.add_argument("--unet-base", type=int, default=48, help="UNet base channels (GPU; 48 = the shipped models)")
    p.add_argument("--unet-batch", type=int, default=256, help="UNet batch (GPU; 256 = the shipped runs)")
    p.add_argument("--unet-scaling", type=int, nargs="*", default=[], help="extra UNet batches for flow-matching rows")
    p.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=True, help="the 2-D MLP rows (GPU)")
    p.add_argument("--unet-compile", action="store_true", help="UNet rows with torch.compile of the network (GPU)")
    p.add_argument("--variants", nargs="*", default=None, help="keep only rows of these variants (e.g. tf32+graph)")
    p.add_argument("--tag", default="", help="suffix of the results file and docs section (a partial run)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--inner", type=int, default=3, help="steps per timed group")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the loss")
    p.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=True, help="CUDA-graph rows (GPU)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failed rows")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.unet is None:
        args.unet = args.device == "cuda"
    return run(args)


if __name__ == "__main__":
    main()
