"""bench/probes/recard.py: a shipped checkerboard card is rebuilt, byte for byte, from the scores file of
the run that made it, and a stage chain without a record of its off-diagonal samplers gets one."""

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"


@pytest.mark.parametrize(
    ("method", "scores", "last_sampler", "drop_record"),
    [("esd", "families_330k.json", "late", False), ("lsd", "families_330k.json", "uniform", True)],
)
def test_recard_rebuilds_the_shipped_card_and_fills_the_stage_samplers(
    tmp_path, method, scores, last_sampler, drop_record
):
    from bench.probes.recard import recard

    shipped = REPO / "checkpoints" / f"checkerboard-{method}"
    folder = tmp_path / shipped.name
    shutil.copytree(shipped, folder)
    if drop_record:  # as a chain recorded before the field existed (LSD's stages were all uniform)
        config = json.loads((folder / "config.json").read_text())
        del config["training"]["stage_off_times"]
        (folder / "config.json").write_text(json.dumps(config))

    recard(RESULTS / scores, folder)

    rebuilt = json.loads((folder / "config.json").read_text())
    stages = rebuilt["training"]["stage_off_times"]
    assert stages[-1] == last_sampler
    if drop_record:
        assert stages == ["uniform"] * len(rebuilt["training"]["stages"])
    assert (folder / "README.md").read_text() == (shipped / "README.md").read_text()
    assert rebuilt == json.loads((shipped / "config.json").read_text())
    # the card names every family of the shared budget, also for LSD's stage that ran on its own
    card = (folder / "README.md").read_text()
    assert "same budget as" in card and all(m.upper() in card for m in ("lsd", "esd", "psd-m", "psd-u", "fm"))
    assert f"--off-times {last_sampler}" in card


def test_recard_refuses_a_scores_file_without_the_method(tmp_path):
    from bench.probes.recard import recard

    folder = tmp_path / "checkerboard-esd"
    shutil.copytree(REPO / "checkpoints" / "checkerboard-esd", folder)
    with pytest.raises(SystemExit, match="no scores for 'esd'"):
        recard(RESULTS / "families_310k_lsd_lr3.125e-5_seed9.json", folder)
