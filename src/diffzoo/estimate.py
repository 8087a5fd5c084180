"""GPU-hour estimates of the train and sample stages (printed before a run; SLURM time limits).

Flops are DiT's estimate: 2 x MACs per forward, x3 for a training step, x2 forwards per sampling
step under guidance; hours at ASSUMED_MFU of an H100's dense bf16 peak.
"""
from __future__ import annotations

import math

from .plan_cache import model_cost, respaced_steps

H100_BF16_PEAK = 989e12   # dense bf16 flop/s
ASSUMED_MFU = 0.3          # a conservative model FLOP utilisation for the estimates


def stage_flops(params, stage: str, run_id: str) -> float:
    run = params.run(run_id)
    channels, side = params.latent_shape(run_id)
    args = {"input_size": side, "in_channels": channels, **run.model_args}
    macs = model_cost(run.model, args)["gflops"] * 1e9
    if stage == "train":
        return 3 * 2 * macs * run.train.steps * run.train.global_batch_size
    s = run.sample
    steps = int(s.sampling_steps) if run.objective == "rectified_flow" else respaced_steps(s.sampling_steps)
    return 2 * macs * s.num_samples * steps * (2 if s.cfg_scale > 1 else 1)


def gpu_hours(params, stage: str, run_id: str) -> float:
    """Estimated H100 GPU-hours of a stage at ASSUMED_MFU."""
    return stage_flops(params, stage, run_id) / (ASSUMED_MFU * H100_BF16_PEAK) / 3600


def runtime_minutes(params, stage: str, run_id: str, gpus: int) -> int:
    """A SLURM time limit: the estimated wall time on `gpus` GPUs, doubled; at least 30 minutes."""
    hours = gpu_hours(params, stage, run_id) / max(1, gpus)
    return max(30, math.ceil(2 * hours * 60))


def cost_summary(params) -> str:
    """GPU time per experiment (train + sample) and per sampling (sample only: it reuses its
    experiment's model), in hours, or minutes and seconds where a run is small (the embedded default's
    are seconds: "0.0" everywhere said nothing)."""
    lines, total = [], 0.0
    for run_id in params.run_ids:
        trains = run_id in params.experiments and not params.run(run_id).train.checkpoint  # released: no training
        train = gpu_hours(params, "train", run_id) if trains else 0.0
        sample = gpu_hours(params, "sample", run_id)
        total += train + sample
        lines.append(f"  {run_id:24s} train {gpu_time(train):>10s}  sample {gpu_time(sample):>8s}")
    cpu = "" if params.resources.train_gpus else ("\n  (these params run on the CPU, many times slower; "
                                                  "logs/benchmarks/*.tsv records what each job took)")
    return (f"diffzoo cost estimate (H100 GPU time at {ASSUMED_MFU:.0%} bf16 MFU; evaluation not included):\n"
            + "\n".join(lines) + f"\n  {'total':24s} {gpu_time(total):>10s}{cpu}")


def gpu_time(hours: float) -> str:
    """`1234.5 h`, `12 min`, `3 s`, `<1 s`: readable at every scale of the estimate."""
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.0f} min"
    return f"{hours * 3600:.0f} s" if hours * 3600 >= 1 else "<1 s"
