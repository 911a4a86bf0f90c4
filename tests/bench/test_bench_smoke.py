"""Smoke runs of the benchmark scripts at tiny sizes on the CPU, so that they do not rot.

Time convention: t = 0 is noise, t = 1 is data. No timing is asserted: only that each script runs
end to end, returns its table, and writes its JSON and its docs section where told to.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _load(name: str):
    return importlib.import_module(f"bench.{name}")


def _out(tmp_path: Path) -> list[str]:
    return ["--results", str(tmp_path / "results"), "--docs", str(tmp_path / "benchmarks.md")]


def test_idle_cpu_quick() -> None:
    """bench.idle_cpu launches the page in-process and reads its CPU with no visitor under gradio's
    idle sleeps and the app's, one share of a core per setting (the figures are the script's, not
    this test's: no timing is asserted here)."""
    mod = importlib.import_module("bench.idle_cpu")
    shares = mod.main(["--quick", "--port", "7897"])["shares"]
    assert set(shares) == {"gradio", "app"} and all(len(v) == 1 and 0.0 <= v[0] < 200.0 for v in shares.values())


def test_step_cost_quick(tmp_path: Path) -> None:
    mod = _load("step_cost")
    payload = mod.main(
        ["--quick", "--device", "cpu", "--methods", "fm", "lsd", "esd", "psd-m", "meanflow", *_out(tmp_path)]
    )
    rows = payload["rows"]
    measured = {(r["method"], r["backend"]) for r in rows if "ms" in r}
    for key in [
        ("fm", "-"),
        ("lsd", "jvp"),
        ("lsd", "tangent"),
        ("lsd", "fd"),
        ("lsd", "unfused"),
        ("esd", "unfused"),
        ("psd-m", "-"),
    ]:
        assert key in measured, key
    assert all("ratio_fm" in r for r in rows if "ms" in r)
    data = json.loads((tmp_path / "results" / "step_cost_cpu.json").read_text())
    assert data["machine"]["torch"] and data["machine"]["command"]
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- BEGIN step_cost_cpu -->" in text and "| lsd |" in text


def test_step_cost_quick_unet(tmp_path: Path) -> None:
    mod = _load("step_cost")
    payload = mod.main(["--quick", "--unet", "--device", "cpu", "--methods", "fm", "lsd", "--repeats", "1"])
    unet = [r for r in payload["rows"] if r["net"].startswith("unet")]
    assert {(r["method"], r["backend"]) for r in unet if "ms" in r} >= {("fm", "-"), ("lsd", "jvp"), ("lsd", "fd")}


def test_time_to_quality_quick(tmp_path: Path) -> None:
    mod = _load("time_to_quality")
    payload = mod.main(["--quick", "--methods", "lsd", "--save", str(tmp_path / "ck"), *_out(tmp_path)])
    run = payload["runs"][0]
    assert run["steps"] > 0 and run["curve"] and set(run["final_kl"]) == {"1", "2", "4", "8", "16"}
    folder = tmp_path / "ck" / "checkerboard-lsd"
    assert (folder / "model.safetensors").is_file() and "N=16" in (folder / "README.md").read_text()
    from flowmaps.hub import from_pretrained

    model, config = from_pretrained(str(folder))
    assert config["method"] == "lsd" and config["training"]["steps"] == run["steps"]


def test_time_to_quality_records_each_stages_reduction(tmp_path: Path) -> None:
    """A later stage (--init-from) appends its own way of combining the branches to the record."""
    mod = _load("time_to_quality")
    mod.main(["--quick", "--methods", "psd-m", "--save", str(tmp_path / "a")])
    mod.main(
        ["--quick", "--methods", "psd-m", "--reduction", "sum_of_means", "--init-from", str(tmp_path / "a"),
         "--save", str(tmp_path / "b")]
    )  # fmt: skip
    from flowmaps.hub import from_pretrained

    _, config = from_pretrained(str(tmp_path / "b" / "checkerboard-psd-m"))
    training = config["training"]
    assert training["stage_reductions"] == ["mean", "sum_of_means"]
    assert len(training["stages"]) == 2 and training["steps"] == sum(training["stages"])


def test_families_trains_each_method_at_its_own_lr(tmp_path: Path) -> None:
    """--lr-for gives one family its own peak lr for the stage; the others keep --lr; the card's
    command names the lr its own model trained at; a bad item stops the parser."""
    mod = _load("families")
    save = tmp_path / "ck"
    mod.main(
        ["--quick", "--methods", "lsd", "psd-m", "--lr", "2e-4", "--lr-for", "lsd=5e-5", "--save", str(save),
         "--log-dir", str(tmp_path / "logs")]
    )  # fmt: skip
    from flowmaps.hub import from_pretrained

    lrs = {}
    for method in ("lsd", "psd-m"):
        _, config = from_pretrained(str(save / f"checkerboard-{method}"))
        lrs[method] = config["training"].get("stage_lrs") or [config["training"]["lr"]]
    assert lrs == {"lsd": [5e-5], "psd-m": [2e-4]}
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--lr-for", "lsd=fast"])
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--lr-for", "xyz=1e-4"])


def test_kl_parts_quick(tmp_path: Path) -> None:
    """The parts of every shipped checkerboard model's KL add up to its KL, exact samples first."""
    mod = _load("kl_parts")
    payload = mod.main(["--quick", "--methods", "lsd", "esd"])
    parts = payload["parts"]
    assert set(parts) == {"exact", "lsd/N=1", "esd/N=1"}
    for runs in parts.values():
        assert len(runs) == 2
        for r in runs:
            assert abs(r["off_target"] + r["edge"] + r["interior"] - r["kl"]) < 1e-9


def test_live_cpu_quick(tmp_path: Path) -> None:
    mod = _load("live_cpu")
    payload = mod.main(["--quick", *_out(tmp_path)])
    marks = payload["runs"][0]["marks"]
    assert len(marks) == 2 and marks[-1]["steps"] >= marks[0]["steps"] >= 1
    from app.validation import TrainSettings

    settings = payload["runs"][0]["settings"]
    assert settings["schedule"] == "linear" and settings["source"] == "app"
    assert (settings["method"], settings["eta"], settings["lr"]) == (
        TrainSettings().method,
        TrainSettings().eta,
        TrainSettings().lr,
    )
    assert "<!-- BEGIN live_cpu -->" in (tmp_path / "benchmarks.md").read_text()


def test_sampling_quick(tmp_path: Path) -> None:
    mod = _load("sampling")
    payload = mod.main(["--quick", *_out(tmp_path)])
    samplers = {(r["sampler"], r["NFE"]) for r in payload["rows"]}
    assert ("flow map", 1) in samplers and ("ODE heun", 8) in samplers


def test_sampling_skips_without_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mod = _load("sampling")
    payload = mod.main(["--checkpoints", str(tmp_path / "none"), *_out(tmp_path)])
    assert payload["rows"] == [] and "no UNet checkpoints" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_guard_esd_quick(tmp_path: Path) -> None:
    mod = _load("guard_esd")
    summary = mod.main(["--quick", "--json", str(tmp_path / "guard.json")])
    assert summary["outcome"] == "finished" and summary["steps"] == 60 and len(summary["rows"]) == 3
    assert 0.0 <= summary["final_in_square"] <= 1.0
    assert json.loads((tmp_path / "guard.json").read_text())["drift_rollbacks"] == 0


def test_duration_estimate_quick() -> None:
    """A tiny 2-D net for 8 s (the estimate needs 4 s of steps): the estimate is printed and compared."""
    mod = _load("duration_estimate")
    tiny = ["--width", "16", "--depth", "2", "--batch-size", "64", "--log-every", "1000", "--no-progress"]
    result = mod.main(["--data", "checkerboard", "--steps", "1000000", "--max-seconds", "8", *tiny])
    assert result["old_estimate"]["step"] == 22 and result["real_ms_after_warmup"] > 0
    first = result["estimates"][0]
    assert first["step"] > 22 and first["ms"] > 0 and first["rest_ms"] > 0


def test_stage_lr_continues_the_papers_schedule_across_stages():
    """Without an anneal, a stage continued from 186,000 earlier steps is at lr0 / sqrt(step / 35k)
    of the global step, as one uninterrupted run would be; with one, each stage anneals its own."""
    import math

    from bench.time_to_quality import lr_at, stage_lr

    one_run = [lr_at(k, 1e-3, 35_000) for k in (0, 34_999, 35_000, 140_000, 186_000 + 500)]
    assert one_run[:2] == [1e-3, 1e-3] and math.isclose(one_run[3], 1e-3 / 2)
    assert math.isclose(stage_lr(500, 0.1, 1e-3, 1.0, 35_000, previous_steps=186_000), one_run[4])
    assert stage_lr(500, 0.1, 1e-3, 1.0, 35_000, previous_steps=0) == 1e-3  # a fresh run starts at lr0
    # an annealed stage: lr0 in its first half, 1% of lr0 at its end, whatever came before
    assert stage_lr(10, 0.25, 5e-4, 0.5, 35_000, previous_steps=186_000) == 5e-4
    assert math.isclose(stage_lr(10, 1.0, 5e-4, 0.5, 35_000, previous_steps=186_000), 5e-6)


def test_a_step_budget_anneals_by_steps_alone_not_by_the_clock():
    """With --steps the lr schedule is a function of the step: a run that is slow (e.g. sharing its
    GPU) is at the same lr at step k as a fast one. Without a step budget the clock drives it."""
    import math

    from bench.time_to_quality import annealed_lr, budget_fraction

    slow, fast = budget_fraction(1_000, 20_000, 500.0, 520.0), budget_fraction(1_000, 20_000, 5.0, 520.0)
    assert slow == fast == 0.05  # the clock alone would put the slow run at 0.96, deep in its anneal
    assert annealed_lr(6.25e-5, slow, 0.5) == 6.25e-5
    assert budget_fraction(25_000, 20_000, 1.0, 520.0) == 1.0
    assert math.isclose(budget_fraction(10, None, 130.0, 520.0), 0.25)


def test_partial_transport_esd_interpolates_the_two_placements():
    """bench.esd_transport: the loss is ESD's at every lam, and its gradient is lam times the full
    gradient's (the esd preset) plus (1 - lam) times the semigradient's (stopgrad="teacher")."""
    import torch

    from bench.esd_transport import PartialTransportESD
    from flowmaps.flowmap import FlowMap
    from flowmaps.nets.mlp import MLP
    from flowmaps.objectives import make_objective

    torch.manual_seed(0)
    model = FlowMap(MLP(dim=2, width=16, depth=2).double(), sigma=1.0)
    x1 = torch.randn(64, 2, dtype=torch.float64)

    def loss_and_grad(objective):
        model.zero_grad()
        loss = objective(model, x1, generator=torch.Generator().manual_seed(3)).loss
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    full = loss_and_grad(make_objective("esd", backend="jvp", fuse_branches=False))
    semi = loss_and_grad(make_objective("esd", stopgrad="teacher", backend="jvp", fuse_branches=False))
    torch.testing.assert_close(full[0], semi[0])
    assert (full[1] - semi[1]).norm() > 1e-4 * full[1].norm()  # the two placements differ (far beyond float64)
    for lam in (0.0, 0.3, 1.0):
        loss, grad = loss_and_grad(PartialTransportESD(lam, backend="jvp"))
        torch.testing.assert_close(loss, full[0])
        torch.testing.assert_close(grad, lam * full[1] + (1 - lam) * semi[1])
    with pytest.raises(ValueError, match="lam"):
        PartialTransportESD(1.5)
