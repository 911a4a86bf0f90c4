"""Limits and locations of the app, read once from environment variables.

Every limit protects the shared CPU of a public deployment; each has an environment variable so
a teacher running the app on a laptop can raise it.

A visitor's session (its model, trainer and data) is freed when the visitor's tab closes (the
page's unload event) or after ``FLOWMAPS_IDLE_SECONDS`` without a request (the session state's
time to live); tests shorten the idle time.

| variable | default | meaning |
| --- | --- | --- |
| FLOWMAPS_CHECKPOINTS | ``checkpoints`` beside app.py | folder of shipped checkpoints |
| FLOWMAPS_CHECKPOINTS_REPO | unset | comma-separated Hub repo ids, one checkpoint each |
| FLOWMAPS_LIVE_SECONDS | 120 | wall-time cap of one Start/Continue run |
| FLOWMAPS_SESSION_SECONDS | 600 | total live-training time of one browser session |
| FLOWMAPS_MAX_STEPS | 20000 | most training steps one run may ask for |
| FLOWMAPS_MAX_BATCH | 4096 | largest training batch |
| FLOWMAPS_MAX_WIDTH | 512 | widest MLP |
| FLOWMAPS_TRAIN_CONCURRENCY | 2 | live-training runs at once (others queue) |
| FLOWMAPS_CONCURRENCY | 2 | other heavy handlers at once (per handler) |
| FLOWMAPS_QUEUE_SIZE | 64 | most queued requests before new ones are refused |
| FLOWMAPS_MAX_UPLOAD | 2mb | largest upload (CSV, drawing) |
| FLOWMAPS_MAX_CSV_ROWS | 100000 | most rows of an uploaded CSV |
| FLOWMAPS_IDLE_SECONDS | 900 | a session idle this long is freed (its model, trainer and data) |
| FLOWMAPS_MAX_SESSIONS | 48 | sessions holding a model at once; one more is told the Space is full |
| FLOWMAPS_MAX_IMAGE_PIXELS | 16777216 | most pixels of any image the server decodes (4096 x 4096) |
| FLOWMAPS_APP_CACHE | ``~/.cache/flowmaps-app`` | where step/quality results are cached |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from flowmaps.data.point_cloud import CSV_MAX_BYTES, CSV_MAX_ROWS

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_field(var: str, default: float | int | str, low: float | int | None = None) -> Any:
    """A dataclass field whose default ``var`` (an environment variable) may replace in
    :meth:`Limits.from_env`: a number is read as the field's type and raised to ``low`` if below
    it; an empty or unreadable value keeps ``default``."""
    return field(default=default, metadata={"env": var, "low": low})


def _from_env(var: str, default: Any, low: Any) -> Any:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if isinstance(default, str):
        return raw
    try:
        value = type(default)(float(raw))
    except (ValueError, OverflowError):
        return default
    return value if low is None else max(type(default)(low), value)


@dataclass(frozen=True)
class Limits:
    """Caps on what one user may ask of the server (see the module docstring); the fields made
    by :func:`env_field` are read from their environment variable by :meth:`from_env`."""

    live_seconds: float = env_field("FLOWMAPS_LIVE_SECONDS", 120.0, low=1.0)
    session_seconds: float = env_field("FLOWMAPS_SESSION_SECONDS", 600.0, low=1.0)
    max_steps: int = env_field("FLOWMAPS_MAX_STEPS", 20_000, low=1)
    min_batch: int = 16
    max_batch: int = env_field("FLOWMAPS_MAX_BATCH", 4096, low=16)
    min_width: int = 16
    max_width: int = env_field("FLOWMAPS_MAX_WIDTH", 512, low=16)
    max_depth: int = 6
    min_lr: float = 1e-5
    max_lr: float = 0.1
    train_concurrency: int = env_field("FLOWMAPS_TRAIN_CONCURRENCY", 2, low=1)
    concurrency: int = env_field("FLOWMAPS_CONCURRENCY", 2, low=1)
    queue_size: int = env_field("FLOWMAPS_QUEUE_SIZE", 64, low=1)
    max_upload: str = env_field("FLOWMAPS_MAX_UPLOAD", f"{CSV_MAX_BYTES >> 20}mb")
    max_csv_rows: int = env_field("FLOWMAPS_MAX_CSV_ROWS", CSV_MAX_ROWS, low=2)
    max_grid_steps: int = 256
    max_images: int = 16
    max_image_steps: int = 64
    max_trajectory_points: int = 64
    idle_seconds: float = env_field("FLOWMAPS_IDLE_SECONDS", 900.0, low=1.0)
    max_sessions: int = env_field("FLOWMAPS_MAX_SESSIONS", 48, low=1)
    max_image_pixels: int = env_field("FLOWMAPS_MAX_IMAGE_PIXELS", 4096 * 4096, low=320 * 320)

    @classmethod
    def from_env(cls) -> Limits:
        """The limits with every environment variable of the module docstring's table applied."""
        values = {}
        for f in fields(cls):
            if "env" in f.metadata:
                values[f.name] = _from_env(f.metadata["env"], f.default, f.metadata["low"])
        return cls(**values)


@dataclass(frozen=True)
class AppConfig:
    """Where the app finds checkpoints and keeps its cache, and its limits."""

    checkpoints_dir: Path = REPO_ROOT / "checkpoints"
    hub_repos: tuple[str, ...] = ()
    cache_dir: Path = Path.home() / ".cache" / "flowmaps-app"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> AppConfig:
        ckpt = os.environ.get("FLOWMAPS_CHECKPOINTS", "").strip()
        repos = tuple(r.strip() for r in os.environ.get("FLOWMAPS_CHECKPOINTS_REPO", "").split(",") if r.strip())
        cache = os.environ.get("FLOWMAPS_APP_CACHE", "").strip()
        return cls(
            checkpoints_dir=Path(ckpt) if ckpt else REPO_ROOT / "checkpoints",
            hub_repos=repos,
            cache_dir=Path(cache) if cache else Path.home() / ".cache" / "flowmaps-app",
            limits=Limits.from_env(),
        )
