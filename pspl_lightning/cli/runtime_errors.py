"""Errors of a running ``fit`` that come from the user's settings, turned into a :class:`UserError` whose
one line names the settings to change: running out of memory (CPU allocation, CUDA), and an optimizer
update that overflows float32 (a learning rate far too large)."""

from __future__ import annotations

import re

from omegaconf import DictConfig
from torch import nn

from pspl_lightning.errors import UserError

# torch's messages: "... you tried to allocate 26214400000 bytes" (CPU), "Tried to allocate 20.00 GiB" (CUDA)
_CPU_BYTES = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
_SIZE = re.compile(r"tried to allocate ([\d.]+ ?[KMGT]i?B)", re.IGNORECASE)
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory")
_OVERFLOW = "cannot be converted to type float without overflow"
_VALIDATION_FRAMES = ("validation_step", "on_validation_batch_end", "on_validation_epoch_end")
_EVALUATION_LOOP = "evaluation_loop.py"


class OutOfMemory(UserError):
    """The run asked for more memory than the device has; the message names the settings to lower."""


def _asked(text: str) -> str:
    found = _CPU_BYTES.search(text)
    if found:
        return f"{int(found.group(1)) / 1e9:.1f} GB"
    found = _SIZE.search(text)
    return found.group(1) if found else "more than was free"


def _raised_in_validation(exc: BaseException) -> bool:
    """Whether ``exc`` came from a validation step: Lightning has set the trainer's stage back to training
    by the time the error reaches the caller, so the traceback tells."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in _VALIDATION_FRAMES or code.co_filename.endswith(_EVALUATION_LOOP):
            return True
        tb = tb.tb_next
    return False


def explain(exc: BaseException, cfg: DictConfig, net: nn.Module, stage: str, step: int) -> UserError | None:
    """The user error behind ``exc`` raised in ``fit`` at ``stage`` ("train", "validate", ...) and global
    ``step``, or None when it is not one of these."""
    text = str(exc)
    if not isinstance(exc, RuntimeError):  # torch.OutOfMemoryError is a RuntimeError too
        return None
    if stage == "train" and _raised_in_validation(exc):
        stage = "validate"
    precision = str(cfg.trainer.get("precision", "32-true"))
    if any(s in text.lower() for s in _OUT_OF_MEMORY):
        data = cfg.data
        params = sum(p.numel() for p in net.parameters())
        asked = (f"data.batch_size={data.batch_size}, data.patch_size={data.patch_size} (x{data.scale}), "
                 f"{type(net).__name__} ({params:,} parameters), trainer.precision={precision}")
        if stage == "train":
            lower = "lower data.batch_size or data.patch_size"
        else:  # validation takes whole images, one at a time
            lower = "validate on smaller images (data.val_sets)"
        if not precision.startswith(("16", "bf16")):
            lower += ", or use trainer.precision=bf16-mixed"
        return OutOfMemory(f"Out of memory at step {step} ({stage}): it tried to allocate {_asked(text)} "
                           f"with {asked}: {lower}")
    if _OVERFLOW in text:
        lr = cfg.optimizer.get("lr")
        return UserError(f"optimizer.lr={lr} overflows float32 in the optimizer's update at step {step} "
                         f"({text.strip()}): use a smaller learning rate (the recipes use 1e-4 to 5e-4)")
    return None
