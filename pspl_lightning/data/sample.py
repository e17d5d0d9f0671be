"""The sample set: colour photographs shipped with scikit-image, as an HR folder plus bicubic LR folders.

It lets every command run on a fresh machine with no download: 6 training and 2 validation images
(validation images are held out from training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import data as skdata

from pspl_lightning.data.io import write_png
from pspl_lightning.imresize import make_lr

SAMPLE_TRAIN = (
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
)
SAMPLE_VAL = ("chelsea", "coffee")


def _photo(name: str) -> np.ndarray:
    img = getattr(skdata, name)()
    return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle returns (left, right, disparity)


def build_sample_set(root: str | Path, scale: int) -> Path:
    """Write ``root/{train,val}/HR/*.png`` and ``root/{train,val}/LR_bicubic/X{scale}/*.png`` where
    missing."""
    root = Path(root)
    for split, names in (("train", SAMPLE_TRAIN), ("val", SAMPLE_VAL)):
        for name in names:
            hr_path = root / split / "HR" / f"{name}.png"
            lr_path = root / split / "LR_bicubic" / f"X{scale}" / f"{name}.png"
            if hr_path.exists() and lr_path.exists():
                continue
            hr = _photo(name)
            if not hr_path.exists():
                write_png(hr_path, hr)
            write_png(lr_path, make_lr(hr, scale))
    return root


def sample_pairs(root: str | Path, split: str, scale: int) -> list[tuple[Path, Path]]:
    """(LR, HR) file pairs of one split of the sample set."""
    names = SAMPLE_TRAIN if split == "train" else SAMPLE_VAL
    root = Path(root) / split
    return [(root / "LR_bicubic" / f"X{scale}" / f"{n}.png", root / "HR" / f"{n}.png") for n in names]
