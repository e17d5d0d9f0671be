"""``pspl-upscale``: super-resolve an image or a folder of images into 8-bit PNGs with the same names."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import track

from pspl_lightning.cli.common import asked_model
from pspl_lightning.cli.failures import one_line_failures
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.data.io import list_images, read_image, write_png
from pspl_lightning.errors import ConfigError, DataNotFoundError, OutputExistsError
from pspl_lightning.inference.loading import load_network
from pspl_lightning.inference.upscaler import Upscaler, resolve_device

log = logging.getLogger("pspl_lightning")


def plan_outputs(input_path: str | Path, output_dir: str | Path,
                 overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(input file, output PNG) for every image to upscale; checks everything before anything is written."""
    src, out = Path(input_path), Path(output_dir)
    if src.is_dir():
        files = list_images(src)
        if not files:
            raise DataNotFoundError(f"input={src} is a folder without images (png, jpg, bmp, tif, webp, ppm)")
    elif src.is_file():
        files = [src]
    else:
        raise DataNotFoundError(f"input={src} does not exist (expected an image file or a folder of images)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output={out} is a file; it must be a folder for the SR images")
    plan = [(f, out / f"{f.stem}.png") for f in files]
    seen: dict[Path, Path] = {}
    for f, target in plan:
        if target in seen:
            raise ConfigError(f"{seen[target].name} and {f.name} would both be written to {target}; "
                             "rename one")
        seen[target] = f
    existing = [t for _, t in plan if t.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        shown = ", ".join(str(t) for t in existing[:5]) + more
        raise OutputExistsError(f"{len(existing)} output file(s) exist: {shown}; nothing was written. "
                              f"Pass overwrite=true to replace them, or choose another output folder")
    return plan


def upscale(cfg: DictConfig, console: Console | None = None) -> list[Path]:
    """Upscale ``cfg.input`` into ``cfg.output`` as ``cfg`` says; return the written files."""
    console = console or Console(stderr=True)
    plan = plan_outputs(cfg.input, cfg.output, bool(cfg.overwrite))
    loaded = load_network(cfg.ckpt, model=asked_model(cfg), scale=cfg.get("scale"),
                          device=resolve_device(cfg.device))
    upscaler = Upscaler(loaded, tile=cfg.tile, tile_overlap=cfg.tile_overlap,
                        self_ensemble=bool(cfg.self_ensemble))
    log.info("Upscaling %d image(s) x%d with %s into %s", len(plan), loaded.scale, loaded.describe(),
             cfg.output)
    written = []
    for src, target in track(plan, description=f"x{loaded.scale}", console=console, transient=True):
        write_png(target, upscaler.upscale_image(read_image(src)))
        written.append(target)
    log.info("Wrote %d PNG(s) to %s", len(written), cfg.output)
    return written


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="upscale")
@one_line_failures()
def _hydra_main(cfg: DictConfig) -> None:
    upscale(cfg)


def main() -> None:
    """Console entry point of ``pspl-upscale``."""
    _hydra_main()


if __name__ == "__main__":
    main()
