"""``pspl-data optimize``: a folder of HR images -> litdata chunks that ``data=stream`` trains from.

Every image of the folder and its subfolders is decoded with the project's conversion rules
(:func:`~pspl_lightning.data.io.read_image`) and stored as one item ``{"name": <path under the folder, without
the extension>, "image": H x W x 3 uint8}`` (format ``uint8``, the default: no
decoding when streamed) or ``{"name", "png": <lossless PNG of that array>}`` (format ``png``: 2-3x smaller,
decoded per read). Images that cannot be decoded, and those whose shorter side is below ``min_size``, are
skipped and reported one line each; two images of one name (``dup.png``, ``dup.jpg``) are refused. Next to
litdata's ``index.json`` a local output gets ``pspl_images.json`` (format, image count, every image's size,
the smallest, the skipped files), which lets ``data=stream`` count the images smaller than its patch.

A local output is written in parts (litdata's ``mode="append"``); after each, ``pspl_optimize.json`` records
the images done and litdata's index as it stands. An interrupted run is continued by the same command: it
puts the recorded index back, drops the chunks of the part that was under way and goes on from the first
image not recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from pspl_lightning.atomic import atomic_path
from pspl_lightning.data.io import image_name, list_images, read_image, unique_names
from pspl_lightning.errors import ConfigError, DataError, Interrupted, OutputExistsError, UserError

FORMATS = ("uint8", "png")
DEFAULT_MIN_SIZE = 96  # the HR patch of the x2 configs (48 LR pixels x 2)
_BYTES = re.compile(r"^\s*\d+(\.\d+)?\s*(tb|gb|mb|kb|t|g|m|k|b)?\s*$", re.IGNORECASE)
SIDECAR = "pspl_images.json"
STATE = "pspl_optimize.json"  # an unfinished local output: its settings and the images recorded so far
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


class OptimizeInterrupted(Interrupted):
    """Ctrl-C during ``pspl-data optimize``: the parts written so far are kept, the message says so."""


def _watch(report_dir: str, done: list[int], total: int, progress: bool, stop: threading.Event) -> None:
    """The progress bar of an optimize run: images of finished parts (``done[0]``) plus the workers'
    reports of the part under way, counted every half second."""
    from pspl_lightning.data.progress import image_progress

    with image_progress(disable=not progress) as bar:
        task = bar.add_task("writing litdata chunks", total=total, completed=done[0])
        while not stop.wait(0.5):
            bar.update(task, completed=done[0] + len(os.listdir(report_dir)))
        bar.update(task, completed=done[0] + len(os.listdir(report_dir)))


@contextlib.contextmanager
def _ctrl_c_stays_ours() -> Iterator[None]:
    """Ctrl-C during ``litdata.optimize`` as a KeyboardInterrupt in this process, its workers ended quietly.

    Hand-written around litdata: its SIGINT handler ends the process with status 0 (``os._exit(0)``), so an
    interrupted run would pass for a finished one with images missing. While it runs, its handler is not
    installed, the processes it starts ignore SIGINT (no traceback from each worker), and on any exception
    those processes are terminated."""
    real_signal, real_start = signal.signal, multiprocessing.process.BaseProcess.start
    before = set(multiprocessing.active_children())

    def keep_sigint(signum: int, handler: Any) -> Any:
        return signal.getsignal(signum) if signum == signal.SIGINT else real_signal(signum, handler)

    def start_ignoring_sigint(process: multiprocessing.process.BaseProcess) -> None:
        previous = real_signal(signal.SIGINT, signal.SIG_IGN)  # inherited through the spawn's exec
        try:
            real_start(process)
        finally:
            real_signal(signal.SIGINT, previous)

    signal.signal = keep_sigint  # type: ignore[assignment]
    multiprocessing.process.BaseProcess.start = start_ignoring_sigint  # type: ignore[method-assign]
    try:
        yield
    except BaseException:
        started = set(multiprocessing.active_children()) - before
        for child in started:
            child.terminate()
        for child in started:
            child.join(10)
        raise
    finally:
        signal.signal = real_signal
        multiprocessing.process.BaseProcess.start = real_start  # type: ignore[method-assign]


def _resume_state(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded state of an unfinished optimize into ``out`` with these ``settings`` (its torn part
    removed), None for a new or empty folder; anything else is refused in one line."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    state_file = out / STATE
    if not out.is_dir() or not state_file.is_file():
        raise OutputExistsError(f"output={out} exists and is not empty: an optimized data set is never "
                                f"overwritten; choose a new folder (or delete this one)")
    try:
        state = json.loads(state_file.read_text())
        recorded = {k: state["settings"][k] for k in settings}
        index = state["index"]  # litdata's index.json as the last recorded part left it (None before)
        indexed = {c["filename"] for c in index["chunks"]} if index else set()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"output={out}: its record of an unfinished optimize ({state_file}) is unreadable "
                        f"({exc!r}); delete the folder and run again") from None
    if recorded != settings:
        differ = ", ".join("other image files" if k == "files" else f"{k}={recorded[k]} (now {v})"
                           for k, v in settings.items() if recorded[k] != v)
        raise OutputExistsError(f"output={out} holds an unfinished optimize with {differ}: run that command "
                                f"again to finish it, or choose a new folder")
    # the part that was under way is undone: its chunks, and its entries if litdata merged them already
    for f in out.iterdir():
        if f.name not in indexed and f.name != STATE:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    if index:
        payload = json.dumps(index).encode()
        with atomic_path(out / "index.json") as tmp:
            tmp.write_bytes(payload)
    return state


def _part_size(images: int) -> int:
    """Images per recorded part: about 50 parts for a large set (an interruption redoes at most one), at
    least 500 images each (every part starts litdata's workers anew, a few seconds)."""
    return max(500, -(-images // 50))


def folder_bytes(folder: Path) -> int:
    """Total size of the files directly in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def optimize_folder(input_dir: str | Path, output: str, workers: int | None = None, fmt: str = "uint8",
                    chunk_bytes: str | int = "64MB", progress: bool = True,
                    min_size: int = DEFAULT_MIN_SIZE, part_images: int | None = None) -> OptimizeResult:
    """Write every image of ``input_dir`` and its subfolders into litdata chunks under ``output`` (a new or
    empty folder, the folder of an interrupted run with the same settings, or an object-store URL).
    Undecodable images and those whose shorter side is below ``min_size`` are skipped (listed in the
    result); none left is an error. A local output is written ``part_images`` at a time (default:
    :func:`_part_size`), each part recorded so that an interrupted run continues from there."""
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
    if not isinstance(workers, int | None) or (workers is not None and workers < 1):
        raise ConfigError(f"workers={workers} is not allowed: expected an integer >= 1")
    workers = max(1, min(os.cpu_count() or 1, len(files))) if workers is None else workers
    local = None if is_remote(output) else Path(output).expanduser()
    listing = hashlib.sha1("\n".join(f.relative_to(input_dir).as_posix() for f in files).encode())
    settings = {"input": str(input_dir.resolve()), "images": len(files), "format": fmt,
                "chunk_bytes": chunk_bytes, "min_size": min_size, "files": listing.hexdigest()[:16]}
    if local is None:
        check_reachable(output, "output")
        state = None
    else:
        state = _resume_state(local, settings)
    rows: list[dict[str, Any]] = state["rows"] if state else []
    done = [state["done"] if state else 0]
    part = len(files) if local is None else (part_images or _part_size(len(files)))

    def record() -> None:  # (the folder is ours from here on: a torn first part is recognized too)
        assert local is not None
        index = json.loads((local / "index.json").read_text()) if done[0] else None
        payload = json.dumps({"settings": settings, "done": done[0], "rows": rows, "index": index}).encode()
        local.mkdir(parents=True, exist_ok=True)
        with atomic_path(local / STATE) as tmp:
            tmp.write_bytes(payload)

    if local is not None and state is None:
        record()
    start = time.perf_counter()
    start_method = multiprocessing.get_start_method(allow_none=True)
    quiet = logging.getLogger("litdata.utilities.format")  # "max_cache_size is unset; using 29.0 GB ..."
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="pspl-optimize-") as report_dir:
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(report_dir, done, len(files), progress, stop),
                                   daemon=True)
        watcher.start()
        try:
            quiet.setLevel(logging.WARNING)
            while done[0] < len(files):
                inputs = [str(f) for f in files[done[0] : done[0] + part]]
                # verbose=False: no account advert nor worker chatter (the progress bar is ours)
                with _ctrl_c_stays_ours():
                    litdata.optimize(fn=_Encoder(fmt, report_dir, str(input_dir), min_size), inputs=inputs,
                                     output_dir=str(local or output), chunk_bytes=chunk_bytes,
                                     num_workers=min(workers, len(inputs)), verbose=False,
                                     reorder_files=False, mode="append" if done[0] else None)
                reports = list(Path(report_dir).iterdir())
                rows += [json.loads(r.read_text()) for r in reports]
                for r in reports:
                    r.unlink()
                done[0] += len(inputs)
                if local is not None and done[0] < len(files):
                    record()
        except BaseException as exc:
            if local is not None and local.is_dir() and not done[0]:
                shutil.rmtree(local)  # a torn output of ours, never a user's (it was checked empty)
            if not isinstance(exc, KeyboardInterrupt):
                raise
            if local is not None and local.is_dir():
                raise OptimizeInterrupted(
                    f"interrupted after {done[0]} of {len(files)} images; {local} keeps them: run the same "
                    f"command again to write the other {len(files) - done[0]}") from None
            raise OptimizeInterrupted(f"interrupted before the first part of {min(part, len(files))} images "
                                      f"was written; nothing was kept") from None
        finally:  # litdata sets the process-wide start method to spawn: DataLoader workers made later in
            # this process would start as slow spawned interpreters
            multiprocessing.set_start_method(start_method, force=True)
            quiet.setLevel(level)
            stop.set()
            watcher.join()
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
        (local / STATE).unlink(missing_ok=True)  # finished: an optimized set, never written into again
    return OptimizeResult(len(sizes), skipped, seconds, folder_bytes(local) if local is not None else None,
                          too_small)
