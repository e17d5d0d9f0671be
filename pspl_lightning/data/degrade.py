"""Degraded test images on disk: ``pspl-data degrade`` (a folder of HR images -> their LR images) and the
LR images ``pspl-eval degradation=<name>`` scores with.

An image's LR is made from its HR image cropped to a multiple of the scale, with the key
``name_key(<file stem>)``: the same image the DataModule validates with under the same degradation and
seed, whichever folder, batch or device it is made in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pspl_lightning.data.benchmarks import benchmark_files
from pspl_lightning.data.io import list_images, read_image, write_png
from pspl_lightning.degradations.base import Degradation, name_key, resolve_degradation
from pspl_lightning.errors import DataError, OutputExistsError
from pspl_lightning.imresize import modcrop

PathPair = tuple[Path | None, Path]


def degradation_from_config(node: Any, scale: int) -> Degradation | None:
    """The degradation a config node (``cfg.degradation``, a Hydra ``_partial_``) describes, for ``scale``."""
    if node is None:
        return None
    from hydra.utils import instantiate

    return resolve_degradation(instantiate(node), scale)


def degrade_image(degradation: Degradation, hr: np.ndarray, name: str,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """The H/s x W/s x 3 uint8 LR image of an H x W x 3 uint8 HR image named ``name`` (its key)."""
    hr = modcrop(hr, degradation.scale)
    batch = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))[None].to(device)
    return degradation(batch, [name_key(name)])[0].permute(1, 2, 0).cpu().numpy()


def degrade_folder(input_dir: Path, output_dir: Path, degradation: Degradation,
                   device: torch.device | str = "cpu", overwrite: bool = False,
                   on_image: Callable[[], None] | None = None) -> list[Path]:
    """Write ``output_dir/<stem>.png`` (8-bit) for every image of ``input_dir``; return the files written.

    Refuses, before any work, to write into the input folder or over existing files (``overwrite``)."""
    input_dir, output_dir = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    if not input_dir.is_dir():
        raise DataError(f"input={input_dir} is not a folder; expected a folder of HR images")
    files = list_images(input_dir)
    if not files:
        raise DataError(f"input={input_dir} holds no images")
    if output_dir.resolve() == input_dir.resolve():
        raise DataError(f"output={output_dir} is the input folder: choose another folder for the LR images")
    targets = [output_dir / f"{f.stem}.png" for f in files]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{len(existing)} of the LR images exist already (e.g. {existing[0]}); "
                              f"pass overwrite=true to replace them")
    for src, dst in zip(files, targets, strict=True):
        write_png(dst, degrade_image(degradation, read_image(src), src.stem, device))
        if on_image is not None:
            on_image()
    return targets


def set_files(set_dir: Path, scale: int, degradation: Degradation | None, work_dir: Path,
              device: torch.device | str = "cpu") -> list[PathPair]:
    """(LR file or None, HR file) of a benchmark folder under ``degradation``.

    ``bicubic`` (or None): today's pairs (``LR_bicubic/X<s>`` files, else MATLAB bicubic when read).
    Otherwise ``<set>/LR_<name>/X<s>/<stem>x<s>.png`` (or ``<stem>.png``, as ``pspl-data degrade`` writes)
    where present, and the rest made here, written to ``work_dir/<stem>.png`` and read from there."""
    if degradation is None or not degradation.lr_on_device:
        return benchmark_files(set_dir, scale)
    lr_dir = Path(set_dir) / f"LR_{degradation.name}" / f"X{scale}"
    pairs: list[PathPair] = []
    for _, hr_path in benchmark_files(set_dir, scale):
        stem = hr_path.stem
        names = (f"{stem}x{scale}.png", f"{stem}.png", f"{stem}x{scale}{hr_path.suffix}", hr_path.name)
        lr_path = next((lr_dir / n for n in names if (lr_dir / n).is_file()), None)
        if lr_path is None:
            lr_path = work_dir / f"{hr_path.stem}.png"
            write_png(lr_path, degrade_image(degradation, read_image(hr_path), hr_path.stem, device))
        pairs.append((lr_path, hr_path))
    return pairs
