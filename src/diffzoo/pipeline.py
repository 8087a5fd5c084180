"""What the workflow engines need to know about each stage, gathered from the stage modules.

A stage module (src/diffzoo/stages/<stage>.py) declares `CODE` (its source files, relative to the
package), `params_slice(params, run_id)` (the params it reads), `GPUS` (how many GPUs its job asks
for: a number, or the `resources` key that holds it) and `PER_RUN` (one job per experiment). The
Snakefile reads them through this module; dvc.yaml states the same slices as `params:` keys and the
same code as `deps:` (tests/test_params.py checks that the two agree).
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def stage_module(stage: str):
    return importlib.import_module(f"diffzoo.stages.{stage.replace('-', '_')}")


def pipeline_stages() -> list[str]:
    """The commands that are pipeline stages: the stage modules that declare their CODE."""
    names = [p.stem for p in sorted((PACKAGE / "stages").glob("*.py")) if not p.name.startswith("_")]
    return [n for n in names if hasattr(stage_module(n), "CODE")]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def code_files(stage: str, params=None, run_id: str | None = None) -> list[str]:
    """The stage's source files; for train and sample also the backbone's own files."""
    files = set()
    for pattern in stage_module(stage).CODE:
        files.update(PACKAGE.glob(pattern))
    if stage in ("train", "sample") and params is not None and run_id is not None:
        from .models import model_source_files
        files.update(p.resolve() for p in model_source_files(params.run(run_id).model))
    return sorted(_rel(f) for f in files)


def stage_slice(params, stage: str, run_id: str | None = None) -> dict:
    """The params a stage reads, with defaults filled in; the engines rerun a job when it changes."""
    return stage_module(stage).params_slice(params, run_id)


def gpus(params, stage: str) -> int:
    """GPUs a stage's job asks for: its module's GPUS, a number or a `resources` key (0 = a CPU job)."""
    n = getattr(stage_module(stage), "GPUS", 0)
    return getattr(params.resources, n) if isinstance(n, str) else n


def resources(params, stage: str) -> dict:
    """A rule's resources for the SLURM executor plugin: `gpu` (and `gpu_model`), and for train and
    sample a `runtime` (minutes) from the estimated work of each experiment."""
    out: dict = {}
    if gpus(params, stage):
        out["gpu"] = gpus(params, stage)
        if params.resources.gpu_model:
            out["gpu_model"] = params.resources.gpu_model
    if stage in ("train", "sample"):
        out["runtime"] = lambda wildcards: runtime_minutes(params, stage, wildcards.exp)
    return out


H100_BF16_PEAK = 989e12   # dense bf16 flop/s
ASSUMED_MFU = 0.3          # a conservative model FLOP utilisation for the estimates


def stage_flops(params, stage: str, run_id: str) -> float:
    """Flops of a train or sample stage: 2 x MACs per forward, x3 for a training step (the DiT
    paper's estimate), x2 forwards per sampling step under guidance."""
    from .diffusion.respace import space_timesteps
    from .flops import model_cost

    run = params.run(run_id)
    channels, side = params.latent_shape
    macs = model_cost(run.model, **{"input_size": side, "in_channels": channels, **run.model_args})["gflops"] * 1e9
    if stage == "train":
        return 3 * 2 * macs * run.train.steps * run.train.global_batch_size
    s = run.sample
    steps = int(s.sampling_steps) if run.objective == "rectified_flow" else len(space_timesteps(1000, s.sampling_steps))
    return 2 * macs * s.num_samples * steps * (2 if s.cfg_scale > 1 else 1)


def gpu_hours(params, stage: str, run_id: str) -> float:
    """Estimated H100 GPU-hours of a stage at ASSUMED_MFU."""
    return stage_flops(params, stage, run_id) / (ASSUMED_MFU * H100_BF16_PEAK) / 3600


def runtime_minutes(params, stage: str, run_id: str) -> int:
    """A SLURM time limit: the estimated wall time on the stage's GPUs, doubled; at least 30 minutes."""
    hours = gpu_hours(params, stage, run_id) / max(1, gpus(params, stage))
    return max(30, math.ceil(2 * hours * 60))


def cost_summary(params) -> str:
    """The estimate printed before a run starts: GPU-hours per experiment (train + sample) and per
    sampling (sample only: it reuses its experiment's model)."""
    lines, total = [], 0.0
    for run_id in params.run_ids:
        train = gpu_hours(params, "train", run_id) if run_id in params.experiments else 0.0
        sample = gpu_hours(params, "sample", run_id)
        total += train + sample
        lines.append(f"  {run_id:24s} train {train:10.1f}  sample {sample:8.1f}")
    return (f"diffzoo cost estimate (H100 GPU-hours at {ASSUMED_MFU:.0%} bf16 MFU; evaluation not included):\n"
            + "\n".join(lines) + f"\n  {'total':24s} {total:10.1f}")


def report_outputs(params) -> list[str]:
    return stage_module("report").outputs(params)
