"""flowmaps: flow maps (consistency models) learned by self-distillation.

Time convention everywhere: t = 0 is noise, t = 1 is data.
"""

__version__ = "0.1.0"
