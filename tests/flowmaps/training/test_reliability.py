"""Reliability and safety: bad input everywhere, crashes mid-run and mid-save, untrusted files.

Every test prints what it tried (run with ``-s`` to see it); docs/reliability.md summarises.
Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import ast
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import AppConfig, Limits
from app.validation import (
    parse_time_grid,
    parse_train_settings,
    points_from_drawing,
    points_from_upload,
)
from flowmaps.data.point_cloud import points_from_csv
from flowmaps.hub import WEIGHTS_NAME, from_pretrained, resolve_checkpoint, save_pretrained
from flowmaps.registry import build_model
from flowmaps.training import load_state_file, save_state_file
from tests import REPO

LSD = "LSD (Lagrangian)"
MLP = {"name": "mlp", "dim": 2, "width": 16, "depth": 2}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _refused(fn, *args, **kwargs) -> str:
    """Call fn; it must raise InputError / ValueError (nothing else); return the message."""
    try:
        fn(*args, **kwargs)
    except ValueError as err:  # InputError is a ValueError
        msg = str(err)
        assert msg and "Traceback" not in msg
        return msg
    raise AssertionError(f"{fn.__name__}{args!r:.80} was accepted")


# ================================================================================ 1. bad input
GRIDS = [
    # (custom text, words the message must hold)
    ("0, 0.7, 0.3, 1", ["custom times", "strictly increasing", "0.3 after 0.7", "position 3"]),
    ("0, 0.5, 0.5, 1", ["custom times", "strictly increasing", "0.5 after 0.5"]),
    ("0, 1.5", ["custom times", "outside [0, 1]"]),
    ("-0.1, 1", ["custom times", "outside [0, 1]"]),
    ("0, nan, 1", ["custom times", "entry 2", "finite"]),
    ("0, inf, 1", ["custom times", "finite"]),
    ("0, lots, 1", ["custom times", "'lots'", "not a number"]),
    ("", ["custom times", "empty"]),
    ("0.2, 1", ["custom times", "start at 0"]),
    (
        ", ".join(f"{i / 300:.4f}" for i in range(301)),
        ["custom times: the box holds more than 256 steps (the cap); use at most 257 times"],
    ),
    ("0, " * 8000 + "1", ["custom times", "too long", "at most 20,000"]),
]


@pytest.mark.parametrize("text, words", GRIDS, ids=[f"grid{i}" for i in range(len(GRIDS))])
def test_bad_time_grids(text, words):
    msg = _refused(parse_time_grid, "custom", 4, text)
    print(f"grid {text[:40]!r} -> {msg[:120]}")
    for w in words:
        assert w in msg, (w, msg)


def test_thousands_of_steps_on_a_named_grid():
    for kind in ("uniform", "edm", "cosine"):
        msg = _refused(parse_time_grid, kind, 5000, "")
        assert "steps" in msg and "[1, 256]" in msg, msg
    msg = _refused(parse_time_grid, "spiral", 4, "")
    assert "time grid" in msg and "uniform" in msg
    from flowmaps.sampling import parse_grid

    msg = _refused(parse_grid, ", ".join(["0.5"] * 2_000_000))  # the library: stops reading at the cap
    assert msg == "time grid has more than 1024 steps (the cap); use at most 1025 times", msg


SETTINGS = [
    ({"batch": 0}, ["batch size", "[16, 4096]"]),
    ({"batch": -64}, ["batch size", "[16, 4096]"]),
    ({"lr": -1e-3}, ["learning rate", "[1e-05, 0.1]"]),
    ({"lr": 0.0}, ["learning rate", "[1e-05, 0.1]"]),
    ({"lr": "fast"}, ["learning rate", "not a number", "[1e-05, 0.1]"]),
    ({"lr": None}, ["learning rate: the field is empty; type a number in the allowed range [1e-05, 0.1]"]),
    ({"lr": " "}, ["learning rate: the field is empty; type a number in the allowed range [1e-05, 0.1]"]),
    ({"eta": 1.5}, ["eta", "[0, 1]"]),
    ({"eta": -0.1}, ["eta", "[0, 1]"]),
    ({"eta": 0.0}, ["eta", "use 0.05 to 0.95"]),
    ({"width": 10**6}, ["width", "[16, 512]"]),
    ({"width": 10**400}, ["width", "far too large", "[16, 512]"]),
    ({"depth": 100}, ["depth", "[1, 6]"]),
    ({"steps": 0}, ["steps", "[1, 20000]"]),
    ({"steps": 10**9}, ["steps", "[1, 20000]"]),
    ({"steps": float("inf")}, ["steps", "finite", "[1, 20000]"]),
    ({"seed": -1}, ["seed", "[0, 2147483647]"]),
    ({"method": "magic"}, ["method", "LSD (Lagrangian)"]),
]


@pytest.mark.parametrize("change, words", SETTINGS, ids=[f"settings{i}" for i in range(len(SETTINGS))])
def test_bad_settings(change, words):
    args = {"method": LSD, "steps": 100, "batch": 256, "lr": 1e-3, "eta": 0.75, "width": 64, "depth": 2, "seed": 0}
    args.update(change)
    msg = _refused(parse_train_settings, **args, limits=Limits())
    print(f"settings {change!r:.40} -> {msg[:120]}")
    for w in words:
        assert w in msg, (w, msg)


def _canvas(h=200, w=200) -> np.ndarray:
    return np.full((h, w, 4), 255, dtype=np.uint8)


def test_bad_drawings():
    blank = _canvas()
    dot = _canvas()
    dot[100, 100, :3] = 0
    line = _canvas()
    line[100, 100:102, :3] = 0
    cases = [
        (None, "empty"),
        ({"layers": [], "composite": None}, "empty"),
        ({"layers": [None], "composite": blank}, "nothing is drawn"),
        (blank, "nothing is drawn"),
        (dot, "only 1 pixels"),
        (line, "only 2 pixels"),
        (np.zeros(5), "expected an image"),
        (np.zeros((2, 2, 2, 2)), "expected an image"),
    ]
    for value, words in cases:
        msg = _refused(points_from_drawing, value)
        print(f"drawing {getattr(value, 'shape', value)!r:.40} -> {msg}")
        assert msg.startswith("drawing:") and words in msg, msg


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_bad_csv_uploads(tmp_path):
    cases = [
        ("x,y\n1,2\n3,hello\n", ["CSV file", "line 3", "'hello' is not a number"]),
        ("1,2\nnan,4\n", ["CSV file", "line 2", "non-finite"]),
        ("1,2\n3,4,5\n", ["CSV file", "line 2 has 3 values", "exactly 2"]),
        ("1\n2\n", ["CSV file", "line 1 has 1 value;"]),
        ("x,y\n", ["CSV file", "0 data rows", "at least 2"]),
        ("1,2\n", ["CSV file", "1 data row;"]),
        ("1,2\n1,2\n1,2\n", ["CSV file", "the same"]),
        ("1e39,1\n2,3\n", ["CSV file: line 1, column 1: 1e39 is too large"]),
        ("x,y\n\n1,2\n3,-1e39\n", ["CSV file: line 4, column 2: -1e39 is too large"]),
        (b"\x00\x01binary\x00", ["CSV file", "binary"]),
        ("1,2\n" * 2000, ["more than 1,000 rows of points, the most the app reads", "keep at most 1,000"]),
    ]
    for i, (text, words) in enumerate(cases):
        path = _write(tmp_path, f"c{i}.csv", text)
        msg = _refused(points_from_upload, str(path), max_rows=1000)
        print(f"csv {text[:24]!r} -> {msg}")
        for w in words:
            assert w in msg, (w, msg)
    assert "missing" in _refused(points_from_upload, str(tmp_path / "gone.csv"))
    assert "could not read" in _refused(points_from_upload, 12)


def test_ten_million_rows_are_cut_off_early(tmp_path):
    """A 10-million-row CSV: the app refuses it by size before reading; the library stops
    reading at the row cap without holding the file's lines in memory."""
    big = tmp_path / "big.csv"
    with open(big, "w") as fh:
        block = "0.1,0.2\n" * 100_000
        for _ in range(100):
            fh.write(block)
    size_mb = big.stat().st_size / 1e6
    msg = _refused(points_from_upload, str(big), max_bytes="2mb")
    assert f"the file is {big.stat().st_size / 2**20:.1f} MB, above the limit of 2 MB; subsample it" in msg, msg
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    msg = _refused(points_from_csv, big, max_rows=100_000)
    seconds = time.perf_counter() - t0
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(
        f"10M rows ({size_mb:.0f} MB): app -> size cap; library -> {msg!r} "
        f"in {seconds:.2f} s, peak RSS +{grew_mb:.0f} MB"
    )
    assert "more than 100,000 rows, the most max_rows=100000 reads" in msg
    assert grew_mb < 100  # streamed: memory stays flat (time is printed, not asserted)


def test_csv_upload_naming_a_server_file_is_read_as_text(tmp_path):
    """An upload whose content is a path on the server must not make the server open that file."""
    secret = _write(tmp_path, "secret.csv", "x,y\n0.25,0.5\nSECRET-LINE,1\n")
    upload = _write(tmp_path, "upload.csv", str(secret))
    msg = _refused(points_from_upload, str(upload))
    print(f"upload holding {secret.name!r} -> {msg}")
    assert "SECRET" not in msg and "0 data rows" in msg


# ------------------------------------------------------------------------------ checkpoint files
@pytest.fixture()
def bad_checkpoints(tmp_path):
    """A checkpoint folder with one good model and one broken checkpoint of each kind."""
    import pickle

    root = tmp_path / "checkpoints"
    torch.manual_seed(0)
    cfg = {"net": MLP, "sigma": 0.5, "data": "checkerboard", "method": "lsd"}
    good = save_pretrained(build_model(cfg), root / "checkerboard-good", cfg)
    data = (good / WEIGHTS_NAME).read_bytes()

    trunc = save_pretrained(build_model(cfg), root / "checkerboard-truncated", cfg)
    (trunc / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])

    wide = {**cfg, "net": {**MLP, "width": 32}}
    shapes = save_pretrained(build_model(cfg), root / "checkerboard-shapes", cfg)
    (shapes / "config.json").write_text(json.dumps(wide))  # weights of width 16, config says 32

    other = save_pretrained(build_model(cfg), root / "checkerboard-other", cfg)
    unet = {"name": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16}
    (other / "config.json").write_text(json.dumps({**cfg, "net": {**unet, "name": "mlp", "dim": 2}}))

    pick = save_pretrained(build_model(cfg), root / "checkerboard-pickle", cfg)
    (pick / WEIGHTS_NAME).write_bytes(pickle.dumps({"net.out.weight": [1.0, 2.0]}))

    notjson = save_pretrained(build_model(cfg), root / "checkerboard-notjson", cfg)
    (notjson / "config.json").write_text("{not json")
    return root


def test_broken_checkpoints_give_clear_errors_and_the_app_survives(bad_checkpoints, tmp_path):
    import gradio as gr

    from app.events import guarded
    from app.ui import FlowMapsApp

    cfg = AppConfig(checkpoints_dir=bad_checkpoints, cache_dir=tmp_path / "cache", limits=Limits())
    fm = FlowMapsApp(cfg)
    names = fm.store.names()
    assert "checkerboard-good" in names and "checkerboard-notjson" not in names
    assert any("checkerboard-notjson" in w for w in fm.store.warnings)
    load = guarded("Loading the model")(fm.load_pretrained)
    from app.live import LiveSession

    expect = {
        "checkerboard-truncated": "not a valid safetensors file",
        "checkerboard-shapes": "shape mismatches",
        "checkerboard-other": "bad arguments for network 'mlp'",
        "checkerboard-pickle": "not a valid safetensors file",
    }
    for name, words in expect.items():
        with pytest.raises(gr.Error) as err:
            load(LiveSession(), name, LSD, 100, 256, 1e-3, 0.75, 64, 2, 0)
        msg = err.value.message
        print(f"checkpoint {name} -> {msg[:160]}")
        assert "Loading the model failed" in msg and words in msg and "still running" in msg, msg
    # the good one still loads, in a fresh session, after all the failures
    sess = LiveSession()
    out = load(sess, "checkerboard-good", LSD, 100, 256, 1e-3, 0.75, 64, 2, 0)
    assert "loaded" in out[3] and sess.has_model


def test_library_names_the_problem_of_each_broken_checkpoint(bad_checkpoints):
    root = bad_checkpoints
    assert "not a valid safetensors file" in _refused(from_pretrained, root / "checkerboard-truncated")
    msg = _refused(from_pretrained, root / "checkerboard-shapes")
    assert "shape" in msg and "net.out.weight" in msg, msg
    assert "not a valid safetensors file" in _refused(from_pretrained, root / "checkerboard-pickle")


# ================================================================================ 3. crashes
TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from flowmaps.data.toy import sample_toy
    from flowmaps.objectives import make_objective
    from flowmaps.registry import build_model
    from flowmaps.training import TrainConfig, Trainer

    out, steps, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = build_model({"net": {"name": "mlp", "dim": 2, "width": 16, "depth": 2}, "sigma": 0.5})
    cfg = TrainConfig(steps=steps, batch_size=64, lr=3e-3, lr_decay_start=50, dtype="float64", seed=5,
                      log_every=1, checkpoint_every=every, checkpoint_path=out + "/trainer.safetensors",
                      log_path=out + "/log.jsonl", guard_every=10)
    data = lambda n, g: sample_toy("checkerboard", n, g, dtype=torch.float64)
    trainer = Trainer(model, make_objective("lsd"), data, cfg)
    import os
    if os.path.exists(cfg.checkpoint_path):
        trainer.resume(cfg.checkpoint_path)
        print("resumed at", trainer.global_step, flush=True)
    trainer.train(progress=False)
    print("finished", trainer.global_step, flush=True)
    """
)


def _spawn(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _log(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill
            pass
    return out


def _wait_for(pred, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the kill: {proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.01)


def test_sigkill_mid_run_resumes_to_the_same_result(tmp_path):
    """Two SIGKILLs at random steps (after a checkpoint), two resumes: the loss curve and the
    final weights equal an uninterrupted run's exactly (CPU, float64, one thread)."""
    steps, every = 160, 23
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    ref_proc = _spawn(script, str(straight), str(steps), str(every))  # runs alongside
    rng = random.Random(0)
    kills = []
    for _ in range(2):
        proc = _spawn(script, str(broken), str(steps), str(every))
        done = len(_log(broken))
        target = rng.randint(done + every + 1, min(steps - 5, done + 2 * every + 20))
        _wait_for(lambda t=target: len(_log(broken)) >= t, 120, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_state_file(broken / "trainer.safetensors")
        kills.append((len(_log(broken)), int(state["step"])))
    proc = _spawn(script, str(broken), str(steps), str(every))
    assert proc.wait(120) == 0, proc.stdout.read()
    assert "resumed at" in proc.stdout.read()
    assert ref_proc.wait(120) == 0, ref_proc.stdout.read()

    ref = {e["step"]: e["loss"] for e in _log(straight)}
    assert sorted(ref) == list(range(1, steps + 1))
    seen: dict[int, float] = {}
    replayed = 0
    for e in _log(broken):  # steps after a checkpoint were logged before the kill and again after
        if e["step"] in seen:
            replayed += 1
            assert e["loss"] == seen[e["step"]], f"step {e['step']} differs on replay"
        seen[e["step"]] = e["loss"]
    assert seen == ref, "the resumed loss curve differs from the uninterrupted one"
    a, b = load_state_file(straight / "trainer.safetensors"), load_state_file(broken / "trainer.safetensors")
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    print(
        f"SIGKILL at logged step {kills[0][0]} (checkpoint at {kills[0][1]}) and {kills[1][0]} "
        f"(checkpoint at {kills[1][1]}); resumed twice; {replayed} steps replayed identically; "
        f"{steps}-step loss curve and weights equal the uninterrupted run bit for bit"
    )
    assert all(k[1] % every == 0 and k[1] < k[0] for k in kills)


SAVE_LOOP = textwrap.dedent(
    """
    import sys, torch
    from flowmaps.training import save_state_file
    path = sys.argv[1]
    states = [{"step": i, "w": torch.full((1_000_000,), float(i))} for i in (1, 2)]
    i = 0
    while True:
        save_state_file(states[i % 2], path)
        if i == 0:
            print("saved", flush=True)
        i += 1
    """
)


def test_sigkill_during_saves_leaves_a_whole_checkpoint(tmp_path):
    """A process saving 4 MB checkpoints back to back is killed at random moments (almost surely
    mid-save): the file on disk is always one whole earlier checkpoint."""
    script = tmp_path / "save_loop.py"
    script.write_text(SAVE_LOOP)
    procs = [(_spawn(script, str(tmp_path / f"k{i}" / "t.safetensors")), tmp_path / f"k{i}") for i in range(3)]
    rng = random.Random(1)
    for proc, _ in procs:
        assert proc.stdout.readline().strip() == "saved"
    for proc, _ in procs:
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
    leftovers = 0
    for proc, folder in procs:
        proc.wait()
        state = load_state_file(folder / "t.safetensors")
        assert state["step"] in (1, 2) and torch.all(state["w"] == float(state["step"]))
        leftovers += len([p for p in folder.iterdir() if p.name.endswith(".tmp")])
    print(
        f"3 processes SIGKILLed while saving in a loop: 3 whole checkpoints; "
        f"{leftovers} stale .tmp files left beside them"
    )


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save that fails midway (disk full at fsync, or at the rename) leaves the previous
    checkpoint readable and no temporary file behind; training can resume from it."""
    path = tmp_path / "t.safetensors"
    save_state_file({"step": 1, "w": torch.ones(10)}, path)
    real_fsync = os.fsync
    for where in ("fsync", "replace"):

        def boom(*args, where=where, **kwargs):
            raise OSError(f"no space left on device ({where})")

        monkeypatch.setattr(os, where, boom)
        with pytest.raises(OSError, match="no space"):
            save_state_file({"step": 2, "w": torch.zeros(10)}, path)
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.undo()
        state = load_state_file(path)
        assert state["step"] == 1 and torch.equal(state["w"], torch.ones(10))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
        print(f"save failing at os.{where}: previous checkpoint intact, no temporary file left")


# ================================================================================ 4. untrusted files
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}


def _source_files() -> list[Path]:
    files = sorted((REPO / "flowmaps").rglob("*.py")) + sorted((REPO / "app").rglob("*.py"))
    return files + [REPO / "app.py"]


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                found.append(f"{where} calls {f.id}()")
            if isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else ""
                if base == "torch" and f.attr == "load":
                    found.append(f"{where} calls torch.load")
                if base in FORBIDDEN_MODULES:
                    found.append(f"{where} calls {base}.{f.attr}")
                if base == "os" and f.attr in ("system", "popen") or base == "subprocess":
                    found.append(f"{where} runs a shell command ({base}.{f.attr})")
                if base in ("np", "numpy") and f.attr == "load":  # refuses pickles unless asked to
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                        if "allow_pickle" in kw:
                            found.append(f"{where} calls np.load with allow_pickle")
            for kw in node.keywords:
                if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value:
                    found.append(f"{where} passes shell=True")
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
    return found


def test_no_code_evaluates_user_text_or_unpickles():
    files = _source_files()
    bad = [v for f in files for v in _violations(f)]
    print(
        f"scanned {len(files)} files of flowmaps/ and app/ for eval/exec/compile/pickle/torch.load/shell: "
        f"{bad or 'none'}"
    )
    assert not bad, bad
    # the scanner itself finds what it looks for
    probe = REPO / "tests" / "_probe_scan.py"
    try:
        probe.write_text("import pickle\nx = eval('1')\ntorch.load('f')\nnp.load('f', allow_pickle=True)\n")
        assert len(_violations(probe)) == 4
    finally:
        probe.unlink()


def test_weights_are_read_only_through_safetensors(tmp_path):
    """A pickle posing as model.safetensors (or as a trainer state) is refused without running."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = save_pretrained(build_model({"net": MLP, "sigma": 0.5}), tmp_path / "ck", {"net": MLP, "sigma": 0.5})
    blob = pickle.dumps({"w": Payload()})
    (folder / WEIGHTS_NAME).write_bytes(blob)
    (tmp_path / "trainer.safetensors").write_bytes(blob)
    assert "not a valid safetensors file" in _refused(from_pretrained, folder)
    assert "not a valid safetensors file" in _refused(load_state_file, tmp_path / "trainer.safetensors")
    assert not marker.exists()


def test_user_model_names_never_leave_the_checkpoint_folder(tmp_path):
    from app.live import LiveSession
    from app.ui import FlowMapsApp

    root = tmp_path / "checkpoints"
    cfg = {"net": MLP, "sigma": 0.5, "data": "checkerboard", "method": "lsd"}
    save_pretrained(build_model(cfg), root / "checkerboard-lsd", cfg)
    outside = save_pretrained(build_model(cfg), tmp_path / "outside", cfg)
    (root / "escape").symlink_to(outside)
    names = [
        "../outside",
        str(outside),
        "/etc/passwd",
        "checkerboard-lsd/../../outside",
        "..",
        "escape/..",
        "~",
        "a\x00b",
    ]
    for name in [*names, "escape"]:
        with pytest.raises(ValueError):
            resolve_checkpoint(name, root)
    fm = FlowMapsApp(AppConfig(checkpoints_dir=root, cache_dir=tmp_path / "cache", limits=Limits()))
    for name in names:
        msg = _refused(fm.load_pretrained, LiveSession(), name, LSD, 100, 256, 1e-3, 0.75, 64, 2, 0)
        assert "is not a shipped 2-D checkpoint" in msg, msg
        msg = _refused(fm.resolve_model, LiveSession(), name)
        assert "is not this session's model or a shipped 2-D checkpoint" in msg
    print(f"model names tried: {names + ['escape (symlink out)']}: all refused")


def test_uploads_are_size_capped():
    from app.ui import launch_kwargs

    lim = Limits()
    assert launch_kwargs(AppConfig(limits=lim))["max_file_size"] == lim.max_upload == "2mb"
    assert lim.max_csv_rows == 100_000
