"""claims: the papers' claims judged by their intervals, when params name claims (diffzoo.commands.claims)."""
from __future__ import annotations

from ..params import paths
from ..report.catalogue import CLAIMS, CLAIMS_JSON, CLAIMS_MD, CLAIMS_PLOTS

# (the backbones' and the samplers' code is tracked through the weights the claims read: a change to it
# retrains them, and new weights rerun the claims)
CODE = ["report/claims.py", "report/stats.py", "report/catalogue.py", "probes.py", "flops.py", "stages/claims.py",
        "commands/claims.py"]
GPUS = "gpus"  # params.resources key (the routing probe samples; a CPU does it in seconds at this scale)


def params_slice(params, run_id=None) -> dict:
    return {"claims": params.claims}


def claim_runs(params) -> list[str]:
    """Every run a claim reads (the metrics of each)."""
    return sorted({r for names in params.claims.values() for name in names for r in params.replicates(name)})


def routing_models(params) -> list[str]:
    """The model files the routing claims sample from."""
    return [str(paths(params, params.run(r).trained_by)["model"])
            for claim_id, names in params.claims.items() if CLAIMS[claim_id]["kind"] == "routing"
            for name in names for r in params.replicates(name)]


def outputs(params) -> list[str]:
    """What the claims stage writes under results/ (none without claims)."""
    if not params.claims:
        return []
    return [f"results/{CLAIMS_MD}", f"results/{CLAIMS_JSON}", f"results/{CLAIMS_PLOTS}/README.md"] + [
        f"results/{CLAIMS_PLOTS}/{c}.png" for c in params.claims]
