"""Degradations: how LR training and test images are made from HR images, batched on the device.

``bicubic`` (BI, MATLAB's imresize), ``bd`` (Gaussian blur + nearest), ``dn`` (bicubic + noise) and
``realistic`` (a second-order blind-SR pipeline). Pure tensor code: no Lightning, no Hydra. See
docs/DEGRADATIONS.md.
"""

from pspl_lightning.degradations.base import Degradation, mix, name_key
from pspl_lightning.degradations.realistic import Realistic, Stage
from pspl_lightning.degradations.standard import Bicubic, BlurDown, NoisyBicubic

__all__ = ["Bicubic", "BlurDown", "Degradation", "NoisyBicubic", "Realistic", "Stage", "mix", "name_key"]
