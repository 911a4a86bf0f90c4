"""Packaging for a CPU Hugging Face Space and for `pip install .`.

- A Space installs pre-requirements.txt, then requirements.txt, with pip and no local wheel
  folder. On Linux PyPI's torch is the CUDA build (torch plus about 16 nvidia-* packages); the
  files must resolve to the CPU build. The resolution is checked with this machine's pip
  configuration switched off (no config file, no PIP_* variables) for a fresh, empty venv.
- Binary files go through Git LFS (a Space refuses plain binary blobs).
- pyproject.toml declares what the library imports, the app extra asks for Gradio 6, and the
  `flowmaps` console command points at the CLI.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests import REPO

CUDA_NAMES = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def _pip_env() -> dict[str, str]:
    """The environment with pip's configuration switched off: no config files, no PIP_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _index_hosts(path: Path) -> list[str]:
    hosts = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("--extra-index-url", "--index-url", "-i"):
            hosts.append(urlparse(parts[1]).hostname)
    return hosts


def _fresh_venv(path: Path) -> Path:
    """An empty venv (no pip inside: the running pip resolves for it through --python)."""
    venv.EnvBuilder(with_pip=False, clear=True).create(path)
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _resolve(tmp_path: Path, *args: str, retries: int | None = None) -> subprocess.CompletedProcess:
    """pip install --dry-run --report for a fresh venv, configuration off; the report in tmp_path."""
    python = _fresh_venv(tmp_path / "venv")
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet"]
    cmd += ["--report", str(tmp_path / "report.json")]
    if retries is not None:
        cmd += ["--retries", str(retries)]
    return subprocess.run(
        [*cmd, *args], env=_pip_env(), cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def _resolution(tmp_path: Path) -> list[tuple[str, str]]:
    report = json.loads((tmp_path / "report.json").read_text())
    return sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"])


def _print(rows: list[tuple[str, str]]) -> None:
    print(f"resolution ({len(rows)} packages):")
    for name, version in rows:
        print(f"  {name}=={version}")


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


# --------------------------------------------------------------------------- the Space's install
def test_the_space_installs_the_cpu_torch_only(tmp_path):
    """pre-requirements.txt and requirements.txt together resolve to torch ...+cpu and no CUDA package."""
    hosts = sorted(set(_index_hosts(REPO / "requirements.txt") + _index_hosts(REPO / "pre-requirements.txt")))
    assert hosts, "requirements.txt names no wheel index for the CPU build of torch"
    unreachable = [h for h in hosts + ["pypi.org"] if not _reachable(h)]
    if unreachable:
        pytest.skip(f"cannot resolve the Space's install here: {', '.join(unreachable)} unreachable from this machine")
    done = _resolve(tmp_path, "-r", "pre-requirements.txt", "-r", "requirements.txt")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _resolution(tmp_path)
    _print(rows)
    names = dict(rows)
    assert "torch" in names and "gradio" in names and "pillow" in names
    if sys.platform == "linux":
        assert names["torch"].endswith("+cpu"), names["torch"]
    cuda = [name for name, _ in rows if CUDA_NAMES.match(name.lower())]
    assert not cuda, f"CUDA packages in a CPU Space's install: {cuda}"


def test_without_the_cpu_index_the_install_fails_instead_of_taking_cuda_torch(tmp_path):
    """The +cpu pin exists only on the PyTorch CPU index: with that index out of reach, pip must
    stop at torch rather than fall back to PyPI's CUDA build."""
    if sys.platform != "linux":
        pytest.skip("the +cpu pin applies on Linux only")
    if not _reachable("pypi.org"):
        pytest.skip("PyPI is unreachable from this machine")
    lines = [line for line in _requirement_lines(REPO / "requirements.txt") if not line.startswith("--")]
    (tmp_path / "no-index.txt").write_text("\n".join(lines) + "\n")
    done = _resolve(tmp_path, "-r", str(tmp_path / "no-index.txt"), retries=0)
    assert done.returncode != 0, "requirements.txt resolved from PyPI alone: " + str(_resolution(tmp_path))
    assert re.search(r"No matching distribution found for torch==[0-9.]+\+cpu", done.stderr), done.stderr[-2000:]


def test_nothing_but_torch_pulls_torch_or_cuda_into_the_space(tmp_path):
    """requirements.txt without its torch lines, resolved from PyPI: no torch, triton or nvidia-*
    package comes in through another dependency (which would bring the CUDA build back)."""
    if not _reachable("pypi.org"):
        pytest.skip("PyPI is unreachable from this machine")
    lines = [line for line in _requirement_lines(REPO / "requirements.txt") if not re.match(r"(--|torch\b)", line)]
    (tmp_path / "no-torch.txt").write_text("\n".join(lines) + "\n")
    done = _resolve(tmp_path, "-r", str(tmp_path / "no-torch.txt"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _resolution(tmp_path)
    _print(rows)
    assert {"gradio", "pillow", "numpy"} <= dict(rows).keys()
    bad = [name for name, _ in rows if name.lower() == "torch" or CUDA_NAMES.match(name.lower())]
    assert not bad, bad


def test_pre_requirements_pin_the_same_torch_as_requirements():
    def torch_lines(path: Path) -> list[str]:
        return [line for line in _requirement_lines(path) if re.match(r"torch\b", line)]

    pre, req = torch_lines(REPO / "pre-requirements.txt"), torch_lines(REPO / "requirements.txt")
    assert pre and pre == req


# --------------------------------------------------------------------------------- Git LFS
def test_every_tracked_binary_file_goes_through_lfs():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    binary = []
    for name in filter(None, files.decode().split("\0")):
        path = REPO / name
        if path.is_file() and b"\0" in path.read_bytes()[:8192]:
            binary.append(name)
    assert binary, "expected the shipped checkpoints among the tracked files"
    attrs = subprocess.run(
        ["git", "check-attr", "filter", "diff", "merge", "text", "--", *binary],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values: dict[str, dict[str, str]] = {}
    for line in attrs.splitlines():
        name, attr, value = line.rsplit(": ", 2)
        values.setdefault(name, {})[attr] = value
    wrong = [n for n in binary if values[n] != {"filter": "lfs", "diff": "lfs", "merge": "lfs", "text": "unset"}]
    assert not wrong, f"binary files not routed through LFS by .gitattributes: {wrong}"


# ---------------------------------------------------------------------------- declared deps
def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports(folder: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {"flowmaps", "app", "tests", "__future__"}
    return {n for n in names if n not in local and n not in sys.stdlib_module_names}


@pytest.mark.parametrize("folder, extras", [("flowmaps", ()), ("app", ("app",))])
def test_every_imported_package_is_declared(folder, extras):
    """Each third-party module that the library (or the app) imports belongs to a distribution in
    pyproject's dependencies (plus the named extras): `pip install .` must bring it."""
    project = _pyproject()["project"]
    declared = {_dist_name(r) for r in project["dependencies"]}
    for extra in extras:
        declared |= {_dist_name(r) for r in project["optional-dependencies"][extra]}
    owners = md.packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports(REPO / folder)):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported by {folder}/ but not declared in pyproject.toml: {missing}"


def test_the_app_extra_asks_for_gradio_6():
    from packaging.requirements import Requirement

    (gradio,) = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["app"] if "gradio" in r]
    assert not gradio.specifier.contains("5.50.0"), "the app uses Gradio-6-only arguments"
    assert gradio.specifier.contains(md.version("gradio"))


def test_the_flowmaps_console_command_is_the_cli(capsys):
    target = _pyproject()["project"]["scripts"]["flowmaps"]
    module, func = target.split(":")
    entry = getattr(importlib.import_module(module), func)
    from flowmaps.cli import main

    assert entry is main
    with pytest.raises(SystemExit) as info:
        entry(["sample", "--help"])
    assert info.value.code == 0 and "--checkpoint" in capsys.readouterr().out
