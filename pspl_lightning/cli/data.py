"""``pspl-data``: prepare data ahead of training.

    pspl-data prepare data=div2k data.root=/data/DIV2K data.cache_dir=/fast/cache [workers=N] [...]
        checks the layout of the data config that ``pspl-train`` would use with the same overrides, and
        builds its decoded cache (one-time; training then starts at once) in ``workers`` threads (default:
        every core), with images done, rate and time left; interrupted (Ctrl-C), it keeps the finished
        images and the same command builds the rest. Training images smaller than the patch are skipped
        (one line each and a count).
    pspl-data make-lr HR_DIR OUT_DIR --scale 2 3 4
        writes MATLAB-bicubic LR images ``OUT_DIR/X<s>/<name>x<s>.png`` (the benchmark layout); existing
        files are kept.
    pspl-data degrade input=HR_DIR output=LR_DIR degradation=bd data.scale=3 [seed=0] [device=cpu]
        writes one 8-bit PNG ``LR_DIR/<name>.png`` per HR image under a degradation (any
        ``degradation.*`` override works), the same image ``pspl-train``/``pspl-eval`` make for it; existing
        files are replaced only with ``overwrite=true``.
    pspl-data optimize input=HR_DIR output=OUT_DIR_OR_S3_URL [workers=N] [format=uint8|png] [min_size=96]
                       [part_images=N]
        writes the HR images of HR_DIR and its subfolders (named by their path under it) into litdata
        chunks for ``data=stream data.input_dir=OUT``; undecodable images and those whose shorter side is
        below ``min_size`` are skipped (one line each and a count); two images of one name (``a.png``,
        ``a.jpg``) and an existing, non-empty output are refused. A local output is recorded every
        ``part_images`` images (default: max(500, images / 50)); an interrupted run is continued by the same
        command.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate

from pspl_lightning.cli.failures import expected_failure, one_line_failures
from pspl_lightning.cli.hydra_setup import config_dir, project_root
from pspl_lightning.data.io import list_images, read_image, write_png
from pspl_lightning.errors import ConfigError, DataNotFoundError
from pspl_lightning.imresize import make_lr

log = logging.getLogger("pspl_lightning")


def _train_config(overrides: list[str]):
    """The training config composed with ``overrides`` (as ``pspl-train`` would see it)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.root_dir={project_root()}", *overrides])


def prepare(overrides: list[str]) -> dict:
    """Compose the training config with ``overrides``, check its data and build the decoded cache
    (``workers=N`` is ``data.cache_workers=N``)."""
    overrides = list(overrides)
    for i, arg in enumerate(overrides):
        key, sep, value = arg.partition("=")
        if key == "workers" and sep:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"workers={value} is not allowed: expected an integer >= 1")
            overrides[i] = f"data.cache_workers={value}"
    cfg = _train_config(overrides)
    dm = instantiate(cfg.data)
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup()
    summary = {
        "datamodule": type(dm).__name__,
        "train_images": len(dm.train_pairs),
        "val_sets": {name: len(pairs) for name, pairs in dm.val_pairs.items()},
        "cache_dir": str(dm.cache.cache_dir) if dm.cache is not None else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    cache = f"decoded cache in {summary['cache_dir']}" if summary["cache_dir"] else "no cache (in memory)"
    sets = ", ".join(f"{k} ({v})" for k, v in summary["val_sets"].items())
    print(f"{summary['datamodule']}: {summary['train_images']} training images, validation sets {sets}; "
          f"{cache}; ready in {summary['seconds']} s")
    return summary


def make_lr_folder(hr_dir: Path, out_dir: Path, scales: list[int]) -> tuple[int, int]:
    """Write ``out_dir/X<s>/<stem>x<s>.png`` for every HR image; return (written, kept)."""
    if not hr_dir.is_dir():
        raise DataNotFoundError(f"HR folder {hr_dir} does not exist")
    files = list_images(hr_dir)
    if not files:
        raise DataNotFoundError(f"{hr_dir} holds no images")
    written = kept = 0
    for hr_file in files:
        targets = {s: out_dir / f"X{s}" / f"{hr_file.stem}x{s}.png" for s in scales}
        todo = {s: t for s, t in targets.items() if not t.exists()}
        kept += len(targets) - len(todo)
        if todo:
            hr = read_image(hr_file)
            for s, target in todo.items():
                write_png(target, make_lr(hr, s))
                written += 1
    return written, kept


DEGRADE_OPTIONS = {"input": None, "output": None, "seed": None, "device": "cpu", "overwrite": "false"}


def degrade(args: list[str]) -> list[Path]:
    """``input=`` HR folder -> ``output=`` LR folder under the composed ``degradation`` at ``data.scale``;
    ``seed=`` sets ``degradation.seed``; other arguments are Hydra overrides of the training config."""
    from pspl_lightning.data.degrade import degradation_from_config, degrade_folder

    opts, overrides = dict(DEGRADE_OPTIONS), []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in opts:
            opts[key] = value
        else:
            overrides.append(arg)
    if not opts["input"] or not opts["output"]:
        raise ConfigError("pspl-data degrade needs input=<folder of HR images> and output=<folder for the LR "
                          "images>, e.g. pspl-data degrade input=Set5/HR output=Set5/LR_bd/X3 degradation=bd "
                          "data.scale=3")
    if opts["overwrite"] not in ("true", "false"):
        raise ConfigError(f"overwrite={opts['overwrite']} is not allowed: expected true or false")
    if opts["seed"] is not None:
        overrides.append(f"degradation.seed={opts['seed']}")
    cfg = _train_config(overrides)
    deg = degradation_from_config(cfg.degradation, cfg.data.scale)
    files = degrade_folder(Path(opts["input"]), Path(opts["output"]), deg, opts["device"],
                           overwrite=opts["overwrite"] == "true")
    print(f"wrote {len(files)} LR images (degradation={deg.name}, x{deg.scale}, seed {deg.seed}) "
          f"to {opts['output']}")
    return files


OPTIMIZE_OPTIONS = {"input": None, "output": None, "workers": None, "format": "uint8", "chunk_bytes": "64MB",
                    "min_size": None, "part_images": None}


def optimize(args: list[str]) -> None:
    """``input=`` HR folder -> ``output=`` litdata chunks (see :mod:`pspl_lightning.data.optimize`)."""
    from pspl_lightning.data.optimize import (
        DEFAULT_MIN_SIZE,
        OptimizeInterrupted,
        check_chunk_bytes,
        optimize_folder,
    )

    opts = dict(OPTIMIZE_OPTIONS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in opts:
            raise ConfigError(f"pspl-data optimize: unknown argument {arg!r}; expected "
                              f"{', '.join(f'{k}=' for k in opts)}")
        opts[key] = value
    if not opts["input"] or not opts["output"]:
        raise ConfigError("pspl-data optimize needs input=<folder of HR images> and output=<new folder or "
                          "s3://bucket/path>, e.g. pspl-data optimize input=DIV2K/DIV2K_train_HR "
                          "output=div2k_lit")
    workers, min_size = opts["workers"], opts["min_size"] or str(DEFAULT_MIN_SIZE)
    if workers is not None and not workers.isdigit():
        raise ConfigError(f"workers={workers} is not allowed: expected an integer >= 1")
    if not min_size.isdigit() or int(min_size) < 1:
        raise ConfigError(f"min_size={min_size} is not allowed: expected an integer >= 1 (pixels of the "
                          f"shorter side; default {DEFAULT_MIN_SIZE}, the HR patch of the x2 configs)")
    part = opts["part_images"]
    if part is not None and (not part.isdigit() or int(part) < 1):
        raise ConfigError(f"part_images={part} is not allowed: expected an integer >= 1 (images written "
                          f"between two records of an interruptible run)")
    try:
        result = optimize_folder(opts["input"], opts["output"], int(workers) if workers else None,
                                 opts["format"], check_chunk_bytes(opts["chunk_bytes"]),
                                 min_size=int(min_size), part_images=int(part) if part else None)
    except KeyboardInterrupt:  # before its own handling begins (while litdata and torch are imported)
        raise OptimizeInterrupted("interrupted before writing began; run the same command again") from None
    for file, reason in result.skipped:  # the reason names the file already (the image reader's message)
        print(f"pspl-data: skipped {reason if reason.startswith(file) else f'{file}: {reason}'}",
              file=sys.stderr)
    for line in result.too_small:
        print(f"pspl-data: skipped {line}", file=sys.stderr)
    size = f", {result.bytes_on_disk / 1e6:.1f} MB" if result.bytes_on_disk is not None else ""
    counts = [f"{len(result.skipped)} undecodable"] if result.skipped else []
    counts += [f"{len(result.too_small)} smaller than min_size={min_size}"] if result.too_small else []
    skipped = f"; skipped {', '.join(counts)}" if counts else ""
    print(f"wrote {result.images} images ({opts['format']}{size}) to {opts['output']} in "
          f"{result.seconds:.1f} s{skipped}")


def _hydra_message(exc: HydraException) -> str:
    """Hydra's composition error without its search-path listing, on one line."""
    text = str(exc).split("Config search path")[0].replace(":\n\t", ": ").replace("\n\t", ", ")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


@one_line_failures()
def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``pspl-data``."""
    parser = argparse.ArgumentParser(prog="pspl-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_prepare = sub.add_parser("prepare", help="check a data config and build its decoded cache")
    p_prepare.add_argument("overrides", nargs="*", help="Hydra overrides, as for pspl-train; workers=N: "
                           "decoding threads (default: every core)")
    p_lr = sub.add_parser("make-lr", help="write MATLAB-bicubic LR images for a folder of HR images")
    p_lr.add_argument("hr_dir", type=Path)
    p_lr.add_argument("out_dir", type=Path)
    p_lr.add_argument("--scale", type=int, nargs="+", default=[2, 3, 4], choices=[2, 3, 4])
    p_deg = sub.add_parser("degrade", help="write the LR images of a folder of HR images under a degradation")
    p_deg.add_argument("args", nargs="*", help="input=<dir> output=<dir> degradation=<name> "
                       "data.scale=<s> [seed=<n>] [device=cpu] [overwrite=false] [degradation.*=...]")
    p_opt = sub.add_parser("optimize", help="write a folder of HR images into litdata chunks (data=stream)")
    p_opt.add_argument("args", nargs="*", help="input=<dir> output=<dir or s3://...> [workers=N] "
                       "[format=uint8|png] [chunk_bytes=64MB] [min_size=96] [part_images=N]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "prepare":
            prepare(args.overrides)
        elif args.command == "degrade":
            degrade(args.args)
        elif args.command == "optimize":
            optimize(args.args)
        else:
            written, kept = make_lr_folder(args.hr_dir, args.out_dir, args.scale)
            print(f"wrote {written} LR images under {args.out_dir}, kept {kept} that existed")
    except HydraException as exc:  # composing the overrides: Hydra's message is the user's line
        if expected_failure(exc) is None:
            raise ConfigError(_hydra_message(exc)) from None
        raise  # a constructor's check, wrapped by instantiate


if __name__ == "__main__":
    main()
