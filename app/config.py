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
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _int_env(name: str, default: int, low: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        return default
    return max(low, value)


def _float_env(name: str, default: float, low: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return max(low, value)


@dataclass(frozen=True)
class Limits:
    """Caps on what one user may ask of the server (see the module docstring)."""

    live_seconds: float = 120.0
    session_seconds: float = 600.0
    max_steps: int = 20_000
    min_batch: int = 16
    max_batch: int = 4096
    min_width: int = 16
    max_width: int = 512
    max_depth: int = 6
    min_lr: float = 1e-5
    max_lr: float = 0.1
    train_concurrency: int = 2
    concurrency: int = 2
    queue_size: int = 64
    max_upload: str = "2mb"
    max_csv_rows: int = 100_000
    max_grid_steps: int = 256
    max_images: int = 16
    max_image_steps: int = 64
    max_trajectory_points: int = 64
    idle_seconds: float = 900.0
    max_sessions: int = 48
    max_image_pixels: int = 4096 * 4096

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            live_seconds=_float_env("FLOWMAPS_LIVE_SECONDS", 120.0, low=1.0),
            session_seconds=_float_env("FLOWMAPS_SESSION_SECONDS", 600.0, low=1.0),
            max_steps=_int_env("FLOWMAPS_MAX_STEPS", 20_000),
            max_batch=_int_env("FLOWMAPS_MAX_BATCH", 4096, low=16),
            max_width=_int_env("FLOWMAPS_MAX_WIDTH", 512, low=16),
            train_concurrency=_int_env("FLOWMAPS_TRAIN_CONCURRENCY", 2),
            concurrency=_int_env("FLOWMAPS_CONCURRENCY", 2),
            queue_size=_int_env("FLOWMAPS_QUEUE_SIZE", 64),
            max_upload=os.environ.get("FLOWMAPS_MAX_UPLOAD", "2mb").strip() or "2mb",
            max_csv_rows=_int_env("FLOWMAPS_MAX_CSV_ROWS", 100_000, low=2),
            idle_seconds=_float_env("FLOWMAPS_IDLE_SECONDS", 900.0, low=1.0),
            max_sessions=_int_env("FLOWMAPS_MAX_SESSIONS", 48),
            max_image_pixels=_int_env("FLOWMAPS_MAX_IMAGE_PIXELS", 4096 * 4096, low=320 * 320),
        )


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
