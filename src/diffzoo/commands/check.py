"""check a params file (every key, value and input path) before any job runs

`diffzoo check --params P [--out FILE]`: exits 2 with one line naming the key and the allowed values
when something is wrong. Under DVC it is the first stage (`--dvc`: also that the GPUs the params ask
for are here, since `dvc repro` runs every stage on this machine). Snakemake runs the same checks when
it reads its config and, for a local run, before its first job (workflow/rules/common.smk).
"""
from __future__ import annotations

import argparse

from ..errors import DiffzooError
from ..params import check_inputs, load_params
from ..runtime import check_params_gpus
from ..utils import write_json

LOCK = False  # writes only its own small record


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--dvc", action="store_true", help="also refuse what dvc.yaml cannot run (an experiment's own "
                                                      "latents codec)")
    p.add_argument("--out", default=None, help="where to record the check (JSON: the experiments and samplings)")


def run(args) -> int:
    params = load_params(args.params)
    check_inputs(params)
    if args.dvc:
        check_params_gpus(params)
    else:  # perhaps a login node planning a cluster run: say it, do not refuse
        try:
            check_params_gpus(params)
        except DiffzooError as err:
            print(f"note: {str(err).split(': run on')[0]}: fine for a cluster run, not for a local one")
    own = [e for e in params.experiments if params.experiments[e].latents]
    if args.dvc and own:
        raise DiffzooError(f"experiments {', '.join(own)} set their own latents settings; dvc.yaml trains every "
                           f"experiment on the latents section's: run this params file with Snakemake, or give "
                           f"those experiments a params file of their own")
    summary = {"experiments": sorted(params.experiments), "samplings": sorted(params.samplings)}
    if args.out:
        write_json(args.out, summary)
    print(f"{args.params}: ok ({len(summary['experiments'])} experiments, {len(summary['samplings'])} samplings)")
    return 0
