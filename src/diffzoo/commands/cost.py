"""estimated GPU-hours of every experiment in a params file

`diffzoo cost --params P`, or `diffzoo cost PRESET` (a name in configs/ or a preset file; also printed
by the Snakefile before a run starts).
`diffzoo cost --params P --sbatch`: the sbatch options of one allocation that runs the whole pipeline
(`dvc repro`, workflow/slurm/dvc-repro.sbatch), from the params' `resources` section and the estimate:
  sbatch $(diffzoo cost --sbatch) workflow/slurm/dvc-repro.sbatch
"""
from __future__ import annotations

from ..errors import DiffzooError
from ..estimate import cost_summary, runtime_minutes
from ..params import load_params
from .preset import preset_path

LOCK = False  # reads only: no stage lock

DATA_STAGES_MINUTES = 120  # dataset, images, latents, reference, evaluate, report: slack over the estimate


def add_arguments(p) -> None:
    p.add_argument("preset", nargs="?", default=None, help="a preset name in configs/ or a preset file, "
                                                           "instead of --params")
    p.add_argument("--params", default=None, help="params file (default: params.yaml)")
    p.add_argument("--sbatch", action="store_true",
                   help="print the sbatch options of one allocation for `dvc repro` instead")


def sbatch_options(params) -> list[str]:
    """GPUs: the most any stage asks for (resources.train_gpus / sample_gpus / gpus); CPUs: `threads`
    for each GPU's process (or the images stage's data_threads, if more); the partition (the GPU one
    when GPUs are asked for) and account where set; the time limit: every experiment's train and sample
    limit (the estimate, doubled) plus DATA_STAGES_MINUTES."""

    res = params.resources
    gpus = max(res.train_gpus, res.sample_gpus, res.gpus)
    minutes = DATA_STAGES_MINUTES
    for run_id in params.run_ids:
        if run_id in params.experiments and not params.run(run_id).train.checkpoint:
            minutes += runtime_minutes(params, "train", run_id, res.train_gpus)
        minutes += runtime_minutes(params, "sample", run_id, res.sample_gpus)
    cpus = max(res.threads * max(gpus, 1), res.data_threads or 1)
    out = ["--nodes=1", f"--cpus-per-task={cpus}", f"--time={minutes}"]
    if gpus:
        out.insert(1, f"--gpus-per-node={gpus}")
    partition = (res.gpu_partition or res.partition) if gpus else res.partition
    if partition:
        out.append(f"--partition={partition}")
    if res.account:
        out.append(f"--account={res.account}")
    return out


def run(args) -> int:
    if args.preset and args.params:
        raise DiffzooError("give a preset or --params, not both")
    params = load_params(preset_path(args.preset)) if args.preset else load_params(args.params or "params.yaml")
    print(" ".join(sbatch_options(params)) if args.sbatch else cost_summary(params))
    return 0
