"""The standard degradations of the SR tables: BI (MATLAB bicubic), BD (blur + nearest) and DN (bicubic +
noise), exactly as the RDN authors' preparation scripts make them (``yulunzhang/RDN``,
``RDN_TrainCode/Prepare_TrainData/Prepare_TrainData_HR_LR_{BD,DN}.m``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pspl_lightning.degradations.base import Degradation, check_number, check_odd_size
from pspl_lightning.degradations.matlab import (
    matlab_bicubic,
    matlab_imfilter_gaussian,
    matlab_nearest,
    to_uint8_matlab,
)


class Bicubic(Degradation):
    """BI: ``imresize(HR, 1/s, 'bicubic')`` (MATLAB's, bit-exact). Not ``lr_on_device``: training and
    validation keep today's LR images (the official files, or the same bicubic made on the CPU), so
    ``degradation=bicubic`` gives the numbers it always gave; this class makes the same images on any
    device (``pspl-data degrade``)."""

    name = "bicubic"
    lr_on_device = False
    scales = None

    def apply(self, hr: Tensor, draws: dict[str, Any]) -> Tensor:
        return matlab_bicubic(hr, self.scale)


class BlurDown(Degradation):
    """BD: ``imresize(imfilter(HR, fspecial('gaussian', 7, 1.6), 'replicate'), 1/s, 'nearest')``; the blurred
    image is rounded to uint8 first (``imfilter`` keeps the input's class)."""

    name = "bd"

    def __init__(self, scale: int, kernel_size: int = 7, sigma: float = 1.6, seed: int = 0) -> None:
        super().__init__(scale, seed)
        self.kernel_size = check_odd_size("degradation.kernel_size", kernel_size)
        self.sigma = float(check_number("degradation.sigma", sigma, 1e-3, 100.0))

    def apply(self, hr: Tensor, draws: dict[str, Any]) -> Tensor:
        return matlab_nearest(matlab_imfilter_gaussian(hr, self.kernel_size, self.sigma), self.scale)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kernel_size": self.kernel_size, "sigma": self.sigma}


class NoisyBicubic(Degradation):
    """DN: ``uint8(single(imresize(HR, 1/s, 'bicubic')) + single(sigma * randn))``: MATLAB bicubic, then
    Gaussian noise of std ``sigma`` (on 0..255) per pixel and channel, rounded and saturated to 8 bit."""

    name = "dn"

    def __init__(self, scale: int, sigma: float = 30.0, seed: int = 0) -> None:
        super().__init__(scale, seed)
        self.sigma = float(check_number("degradation.sigma", sigma, 0.0, 255.0))

    def draw(self, keys: Tensor, size: tuple[int, int]) -> dict[str, Any]:
        h, w = self.lr_size(size)
        noise = [torch.randn(3, h, w, generator=g) for g in self.generators(keys)]
        return {"noise": torch.stack(noise).mul_(self.sigma)}

    def apply(self, hr: Tensor, draws: dict[str, Any]) -> Tensor:
        lr = matlab_bicubic(hr, self.scale).to(torch.float32)  # single(LR) + single(noise), as the script
        return to_uint8_matlab(lr + draws["noise"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sigma": self.sigma}
