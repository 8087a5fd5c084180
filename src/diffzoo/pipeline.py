"""What the workflow engines need to know about each stage: its params slice, its code files, its
artifact paths and its resources. The Snakefile reads these; dvc.yaml states the same slices as
`params:` keys and the same code as `deps:` (tests/test_pipeline.py checks that the two agree).
"""
from __future__ import annotations

import math
from pathlib import Path

from .params import experiment, load_params, paths, run_ids

PACKAGE = Path(__file__).resolve().parent

# Source files (relative to the package) whose edits change what a stage computes.
STAGE_CODE = {
    "dataset": ["data/dataset.py", "data/_util.py"],
    "images": ["data/images.py", "data/crop.py", "data/shards.py", "data/_util.py"],
    "latents": ["latents.py", "data/shards.py"],
    "reference": ["evaluate/*.py"],
    "train": ["train.py", "latents.py", "diffusion/*.py", "checkpoints.py"],
    "sample": ["sample.py", "latents.py", "diffusion/*.py", "checkpoints.py", "report/figures.py"],
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
        return {"report": params["report"], "experiments": {k: e["model"] for k, e in params["experiments"].items()},
                "samplings": {k: s["experiment"] for k, s in params["samplings"].items()}}
    exp = experiment(params, exp_id)
    if stage == "train":
        return {"model": exp["model"], "model_args": exp["model_args"], "objective": exp["objective"], "train": exp["train"]}
    if stage == "sample":
        return {"sample": exp["sample"], "vae_dtype": params["latents"]["dtype"]}
    raise KeyError(stage)


GPU_STAGES = ("latents", "reference", "train", "sample", "evaluate")


def gpus(params: dict, stage: str) -> int:
    """GPUs a stage's job asks for: params `resources` for train and sample, one for the other GPU
    stages, none for the CPU stages."""
    if stage in ("train", "sample"):
        return params["resources"][f"{stage}_gpus"]
    return 1 if stage in GPU_STAGES else 0


def resources(params: dict, stage: str) -> dict:
    """A rule's resources for the SLURM executor plugin: `gpu` (and `gpu_model`), and for train and
    sample a `runtime` (minutes) from the estimated work of each experiment."""
    out: dict = {}
    if gpus(params, stage):
        out["gpu"] = gpus(params, stage)
        if params["resources"]["gpu_model"]:
            out["gpu_model"] = params["resources"]["gpu_model"]
    if stage in ("train", "sample"):
        out["runtime"] = lambda wildcards: runtime_minutes(params, stage, wildcards.exp)
    return out


H100_BF16_PEAK = 989e12   # dense bf16 flop/s
ASSUMED_MFU = 0.3          # a conservative model FLOP utilisation for the estimates


def stage_flops(params: dict, stage: str, exp_id: str) -> float:
    """Flops of a train or sample stage: 2 x MACs per forward, x3 for a training step (the DiT
    paper's estimate), x2 forwards per sampling step under guidance."""
    from .flops import model_cost

    exp = experiment(params, exp_id)
    res = params["data"]["resolution"]
    size = res // 8 if params["latents"]["vae"] != "identity" else res
    args = {"input_size": size, **exp["model_args"]}
    macs = model_cost(exp["model"], **args)["gflops"] * 1e9
    if stage == "train":
        return 3 * 2 * macs * exp["train"]["steps"] * exp["train"]["global_batch_size"]
    s = exp["sample"]
    steps = int(s["sampling_steps"].removeprefix("ddim"))
    return 2 * macs * s["num_samples"] * steps * (2 if s["cfg_scale"] > 1 else 1)


def gpu_hours(params: dict, stage: str, exp_id: str) -> float:
    """Estimated H100 GPU-hours of a stage at ASSUMED_MFU."""
    return stage_flops(params, stage, exp_id) / (ASSUMED_MFU * H100_BF16_PEAK) / 3600


def runtime_minutes(params: dict, stage: str, exp_id: str) -> int:
    """A SLURM time limit: the estimated wall time on the stage's GPUs, doubled; at least 30 minutes."""
    hours = gpu_hours(params, stage, exp_id) / gpus(params, stage)
    return max(30, math.ceil(2 * hours * 60))


def cost_summary(params: dict) -> str:
    """The estimate printed before a run starts: GPU-hours per experiment (train + sample) and per
    sampling (sample only: it reuses its experiment's model)."""
    lines, total = [], 0.0
    for exp_id in run_ids(params):
        train = gpu_hours(params, "train", exp_id) if exp_id in params["experiments"] else 0.0
        sample = gpu_hours(params, "sample", exp_id)
        total += train + sample
        lines.append(f"  {exp_id:24s} train {train:10.1f}  sample {sample:8.1f}")
    return (f"diffzoo cost estimate (H100 GPU-hours at {ASSUMED_MFU:.0%} bf16 MFU; evaluation not included):\n"
            + "\n".join(lines) + f"\n  {'total':24s} {total:10.1f}")


def report_outputs(params: dict) -> list[str]:
    out = []
    for table in params["report"]["tables"]:
        out += [f"results/tables/{table}.{ext}" for ext in ("md", "csv", "tex")]
    out += ["results/plots/fid_vs_gflops.png", "results/plots/loss.png", "results/plots/samples.png"]
    return out


__all__ = ["load", "paths", "run_ids", "stage_slice", "code_files", "gpus", "resources", "runtime_minutes", "report_outputs"]


# ---- `diffzoo code-digest`: what DVC tracks of an experiment's backbone ------------------------------
def code_digest(params: dict, exp_id: str) -> dict:
    """sha256 of each source file of the experiment's backbone (its family's files + shared layers)."""
    from .utils import sha256_file
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
