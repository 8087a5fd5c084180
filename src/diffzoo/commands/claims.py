"""the papers' claims judged by their 95% intervals (results/claims.md)

`diffzoo claims --params P`: for every claim of the params' `claims:` section (report/catalogue.py),
the runs' FIDs over their seeds with intervals (report/stats.py), the MoE routing counts of the
routing claims and the cost curves of the cost claims (probes.py), then results/claims.md,
results/claims.json and results/claims/<claim>.png (report/claims.py).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..checkpoints import load_model
from ..data._util import read_json
from ..diffusion.objective import build_objective
from ..errors import DiffzooError
from ..params import load_params, paths
from ..probes import cost_curve, routing_counts
from ..report import claims as report
from ..report.catalogue import CLAIMS
from ..stages.claims import claim_runs

ROUTING_PER_CLASS = 20       # samples per class whose expert choices are counted, per seed
COST_SIDES = (16, 32, 64, 128)  # latent sides of the cost curves; the time exponent is fitted from 32 up
COST_MIN_SIDE = 32           # (below it a CPU forward of these small models is mostly fixed overhead)
COST_REPEATS = 7


def _read(params):
    def read(kind: str, run_id: str) -> dict:
        path = paths(params, run_id)["metrics" if kind == "metrics" else "train_metrics"]
        stage = "evaluate" if kind == "metrics" else "train"
        if not path.is_file():
            raise DiffzooError(f"{path} does not exist: run the {stage} stage of {run_id!r} first")
        return read_json(path, f"the {stage} summary of {run_id!r}")  # (a corrupt file: one line, named)
    return read


def measure(params) -> dict:
    """The probes the routing and cost claims need: {"routing": {claim: [per seed]}, "cost": {claim:
    {config: curve}}, "cost_min_side"}."""
    out = {"routing": {}, "cost": {}, "cost_min_side": COST_MIN_SIDE}
    for claim_id, names in params.claims.items():
        kind = CLAIMS[claim_id]["kind"]
        if kind == "routing":
            per_seed = []
            for k, run_id in enumerate(params.replicates(names[0])):
                run = params.run(run_id)
                where = paths(params, run.trained_by)
                config = read_json(where["model_config"], f"the model.json of {run.trained_by!r}")
                model = load_model(where["model"])
                # the run's own sampler (DDIM-25 in the preset; Euler steps for rectified flow)
                objective = build_objective(config["objective"], model.learn_sigma, run.sample.sampling_steps,
                                            run.sample.sampler, clip_denoised=config["latents"]["vae"] == "identity",
                                            **config.get("objective_args", {}))
                per_seed.append({"run": run_id, **routing_counts(model, objective, len(config["latents"]["classes"]),
                                                                 ROUTING_PER_CLASS, seed=k)})
                print(f"{claim_id}: routing of {run_id} counted", flush=True)
            out["routing"][claim_id] = per_seed
        elif kind == "cost":
            curves = {}
            for name in names:
                run = params.run(params.replicates(name)[0])
                channels, _ = params.latent_shape(run.id)
                curves[name] = cost_curve(run.model, run.model_args, list(COST_SIDES), channels, 10, COST_REPEATS)
                print(f"{claim_id}: cost curve of {name} measured", flush=True)
            out["cost"][claim_id] = curves
    return out


def claims(params, out: Path = Path("results")) -> list[Path]:
    if not params.claims:  # (DVC runs every stage: a note, and the outputs it declares)
        return report.write_none(out)
    start = time.perf_counter()
    read = _read(params)
    for run_id in claim_runs(params):  # every input first: one line naming the first missing one
        read("metrics", run_id)
        read("train", params.run(run_id).trained_by)
    probes = measure(params)
    results = report.judge_all(params, read, probes)
    written = report.write(results, out, probes, seconds=time.perf_counter() - start)
    for claim_id, r in results.items():
        print(f"{claim_id}: {r['verdict']} -- {r['ours']}")
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def run(args) -> int:
    claims(load_params(args.params))
    return 0
