"""The test suite, laid out like the package: tests/flowmaps/<module>/ for the library, tests/app/
for the Gradio app (tests/app/test_browser.py drives a real chromium), tests/bench/ for the
benchmarks' smoke runs. Markers (pyproject.toml): ``browser``, ``gpu``, ``slow``."""

from pathlib import Path

#: The repository root (checkpoints/, bench/, app.py), wherever pytest runs from.
REPO = Path(__file__).resolve().parents[1]
