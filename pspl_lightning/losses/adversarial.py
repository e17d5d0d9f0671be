"""Adversarial losses on a discriminator's logits, as BasicSR's ``GANLoss`` defines them (pure PyTorch)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError

GAN_TYPES = ("vanilla", "hinge")


class GANLoss(nn.Module):
    """``vanilla``: binary cross-entropy on logits (real = 1, fake = 0); ``hinge``: the discriminator's
    ``relu(1 - real) + relu(1 + fake)``, the generator's ``-mean(fake)``. ``weight`` scales the generator's
    term only (the discriminator's loss is never weighted), as in BasicSR / Real-ESRGAN."""

    def __init__(self, type: str = "vanilla", weight: float = 0.1) -> None:  # noqa: A002 (the config key)
        super().__init__()
        if type not in GAN_TYPES:
            raise ConfigError(f"loss.gan.type={type!r} is not allowed: expected one of {list(GAN_TYPES)}")
        self.type, self.weight = type, float(weight)

    def generator(self, fake_logits: Tensor) -> Tensor:
        """The generator's weighted loss: its outputs should be judged real."""
        if self.type == "hinge":
            return -fake_logits.mean() * self.weight
        return F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_ones(())
                                                  .expand_as(fake_logits)) * self.weight

    def discriminator(self, logits: Tensor, real: bool) -> Tensor:
        """The discriminator's (unweighted) loss on the logits of real (HR) or fake (SR) images."""
        if self.type == "hinge":
            return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
        target = logits.new_full((), 1.0 if real else 0.0).expand_as(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
