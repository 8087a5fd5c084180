"""Small helpers shared by the data stages: atomic writes, image checks, worker pools."""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator

from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import DiffzooError
from ..utils import describe


def read_json(path: Path, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DiffzooError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:
        raise DiffzooError(f"{what} {path} is unreadable: {err}") from None


@contextlib.contextmanager
def strict_decoding():
    """Make PIL raise on truncated files whatever another module set globally."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def describe_error(err: BaseException) -> str:
    """One line, with no memory addresses or temp paths (manifests must be reproducible)."""
    if isinstance(err, UnidentifiedImageError):
        return "UnidentifiedImageError: not an image file PIL can identify"
    return describe(err)


def check_image_bytes(data: bytes) -> str | None:
    """None when `data` decodes completely as an image, else the reason it does not."""
    if not data:
        return "empty file"
    try:
        with strict_decoding(), Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        return describe_error(err)
    return None


def default_workers() -> int:
    """Cores this process may use (the SLURM/taskset allocation, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def worker_map(workers: int | None) -> Iterator[Callable]:
    """Yield imap(fn, items, chunksize) -> ordered iterator; a process pool when workers > 1.

    Results stream back in order, so a caller filling an array never holds all of them at once.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield lambda fn, items, chunksize=1: map(fn, items)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield lambda fn, items, chunksize=1: pool.imap(fn, items, chunksize=chunksize)


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch
