"""check this machine's setup: torch, CUDA, GPUs, bf16, scan kernels, VAE and Inception weights

`diffzoo doctor [--params P]`: one line per fact; train and sample log the machine facts at their
start. With a params file, also whether its VAE and the Inception weights are found offline.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..params import load_params
from ..runtime_facts import facts

LOCK = False  # reads only


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None, help="params file whose VAE and weights to look for "
                                                  "(default: params.yaml when present)")


def run(args) -> int:
    path = args.params or ("params.yaml" if Path("params.yaml").is_file() else None)
    params = load_params(path) if path else None
    for key, value in facts(params).items():
        print(f"{key:>18}: {value}")
    return 0
