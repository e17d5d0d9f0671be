"""Write a pspl-train checkpoint's network weights alone, with the model config that rebuilds them.

    python scripts/export_weights.py outputs/train/runs/<run>/checkpoints/last.ckpt edsr_x2.pth
    python scripts/export_weights.py last.ckpt edsr_x2.safetensors     # needs: pip install safetensors

The output (``.pth``: a dict readable with ``torch.load(weights_only=True)``; ``.safetensors``: tensors plus
metadata) is accepted by ``pspl-eval ckpt=...`` and ``pspl-upscale ckpt=...``. Existing files are kept
unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

from pspl_lightning.inference.loading import WeightsError, export_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a pspl-train .ckpt (or an exported weights file)")
    parser.add_argument("output", help="the weights file to write: .pth or .safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        out = export_weights(args.checkpoint, args.output, overwrite=args.overwrite)
    except (WeightsError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
