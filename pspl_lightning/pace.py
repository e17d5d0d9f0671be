"""The PSPL pace as plain arithmetic: sigma at a step and the check that it stays > 0 over a run.

Kept free of torch so that ``pspl-train`` checks a config before it loads the heavy libraries.
"""

from __future__ import annotations

import math

from pspl_lightning.errors import ConfigError


def pace_sigma(global_step: int, alpha: float, beta: float, step_unit: int) -> float:
    """Gaussian width at optimizer step ``global_step`` (0-based): ``alpha * (step + 1) / step_unit + beta``.

    The reference counts progress in 1-based "epochs" of ``step_unit`` iterations; a pure function of the
    global step makes resumed runs follow the same pace.
    """
    return alpha * (global_step + 1) / step_unit + beta


def check_pace(alpha: float, beta: float, step_unit: int, max_steps: int | None = None) -> None:
    """Raise :class:`ConfigError` naming ``loss.alpha``/``loss.beta`` if sigma can be <= 0 in ``max_steps``.

    Sigma is linear in the step, so checking the first and last step covers the whole run. Without
    ``max_steps`` only the first step and the sign of the slope (a shrinking pace) are checked.
    """
    if step_unit <= 0:
        raise ConfigError(f"loss.step_unit must be a positive number of steps, got {step_unit}")
    first = pace_sigma(0, alpha, beta, step_unit)
    if max_steps is None or max_steps < 0:
        last = first if alpha >= 0 else -math.inf
        where = "eventually"
    else:
        last = pace_sigma(max(max_steps - 1, 0), alpha, beta, step_unit)
        where = f"at step {max_steps - 1}"
    if first <= 0 or last <= 0:
        bad_at = "at step 0" if first <= 0 else where
        raise ConfigError(
            f"PSPL sigma = loss.alpha * (step + 1) / loss.step_unit + loss.beta must stay > 0, but with "
            f"loss.alpha={alpha}, loss.beta={beta}, loss.step_unit={step_unit} it is "
            f"{first if first <= 0 else last:g} {bad_at} (the weight exp(-((ssim + 1) / sigma)^2) divides by "
            f"sigma). Use loss.alpha > 0, or loss.beta > 0 for a fixed width."
        )
