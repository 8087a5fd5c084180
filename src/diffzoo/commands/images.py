"""ADM center crop of every image to the resolution, in shards

`diffzoo images --params P` (the pipeline: data/<name>/raw -> data/<name>/images-R) or with explicit
--src/--resolution/--out. The crop and the shard format are in diffzoo.data.images.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.images import DEFAULT_SHARD_SIZE, build_images
from ..params import DEFAULT_PARAMS, load_params, paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="take every setting not given below from this params file's `data:` "
                                    "section (src data/<name>/raw, out data/<name>/images-R); the default "
                                    "when --src/--out/--resolution are absent")
    p.add_argument("--src", help="output folder of `diffzoo dataset` (or any [train/]<class>/<files> tree)")
    p.add_argument("--resolution", type=int, help="side R of the square crops (e.g. 256)")
    p.add_argument("--out", help="folder for shard-*.npz and index.json")
    p.add_argument("--shard-size", type=int, default=None,
                   help=f"items per shard (default {DEFAULT_SHARD_SIZE}; memory ~ S*R*R*3 bytes)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores)")
    p.add_argument("--max-per-class", type=int, metavar="N", help="first N files of each class (sorted)")


def run(args) -> int:
    src, out, res, size, cap = args.src, args.out, args.resolution, args.shard_size, args.max_per_class
    if args.params or None in (src, out, res):
        params = load_params(args.params or DEFAULT_PARAMS)
        data, where = params.data, paths(params)
        res = res or data.resolution
        src = src or where["raw"]
        if out is None:  # data/<name>/images-<R>, R as overridden
            out = Path(where["images"]).with_name(f"images-{res}")
        size = size or data.shard_size
        cap = data.max_per_class if cap is None else cap
    build_images(src, out, res, shard_size=size or DEFAULT_SHARD_SIZE, workers=args.workers, max_per_class=cap)
    return 0


