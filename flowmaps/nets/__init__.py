"""Networks v(s, t, x) for flow maps. Time convention: t = 0 noise, t = 1 data."""

from flowmaps.nets.mlp import MLP

__all__ = ["MLP"]
