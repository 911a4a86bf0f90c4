"""The command line: train / evaluate / sample end to end on tiny models, resume, bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from flowmaps.cli import main
from tests import REPO

torch.set_num_threads(2)
TINY = ["--width", "16", "--depth", "2", "--batch-size", "64", "--no-progress", "--log-every", "1"]


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--data", "checkerboard", "--method", "lsd", "--out", str(out), *TINY, *extra])


def _assert_same_weights(one: Path, other: Path) -> None:
    """The two checkpoint folders hold the same tensors, bit for bit."""
    with safe_open(str(one / "model.safetensors"), "pt") as a, safe_open(str(other / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k


def test_train_evaluate_sample(tmp_path, capsys):
    out = tmp_path / "ck"
    assert _train(out, "--steps", "12", "--eval-n", "2000", "--eval-steps", "1,2") == 0
    assert {"model.safetensors", "config.json", "README.md", "trainer.safetensors", "log.jsonl"} <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "checkerboard" and config["method"] == "lsd" and config["steps"] == 12
    assert [row["N"] for row in config["eval"]] == [1, 2]
    assert config["sigma"] == pytest.approx(1 / np.sqrt(3))
    card = (out / "README.md").read_text()
    assert "| N | KL | KL_floor | SW |" in card and "**Steps**: 12" in card
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 13))
    capsys.readouterr()

    report = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out), "--n", "2000", "--steps", "1,4", "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "KL_floor" in text and "SW" in text and "n = 2000" in text
    rows = json.loads(report.read_text())
    assert [r["N"] for r in rows] == [1, 4] and all(r["SW"] > 0 for r in rows)

    assert (
        main(["sample", "--checkpoint", str(out), "--steps", "1,2", "--n", "100", "--out", str(tmp_path / "s.npy")])
        == 0
    )
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (2, 100, 2) and np.isfinite(samples).all()
    custom = tmp_path / "c.npy"
    assert main(["sample", "--checkpoint", str(out), "--grid", "0,0.3,1", "--n", "50", "--out", str(custom)]) == 0
    assert np.load(custom).shape == (1, 50, 2)
    png = tmp_path / "s.png"
    assert (
        main(["sample", "--checkpoint", str(out), "--steps", "1,2,4", "--grid", "edm", "--n", "500", "--out", str(png)])
        == 0
    )
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 3 * 256


@pytest.mark.parametrize("data", ["two_gaussians", "tilted_mixture"])
def test_train_on_a_gaussian_mixture_with_its_own_sigma(tmp_path, data):
    """The mixtures of the exact-map test bed train from the CLI, with the mixture's own base sigma
    (the one its exact flow map is written for), and are scored against fresh mixture samples."""
    from flowmaps.data import gmm_preset

    out = tmp_path / data
    argv = ["train", "--data", data, "--method", "esd", "--out", str(out), *TINY, "--steps", "6"]
    assert main([*argv, "--eval-n", "500", "--eval-steps", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == data and config["sigma"] == pytest.approx(gmm_preset(data).sigma)
    assert [row["N"] for row in config["eval"]] == [1] and config["eval"][0]["SW"] > 0


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(straight, "--steps", "10", "--eval-n", "0") == 0
    assert _train(split, "--steps", "6", "--eval-n", "0", "--checkpoint-every", "3") == 0
    assert _train(split, "--steps", "10", "--eval-n", "0", "--resume") == 0
    steps = [json.loads(line)["step"] for line in (split / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
    _assert_same_weights(straight, split)
    assert json.loads((split / "config.json").read_text())["steps"] == 10


def test_image_training_wires_the_unet(tmp_path):
    from flowmaps.data.images import resolve_root

    try:
        resolve_root()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST files are not installed")
    out = tmp_path / "img"
    args = ["train", "--data", "fashion-mnist", "--method", "psd-m", "--steps", "1", "--batch-size", "2",
            "--channels", "8", "--channel-mults", "1,2", "--res-blocks", "1", "--eval-n", "0", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["net"]["name"] == "unet" and config["learn_loss_weight"] is True and config["shape"] == [1, 28, 28]
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}  # images ship in fp16
    assert main(["sample", "--checkpoint", str(out), "--steps", "1", "--n", "4", "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (1, 4, 1, 28, 28)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--data", "checkerboard", "--out", "x", "--batch-size", "0"], "--batch-size: must be a positive"),
        (["train", "--data", "checkerboard", "--out", "x", "--lr", "-0.001"], "--lr: must be > 0"),
        (["train", "--data", "checkerboard", "--out", "x", "--eta", "1.5"], "--eta: must be in [0, 1]"),
        (["train", "--data", "checkerboard", "--out", "x", "--eta", "abc"], "--eta: expected a number"),
        (["train", "--data", "checkerboard", "--out", "x", "--drift-factor", "0.5"], "--drift-factor: must be 0"),
        (["train", "--data", "checkerboard", "--out", "x", "--method", "nope"], "--method: invalid choice"),
        (["train", "--data", "nope", "--out", "x"], "--data: invalid choice"),
        (["train", "--data", "checkerboard"], "--out"),
        (["sample", "--checkpoint", "c", "--out", "s.npy", "--grid", "0,0.7,0.5"], "strictly increasing"),
        (["sample", "--checkpoint", "c", "--out", "s.npy", "--steps", "1,0"], "--steps: must be a positive"),
        (["evaluate", "--checkpoint", "c", "--n", "0"], "--n: must be a positive"),
        (["evaluate", "--checkpoint", "c", "--seeds", "0,0"], "--seeds: seeds must be distinct"),
        (["evaluate", "--checkpoint", "c", "--seeds", ","], "--seeds: expected seeds such as 0,1,2"),
        (["train", "--data", "checkerboard", "--out", "x", "--preset", "fast"], "--preset: invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_errors_after_parsing(tmp_path, capsys):
    assert _train(tmp_path / "r", "--steps", "2", "--resume") == 2
    assert "no trainer state" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "absent" / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowmaps evaluate: error: --checkpoint: ") and "config.json and model.safetensors" in err
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "s.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowmaps sample: error: --out") and ".npy or .png" in err


def test_python_dash_m_entry_point():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = [sys.executable, "-m", "flowmaps", "train", "--data", "checkerboard", "--out", "x", "--eta", "2"]
    proc = subprocess.run(bad, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "--eta: must be in [0, 1]" in proc.stderr


def test_training_that_diverges_exits_1(tmp_path, capsys, monkeypatch):
    """The guard's DivergenceError reaches the shell as exit status 1 and a message, not a normal
    exit with a broken model (the data turns to NaN, so every step is rejected)."""
    import flowmaps.cli.train as cli_train

    def nan_sampler(data, device, **kw):
        return lambda n, g: torch.full((n, 2), float("nan"))

    monkeypatch.setattr(cli_train, "make_data_sampler", nan_sampler)
    out = tmp_path / "bad"
    assert _train(out, "--steps", "30", "--eval-n", "0") == 1
    err = capsys.readouterr().err
    assert "training diverged at step 0" in err and "non-finite loss" in err and "--lr" in err
    assert not (out / "model.safetensors").exists()


def test_drift_factor_flag(tmp_path):
    assert _train(tmp_path / "on", "--steps", "2", "--eval-n", "0") == 0
    assert _train(tmp_path / "off", "--steps", "2", "--eval-n", "0", "--drift-factor", "0") == 0
    on = json.loads((tmp_path / "on" / "config.json").read_text())["train"]
    off = json.loads((tmp_path / "off" / "config.json").read_text())["train"]
    assert on["drift_factor"] == 10.0 and off["drift_factor"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_leaves_a_loadable_model(tmp_path, sig):
    """Ctrl-C (or SIGTERM) during `python -m flowmaps train`: the model trained so far is saved, marked
    as interrupted at its step, with the trainer state to resume from; the duration estimate came first."""
    from flowmaps.hub import from_pretrained

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "flowmaps", "train", "--data", "checkerboard", "--out", str(out), *TINY,
           "--steps", "100000", "--checkpoint-every", "0", "--eval-n", "0", "--max-seconds", "60"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("duration estimate:"):
                break
        assert seen and seen[-1].startswith("duration estimate:"), seen
        assert "ms per step" in seen[-1] and "for the" in seen[-1] and "steps left" in seen[-1]
        assert any("--preset quick" in line for line in seen)  # the hint on a CPU
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    config = json.loads((out / "config.json").read_text())
    step = config["interrupted_at"]
    assert 22 <= step < 100000 and config["steps"] == step
    assert f"stopped at step {step} of 100000" in err and "--resume" in err
    assert f"interrupted at step {step} of 100000" in (out / "README.md").read_text()
    model, _ = from_pretrained(str(out))
    x = model.jump(torch.zeros(5, 2), torch.zeros(5), torch.ones(5))
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1] == step
    assert _train(out, "--steps", str(step + 2), "--eval-n", "0", "--resume") == 0  # the state resumes


def test_quick_preset_and_overrides(tmp_path, capsys):
    assert _train(tmp_path / "q", "--preset", "quick", "--steps", "2", "--eval-n", "0") == 0
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["net"]["width"] == 16 and config["net"]["depth"] == 2  # TINY's explicit values win
    assert config["train"]["batch_size"] == 64 and config["train"]["lr"] == 3e-3
    args = ["train", "--data", "checkerboard", "--preset", "quick", "--steps", "1", "--eval-n", "0",
            "--no-progress", "--out", str(tmp_path / "q2")]  # fmt: skip
    assert main(args) == 0
    config = json.loads((tmp_path / "q2" / "config.json").read_text())
    assert (config["net"]["width"], config["net"]["depth"]) == (128, 4)
    assert config["train"]["batch_size"] == 1024 and config["train"]["anneal_from"] == 0.7
    capsys.readouterr()
    assert main(["train", "--data", "fashion-mnist", "--preset", "quick", "--out", str(tmp_path / "i")]) == 2
    assert "--preset quick is a recipe for the 2-D sets" in capsys.readouterr().err


def test_evaluate_explains_inf_and_averages_seeds(tmp_path, capsys):
    """A 12-step model at n = 2000 leaves target bins empty: the KL is inf, and the output says why and
    gives the half-sample KL; with --seeds the table is mean ± sd of the per-seed values."""
    import statistics

    from flowmaps.evaluation import generate, grids_for
    from flowmaps.hub import from_pretrained
    from flowmaps.metrics import checkerboard_kl, checkerboard_kl_floor

    out = tmp_path / "ck"
    assert _train(out, "--steps", "12", "--eval-n", "0") == 0
    capsys.readouterr()
    report = tmp_path / "e.json"
    argv = ["evaluate", "--checkpoint", str(out), "--n", "2000", "--steps", "1,2", "--seeds", "0,1,2", "--json"]
    assert main([*argv, str(report)]) == 0
    text = capsys.readouterr().out
    assert "mean ± sd over noise seeds 0,1,2" in text and "inf (3 of 3 seeds)" in text
    assert "N = 1: inf (in 3 of 3 seeds): at least one target bin got no sample (an empty bin" in text
    assert "the KL with empty bins counted as half a sample is" in text and "the floor of exact samples is" in text
    assert "bin centres normalised to sum 1" in text
    rows = json.loads(report.read_text())
    model, _ = from_pretrained(str(out))
    for row, grid in zip(rows, grids_for("uniform", [1, 2])):
        halves = [checkerboard_kl(generate(model, 2000, (2,), grid, s).double(), eps=0.5).kl for s in (0, 1, 2)]
        assert [r["KL_half"] for r in row["per_seed"]] == pytest.approx(halves, rel=1e-9)
        assert row["KL_half"] == pytest.approx(statistics.mean(halves), rel=1e-9)
        assert row["KL_half_sd"] == pytest.approx(statistics.stdev(halves), rel=1e-9)
        assert f"{row['KL_half']:.4g} ± {row['KL_half_sd']:.2g}" in text
        floors = [checkerboard_kl_floor(2000, seed=s, eps=0.5) for s in (0, 1, 2)]  # each seed's own exact samples
        assert [r["floor_half"] for r in row["per_seed"]] == pytest.approx(floors, rel=1e-9)
        assert row["floor_half_sd"] > 0
    assert main(["evaluate", "--checkpoint", str(out), "--n", "2000", "--steps", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "noise seed 0" in text and "half a sample" in text


def test_scatter_panel_puts_points_where_they_are(tmp_path):
    """One point at (0.5, -0.5) on a [-1, 1] view lands 3/4 across and 3/4 down the plotting square."""
    from flowmaps.figures import PANEL_PLOT, scatter_panel

    panel = np.asarray(scatter_panel(np.array([[0.5, -0.5]]), 1.0, [-1, 0, 1], "N = 1 step"))
    left, top = 46, 30  # the panel's margins
    plot = panel[top : top + PANEL_PLOT, left : left + PANEL_PLOT].astype(int)
    ink = np.argwhere((plot.sum(axis=2) < 3 * 250) & (plot[..., 2] > plot[..., 0] + 20))  # blue-ish pixels
    assert len(ink) == 21  # one disc: the pixels with dx^2 + dy^2 <= 5
    assert ink.mean(axis=0) == pytest.approx([0.75 * PANEL_PLOT, 0.75 * PANEL_PLOT], abs=1.5)
    assert (panel[top - 1, left : left + PANEL_PLOT] == 0).all()  # the axis box


def test_sample_png_has_panels_axes_and_points(tmp_path):
    from PIL import Image

    out = tmp_path / "ck"
    assert _train(out, "--steps", "4", "--eval-n", "0") == 0
    png = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(out), "--steps", "1,2,4", "--n", "3000", "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (3 * (46 + 320 + 12) + 2 * 8, 30 + 320 + 30)
        pixels = np.asarray(im).astype(int)
    for k in range(3):
        plot = pixels[30:350, k * 386 + 46 : k * 386 + 366]
        inked = (plot.sum(axis=2) < 3 * 245).mean()
        assert 0.02 < inked < 0.9, (k, inked)  # points drawn, not a blank or a flooded square
    assert (pixels.sum(axis=2) == 0).mean() > 0.002  # black axes, ticks and labels


def test_init_from_continues_the_network_and_records_the_lineage(tmp_path, capsys):
    """--init-from starts from the parent's network (0 more steps: the weights are the parent's
    exactly), takes its architecture, and the card and config record the chain of stages."""
    parent, child = tmp_path / "parent", tmp_path / "child"
    assert _train(parent, "--steps", "12", "--eval-n", "0") == 0
    args = ["train", "--data", "checkerboard", "--method", "esd", "--init-from", str(parent), "--steps", "0",
            "--batch-size", "64", "--no-progress", "--eval-n", "0", "--note", "A second stage.",
            "--out", str(child)]  # fmt: skip
    assert main(args) == 0
    _assert_same_weights(parent, child)
    config = json.loads((child / "config.json").read_text())
    assert config["net"]["width"] == 16 and config["net"]["depth"] == 2  # the parent's, not the default 512 x 4
    assert config["init_from"]["steps"] == 12 and config["init_from"]["checkpoint"] == str(parent)
    assert config["stages"][0] == "12 steps of lsd" and config["stages"][1].startswith("0 steps of esd (")
    card = (child / "README.md").read_text()
    assert "**Steps**: 12" in card and "A second stage." in card
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "c2"), "--width", "32"]) == 2
    assert "--init-from takes the network from the checkpoint; leave out --width" in capsys.readouterr().err
    other = ["train", "--data", "two_moons", "--init-from", str(parent), "--steps", "0", "--out", str(tmp_path / "c3")]
    assert main(other) == 2
    assert "was trained on checkerboard, not on --data two_moons" in capsys.readouterr().err


def test_guard_flags_come_from_the_train_config(tmp_path, capsys):
    """Every TrainConfig field is a flag with the field's range; 0 turns an optional guard off."""
    assert _train(tmp_path / "g", "--steps", "2", "--eval-n", "0", "--spike-factor", "0", "--guard-every", "5") == 0
    train = json.loads((tmp_path / "g" / "config.json").read_text())["train"]
    assert train["spike_factor"] is None and train["guard_every"] == 5 and train["checkpoint_every"] == 1000
    for argv, needle in [
        (["--guard-every", "0"], "--guard-every: must be a positive integer (>= 1), got 0"),
        (["--spike-factor", "1"], "--spike-factor: must be 0 (off) or > 1, got 1"),
        (["--ema-decay", "1"], "--ema-decay: must be in [0, 1), got 1"),
        (["--max-seconds", "-5"], "--max-seconds: must be 0 (off) or > 0, got -5"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["train", "--data", "checkerboard", "--out", "x", *argv])
        assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_train_on_a_cpu_takes_one_thread_for_2d_data_unless_told(tmp_path):
    """A 2-D step is too small for a second thread; on a shared CPU two threads cost ~15x (the
    new-user check measured 534 ms against 34 ms a step). --threads overrides the default."""
    from flowmaps.cli import main

    before = torch.get_num_threads()
    base = ["train", "--data", "checkerboard", "--method", "fm", "--steps", "2", "--batch-size", "64"]
    base += ["--width", "16", "--depth", "1", "--device", "cpu", "--eval-n", "0", "--no-progress"]
    try:
        torch.set_num_threads(2)
        assert main([*base, "--out", str(tmp_path / "a")]) == 0
        assert torch.get_num_threads() == 1
        assert main([*base, "--out", str(tmp_path / "b"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "--out", "x", "--steps", "-5"], "--steps"),
        (["train", "--out", "x", "--method", "magic"], "--method"),
        (["sample", "--checkpoint"], "--checkpoint"),
        (["fly"], "fly"),
    ],
)
def test_a_bad_argument_gives_a_short_error(argv, named, capsys) -> None:
    """A bad option exits 2 with the line naming it and a pointer to --help, not the usage block."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert "error:" in lines[0] and named in lines[0]
    assert "--help" in lines[1] and "usage:" not in err


def test_train_on_a_csv_of_points(tmp_path, capsys):
    """``--data FILE.csv`` trains on the file's points, with sigma = their std, and scores the model
    against them; a bad line, a missing file or a file over the app's 2 MB exit 2 with one line."""
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 2)) * [3.0, 1.0] + [5.0, -2.0]
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in pts))
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--method", "lsd", "--steps", "5", "--out", str(out), *TINY]
    assert main([*argv, "--eval-n", "300", "--eval-steps", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == str(csv) and config["steps"] == 5
    std = float(np.sqrt(pts.astype(np.float32).astype(np.float64).var(axis=0, ddof=1).mean()))
    assert config["sigma"] == pytest.approx(std, rel=1e-6)
    assert config["eval"][0]["SW"] > 0 and "energy" in config["eval"][0]  # scored against the file's rows
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,4\n5,abc\n")
    big = tmp_path / "big.csv"
    big.write_text("1.000000,2.000000\n" * 130_000)  # 2.34e6 bytes: 2.2 MB of 2**20 bytes
    just_over = tmp_path / "just_over.csv"
    just_over.write_text("1.000000,2.000000\n" * 116_666 + "1.0,2.00000\n")
    assert just_over.stat().st_size == 2_100_000
    cases = [
        (bad, f"--data {bad}: line 4, column 2: 'abc' is not a number"),
        (tmp_path / "absent.csv", f"--data {tmp_path / 'absent.csv'}: no such file"),
        (big, f"--data {big}: the file is 2.2 MB, above the limit of 2 MB; subsample it (at most 100,000 rows"),
        (  # 2,100,000 bytes reads "2.0 MB" against a limit of 2 MB (2,097,152 bytes): said in bytes
            just_over,
            f"--data {just_over}: the file is 2,100,000 bytes, above the limit of 2 MB (2,097,152 bytes); ",
        ),
    ]
    capsys.readouterr()
    for path, message in cases:
        assert main(["train", "--data", str(path), "--out", str(tmp_path / "x"), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flowmaps train: error: " + message) and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_out_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    """A second `train --out` into a folder with a run refuses with one line (the old run untouched);
    --overwrite replaces it: the new log holds the new run's steps only."""
    out = tmp_path / "ck"
    assert _train(out, "--steps", "4", "--eval-n", "0") == 0
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert _train(out, "--steps", "3", "--eval-n", "0", "--seed", "1") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"flowmaps train: error: --out {str(out)!r} already holds a run")
    assert "--resume" in captured.err and "--overwrite" in captured.err and len(captured.err.splitlines()) == 1
    assert "training" not in captured.out and (out / "model.safetensors").read_bytes() == before
    assert _train(out, "--steps", "3", "--eval-n", "0", "--overwrite", "--resume") == 2
    assert "give one of them" in capsys.readouterr().err
    assert _train(out, "--steps", "3", "--eval-n", "0", "--seed", "1", "--overwrite") == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 3 and config["train"]["seed"] == 1
    assert (out / "model.safetensors").read_bytes() != before


def test_unwritable_outputs_fail_at_once_with_one_line(tmp_path, capsys):
    """An --out that cannot be made gives the one-line error (exit 2) before any training or sampling."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in ("/proc/x", str(blocker / "ck")):
        assert _train(Path(out), "--steps", "100000", "--eval-n", "0") == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"flowmaps train: error: --out {out!r}: cannot create the folder")
        assert "Traceback" not in captured.err and "training" not in captured.out
    assert _train(tmp_path / "ok", "--steps", "2", "--eval-n", "0", "--log", "/proc/x/log.jsonl") == 2
    assert capsys.readouterr().err.startswith("flowmaps train: error: --log '/proc/x/log.jsonl': cannot create")
    absent = str(tmp_path / "absent")  # checked before the checkpoint is loaded
    assert main(["sample", "--checkpoint", absent, "--out", "/proc/x/s.npy"]) == 2
    assert capsys.readouterr().err.startswith("flowmaps sample: error: --out '/proc/x/s.npy': cannot create")
    assert main(["evaluate", "--checkpoint", absent, "--json", str(blocker / "e.json")]) == 2
    assert capsys.readouterr().err.startswith(f"flowmaps evaluate: error: --json {str(blocker / 'e.json')!r}")


def test_the_evaluation_after_training_shows_a_bar(tmp_path, capsys):
    argv = ["train", "--data", "checkerboard", "--out", str(tmp_path / "ck"), "--width", "16", "--depth", "2",
            "--batch-size", "64", "--steps", "2", "--eval-n", "500", "--eval-steps", "1,2"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "2/2" in err and "N = 2 done" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--data", "checkerboard", "--out", "x", "--seed=-1e30"], "--seed: expected a whole number"),
        (["train", "--data", "checkerboard", "--out", "x", "--seed", str(2**64)], f"got '{2**64}'"),
        (["sample", "--checkpoint", "c", "--out", "s.npy", "--seed", str(2**64)], "--seed: must be a whole number"),
        (
            ["evaluate", "--checkpoint", "c", "--seeds", f"0,{2**63}"],
            f"--seeds: must be a whole number from 0 to {2**63 - 1}",
        ),
    ],
)
def test_seeds_torch_cannot_take_are_refused_as_typed(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "1000000000000000019884624838656" not in err


@pytest.mark.parametrize("name", ["checkpoints/fmnist-lsd", "./ck/x", "../ck", "a/b/c", "~nobody/ck", "mine/absent"])
def test_a_local_looking_checkpoint_name_is_not_tried_on_the_hub(name, tmp_path, monkeypatch, capsys):
    """Outside the repo a relative checkpoint path fails at once, saying the folder does not exist
    (no Hub retries); a name whose first part is a folder here counts as local too."""
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    start = time.perf_counter()
    assert main(["sample", "--checkpoint", name, "--out", str(tmp_path / "s.npy")]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.startswith(f"flowmaps sample: error: --checkpoint: no checkpoint folder {name!r}: the folder ")
    assert "does not exist" in err and "not looked up on the Hugging Face Hub" in err


def test_a_hub_lookup_is_announced_and_its_log_lines_show_once(tmp_path):
    """A checkpoint name that is no folder but reads as a Hub id is announced before the lookup
    (huggingface_hub retries an unreachable Hub for about 25 s), and huggingface_hub's own log
    lines (its retries) show once, not also through the CLI's handler. The lookup is offline here
    (HF_HUB_OFFLINE), so it fails at once on an empty cache."""
    code = (
        "import logging, sys\n"
        "from flowmaps.cli import main\n"
        "status = main(['sample', '--checkpoint', 'someone/absent-model', '--n', '4', '--out', sys.argv[1]])\n"
        "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
        "sys.exit(status)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.png")], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count("Retrying in 1s") == 1, out.stderr
    assert "no checkpoint folder 'someone/absent-model'" in out.stderr
