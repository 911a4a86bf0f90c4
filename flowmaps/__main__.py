"""``python -m flowmaps train | sample | evaluate`` (see :mod:`flowmaps.cli`)."""

from flowmaps.cli import main

raise SystemExit(main())
