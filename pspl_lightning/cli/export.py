"""``pspl-export``: a checkpoint or weights file -> ``.safetensors``, ``.pth`` or ``.onnx`` for other apps."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pspl_lightning.cli.failures import one_line_failures
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.export import ExportResult, export_model

log = logging.getLogger("pspl_lightning")


def export(cfg: DictConfig) -> ExportResult:
    """Export as ``cfg`` says; print what was written and how it checked."""
    result = export_model(cfg.ckpt, cfg.output, ema=bool(cfg.ema), half=bool(cfg.half),
                          overwrite=bool(cfg.overwrite), size=cfg.get("size"))
    for line in result.lines:
        print(line, flush=True)
    return result


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@one_line_failures()
def _hydra_main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    """Console entry point of ``pspl-export``."""
    _hydra_main()


if __name__ == "__main__":
    main()
