"""``python -m flowmaps.hub FOLDER...``: rewrite each checkpoint folder's README.md from its config.json."""

from __future__ import annotations

import sys
from pathlib import Path

from flowmaps.hub.model_card import write_model_card


def main(argv: list[str] | None = None) -> int:
    """Rewrite the card of every folder in ``argv`` (default: the command line); 2 on a usage error."""
    folders = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m flowmaps.hub FOLDER...  (rewrites FOLDER/README.md from FOLDER/config.json)"
    if not folders or any(f in ("-h", "--help") for f in folders):
        print(usage)
        return 0 if folders else 2
    missing = [f for f in folders if not (Path(f) / "config.json").is_file()]
    if missing:  # checked before any card is written: a typo leaves every folder as it was
        print(f"no config.json in {', '.join(missing)}: give checkpoint folders\n{usage}", file=sys.stderr)
        return 2
    for folder in folders:
        print(write_model_card(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
