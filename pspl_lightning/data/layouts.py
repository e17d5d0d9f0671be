"""The DIV2K and folder layouts: which (LR or None, HR) files a DataModule trains and validates on.

Beside the sample set's layout (:mod:`pspl_lightning.data.sample`) and the benchmark sets'
(:mod:`pspl_lightning.data.benchmarks`). Each function checks its layout and raises
:class:`~pspl_lightning.errors.DataNotFoundError` naming the folder or file and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pspl_lightning.data.io import IMAGE_EXTENSIONS, image_name, list_images, unique_names
from pspl_lightning.data.pairs import PathPair
from pspl_lightning.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)
_said: set[str] = set()  # notes already logged by this process (prepare_data and setup both list the files)

DIV2K_LAYOUT = ("expected the DIV2K layout {root}/DIV2K_train_HR/0001.png ... 0800.png and "
                "{root}/DIV2K_valid_HR/0801.png ... 0900.png, optionally with LR images in "
                "DIV2K_{{train,valid}}_LR_bicubic/X{s}/0001x{s}.png (else made with MATLAB bicubic); "
                "see docs/DATA.md")


def index_range(value: Sequence[int], key: str) -> range:
    """``data.<key>`` = [first, last] (1-based image numbers) as a range."""
    if len(value) != 2 or not all(isinstance(v, int) for v in value) or not 1 <= value[0] <= value[1]:
        raise DataError(f"data.{key} must be [first, last] image numbers with 1 <= first <= last, "
                         f"got {value}")
    return range(value[0], value[1] + 1)


def div2k_files(root: Path, split: str, indices: range, scale: int, key: str) -> list[PathPair]:
    """Images ``indices`` of DIV2K's ``split`` (``train`` or ``valid``) under ``root``, with the LR files of
    ``DIV2K_<split>_LR_bicubic/X<s>`` when that folder exists (else None: made by MATLAB bicubic).
    ``key`` is the config key that chose the images (for the messages)."""
    layout = DIV2K_LAYOUT.format(root=root, s=scale)
    if not root.is_dir():
        raise DataNotFoundError(f"data.root {root} does not exist; {layout}")
    hr_dir = root / f"DIV2K_{split}_HR"
    if not hr_dir.is_dir():
        raise DataNotFoundError(f"DIV2K folder {hr_dir} does not exist; {layout}")
    lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    has_lr = lr_dir.is_dir()
    if not has_lr and str(lr_dir) not in _said:
        _said.add(str(lr_dir))
        log.info("%s not found: LR images are made from %s with MATLAB bicubic", lr_dir, hr_dir)
    pairs: list[PathPair] = []
    for i in indices:
        hr = hr_dir / f"{i:04d}.png"
        if not hr.is_file():
            raise DataNotFoundError(
                f"{hr} not found (image {i} of data.{key} {indices.start}-{indices.stop - 1}); {layout}"
            )
        lr = lr_dir / f"{i:04d}x{scale}.png"
        if has_lr and not lr.is_file():
            raise DataNotFoundError(f"{lr} not found although {lr_dir} exists; {layout}")
        pairs.append((lr if has_lr else None, hr))
    return pairs


def folder_pairs(hr_dir: str | Path, lr_dir: str | Path | None, scale: int, key: str) -> list[PathPair]:
    """(LR or None, HR) for every image of ``hr_dir`` and its subfolders; the LR file of ``<name>.<ext>``
    (``name``: the path under ``hr_dir``) is ``<name>x<s>.<ext>`` or ``<name>.<ext>`` under ``lr_dir`` (or
    its ``X<s>`` subfolder). Two images of one name (``dup.png``, ``dup.jpg``) are an error."""
    hr_dir = Path(hr_dir).expanduser()
    if not hr_dir.is_dir():
        raise DataNotFoundError(f"data.{key} {hr_dir} does not exist; expected a folder of HR images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    hr_files = list_images(hr_dir, recursive=True)
    names = unique_names(hr_files, hr_dir, f"data.{key}")
    if not hr_files:
        raise DataNotFoundError(f"data.{key} {hr_dir} holds no images "
                                f"(expected {', '.join(IMAGE_EXTENSIONS)})")
    if lr_dir is None:
        return [(None, hr) for hr in hr_files]
    lr_dir = Path(lr_dir).expanduser()
    if (lr_dir / f"X{scale}").is_dir():
        lr_dir = lr_dir / f"X{scale}"
    if not lr_dir.is_dir():
        raise DataNotFoundError(f"LR folder {lr_dir} does not exist; expected LR images named "
                                f"<name>x{scale}.png or <name>.png for each HR image, or leave the LR folder "
                                f"null to make them")
    by_name = {image_name(p, lr_dir): p for p in list_images(lr_dir, recursive=True)}
    pairs: list[PathPair] = []
    for hr, name in zip(hr_files, names, strict=True):
        lr = by_name.get(f"{name}x{scale}") or by_name.get(name)
        if lr is None:
            raise DataNotFoundError(f"no LR image for {hr} in {lr_dir} (expected {name}x{scale}.<ext> or "
                                    f"{name}.<ext>)")
        pairs.append((lr, hr))
    return pairs


def folder_val_pairs(val_hr_dir: str | Path | None, val_lr_dir: str | Path | None,
                     scale: int) -> list[PathPair]:
    """The validation set ``val`` of a folder layout (``data.val_hr_dir`` / ``data.val_lr_dir``)."""
    if not val_hr_dir:
        raise DataError(
            "data.val_sets lists 'val' but data.val_hr_dir is not set: set it, or validate on benchmark "
            "sets only, e.g. data.val_sets=[set5] data.benchmark_root=/path/to/benchmarks"
        )
    return folder_pairs(val_hr_dir, val_lr_dir, scale, "val_hr_dir")
