"""SR networks: plain ``nn.Module`` classes built from configs through ``_target_``."""

from pspl_lightning.archs.edsr import EDSR

__all__ = ["EDSR"]
