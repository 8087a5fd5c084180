"""`diffzoo images --src OUT --resolution R --out DIR`: ADM center crop of every image into npz shards.

Items are taken class-major (classes as in OUT/manifest.json, i.e. sorted), file names sorted inside a
class; shard k holds the good images among items [k*S, (k+1)*S). Images that do not decode are listed
in index.json ("corrupt") and on stderr, and left out. Each shard is written to a temp file and
os.replace'd; a rerun keeps every shard whose recorded fingerprint (item list, sizes, resolution)
still matches, so an interrupted run resumes where it stopped. index.json is written last.

A source with a held-out split beside train/ (OUT/val/<class>/, as the fashion_mnist source writes)
gets it cropped the same way into DIR/val/ (its own shards and index.json, same classes, resolution
and resume logic). DIR/index.json stays the training split -- the one later stages train on -- and
names the held-out folder as "val": "val". The manifest's human class names, where it has them,
pass through as "class_names".
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


def list_items(src, max_per_class: int | None = None, split: str = "train",
               classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int, int]]]:
    """(classes, [(relative path, label, size in bytes)]) in shard order.

    split "val": the held-out tree SRC/val/ with `classes` (the training split's, so labels agree);
    a class may have no held-out images there, but a folder of an unknown class is refused."""
    src = Path(src)
    manifest = src / "manifest.json"
    if split != "train":
        root = src / split
        if not root.is_dir():
            raise DiffzooError(f"source folder not found: {root}")
        known = set(classes)
        unknown = sorted(e.name for e in os.scandir(root)
                         if e.is_dir() and not e.name.startswith(".") and e.name not in known)
        if unknown:
            raise DiffzooError(f"{root} holds class folders the training split lacks: {', '.join(unknown[:5])}")
    elif manifest.is_file():
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
        if split != "train" and not d.is_dir():
            continue
        if not d.is_dir():
            raise DiffzooError(f"class folder missing: {d}")
        entries = sorted((e for e in os.scandir(d) if e.is_file() and not e.name.startswith(".")),
                         key=lambda e: e.name)
        if not entries and split == "train":
            raise DiffzooError(f"class folder {d} holds no images: a class with no images can be neither learned "
                               "nor evaluated; remove the folder or add its images")
        if max_per_class is not None:
            entries = entries[:max_per_class]
        items.extend((f"{cls}/{e.name}", label, e.stat().st_size) for e in entries)
    return classes, items


def _class_names(src: Path, classes: list[str]) -> list[str] | None:
    """The manifest's human class names (label order), when it records them for these classes."""
    manifest = src / "manifest.json"
    if not manifest.is_file():
        return None
    names = read_json(manifest, "dataset manifest").get("class_names")
    return list(names) if isinstance(names, list) and len(names) == len(classes) else None


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
    """Write the shards and index.json (and val/ for a source with a held-out split); returns the
    index. `after_shard(k)` runs after shard k is done (training shards first, then held-out ones)."""
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
    splits = [("train", root, items, out)]
    if root == src / "train" and (src / "val").is_dir():
        splits.append(("val", src / "val", list_items(src, max_per_class, "val", classes)[1], out / "val"))
    if out.is_symlink():  # an output Snakemake's cache restored: never write through the link
        remove_tree(out)
    out.mkdir(parents=True, exist_ok=True)
    if len(splits) == 1:
        remove_tree(out / "val")  # a held-out split of an earlier source
    num_shards = [(len(s[2]) + shard_size - 1) // shard_size for s in splits]
    t0, counts = time.perf_counter(), {"decoded": 0, "reused": 0, "shards": 0}
    progress = Progress(sum(num_shards), f"images {resolution}px", "shards", stream=log)

    def done() -> None:  # after every shard of every split, in order
        if after_shard is not None:
            after_shard(counts["shards"])
        counts["shards"] += 1
        kill_point("images-shard")
        progress.update(1)

    indexes = {}
    with worker_map(workers) as mapper:
        for (split, split_root, split_items, split_out), n in zip(splits, num_shards, strict=True):
            shards, corrupt = _write_split(split_root, split_items, split_out, resolution, shard_size, n, mapper,
                                           counts, done, log)
            indexes[split] = {
                "format": INDEX_FORMAT,
                "source": str(src if split == "train" else split_root),
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
    progress.close()
    elapsed = time.perf_counter() - t0
    names = _class_names(src, classes)
    for split, index in indexes.items():
        if names is not None:
            index["class_names"] = names
        if split == "train" and "val" in indexes:
            index["val"] = "val"  # relative to this folder
        if split != "train":
            index["split"] = split
    if "val" in indexes:
        write_json(out / "val" / "index.json", indexes["val"], sort_keys=False)
    index = indexes["train"]
    write_json(out / "index.json", index, sort_keys=False)  # last: the folder is complete
    rate = counts["decoded"] / elapsed if elapsed > 0 else float("inf")
    held = (f" (+ {indexes['val']['num_images']} held-out in val/)" if "val" in indexes else "")
    print(f"images: {index['num_images']} images{held} at {resolution}px in "
          f"{sum(len(i['shards']) for i in indexes.values())} shards ({counts['reused']} kept from an earlier run), "
          f"{sum(i['num_corrupt'] for i in indexes.values())} excluded; "
          f"decoded {counts['decoded']} in {elapsed:.1f}s ({rate:.0f} images/s)", file=log)
    return index


def _write_split(root: Path, items, out: Path, resolution: int, shard_size: int, num_shards: int, mapper,
                 counts: dict, done: Callable[[], None], log) -> tuple[list[dict], list[dict]]:
    """The shards of one split's items into `out` (kept where their fingerprint matches)."""
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # leftovers of killed writers (a live writer's temps are kept)
    for old in out.glob("shard-*.npz"):  # leftovers of a run with more shards
        if old.name not in {_shard_name(k) for k in range(num_shards)}:
            old.unlink()
    shards, corrupt = [], []
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
            counts["decoded"] += len(chunk)
        else:
            counts["reused"] += 1
        shards.append({"file": path.name, "num_images": int(meta["num_images"])})
        corrupt.extend(meta["corrupt"])
        done()
    return shards, corrupt
