"""bring a labeled image data set into the canonical folder layout

`diffzoo dataset --params P` (the pipeline: OUT = data/<name>/raw) or with explicit --source/--input/--out.
The layout, the sources and their checks are in diffzoo.data.dataset.
"""
from __future__ import annotations

import argparse
import sys

from .. import hub
from ..data import SOURCES
from ..data.dataset import ILSVRC2012_TRAIN_MD5, build_dataset
from ..errors import DiffzooError
from ..params import DEFAULT_PARAMS, load_params, paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="take every setting not given below from this params file's `data:` "
                                    "section, OUT = data/<name>/raw (replaced); the default when --out is absent")
    p.add_argument("--source", choices=SOURCES, default=None, help="kind of input (default: digits)")
    p.add_argument("--input", nargs="*", default=[], metavar="PATH",
                   help="imagenet-tar: the train tar; imagenet-folder: the folder holding train/<synset>/ "
                        "(or the synset folders); imagenet-parquet: parquet files, folders or globs of them, "
                        "or hf://ILSVRC/imagenet-1k to download (token from HF_TOKEN)")
    p.add_argument("--out", help="output folder (replaced only with --force)")
    p.add_argument("--sha256", help="imagenet-tar: expected sha256 of the archive (checked while streaming)")
    p.add_argument("--md5", help="imagenet-tar: expected md5; 'ilsvrc2012' = the official "
                                 f"ILSVRC2012_img_train.tar md5 {ILSVRC2012_TRAIN_MD5}")
    p.add_argument("--classes", help="imagenet-parquet: synsets in label order (text, JSON or HF classes.py; "
                                     "the n######## tokens are taken in order)")
    p.add_argument("--split", default="train", help="imagenet-parquet from hf://: split to fetch")
    p.add_argument("--download-dir", help="imagenet-parquet from hf://: where the shards go (default: HF cache)")
    p.add_argument("--max-per-class", type=int, metavar="N",
                   help="keep the first N good images of each class (sorted by file name)")
    p.add_argument("--workers", type=int, default=None, help="processes decoding images (default: cores)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")


def run(args) -> int:
    source, inputs, out, force = args.source, list(args.input), args.out, args.force
    sha256, md5, max_per_class = args.sha256, args.md5, args.max_per_class
    if args.params or out is None:
        params = load_params(args.params or DEFAULT_PARAMS)
        data = params.data
        source = source or data.source
        inputs = inputs or ([data.path] if data.path else [])
        sha256, md5 = sha256 or data.sha256, md5 or data.md5
        max_per_class = data.max_per_class if max_per_class is None else max_per_class
        if out is None:
            out, force = paths(params)["raw"], True  # the pipeline's own artifact: rebuilt when its params change
    hf_repo = None
    if len(inputs) == 1 and str(inputs[0]).startswith("hf://"):
        try:  # owner/name@commit: the revision downloaded (a repo pinned in hub.PINNED may omit it)
            hf_repo, inputs = hub.pin(str(inputs[0]).removeprefix("hf://").removeprefix("datasets/")), []
        except ValueError as err:
            raise DiffzooError(f"--input {inputs[0]}: {err}") from None
    manifest = build_dataset(
        source or "digits", inputs, out, sha256=sha256, md5=md5, classes=args.classes, hf_repo=hf_repo,
        split=args.split, download_dir=args.download_dir, max_per_class=max_per_class, workers=args.workers,
        force=force)
    print(f"dataset {manifest['source']}: {manifest['num_images']} images, {manifest['num_classes']} classes, "
          f"{manifest['num_corrupt']} excluded -> {out}", file=sys.stderr)
    return 0


