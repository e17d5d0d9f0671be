"""The paced-loss contract: a loss whose per-pixel weights follow the optimizer step through a width sigma.

Any loss with ``sigma_at(global_step) -> float`` and ``loss_and_weights(sr, hr, sigma) -> (loss, weights)``
is paced; the training module passes it ``sigma_at(trainer.global_step)`` at every step, and the pace
callback logs sigma and the weights. Nothing else is required: the project never names the class.
Optional: ``check_run(max_steps)`` (raise ``ConfigError`` for a pace that fails within the run; default:
sigma > 0 at the first and the last step) and ``max_weight`` (the top of the image panel's colour scale).
:class:`~pspl_lightning.losses.pspl.PSPLLoss` is one such loss.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from pspl_lightning.errors import ConfigError


@runtime_checkable
class PacedLoss(Protocol):
    """What makes a loss paced (``isinstance(loss, PacedLoss)`` checks that both methods exist)."""

    def sigma_at(self, global_step: int) -> float:
        """Sigma at optimizer step ``global_step`` (0-based): a pure function of the step (exact resume)."""
        ...

    def loss_and_weights(self, sr: Tensor, hr: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """The scalar loss and the detached weight map it used (for logging and the image panel)."""
        ...


def check_run(loss: PacedLoss, max_steps: int | None) -> None:
    """Raise :class:`ConfigError` if ``loss``'s pace fails within ``max_steps`` steps (None: unbounded):
    its own ``check_run`` when it has one, else sigma must be > 0 at the first and the last step."""
    own = getattr(loss, "check_run", None)
    if callable(own):
        own(max_steps)
        return
    steps = [0] if max_steps is None else [0, max(max_steps - 1, 0)]
    for step in steps:
        sigma = loss.sigma_at(step)
        if not sigma > 0:
            raise ConfigError(f"{type(loss).__name__}.sigma_at({step}) = {sigma:g}: a paced loss's sigma "
                              f"must stay > 0 over the run (trainer.max_steps={max_steps})")
