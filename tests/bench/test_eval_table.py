"""The image results table: the flow map against the ODE at equal FID (bench/eval_images.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests import REPO

ROOT = REPO


def _module():
    spec = importlib.util.spec_from_file_location("eval_images", ROOT / "bench" / "eval_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_equal_fid_picks_the_fewest_nfe_that_does_at_least_as_well(tmp_path: Path) -> None:
    mod = _module()
    metrics = {
        "map-1": {"sampler": "flow map", "nfe": 1, "fid": 40.0, "ms_per_image_gpu": 0.1},
        "map-4": {"sampler": "flow map", "nfe": 4, "fid": 10.0, "ms_per_image_gpu": 0.4},
        "map-16": {"sampler": "flow map", "nfe": 16, "fid": 2.0, "ms_per_image_gpu": 1.6},
        "heun-32": {"sampler": "Heun ODE", "nfe": 32, "fid": 9.0, "ms_per_image_gpu": 3.2},
        "heun-8": {"sampler": "Heun ODE", "nfe": 8, "fid": 50.0, "ms_per_image_gpu": 0.8},
        "heun-16": {"sampler": "Heun ODE", "nfe": 16, "fid": 30.0, "ms_per_image_gpu": 1.6},
    }
    lines = mod.equal_fid_lines({"m": metrics})
    rows = [line for line in lines if line.startswith("| m |")]
    # N = 1 (FID 40): Heun 8 scores 50 (worse), Heun 16 scores 30: 16 calls, 16x the time.
    assert rows[0] == "| m | 1 | 40.0 | 16 | 30.0 | 16x | 16.0x |"
    # N = 4 (FID 10): only Heun 32 (9.0) does as well: 8x the calls.
    assert rows[1] == "| m | 4 | 10.0 | 32 | 9.0 | 8x | 8.0x |"
    # N = 16 (FID 2): no ODE row does as well.
    assert "none up to 32 NFE" in rows[2]
    text = mod.write_table({"m": metrics}, tmp_path / "t.md")
    assert "## Flow map against the ODE at equal FID" in text and (tmp_path / "t.md").read_text() == text


def test_table_only_gathers_each_checkpoints_metrics_without_evaluating(tmp_path: Path) -> None:
    """--table-only reads <checkpoint>/metrics.json (models scored on different machines) and
    loads no model: the folders here hold no weights at all."""
    import json

    mod = _module()
    for name, fid in (("fmnist-a", 12.5), ("fmnist-b", 7.25)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        metrics = {"map-4": {"sampler": "flow map", "nfe": 4, "fid": fid, "hardware_gpu": f"GPU {name}"}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    table = tmp_path / "table.md"
    results = mod.main([str(tmp_path / "fmnist-a"), str(tmp_path / "fmnist-b"), "--table-only", "--table", str(table)])
    assert set(results) == {"fmnist-a", "fmnist-b"}
    text = table.read_text()
    assert "| fmnist-a | flow map | 4 | 12.5 |" in text and "| fmnist-b | flow map | 4 | 7.25 |" in text
    assert "GPU fmnist-a; GPU fmnist-b" in text


def test_rows_on_other_grids_skip_the_ones_equal_to_uniform() -> None:
    """--grids uniform,cosine: cosine flow-map rows only where the cosine times differ from the
    uniform ones (N = 1 is [0, 1] and N = 2 is [0, 0.5, 1] on both), each under its own key."""
    import torch

    from flowmaps.sampling import make_grid

    mod = _module()
    rows = mod.row_plan([1, 2, 4], [8], ["uniform", "cosine"])
    assert rows == [
        ("map", 1, "uniform"),
        ("map", 2, "uniform"),
        ("map", 4, "uniform"),
        ("heun", 8, "uniform"),
        ("map", 4, "cosine"),
        ("heun", 8, "cosine"),
    ]
    assert [mod.row_key(*r) for r in rows[-2:]] == ["map-cosine-4", "heun-cosine-8"]
    assert mod.row_label("map", "cosine") == "flow map, cosine grid" and mod.row_label("heun") == "Heun ODE"
    # a Heun row of 8 evaluations takes 4 steps on the named grid
    assert torch.equal(mod.sampler_grid("heun", 8, "cosine"), make_grid("cosine", 4))


def test_an_unknown_grid_is_refused_with_the_choices(capsys) -> None:
    import pytest

    mod = _module()
    with pytest.raises(SystemExit):
        mod.main(["checkpoints/fmnist-lsd", "--grids", "uniform,spiral", "--table-only"])
    err = capsys.readouterr().err
    assert "unknown grid spiral" in err and "cosine" in err


def test_families_cell_gives_the_half_sample_kl_and_the_empty_bins_where_the_kl_is_infinite() -> None:
    """bench/families.py's table cell: mean ± sd of the paper's KL over noise seeds; where any seed
    has an empty target bin (KL inf), the KL with empty bins as half a sample and the most empty
    bins, so that no infinite cell hides how far off it is."""
    from bench.families import kl_cell

    finite = [{"kl": k, "kl_eps": k, "empty_bins": 0} for k in (0.07, 0.08, 0.09)]
    assert kl_cell(finite) == "0.0800 ± 0.0100"
    mixed = [
        {"kl": float("inf"), "kl_eps": 0.20, "empty_bins": 3},
        {"kl": 0.10, "kl_eps": 0.10, "empty_bins": 0},
        {"kl": float("inf"), "kl_eps": 0.30, "empty_bins": 1},
    ]
    assert kl_cell(mixed) == "inf (0.2000 ± 0.1000; 3 empty)"
