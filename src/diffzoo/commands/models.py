"""list registered backbones with parameters and Gflops

`diffzoo models [PATTERN]`: the registry with parameter counts and forward Gflops (batch 1).
"""
from __future__ import annotations

import argparse
import fnmatch
import json

from ..flops import model_cost
from ..models import list_models

LOCK = False  # reads only: no stage lock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names, e.g. 'DiT-XL/*'")
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 = 256px, 64 = 512px)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    rows = []
    for name in list_models():
        if fnmatch.fnmatch(name, args.pattern):
            rows.append({"model": name, **model_cost(name, input_size=args.input_size)})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'model':24s} {'params':>15s} {'active':>15s} {'Gflops':>9s}")
        for r in rows:
            print(f"{r['model']:24s} {r['params']:15,d} {r['active_params']:15,d} {r['gflops']:9.2f}")
    return 0
