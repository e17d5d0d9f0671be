"""``pspl-data optimize``: a folder of HR images -> litdata chunks that ``data=stream`` trains from.

Every image of the folder and its subfolders is decoded with the project's conversion rules
(:func:`~pspl_lightning.data.io.read_image`) and stored as one item ``{"name": <path under the folder, without
the extension>, "image": H x W x 3 uint8}`` (format ``uint8``, the default: no
decoding when streamed) or ``{"name", "png": <lossless PNG of that array>}`` (format ``png``: 2-3x smaller,
decoded per read). Images that cannot be decoded, and those whose shorter side is below ``min_size``, are
skipped and reported one line each; two images of one name (``dup.png``, ``dup.jpg``) are refused. Next to
litdata's ``index.json`` a local output gets ``pspl_images.json`` (format, image count, every image's size,
the smallest, the skipped files), which lets ``data=stream`` count the images smaller than its patch.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from pspl_lightning.data.io import image_name, list_images, read_image, unique_names
from pspl_lightning.errors import ConfigError, DataError, OutputExistsError, UserError

FORMATS = ("uint8", "png")
DEFAULT_MIN_SIZE = 96  # the HR patch of the x2 configs (48 LR pixels x 2)
_BYTES = re.compile(r"^\s*\d+(\.\d+)?\s*(tb|gb|mb|kb|t|g|m|k|b)?\s*$", re.IGNORECASE)
SIDECAR = "pspl_images.json"
REACH_TIMEOUT_S = 5.0
# object-store schemes and the host a connection test reaches (the endpoint variables override it)
_STORE_HOSTS = {"s3": "s3.amazonaws.com", "gs": "storage.googleapis.com", "hf": "huggingface.co"}


def require_litdata() -> ModuleType:
    """The ``litdata`` module, or a ConfigError saying which extra to install."""
    try:
        import litdata
    except ImportError as exc:
        raise ConfigError(f"streamed data (data=stream, pspl-data optimize) needs litdata, which is not "
                          f"installed ({exc}): pip install 'pspl-lightning[stream]'") from None
    return litdata


def is_remote(path: str) -> bool:
    """An object-store URL (``s3://...``) rather than a local folder."""
    return "://" in str(path)


def _endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) that serves ``url``'s scheme, or None for a scheme without a known endpoint."""
    scheme = urlparse(url).scheme
    custom = scheme == "s3" and (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    if custom:
        parsed = urlparse(custom)
        return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    return (_STORE_HOSTS[scheme], 443) if scheme in _STORE_HOSTS else None


def check_reachable(url: str, key: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """A DataError naming ``key`` when the object store of ``url`` cannot be reached within ``timeout``.

    Hand-written: a TCP connection test in a daemon thread (name lookup included) bounds the wait, whatever
    the retry and timeout settings of the storage client that litdata would start."""
    endpoint = _endpoint(url)
    if endpoint is None:
        return
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(endpoint, timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome or outcome[0] is not None:
        why = f"{outcome[0]}" if outcome else f"no answer within {timeout:.0f} s"
        raise DataError(f"{key}={url}: cannot reach {endpoint[0]}:{endpoint[1]} ({why}); check the network, "
                        f"the bucket and AWS_ENDPOINT_URL, or use a local folder")


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an H x W x 3 uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def decode_item(item: dict[str, Any]) -> np.ndarray:
    """The H x W x 3 uint8 image of an optimized item (either format)."""
    if "image" in item:
        return np.asarray(item["image"])
    from PIL import Image

    with Image.open(io.BytesIO(item["png"])) as im:
        return np.asarray(im.convert("RGB"))


class _Encoder:
    """The function litdata's workers run per input file (a picklable class: workers are processes).

    It yields the item, or nothing for an undecodable file or one whose shorter side is below ``min_size``,
    whose reason it writes to ``report_dir`` (the main process prints it); the size of every image goes
    there too (for the sidecar), and the count of reports is the progress."""

    def __init__(self, fmt: str, report_dir: str, root: str, min_size: int) -> None:
        self.fmt, self.report_dir, self.root, self.min_size = fmt, report_dir, root, min_size

    def _report(self, path: Path, row: dict[str, Any]) -> None:
        name = f"{abs(hash(str(path))):x}-{os.getpid()}.json"
        Path(self.report_dir, name).write_text(json.dumps({"file": str(path), **row}))

    def __call__(self, path: str) -> Any:
        try:
            image = read_image(path)
        except UserError as exc:
            self._report(Path(path), {"error": str(exc)})
            return
        h, w = image.shape[:2]
        name = image_name(Path(path), Path(self.root))
        if min(h, w) < self.min_size:
            self._report(Path(path), {"small": f"{path} ({w}x{h}, WxH): shorter side below min_size="
                                               f"{self.min_size}"})
            return
        self._report(Path(path), {"name": name, "height": h, "width": w})
        yield {"name": name, **({"image": image} if self.fmt == "uint8" else {"png": encode_png(image)})}


class OptimizeResult(NamedTuple):
    images: int
    skipped: list[tuple[str, str]]  # (file, reason): undecodable
    seconds: float
    bytes_on_disk: int | None  # None for a remote output
    too_small: list[str] = []  # one line per image below min_size


def check_chunk_bytes(value: str | int) -> str | int:
    """``chunk_bytes`` as litdata takes it (an integer, or a number with a unit such as ``64MB``), or a
    ConfigError naming the key."""
    text = str(value)
    if not _BYTES.match(text) or float(re.sub(r"[a-zA-Z\s]", "", text)) <= 0:
        raise ConfigError(f"chunk_bytes={value} is not allowed: expected a positive size such as 64MB, 256MB "
                          f"or 1GB (units b, kb, mb, gb, tb)")
    return int(text) if text.strip().isdigit() else text.strip()


def _watch(report_dir: str, total: int, progress: bool, stop: threading.Event) -> None:
    """The progress bar of an optimize run: the workers' reports counted every half second."""
    from pspl_lightning.data.progress import image_progress

    with image_progress(disable=not progress) as bar:
        task = bar.add_task("writing litdata chunks", total=total)
        while not stop.wait(0.5):
            bar.update(task, completed=len(os.listdir(report_dir)))
        bar.update(task, completed=len(os.listdir(report_dir)))


def _check_output(output: str) -> None:
    if is_remote(output):
        check_reachable(output, "output")
        return
    out = Path(output).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"output={out} exists and is not empty: an optimized data set is never "
                                f"overwritten; choose a new folder (or delete this one)")


def folder_bytes(folder: Path) -> int:
    """Total size of the files directly in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def optimize_folder(input_dir: str | Path, output: str, workers: int | None = None, fmt: str = "uint8",
                    chunk_bytes: str | int = "64MB", progress: bool = True,
                    min_size: int = DEFAULT_MIN_SIZE) -> OptimizeResult:
    """Write every image of ``input_dir`` and its subfolders into litdata chunks under ``output`` (a new or
    empty folder, or an object-store URL). Undecodable images and those whose shorter side is below
    ``min_size`` are skipped (listed in the result); none left is an error."""
    litdata = require_litdata()
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not allowed: expected one of {', '.join(FORMATS)}")
    chunk_bytes = check_chunk_bytes(chunk_bytes)
    if not isinstance(min_size, int) or min_size < 1:
        raise ConfigError(f"min_size={min_size} is not allowed: expected an integer >= 1 (pixels)")
    input_dir = Path(input_dir).expanduser()
    if not input_dir.is_dir():
        what = "does not exist" if not input_dir.exists() else "is not a folder"
        raise DataError(f"input={input_dir} {what}; expected a folder of HR images")
    files = list_images(input_dir, recursive=True)
    if not files:
        raise DataError(f"input={input_dir} holds no images")
    unique_names(files, input_dir, "input")
    _check_output(output)
    workers = max(1, min(os.cpu_count() or 1, len(files))) if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers} is not allowed: expected an integer >= 1")
    local = None if is_remote(output) else Path(output).expanduser()
    start = time.perf_counter()
    start_method = multiprocessing.get_start_method(allow_none=True)
    quiet = logging.getLogger("litdata.utilities.format")  # "max_cache_size is unset; using 29.0 GB ..."
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="pspl-optimize-") as report_dir:
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(report_dir, len(files), progress, stop), daemon=True)
        watcher.start()
        try:
            quiet.setLevel(logging.WARNING)
            # verbose=False: no account advert nor worker chatter (the progress bar is ours)
            litdata.optimize(fn=_Encoder(fmt, report_dir, str(input_dir), min_size),
                             inputs=[str(f) for f in files], output_dir=str(local or output),
                             chunk_bytes=chunk_bytes, num_workers=workers, verbose=False, reorder_files=False)
        except BaseException:
            if local is not None and local.is_dir() and not (local / "index.json").exists():
                shutil.rmtree(local)  # a torn output of ours, never a user's (it was checked empty)
            raise
        finally:  # litdata sets the process-wide start method to spawn: DataLoader workers made later in
            # this process would start as slow spawned interpreters
            multiprocessing.set_start_method(start_method, force=True)
            quiet.setLevel(level)
            stop.set()
            watcher.join()
        rows = [json.loads(p.read_text()) for p in Path(report_dir).iterdir()]
    seconds = time.perf_counter() - start
    skipped = sorted((r["file"], r["error"]) for r in rows if "error" in r)
    too_small = sorted(r["small"] for r in rows if "small" in r)
    sizes = [r for r in rows if "height" in r]
    if not sizes:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        if too_small:
            raise DataError(f"input={input_dir}: all {len(too_small)} decodable images have a shorter side "
                            f"below min_size={min_size}; lower min_size")
        raise DataError(f"input={input_dir}: none of its {len(files)} images could be decoded")
    if local is not None:
        smallest = min(sizes, key=lambda r: min(r["height"], r["width"]))
        by_name = {r["name"]: [r["height"], r["width"]] for r in sorted(sizes, key=lambda r: r["name"])}
        sidecar = {"format": fmt, "images": len(sizes), "min_size": min_size, "smallest": smallest,
                   "sizes": by_name,
                   "skipped": [{"file": f, "error": e} for f, e in skipped], "too_small": too_small}
        (local / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return OptimizeResult(len(sizes), skipped, seconds, folder_bytes(local) if local is not None else None,
                          too_small)
