"""`diffzoo images --src OUT --resolution R --out DIR`: ADM center crop of every image into npz shards.

Items are taken class-major (classes as in OUT/manifest.json, i.e. sorted), file names sorted inside a
class; shard k holds the good images among items [k*S, (k+1)*S). Images that do not decode are listed
in index.json ("corrupt") and on stderr, and left out. Each shard is written to a temp file and
os.replace'd; a rerun keeps every shard whose recorded fingerprint (item list, sizes, resolution)
still matches, so an interrupted run resumes where it stopped. index.json is written last.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np
from PIL import Image

from ..errors import DiffzooError
from ..utils import Progress, atomic_path, clean_stale_temps, kill_point, remove_tree, write_json
from ._util import (describe_error, read_json, strict_decoding, worker_map)
from .crop import center_crop_adm
from .shards import INDEX_FORMAT, read_shard_meta

CROP = "adm-center-crop/1"  # bump when the pixels a given input produces change
DEFAULT_SHARD_SIZE = 10000


def list_items(src, max_per_class: int | None = None) -> tuple[list[str], list[tuple[str, int, int]]]:
    """(classes, [(relative path, label, size in bytes)]) in shard order."""
    src = Path(src)
    manifest = src / "manifest.json"
    if manifest.is_file():
        classes = list(read_json(manifest, "dataset manifest")["classes"])
        root = src / "train"
    else:
        root = src / "train" if (src / "train").is_dir() else src
        if not root.is_dir():
            raise DiffzooError(f"source folder not found: {src}")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DiffzooError(f"no classes in {src}")
    items = []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            raise DiffzooError(f"class folder missing: {d}")
        entries = sorted((e for e in os.scandir(d) if e.is_file() and not e.name.startswith(".")),
                         key=lambda e: e.name)
        if not entries:
            raise DiffzooError(f"class folder {d} holds no images: a class with no images can be neither learned "
                               "nor evaluated; remove the folder or add its images")
        if max_per_class is not None:
            entries = entries[:max_per_class]
        items.extend((f"{cls}/{e.name}", label, e.stat().st_size) for e in entries)
    return classes, items


def _decode(job: tuple[str, int]):
    """Worker: ADM crop of one file -> uint8 (R, R, 3) array, or the reason it failed (a str)."""
    path, size = job
    try:
        with strict_decoding(), Image.open(path) as im:
            im = im.convert("RGB")  # DiT's ImageFolder loader converts before the transform
        return np.asarray(center_crop_adm(im, size), dtype=np.uint8)
    except Exception as err:  # truncated / not an image / unreadable
        return describe_error(err)


def _fingerprint(items, resolution: int) -> str:
    h = hashlib.sha256(json.dumps([CROP, resolution, items]).encode())
    return h.hexdigest()


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def _existing_shard(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        meta = read_shard_meta(path)
    except Exception as err:  # unreadable or foreign: made again (it is ours, derived from the data)
        print(f"warning: {path}: unreadable images shard ({describe_error(err)}); it is made again", file=sys.stderr)
        return None
    return meta if meta.get("fingerprint") == fingerprint else None


def _write_shard(path: Path, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, labels=labels, meta=np.array(json.dumps(meta)))
        f.flush()
        os.fsync(f.fileno())


def build_images(src, out, resolution: int, shard_size: int = DEFAULT_SHARD_SIZE, workers: int | None = None,
                 max_per_class: int | None = None, after_shard: Callable[[int], None] | None = None,
                 log=None) -> dict:
    """Write the shards and index.json; returns the index. `after_shard(k)` runs after shard k is done."""
    log = sys.stderr if log is None else log
    if resolution < 1:
        raise DiffzooError(f"--resolution must be >= 1, got {resolution}")
    if shard_size < 1:
        raise DiffzooError(f"--shard-size must be >= 1, got {shard_size}")
    if max_per_class is not None and max_per_class < 1:
        raise DiffzooError(f"--max-per-class must be >= 1, got {max_per_class}")
    src, out = Path(src), Path(out)
    classes, items = list_items(src, max_per_class)
    root = src / "train" if (src / "train").is_dir() else src
    if out.is_symlink():  # an output Snakemake's cache restored: never write through the link
        remove_tree(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # leftovers of killed writers (a live writer's temps are kept)
    num_shards = (len(items) + shard_size - 1) // shard_size
    for old in out.glob("shard-*.npz"):  # leftovers of a run with more shards
        if old.name not in {_shard_name(k) for k in range(num_shards)}:
            old.unlink()
    shards, corrupt = [], []
    t0, decoded, reused = time.perf_counter(), 0, 0
    progress = Progress(num_shards, f"images {resolution}px", "shards", stream=log)
    with worker_map(workers) as mapper:
        for k in range(num_shards):
            chunk = items[k * shard_size:(k + 1) * shard_size]
            fingerprint = _fingerprint([[p, lab, n] for p, lab, n in chunk], resolution)
            path = out / _shard_name(k)
            meta = _existing_shard(path, fingerprint)
            if meta is None:
                results = mapper(_decode, [(str(root / p), resolution) for p, _, _ in chunk], 16)
                images = np.empty((len(chunk), resolution, resolution, 3), np.uint8)
                labels = np.empty(len(chunk), np.int64)
                n, bad = 0, []
                for (p, lab, _), res in zip(chunk, results, strict=True):
                    if isinstance(res, str):
                        bad.append({"file": p, "reason": res})
                        print(f"images: excluded {p}: {res}", file=log)
                        continue
                    images[n], labels[n] = res, lab
                    n += 1
                meta = {"format": INDEX_FORMAT, "fingerprint": fingerprint, "resolution": resolution,
                        "first_item": k * shard_size, "num_items": len(chunk), "num_images": n,
                        "corrupt": bad}
                _write_shard(path, images[:n], labels[:n], meta)
                decoded += len(chunk)
            else:
                reused += 1
            shards.append({"file": path.name, "num_images": int(meta["num_images"])})
            corrupt.extend(meta["corrupt"])
            if after_shard is not None:
                after_shard(k)
            kill_point("images-shard")
            progress.update(1)
    progress.close()
    elapsed = time.perf_counter() - t0
    index = {
        "format": INDEX_FORMAT,
        "source": str(src),
        "crop": CROP,
        "resolution": resolution,
        "num_images": sum(s["num_images"] for s in shards),
        "num_classes": len(classes),
        "classes": classes,
        "shard_size": shard_size,
        "max_per_class": max_per_class,
        "shards": shards,
        "num_corrupt": len(corrupt),
        "corrupt": corrupt,
    }
    write_json(out / "index.json", index, sort_keys=False)
    rate = decoded / elapsed if elapsed > 0 else float("inf")
    print(f"images: {index['num_images']} images at {resolution}px in {len(shards)} shards "
          f"({reused} kept from an earlier run), {len(corrupt)} excluded; "
          f"decoded {decoded} in {elapsed:.1f}s ({rate:.0f} images/s)", file=log)
    return index
