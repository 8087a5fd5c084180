"""ADM-format reference statistics of a data set's images for one feature extractor, cached by content

`diffzoo reference-stats IMAGES --out REF.npz`: mu, sigma, mu_s, sigma_s and arr_0 as ADM's
reference batches hold them.
"""
from __future__ import annotations

import argparse
import json

from ..evaluate.reference import compute_reference, default_cache_dir
from .evaluate import add_extractor_arguments, extractor_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="images-stage shard dir (index.json), image folder or ADM npz")
    p.add_argument("--out", required=True, help="reference .npz to write")
    add_extractor_arguments(p, default="inception")
    p.add_argument("--num-ref", type=int, default=10000, help="images kept as arr_0 for Precision/Recall (ADM: 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arr_0 subset when the data set is larger")


def run(args) -> int:
    extractor = extractor_from_args(args)
    cache = default_cache_dir() if args.cache_dir is None else (args.cache_dir or None)
    meta = compute_reference(args.images, extractor, args.out, num_ref_images=args.num_ref, seed=args.seed,
                             batch_size=args.batch_size, cache_dir=cache)
    print(json.dumps({k: meta[k] for k in ("num_images", "num_ref_images", "resolution", "cache")}
                     | {"feature_extractor": meta["feature_extractor"]["name"], "out": args.out}))
    return 0
