"""The run behind ``flowmaps train``: build, train, write the checkpoint, evaluate.

Time convention: t = 0 is noise, t = 1 is data.

It prints a duration estimate (:mod:`flowmaps.cli.pace`) after its first steps; Ctrl-C or SIGTERM
stops it after the current step and saves the model trained so far, marked as interrupted (exit
status 128 + the signal's number). A diverged run (:class:`~flowmaps.training.DivergenceError`) exits with status 1 and
writes no final model. Under torchrun every rank trains and rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowmaps.cli import train as opts
from flowmaps.cli.lineage import Lineage
from flowmaps.cli.options import folder_problem, print_error
from flowmaps.cli.pace import MIN_SECONDS, MIN_STEPS, WARMUP_STEPS, StepClock
from flowmaps.cli.sample import device_or_exit
from flowmaps.evaluation import grids_for, is_image_set
from flowmaps.utils import text_table

logger = logging.getLogger("flowmaps.cli")


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{world} x {name}" if world > 1 else name
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _describe_net(config: dict[str, Any], model: nn.Module) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    net = config["net"]
    if net["name"] == "mlp":
        text = f"MLP {net['depth']}x{net['width']} ({net.get('activation', 'gelu')}) on [s, t, x / sigma]"
    else:
        text = (
            f"UNet, {net['base_channels']} base channels x {net['channel_mults']}, "
            f"{net['num_res_blocks']} res blocks per level, embeddings of s and t - s"
        )
    if config.get("learn_loss_weight"):
        text += ", learned loss weight"
    return f"{text}; {n_params:,} parameters"


def _backend_name(objective: nn.Module, model: nn.Module) -> str:
    """The derivative backend the objective really uses ("auto" resolved), for the card's stages."""
    if not getattr(objective, "uses_jvp", False):
        return "no JVP"
    backend = model.resolve_backend(objective.backend)
    net = type(getattr(model, "net", model)).__name__
    names = {"tangent": f"{net} tangent pass", "jvp": "torch.func.jvp", "dual": "forward-AD dual tensors"}
    return names.get(backend, f"central difference, step {model.resolve_fd_step(objective.fd_step):g}")


class _Run:
    """One ``flowmaps train`` run: its trainer, config, card and the checkpoint writes."""

    def __init__(self, args, trainer, objective, model_cfg, lineage: Lineage, device, world) -> None:
        from flowmaps.objectives import DESCRIPTIONS

        self.args, self.trainer, self.lineage, self.out = args, trainer, lineage, Path(args.out)
        self.start_step = trainer.global_step
        objective_cfg = {"eta": args.eta, "reduction": args.reduction, "backend": args.backend}
        if args.backend == "fd":
            objective_cfg["fd_step"] = trainer.model.resolve_fd_step(args.fd_step)
        self.config = {
            **model_cfg,
            "data": args.data,
            "method": args.method,
            "objective": objective_cfg,
            "train": trainer.config.to_dict(),
            **lineage.config_entries(),
        }
        self.stage = f"{args.method} ({_backend_name(objective, trainer.model)})"
        method = f"{args.method}: {DESCRIPTIONS.get(args.method, '')} (eta = {args.eta}, {args.reduction})"
        self.card_base = {
            "title": f"flowmaps: {args.method.upper()} on {args.data}",
            "data": args.data,
            "network": _describe_net(model_cfg, trainer.model),
            "method": method,
            "hardware": _hardware(device, world),
        }
        if args.note:
            self.card_base["notes"] = args.note
        self.wall_start = time.perf_counter()

    def write_model(self, metrics: Any = None, interrupted: bool = False) -> None:
        """Save the EMA weights, config and card into the output folder (rank 0 only)."""
        from flowmaps.hub import save_pretrained

        step = self.trainer.global_step
        wall = time.perf_counter() - self.wall_start
        card = {**self.card_base, **self.lineage.card_entries(step, wall, self.stage)}
        extra: dict[str, Any] = {**self.lineage.run_entries(step, wall, self.stage)}
        if interrupted:
            card["status"] = f"interrupted at step {step} of {self.args.steps} (continue with --resume)"
            extra["interrupted_at"] = step
        if metrics:
            card["metrics"] = metrics
        config = {**self.config, "steps": step, "eval": metrics or [], **extra}
        save_pretrained(self.trainer, self.out, config, card, dtype="float16" if self.args.fp16 else "float32")

    def evaluate(self, device: torch.device) -> int | None:
        """Score the EMA model on the uniform grids of --eval-steps, print and save the table;
        returns an exit status when interrupted, else None."""
        from tqdm.auto import tqdm

        from flowmaps.evaluation import evaluate_model

        grids = grids_for("uniform", self.args.eval_steps)
        bar = tqdm(total=len(grids), desc="evaluate", disable=self.args.no_progress, dynamic_ncols=True)

        def done(row: dict[str, Any]) -> None:
            bar.set_postfix_str(f"N = {row['N']} done", refresh=False)
            bar.update(1)

        try:
            ema = self.trainer.ema_model
            metrics = evaluate_model(
                ema, self.config, self.args.eval_n, grids, seed=self.args.seed, device=device, on_row=done
            )
        except KeyboardInterrupt:
            bar.close()
            print(
                f"evaluation interrupted: {self.out} holds the trained model without its evaluation table; "
                f"run python -m flowmaps evaluate --checkpoint {self.out}",
                file=sys.stderr,
            )
            return 130
        bar.close()
        for row in metrics:
            row.pop("grid", None)
            row.pop("time_s", None)
        print(text_table(metrics, skip=("grid",)))
        self.write_model(metrics)
        return None


def _setup(args: argparse.Namespace) -> tuple[torch.device, int, int, bool]:
    """Device, rank, world size and whether torch.distributed runs (initialised here under torchrun)."""
    from flowmaps.training import init_distributed

    distributed = opts.world_size() > 1
    if distributed:
        info = init_distributed()
        device, rank, world = info.device, info.rank, info.world_size
    else:
        device, rank, world = device_or_exit(args.device), 0, 1
    if device.type == "cpu":
        # A 2-D MLP step is too small to gain from a second thread, and two threads spinning on a
        # CPU shared with other work cost far more than they give: the quick preset took 534 ms a
        # step with torch's default threads on a loaded 2-core machine, 34 ms with one.
        if args.threads or not is_image_set(args.data):
            torch.set_num_threads(args.threads or 1)
    if device.type == "cuda":
        # TF32 rounds to 10 mantissa bits: fine for a JVP, fatal for a finite difference.
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.benchmark = is_image_set(args.data)
    return device, rank, world, distributed


def _prepare_out(args: argparse.Namespace, rank: int) -> int | None:
    """Check, before any training, that --out (and --log) can be written and that --out holds no
    other run (unless --resume or --overwrite); with --overwrite rank 0 removes the old run's files
    (:data:`~flowmaps.cli.train.RUN_FILES`, config.json first). Returns an exit status, or None to go on."""
    out = Path(args.out)
    if args.overwrite and args.resume is not None:
        return print_error("--overwrite replaces the run in --out and --resume continues it; give one of them")
    held = [name for name in opts.RUN_FILES[:4] if (out / name).exists()] if out.is_dir() else []
    if held and args.resume is None and not args.overwrite:
        return print_error(
            f"--out {str(out)!r} already holds a run ({', '.join(held)}); continue it with --resume, "
            "write to a new --out folder, or replace it with --overwrite"
        )
    if problem := folder_problem(out, "--out"):
        return print_error(problem)
    if args.log is not None and (problem := folder_problem(Path(args.log).parent, "--log")):
        return print_error(problem.replace(f"--log {str(Path(args.log).parent)!r}", f"--log {args.log!r}"))
    if args.overwrite and rank == 0:
        for name in opts.RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return None


def _build(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, dict[str, Any], Lineage] | int:
    """The trainer (resumed with --resume), its objective, the model config and the lineage; or an exit status."""
    from flowmaps.objectives import make_objective
    from flowmaps.registry import build_model
    from flowmaps.training import Trainer, close_distributed

    out = Path(args.out)
    resume_path = None
    if args.resume is not None:
        resume_path = out / opts.TRAINER_STATE if args.resume == "auto" else Path(args.resume)
        if not resume_path.is_file():
            return print_error(f"--resume: no trainer state at {resume_path}")
    try:
        lineage = Lineage.load(args.init_from, args.data)
        model_cfg = opts.model_config_from_args(args)
        lineage.adopt_network(model_cfg)
        train_cfg = opts.train_config(args, out, device)
    except (ValueError, FileNotFoundError) as err:
        return print_error(str(err))
    torch.manual_seed(args.seed)
    model = build_model(model_cfg)
    lineage.load_weights(model)
    objective = make_objective(
        args.method, eta=args.eta, reduction=args.reduction, backend=args.backend, fd_step=args.fd_step
    )
    sampler = opts.make_data_sampler(
        args.data, device, root=args.data_root, subset=args.train_subset, points=args.points
    )
    try:
        trainer = Trainer(model, objective, sampler, train_cfg)
    except ValueError as err:  # e.g. a batch too small for the method's branches
        close_distributed(wait=False)
        return print_error(str(err))
    if resume_path is not None:
        try:
            trainer.resume(resume_path)
        except (ValueError, RuntimeError, KeyError) as err:
            return print_error(f"cannot resume from {resume_path}: {err}")
    return trainer, objective, model_cfg, lineage


def cmd_train(args: argparse.Namespace) -> int:
    """``flowmaps train``; returns the exit status (2 for bad options, 1 for a diverged run)."""
    from flowmaps.training import DivergenceError, close_distributed

    try:
        opts.fill_defaults(args)
    except ValueError as err:
        return print_error(str(err))
    device, rank, world, distributed = _setup(args)
    if args.batch_size % world:
        return print_error(f"--batch-size {args.batch_size} must be divisible by the {world} ranks")
    if (status := _prepare_out(args, rank)) is not None:
        return status
    built = _build(args, device)
    if isinstance(built, int):
        return built
    trainer, objective, model_cfg, lineage = built
    run = _Run(args, trainer, objective, model_cfg, lineage, device, world)
    if rank == 0:
        logger.info("training %s on %s: %s", args.method, args.data, run.card_base["network"])
        if run.start_step < trainer.config.steps:
            _say(_plan_line(args, run.start_step, trainer.config.steps, device))
    signals: list[int] = []
    try:
        _train(run, signals)
    except DivergenceError as err:
        print(
            f"flowmaps train: error: {err}. No final model was written; try a lower --lr or --grad-clip",
            file=sys.stderr,
        )
        if distributed:
            close_distributed(wait=False)
        return 1
    if signals:
        return _stopped(run, signals[0], rank, distributed)
    if rank == 0:
        run.write_model()  # a Ctrl-C during the evaluation still leaves the trained model
        if args.eval_n > 0 and (status := run.evaluate(device)) is not None:
            return status
        print(f"wrote {run.out} ({trainer.global_step} steps, {trainer.global_step - run.start_step} this run)")
    if distributed:
        close_distributed()
    return 0


def _train(run: _Run, signals: list[int]) -> None:
    """trainer.train with the duration estimate, the periodic model writes and the signal handlers."""
    trainer, c = run.trainer, run.trainer.config
    clock = StepClock(run.start_step, c.steps, c.max_seconds, after=_evaluation_text(run.args))
    every = c.checkpoint_every if c.checkpoint_every else max(c.steps, 1) + 1

    def each_step(tr: Any, logs: dict[str, Any]) -> None:
        if signals:  # a signal that came before train() started
            tr.request_stop()
        line = clock.tick(tr.global_step)
        if line and tr.is_main:
            _say(line)
        if tr.is_main and "recovered" not in logs and tr.global_step % every == 0:
            run.write_model()

    with _stop_on_signals(trainer, signals):
        trainer.train(callback=each_step, callback_every=1, progress=not run.args.no_progress)


def _stopped(run: _Run, signum: int, rank: int, distributed: bool) -> int:
    """After a signal: save the model marked as interrupted; returns 128 + the signal's number."""
    from flowmaps.training import close_distributed

    if rank == 0:
        run.write_model(interrupted=True)
        steps = run.trainer.config.steps
        print(
            f"{signal.Signals(signum).name}: stopped at step {run.trainer.global_step} of {steps}; saved the model "
            f"trained so far to {run.out} (marked as interrupted), with {opts.TRAINER_STATE} to continue: same "
            "command with --resume",
            file=sys.stderr,
        )
    if distributed:
        close_distributed(wait=False)
    return 128 + signum


def _evaluation_text(args: argparse.Namespace) -> str:
    """What the evaluation after training does (named in the duration estimate, which times the
    training only), or "" with --eval-n 0."""
    if args.eval_n <= 0:
        return ""
    steps = ",".join(map(str, args.eval_steps))
    what = "FID" if is_image_set(args.data) else "sample-quality metrics"
    return (
        f"the evaluation, not in this estimate: {what} on {args.eval_n} samples at N = {steps} steps, "
        "with its own progress bar (--eval-n 0 skips it; flowmaps evaluate runs it later)"
    )


def _say(line: str) -> None:
    """Print a line to stdout without breaking a tqdm bar."""
    from tqdm.auto import tqdm

    tqdm.write(line)
    sys.stdout.flush()


def _plan_line(args: argparse.Namespace, start_step: int, steps: int, device: torch.device) -> str:
    """What ``train`` is about to do, and the quick recipe on a CPU."""
    left = steps - start_step
    first = WARMUP_STEPS + MIN_STEPS
    estimate = f"a duration estimate follows after {first} steps and {MIN_SECONDS:g} s; " if left > first else ""
    line = f"training {left} steps (preset {args.preset}); {estimate}Ctrl-C stops and keeps the model trained so far"
    if device.type == "cpu" and args.preset == "default" and not is_image_set(args.data):
        line += (
            "\nhint: the defaults take 10-15 min on 2 idle CPU cores; for a quick CPU run add --preset quick "
            "(MLP 4x128, 6000 steps: about a minute on an idle CPU core, 2-3 min on a busy machine)"
        )
    return line


@contextlib.contextmanager
def _stop_on_signals(trainer: Any, caught: list[int]) -> Any:
    """While inside, SIGINT (Ctrl-C) and SIGTERM ask the trainer to stop after its current step and
    record the signal in ``caught``; a second signal acts as it would without this. Only in the main
    thread (signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        trainer.request_stop()
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
