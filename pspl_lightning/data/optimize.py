"""``pspl-data optimize``: a folder of HR images -> litdata chunks that ``data=stream`` trains from.

Each image is decoded with the project's conversion rules (:func:`~pspl_lightning.data.io.read_image`) and
stored as one item ``{"name": <file stem>, "image": H x W x 3 uint8}`` (format ``uint8``, the default: no
decoding when streamed) or ``{"name", "png": <lossless PNG of that array>}`` (format ``png``: 2-3x smaller,
decoded per read). Images that cannot be decoded are skipped and reported one line each. Next to litdata's
``index.json`` a local output gets ``pspl_images.json`` (format, image count, the smallest image, the
skipped files), which lets ``data=stream`` check the patch size before training.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
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

from pspl_lightning.data.io import list_images, read_image
from pspl_lightning.errors import ConfigError, DataError, OutputExistsError, UserError

FORMATS = ("uint8", "png")
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

    It yields the item, or nothing for an undecodable file, whose reason it writes to ``report_dir`` (the
    main process prints it); the size of every image goes there too (for the sidecar)."""

    def __init__(self, fmt: str, report_dir: str) -> None:
        self.fmt, self.report_dir = fmt, report_dir

    def _report(self, path: Path, row: dict[str, Any]) -> None:
        name = f"{abs(hash(str(path))):x}-{os.getpid()}.json"
        Path(self.report_dir, name).write_text(json.dumps({"file": str(path), **row}))

    def __call__(self, path: str) -> Any:
        try:
            image = read_image(path)
        except UserError as exc:
            self._report(Path(path), {"error": str(exc)})
            return
        self._report(Path(path), {"height": image.shape[0], "width": image.shape[1]})
        yield {"name": Path(path).stem, **({"image": image} if self.fmt == "uint8" else
                                           {"png": encode_png(image)})}


class OptimizeResult(NamedTuple):
    images: int
    skipped: list[tuple[str, str]]  # (file, reason)
    seconds: float
    bytes_on_disk: int | None  # None for a remote output


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
                    chunk_bytes: str = "64MB", progress: bool = True) -> OptimizeResult:
    """Write every image of ``input_dir`` into litdata chunks under ``output`` (a new or empty folder, or an
    object-store URL). Undecodable images are skipped (listed in the result); none readable is an error."""
    litdata = require_litdata()
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not allowed: expected one of {', '.join(FORMATS)}")
    input_dir = Path(input_dir).expanduser()
    if not input_dir.is_dir():
        raise DataError(f"input={input_dir} is not a folder; expected a folder of HR images")
    files = list_images(input_dir)
    if not files:
        raise DataError(f"input={input_dir} holds no images")
    _check_output(output)
    workers = max(1, min(os.cpu_count() or 1, len(files))) if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers} is not allowed: expected an integer >= 1")
    local = None if is_remote(output) else Path(output).expanduser()
    start = time.perf_counter()
    start_method = multiprocessing.get_start_method(allow_none=True)
    with tempfile.TemporaryDirectory(prefix="pspl-optimize-") as report_dir:
        try:
            litdata.optimize(fn=_Encoder(fmt, report_dir), inputs=[str(f) for f in files],
                             output_dir=str(local or output), chunk_bytes=chunk_bytes, num_workers=workers,
                             verbose=progress, reorder_files=False)
        except Exception:
            if local is not None and local.is_dir() and not (local / "index.json").exists():
                shutil.rmtree(local)  # a torn output of ours, never a user's (it was checked empty)
            raise
        finally:  # litdata sets the process-wide start method to spawn: DataLoader workers made later in
            # this process would start as slow spawned interpreters
            multiprocessing.set_start_method(start_method, force=True)
        rows = [json.loads(p.read_text()) for p in Path(report_dir).iterdir()]
    seconds = time.perf_counter() - start
    skipped = sorted((r["file"], r["error"]) for r in rows if "error" in r)
    sizes = [r for r in rows if "error" not in r]
    if not sizes:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        raise DataError(f"input={input_dir}: none of its {len(files)} images could be decoded")
    if local is not None:
        smallest = min(sizes, key=lambda r: min(r["height"], r["width"]))
        sidecar = {"format": fmt, "images": len(sizes), "smallest": smallest,
                   "skipped": [{"file": f, "error": e} for f, e in skipped]}
        (local / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return OptimizeResult(len(sizes), skipped, seconds, folder_bytes(local) if local is not None else None)
