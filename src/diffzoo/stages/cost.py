"""estimated GPU-hours of every experiment in a params file

`diffzoo cost --params P` (also printed by the Snakefile before a run starts).
"""
from __future__ import annotations

LOCK = False  # reads only: no stage lock


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def run(args) -> int:
    from ..params import load_params
    from ..estimate import cost_summary

    print(cost_summary(load_params(args.params)))
    return 0
