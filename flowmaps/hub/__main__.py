"""``python -m flowmaps.hub FOLDER...``: rewrite each checkpoint folder's README.md from its config.json."""

from __future__ import annotations

import sys

from flowmaps.hub.model_card import write_model_card


def main(argv: list[str] | None = None) -> int:
    """Rewrite the card of every folder in ``argv`` (default: the command line); 2 on a usage error."""
    folders = sys.argv[1:] if argv is None else argv
    if not folders:
        print("usage: python -m flowmaps.hub FOLDER...  (rewrites FOLDER/README.md from FOLDER/config.json)")
        return 2
    for folder in folders:
        print(write_model_card(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
