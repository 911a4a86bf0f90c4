"""flowmaps.utils: atomic writes leave the old file on failure, device names, tables."""

import os

import pytest
import torch

from flowmaps.utils import atomic_write, markdown_table, resolve_device, text_table, write_text_atomic


def test_atomic_write_replaces_whole_file_and_is_readable(tmp_path):
    path = tmp_path / "sub" / "card.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in path.parent.iterdir()] == ["card.md"]  # no temporary left behind


def test_atomic_write_failure_keeps_old_content_and_removes_temporary(tmp_path):
    path = tmp_path / "weights.bin"
    write_text_atomic(path, "old")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a device torch knows"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available here"):
            resolve_device("cuda")


def test_tables():
    rows = [{"N": 1, "KL": 0.086421}, {"N": 2, "KL": None, "note": "x"}]
    md = markdown_table(rows)
    assert md.splitlines() == ["| N | KL | note |", "| --- | --- | --- |", "| 1 | 0.08642 |  |", "| 2 |  | x |"]
    txt = text_table(rows, skip=("note",)).splitlines()
    assert txt[0].split() == ["N", "KL"] and txt[1].split() == ["1", "0.08642"]
    assert len({len(line) for line in txt}) == 1  # aligned
    assert markdown_table([]) == "(no rows)"
