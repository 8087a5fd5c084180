"""digest of an experiment's backbone source files (what DVC tracks)

`diffzoo code-digest --params P --experiment ID` -> data/experiments/<ID>/code.json: the sha256 of each
source file of exactly that experiment's backbone (its family's files + the shared layers), so that
editing dis.py reruns the DiS experiments only under DVC.
"""
from __future__ import annotations

from ..models import model_source_files
from ..params import load_params, paths
from ..utils import PACKAGE, sha256_file, write_json


def code_digest(params, exp_id: str) -> dict:
    model = params.run(exp_id).model
    return {"model": model, "files": {f"src/diffzoo/{p.resolve().relative_to(PACKAGE)}": sha256_file(p)
                                      for p in model_source_files(model)}}


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment id from params.yaml")


def run(args) -> int:
    params = load_params(args.params)
    out = paths(params, args.experiment)["exp"] / "code.json"
    write_json(out, code_digest(params, args.experiment))
    print(out)
    return 0
