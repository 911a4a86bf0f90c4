"""Start the flowmaps app: `python app.py` (host and port from GRADIO_SERVER_NAME / _PORT).

Time convention: t = 0 is noise, t = 1 is data. Limits and checkpoint locations come from
environment variables (see app/config.py); FLOWMAPS_CHECKPOINTS_REPO names Hub checkpoints.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    # One line per refused input or freed session (the app's logger at INFO; others at WARNING).
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    level = os.environ.get("FLOWMAPS_LOG_LEVEL", "INFO").strip().upper()
    logging.getLogger("flowmaps.app").setLevel(level if isinstance(logging.getLevelName(level), int) else "INFO")

    import torch

    from app.config import Limits

    # Torch threads per request: the cores divided among the concurrent training runs. Small MLP
    # steps gain little from a second thread, and two runs each spinning two threads on two cores
    # slow down many times over; FLOWMAPS_THREADS overrides.
    cores = os.cpu_count() or 1
    threads = int(os.environ.get("FLOWMAPS_THREADS", "0") or 0) or max(1, cores // Limits.from_env().train_concurrency)
    torch.set_num_threads(max(1, threads))

    from app import build_app, launch_kwargs  # the app/ package (a package wins over this file)

    demo = build_app()
    demo.launch(**launch_kwargs())


if __name__ == "__main__":
    main()
