"""Benchmark sets (Set5, Set14, B100, Urban100, Manga109, DIV2K validation) laid out as folders.

Accepted layouts under ``<benchmark_root>/<SetName>/`` (set names match case-insensitively):

- ``HR/<name>.png`` and, optionally, ``LR_bicubic/X<s>/<name>x<s>.png`` (the EDSR / PSPL layout);
- just images directly in the folder (HR only).

When an LR image is missing it is made from the HR image, cropped to a multiple of the scale,
with MATLAB-compatible bicubic ``imresize`` (the protocol of published tables).
"""

from __future__ import annotations

from pathlib import Path

from pspl_lightning.data.io import list_images
from pspl_lightning.errors import DataNotFoundError

BENCHMARK_SETS = {
    "set5": "Set5",
    "set14": "Set14",
    "b100": "B100",
    "urban100": "Urban100",
    "manga109": "Manga109",
    "div2k_val": "DIV2K_val",
}

LAYOUT_HELP = (
    "expected <benchmark_root>/<Set>/HR/<name>.png (optionally <Set>/LR_bicubic/X<scale>/<name>x<scale>.png),"
    " or the HR images directly in <benchmark_root>/<Set>/"
)


def find_set_dir(root: str | Path, name: str) -> Path:
    """The folder of benchmark ``name`` under ``root`` (exact, canonical or case-insensitive match)."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"benchmark root {root} does not exist; {LAYOUT_HELP}")
    wanted = {name.lower(), BENCHMARK_SETS.get(name.lower(), name).lower()}
    if name.lower() in ("b100", "bsd100"):
        wanted |= {"b100", "bsd100"}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    raise DataNotFoundError(f"benchmark set {name!r} not found under {root}; {LAYOUT_HELP}")


def benchmark_files(set_dir: str | Path, scale: int) -> list[tuple[Path | None, Path]]:
    """(LR file or None, HR file) for every HR image of a benchmark folder."""
    set_dir = Path(set_dir)
    hr_dir = set_dir / "HR" if (set_dir / "HR").is_dir() else set_dir
    hr_files = list_images(hr_dir)
    if not hr_files:
        raise DataNotFoundError(f"no images in {hr_dir}; {LAYOUT_HELP}")
    lr_dir = set_dir / "LR_bicubic" / f"X{scale}"
    pairs: list[tuple[Path | None, Path]] = []
    for hr in hr_files:
        candidates = [lr_dir / f"{hr.stem}x{scale}{hr.suffix}", lr_dir / hr.name]
        pairs.append((next((c for c in candidates if c.is_file()), None), hr))
    return pairs

