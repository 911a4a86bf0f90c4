"""Checkpoints: safetensors round trips, clear errors, no pickle execution, the Hub cache path."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

from flowmaps.hub import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    from_pretrained,
    push_to_hub,
    render_model_card,
    resolve_checkpoint,
    save_pretrained,
)
from flowmaps.registry import build_model
from tests import REPO

CONFIG = {
    "net": {"name": "mlp", "dim": 2, "width": 16, "depth": 2},
    "sigma": 0.5,
    "learn_loss_weight": True,
    "loss_weight": {"dim": 8, "hidden": 4},
    "data": "checkerboard",
}


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    with torch.no_grad():  # make the zero-initialised loss-weight head non-trivial
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _outputs(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g)
    s = torch.rand(32, generator=g)
    t = torch.rand(32, generator=g)
    with torch.no_grad():
        return torch.cat([model.jump(x, s, t), model.log_weight(s, t)[:, None]], dim=1)


def test_round_trip_fp32_is_bit_exact(tmp_path):
    model = _model()
    folder = save_pretrained(model, tmp_path / "ck", CONFIG, card={"data": "checkerboard"})
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors"]
    loaded, config = from_pretrained(folder)
    assert config["net"] == CONFIG["net"] and config["data"] == "checkerboard"
    assert config["weights_dtype"] == "float32"
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert torch.equal(_outputs(model), _outputs(loaded))
    assert not loaded.training


def _strict_json(text: str):
    """Parse as JSON.parse would: the bare words Infinity and NaN that Python's json writes are errors."""

    def refuse(word: str):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_config_json_is_strict_json_with_null_for_non_finite_numbers(tmp_path):
    config = {**CONFIG, "metrics": {"kl": [0.07, math.inf], "drift": -math.inf, "nan": math.nan}}
    folder = save_pretrained(_model(), tmp_path / "ck", config, card={"metrics": [{"per seed": [math.inf, 0.1]}]})
    written = _strict_json((folder / "config.json").read_text())
    assert written["metrics"] == {"kl": [0.07, None], "drift": None, "nan": None}
    assert written["card"]["metrics"] == [{"per seed": [None, 0.1]}]
    assert "Infinity" not in (folder / "README.md").read_text()
    for shipped in sorted((REPO / "checkpoints").glob("*/config.json")):  # the shipped ones too
        _strict_json(shipped.read_text())


def test_round_trip_fp16(tmp_path):
    model = _model()
    folder = save_pretrained(model, tmp_path / "ck16", CONFIG, dtype="float16")
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    loaded, config = from_pretrained(folder)
    assert config["weights_dtype"] == "float16"
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == torch.float32
        assert torch.equal(w, v.half().float()), k  # exactly the fp16 rounding, then upcast
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=2e-3, atol=2e-3)


def test_trainer_like_object_saves_ema_weights(tmp_path):
    class Holder:
        model = _model(0)
        ema_model = _model(1)

    loaded, _ = from_pretrained(save_pretrained(Holder(), tmp_path / "a", CONFIG))
    assert torch.equal(_outputs(loaded), _outputs(Holder.ema_model))
    loaded, _ = from_pretrained(save_pretrained(Holder(), tmp_path / "b", CONFIG, ema=False))
    assert torch.equal(_outputs(loaded), _outputs(Holder.model))


def test_truncated_file_gives_clear_error(tmp_path):
    folder = save_pretrained(_model(), tmp_path / "ck", CONFIG)
    weights = folder / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        from_pretrained(folder)
    weights.write_bytes(data[:5])  # not even a header length
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        from_pretrained(folder)


class _Payload:
    """Unpickling this object creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_posing_as_safetensors_is_rejected_and_not_executed(tmp_path):
    folder = save_pretrained(_model(), tmp_path / "ck", CONFIG)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"net.out.weight": _Payload(str(marker))})
    # The payload is live: unpickling it does create the marker.
    pickle.loads(payload).popitem()[1].close()
    assert marker.exists()
    marker.unlink()
    (folder / WEIGHTS_NAME).write_bytes(payload)
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        from_pretrained(folder)
    assert not marker.exists()


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        from_pretrained(tmp_path / "does-not-exist" / "deeper")
    folder = save_pretrained(_model(), tmp_path / "ck", CONFIG)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(folder)
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="is a file"):
        from_pretrained(folder / "README.md")


def test_config_mismatch_names_the_keys(tmp_path):
    folder = save_pretrained(_model(), tmp_path / "ck", CONFIG)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["net"]["width"] = 8  # wrong shapes
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatches: net\.hidden\.0\.bias"):
        from_pretrained(folder)
    config["net"]["width"] = 16
    config["learn_loss_weight"] = False  # the weights hold loss_weight.* entries the model lacks
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected keys: loss_weight\.net"):
        from_pretrained(folder)
    config["learn_loss_weight"] = True
    config["net"]["depth"] = 3  # the model wants a layer the weights lack
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing keys: net\.hidden\.2\.bias"):
        from_pretrained(folder)


def _lay_out_hub_cache(cache: Path, repo_id: str, source: Path, commit: str, exist_ok: bool = False) -> None:
    """The Hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/files}."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "refs").mkdir(parents=True, exist_ok=exist_ok)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_hub_id_through_snapshot_download_offline(tmp_path, monkeypatch):
    model = _model()
    folder = save_pretrained(model, tmp_path / "ck", CONFIG)
    cache = tmp_path / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _lay_out_hub_cache(cache, "someone/flowmaps-test", folder, commit)
    monkeypatch.setenv("FLOWMAPS_HUB_OFFLINE", "1")
    loaded, config = from_pretrained("someone/flowmaps-test", cache_dir=cache)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert config["data"] == "checkerboard"
    loaded, _ = from_pretrained("someone/flowmaps-test", cache_dir=cache, revision=commit)
    assert torch.equal(_outputs(loaded), _outputs(model))
    with pytest.raises(FileNotFoundError, match="offline"):
        from_pretrained("someone/not-cached", cache_dir=cache)


def test_save_replaces_folder_atomically_and_keeps_other_files(tmp_path, monkeypatch):
    target = tmp_path / "ck"
    save_pretrained(_model(0), target, CONFIG)
    (target / "trainer.safetensors").write_bytes(b"state")
    save_pretrained(_model(1), target, CONFIG)
    assert (target / "trainer.safetensors").read_bytes() == b"state"
    assert torch.equal(_outputs(from_pretrained(target)[0]), _outputs(_model(1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folders left

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_model(2), target, CONFIG)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(_outputs(from_pretrained(target)[0]), _outputs(_model(1)))


def test_resolve_checkpoint_rejects_escapes(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    assert resolve_checkpoint("checkerboard-lsd_v1.0", root) == (root / "checkerboard-lsd_v1.0").resolve()
    for bad in ["..", "../x", "a/../../b", "/etc", "a/b", "a\\b", "", ".hidden", "a\x00b", "x" * 200, "a..b"]:
        with pytest.raises(ValueError, match="invalid checkpoint name"):
            resolve_checkpoint(bad, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        resolve_checkpoint("link", root)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint("absent", root, must_exist=True)


def test_model_card_has_the_training_facts():
    card = render_model_card(
        {
            "title": "Checkerboard LSD",
            "data": "checkerboard",
            "network": "MLP 4x512",
            "method": "lsd",
            "steps": 1000,
            "wall_time": 3600.0,
            "hardware": "1 GPU",
            "metrics": [{"N": 1, "KL": 0.0864, "floor": 0.066}, {"N": 2, "KL": 0.0765, "floor": 0.066}],
        },
        {"sigma": 0.5},
    )
    assert card.startswith("---\nlibrary_name: flowmaps")
    for text in [
        "# Checkerboard LSD",
        "**Steps**: 1,000",
        "**Wall time**: 60.0 min",
        "| N | KL | floor |",
        "| 1 | 0.0864 | 0.066 |",
        "**Hardware**: 1 GPU",
        '"sigma": 0.5',
    ]:
        assert text in card, text


# ------------------------------------------------------------------ the shipped checkpoints

SHIPPED = sorted(p for p in (REPO / "checkpoints").iterdir() if (p / CONFIG_NAME).is_file())

# sha256 (first 16 hex digits) over (key, dtype, shape, bytes) of every tensor of the state dict
# as loaded by the hand-written loader that preceded the mixin (flowmaps 0.1.0): loading through
# the mixin must give the same tensors, bit for bit.
# Digests of each shipped state dict as the loader before the mixin read it. The checkerboard models
# were retrained after the mixin came (330,000 steps): theirs are the tensors as safetensors' own
# load_file reads them from the file, a reader independent of the mixin.
LOADED_BEFORE_MIXIN = {
    "checkerboard-esd": "7e773ca6177b37c6",
    "checkerboard-fm": "f154e8088cd03e37",
    "checkerboard-lsd": "178fbaca6d8b0679",
    "checkerboard-psd-m": "957dcaf6a8c974a4",
    "checkerboard-psd-u": "2770cd510a1a19b7",
    "eight_gaussians-esd": "d5b2d3cbbf03d763",
    "eight_gaussians-lsd": "476e925b72d7e408",
    "fid-classifier": "72523edcedfde50c",
    "fmnist-fm": "bfb77359f74ff01b",
    "fmnist-lsd": "24c1d945dab531b5",
    "fmnist-psd-m": "d232b2dc0207d32c",
    "fmnist-psd-u": "70632670861843ec",
}


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def _load_shipped(folder: Path) -> tuple[torch.nn.Module, dict]:
    if folder.name == "fid-classifier":
        from flowmaps.fid import load_feature_network

        return load_feature_network(folder), json.loads((folder / CONFIG_NAME).read_text())
    return from_pretrained(folder)


def test_every_shipped_checkpoint_loads_bit_for_bit():
    from safetensors import safe_open

    assert sorted(p.name for p in SHIPPED) == sorted(LOADED_BEFORE_MIXIN)
    for folder in SHIPPED:
        model, _ = _load_shipped(folder)
        state = model.state_dict()
        assert _digest(state) == LOADED_BEFORE_MIXIN[folder.name], folder.name
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as fh:  # an independent read of the file
            assert set(fh.keys()) == set(state), folder.name
            for k in fh.keys():
                raw = fh.get_tensor(k)
                want = raw.to(state[k].dtype) if raw.is_floating_point() else raw
                assert torch.equal(state[k], want), (folder.name, k)


def test_every_shipped_card_is_its_config_rendered():
    from huggingface_hub import ModelCard

    from flowmaps.hub.model_card import model_card, read_metrics_rows

    for folder in SHIPPED:
        config = json.loads((folder / CONFIG_NAME).read_text())
        text = (folder / "README.md").read_text()
        assert text == str(model_card(config, read_metrics_rows(folder))), f"{folder.name}: python -m flowmaps.hub"
        data = ModelCard(text).data
        assert data.library_name == "flowmaps" and data.license == "mit" and data.pipeline_tag
        assert "arxiv.org/abs/2505.18825" in text
        kls = config.get("metrics", {}).get("checkerboard_kl", {})
        if kls and all(e["mean"] is None for e in kls.values()):  # every KL infinite (an empty target bin)
            assert data.eval_results is None, folder.name  # the model-index holds finite numbers only
        else:
            assert data.eval_results, folder.name  # machine-readable metrics
            assert all(math.isfinite(r.metric_value) for r in data.eval_results)
        method = config.get("method")
        if method == "fm":  # a velocity field: not a flow map, not self-distilled, no flow-map KL
            assert "self-distillation" not in data.tags and "trained by self-distillation" not in text
            assert "not a flow map" in text
            assert "checkerboard_kl" not in config.get("metrics", {})
            assert not any(
                r.metric_name.startswith(("FID, flow map", "checkerboard KL, flow map")) for r in data.eval_results
            )
        elif method in ("lsd", "esd", "psd-m", "psd-u"):
            assert "self-distillation" in data.tags and f"({method.upper()})" in text
        if config.get("data") == "fashion-mnist" or folder.name == "fid-classifier":
            assert data.datasets == ["zalando-datasets/fashion_mnist"]
        if config.get("base_model"):
            assert data.base_model == config["base_model"] and (REPO / "checkpoints" / data.base_model).is_dir()
    by_name = {p.name: json.loads((p / CONFIG_NAME).read_text()) for p in SHIPPED}
    for name in ("fmnist-lsd", "fmnist-psd-m", "fmnist-psd-u"):  # continued from the flow-matching network
        assert by_name[name]["base_model"] == "fmnist-fm"
    assert "base_model" not in by_name["fmnist-fm"]


def test_card_metrics_match_the_config():
    from huggingface_hub import ModelCard

    for name in ("checkerboard-lsd", "checkerboard-esd", "checkerboard-psd-m", "checkerboard-psd-u"):
        config = json.loads((REPO / "checkpoints" / name / CONFIG_NAME).read_text())
        card = ModelCard((REPO / "checkpoints" / name / "README.md").read_text())
        got = {r.metric_name: r.metric_value for r in card.data.eval_results}
        for n, entry in config["metrics"]["checkerboard_kl"].items():
            key = f"checkerboard KL, flow map, N = {n}"
            if entry["mean"] is None:  # infinite (an empty target bin on some seed): no number to index
                assert key not in got, (name, n)
            else:
                assert got[key] == pytest.approx(entry["mean"], abs=1e-6), (name, n)


# ------------------------------------------------------------------ push_to_hub against a local stand-in


class _LocalHub(HfApi):
    """An HfApi whose repository store is a local folder laid out as huggingface_hub's cache
    (models--owner--name/refs/main, snapshots/<commit>/...), so that what is pushed is then read by
    the real hf_hub_download in offline mode. Only the two calls that would reach the network
    (create_repo, upload_folder) are replaced."""

    def __init__(self, cache: Path) -> None:
        super().__init__(endpoint="https://hub.invalid", token=False)
        self.cache = cache
        self.commits: list[str] = []

    def create_repo(self, repo_id: str, **kwargs):
        from huggingface_hub import RepoUrl

        return RepoUrl(f"{self.endpoint}/{repo_id}", endpoint=self.endpoint)

    def upload_folder(self, *, repo_id: str, folder_path, repo_type=None, commit_message=None, **kwargs):
        files = sorted(p for p in Path(folder_path).rglob("*") if p.is_file())
        h = hashlib.sha1()
        for p in files:
            h.update(p.name.encode() + p.read_bytes())
        commit = h.hexdigest()
        _lay_out_hub_cache(self.cache, repo_id, Path(folder_path), commit, exist_ok=True)
        self.commits.append(commit_message)
        return f"{self.endpoint}/{repo_id}/commit/{commit}"


def test_push_to_hub_then_load_it_back(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    model = _model()
    hub = _LocalHub(tmp_path / "hub-cache")
    config = {**CONFIG, "method": "lsd", "base_model": "parent", "metrics": {"checkerboard_kl": {"1": {"mean": 0.09}}}}
    url = push_to_hub(model, "someone/pushed", config, card={"title": "pushed"}, api=hub)
    assert url.startswith("https://hub.invalid/someone/pushed/commit/") and hub.commits == [
        "Upload flowmaps checkpoint"
    ]
    monkeypatch.setenv("FLOWMAPS_HUB_OFFLINE", "1")
    loaded, got = from_pretrained("someone/pushed", cache_dir=hub.cache)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert got["net"] == CONFIG["net"] and got["card"]["title"] == "pushed"
    snapshot = next((hub.cache / "models--someone--pushed" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard((snapshot / "README.md").read_text()).data
    assert card.base_model == "someone/parent"  # a base named without an owner lives beside the pushed repo
    assert card.model_name == "pushed" and card.eval_results[0].metric_value == pytest.approx(0.09)


def test_hub_errors_read_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWMAPS_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        from_pretrained("someone/absent", cache_dir=tmp_path)
    folder = save_pretrained(_model(), tmp_path / "ck", CONFIG)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        from_pretrained(folder)


def test_saved_files_are_readable_by_others(tmp_path):
    """A checkpoint is shared (a Space, a lab folder): every file gets the umask's usual mode, not 0600."""
    save_pretrained(_model(), tmp_path / "ck", CONFIG)
    mask = os.umask(0o022)
    os.umask(mask)
    for f in (tmp_path / "ck").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f.name


def test_a_hub_id_that_is_not_found_says_it_was_looked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMAPS_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        from_pretrained("someone/absent", cache_dir=tmp_path)
    text = str(err.value)
    assert "no checkpoint folder 'someone/absent' here" in text and "does not exist" in text
    assert "as a Hub repo id it was looked up" in text


def test_hub_command_rewrites_cards_and_refuses_a_folder_without_config(tmp_path, capsys):
    from flowmaps.hub.__main__ import main

    folder = tmp_path / "m"
    save_pretrained(build_model(CONFIG), folder, CONFIG)
    (folder / "README.md").write_text("stale")
    assert main(["--help"]) == 0 and "usage" in capsys.readouterr().out
    assert main([]) == 2
    # a folder without config.json is named, and nothing is written, not even for the good folder
    assert main([str(folder), str(tmp_path / "typo")]) == 2
    assert "no config.json in" in capsys.readouterr().err and (folder / "README.md").read_text() == "stale"
    assert main([str(folder)]) == 0
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: flowmaps")
