"""Networks v(s, t, x) for flow maps. Time convention: t = 0 noise, t = 1 data."""

from flowmaps.nets.embeddings import LossWeight, PositionalEmbedding, positional_embedding
from flowmaps.nets.mlp import MLP
from flowmaps.nets.unet import UNet

__all__ = ["MLP", "UNet", "LossWeight", "PositionalEmbedding", "positional_embedding"]
