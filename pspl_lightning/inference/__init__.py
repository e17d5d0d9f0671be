"""Inference on whole images: weights loading, tiled forward passes, the x8 self-ensemble, benchmarks."""

from pspl_lightning.inference.ensemble import self_ensemble
from pspl_lightning.inference.loading import LoadedNetwork, WeightsError, load_network
from pspl_lightning.inference.tiling import receptive_radius, tiled_forward
from pspl_lightning.inference.upscaler import Upscaler

__all__ = [
    "LoadedNetwork",
    "Upscaler",
    "WeightsError",
    "load_network",
    "receptive_radius",
    "self_ensemble",
    "tiled_forward",
]
