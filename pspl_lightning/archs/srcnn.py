"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016): three convs on the bicubic-upscaled image."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pspl_lightning.archs.common import PreUpsampledSR


class SRCNN(PreUpsampledSR):
    """Patch extraction (``kernel_sizes[0]``), non-linear mapping (``kernel_sizes[1]``), reconstruction
    (``kernel_sizes[2]``) with ``n_feats`` = (64, 32) channels, zero "same" padding so the output has the
    HR size. The published counts are on the Y channel: 9-5-5 has 57,281 parameters (the TPAMI model),
    9-1-5 has 8,129 (the ECCV base model); on RGB they are 69,251 and 20,099."""

    def __init__(self, scale: int = 2, kernel_sizes: Sequence[int] = (9, 5, 5),
                 n_feats: Sequence[int] = (64, 32), channels: str = "y") -> None:
        super().__init__(scale, channels)
        k1, k2, k3 = (int(k) for k in kernel_sizes)
        f1, f2 = (int(f) for f in n_feats)
        if not all(k % 2 for k in (k1, k2, k3)):
            raise ValueError(f"SRCNN model.kernel_sizes must be odd, got {list(kernel_sizes)}")
        self.body = nn.Sequential(
            nn.Conv2d(self.n_colors, f1, k1, padding=k1 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(f1, f2, k2, padding=k2 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(f2, self.n_colors, k3, padding=k3 // 2),
        )
