"""What the workflow engines need to know about each stage: its params slice, its code files, its
artifact paths and its resources. The Snakefile reads these; dvc.yaml states the same slices as
`params:` keys and the same code as `deps:` (tests/test_pipeline.py checks that the two agree).
"""
from __future__ import annotations

import math
from pathlib import Path

from .params import experiment, load_params, paths

PACKAGE = Path(__file__).resolve().parent

# Source files (relative to the package) whose edits change what a stage computes.
STAGE_CODE = {
    "dataset": ["data/dataset.py", "data/_util.py"],
    "images": ["data/images.py", "data/crop.py", "data/shards.py", "data/_util.py"],
    "latents": ["latents.py", "data/shards.py"],
    "reference": ["evaluate/*.py"],
    "train": ["train.py", "latents.py", "diffusion/*.py", "checkpoints.py"],
    "sample": ["sample.py", "latents.py", "diffusion/*.py", "checkpoints.py"],
    "evaluate": ["evaluate/*.py"],
    "report": ["report/*.py", "report/papers.yaml"],
}

load = load_params


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def code_files(stage: str, params: dict | None = None, exp_id: str | None = None) -> list[str]:
    """The stage's source files; for train and sample also the backbone's own files."""
    files = set()
    for pattern in STAGE_CODE[stage]:
        files.update(PACKAGE.glob(pattern))
    if stage in ("train", "sample") and params is not None and exp_id is not None:
        from .models import model_source_files
        files.update(p.resolve() for p in model_source_files(experiment(params, exp_id)["model"]))
    return sorted(_rel(f) for f in files)


def stage_slice(params: dict, stage: str, exp_id: str | None = None) -> dict:
    """The params a stage reads, with defaults filled in; the engines rerun a job when it changes."""
    data = params["data"]
    if stage == "dataset":
        return {k: v for k, v in data.items() if k not in ("resolution", "shard_size")}
    if stage == "images":
        return data
    if stage == "latents":
        return {"data": data, "latents": params["latents"]}
    if stage == "reference":
        return {"data": data, "evaluate": params["evaluate"], "classifier": params["classifier"]}
    if stage == "evaluate":
        return {"evaluate": params["evaluate"]}
    if stage == "report":
        return {"report": params["report"], "experiments": {k: e["model"] for k, e in params["experiments"].items()}}
    exp = experiment(params, exp_id)
    if stage == "train":
        return {"model": exp["model"], "model_args": exp["model_args"], "objective": exp["objective"], "train": exp["train"]}
    if stage == "sample":
        return {"sample": exp["sample"], "vae_dtype": params["latents"]["dtype"]}
    raise KeyError(stage)


def gpus(params: dict, stage: str) -> int:
    return params["resources"][f"{stage}_gpus"]


def runtime_minutes(params: dict, stage: str, exp_id: str) -> int:
    """A SLURM time limit from the stage's work: forward Gflops x images x (3 for training), at a
    conservative 30% of an H100's bf16 peak, doubled for safety; at least 30 minutes."""
    from .flops import model_cost

    exp = experiment(params, exp_id)
    gflops = model_cost(exp["model"], **exp["model_args"])["gflops"]
    if stage == "train":
        work = 3 * gflops * 1e9 * exp["train"]["steps"] * exp["train"]["global_batch_size"]
    else:
        s = exp["sample"]
        steps = int(s["sampling_steps"].removeprefix("ddim"))
        work = gflops * 1e9 * s["num_samples"] * steps * (2 if s["cfg_scale"] > 1 else 1)
    seconds = 2 * work / (0.3 * 989e12 * gpus(params, stage))
    return max(30, math.ceil(seconds / 60))


def report_outputs(params: dict) -> list[str]:
    out = []
    for table in params["report"]["tables"]:
        out += [f"results/tables/{table}.{ext}" for ext in ("md", "csv", "tex")]
    out += ["results/plots/fid_vs_gflops.png", "results/plots/loss.png"]
    return out


__all__ = ["load", "paths", "stage_slice", "code_files", "gpus", "runtime_minutes", "report_outputs"]


# ---- `diffzoo code-digest`: what DVC tracks of an experiment's backbone ------------------------------
def code_digest(params: dict, exp_id: str) -> dict:
    """sha256 of each source file of the experiment's backbone (its family's files + shared layers)."""
    from .checkpoints import sha256_file
    from .models import model_source_files

    model = experiment(params, exp_id)["model"]
    return {"model": model, "files": {f"src/diffzoo/{p.resolve().relative_to(PACKAGE)}": sha256_file(p)
                                      for p in model_source_files(model)}}


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment id from params.yaml")


def run(args) -> int:
    from .utils import write_json

    params = load_params(args.params)
    out = paths(params, args.experiment)["exp"] / "code.json"
    write_json(out, code_digest(params, args.experiment))
    print(out)
    return 0
