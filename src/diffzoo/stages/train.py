"""train one experiment (resumable; torchrun on several GPUs)

`diffzoo train --params P --experiment ID`: the experiment's backbone on the latents stage's output
with DiT's recipe (diffzoo.training), to data/experiments/<ID>/model.safetensors + model.json (the
EMA weights and how to rebuild them) and results/train/<ID>.{json,tsv}. One command for 1 or N GPUs:
with several visible GPUs (or SLURM nodes) it relaunches itself under torchrun; the global batch and
the learning rate stay those of params.yaml whatever the GPU count.

Resumable: every `ckpt_every` steps the model, EMA and optimizer state are written atomically; a
rerun resumes from the newest checkpoint of the same configuration, data and code (the run key).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from ..errors import DiffzooError
from ..params import load_params, paths
from ..runtime import distribute, relaunch_under_torchrun, setup_process
from ..training import (Checkpointer, LossLog, export_model, full_state, loop_label_dropout, restore_optimizer,
                        resume_or_fresh, train_loop)
from ..utils import content_hash, sha256_file, source_files, write_json

CODE = ["training.py", "runtime.py", "stages/train.py", "latents.py", "diffusion/*.py", "checkpoints.py"]
GPUS = "train_gpus"  # params.resources key
PER_RUN = True
# Settings that do not change what is trained: a run resumes across a change of them.
NOT_IN_RUN_KEY = ("log_every", "ckpt_every", "parallel")


def params_slice(params, run_id: str) -> dict:
    run = params.run(run_id)
    return {"model": run.model, "model_args": run.model_args, "objective": run.objective,
            "train": run.train.model_dump(mode="json")}


def model_config(run, latent_meta: dict) -> dict:
    """How to rebuild the experiment's model: registered name, constructor overrides, objective."""
    shape = latent_meta["shape"]
    args = {"input_size": shape[-1], "in_channels": shape[0], "num_classes": len(latent_meta["classes"]),
            "learn_sigma": run.objective == "ddpm"}
    args.update(run.model_args)
    return {"model": run.model, "model_args": args, "objective": run.objective, "objective_args": run.objective_args}


def train(params_path: str, exp_id: str) -> dict:
    from ..diffusion.objective import build_objective
    from ..flops import active_params, count_macs, count_params
    from ..latents import LatentDataset
    from ..models import create_model

    params = load_params(params_path)
    if exp_id in params.samplings:
        raise DiffzooError(f"{exp_id!r} is a sampling of experiment {params.samplings[exp_id].experiment!r}: "
                           "train that experiment")
    run = params.run(exp_id)
    cfg, where = run.train, paths(params, exp_id)
    proc = setup_process()
    if cfg.global_batch_size % proc.world:
        raise DiffzooError(f"train.global_batch_size {cfg.global_batch_size} is not divisible by {proc.world} GPUs")

    data = LatentDataset(where["latents"])
    mcfg = model_config(run, data.meta)
    torch.manual_seed(cfg.seed)
    model = create_model(mcfg["model"], **mcfg["model_args"]).to(proc.device)
    objective = build_objective(run.objective, mcfg["model_args"]["learn_sigma"], run.sample.sampling_steps,
                                run.sample.sampler, **mcfg["objective_args"])
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    label_dropout = loop_label_dropout(model)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)

    # A checkpoint resumes only a run of the same configuration, data and code (a code change that
    # made an engine rerun this stage must not continue weights trained by the old code). The GPU
    # count and DDP/FSDP are not part of it: a run may resume on another number of GPUs.
    code = {f: sha256_file(f) for f in source_files(CODE, run.model)}
    run_key = content_hash({"model": mcfg, "train": cfg.model_dump(mode="json", exclude=set(NOT_IN_RUN_KEY)),
                            "latents": data.meta, "code": code})
    sharded = proc.world > 1 and cfg.parallel == "fsdp"
    checkpointer = Checkpointer(where["checkpoints"], run_key, proc, sharded)
    state = resume_or_fresh(checkpointer, model, ema)
    if state.step:
        print(f"resuming {exp_id} from step {state.step}", file=sys.stderr)
    net = distribute(model, ema, proc.world, sharded, proc.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    restore_optimizer(model, opt, state)
    if cfg.compile:
        net = torch.compile(net)
    log = LossLog(where["train_log"], proc)
    state = train_loop(model, ema, net, objective, data, cfg, opt, proc, checkpointer, log, state, label_dropout,
                       name=f"train {exp_id}")
    aux_metrics = model.aux_metrics()  # of the last step's forward (MoE expert load)

    summary = {}
    ema_state = full_state(ema)
    if proc.is_main:
        rows = [r.split("\t") for r in state.log_rows]
        with torch.device("meta"):
            meta_model = create_model(mcfg["model"], **mcfg["model_args"])
        gpus = proc.world if proc.device.type == "cuda" else 0
        summary = {
            "experiment": exp_id, "model": mcfg["model"], "objective": run.objective,
            "steps": cfg.steps, "global_batch_size": cfg.global_batch_size,
            "images_seen": cfg.steps * cfg.global_batch_size,
            "final_loss": float(rows[-1][1]) if rows else float("nan"),
            "train_seconds": round(state.elapsed, 2),
            "images_per_s": round(cfg.steps * cfg.global_batch_size / max(state.elapsed, 1e-9), 1),
            "gpu_hours": round(state.elapsed * gpus / 3600, 4), "device": proc.device.type, "world_size": proc.world,
            "params": count_params(meta_model), "active_params": active_params(meta_model),
            "gflops": round(count_macs(meta_model) / 1e9, 6), **{f"aux_{k}": v for k, v in aux_metrics.items()},
        }
        config = {**mcfg, "experiment": exp_id, "train": cfg.model_dump(mode="json"),
                  "sample": run.sample.model_dump(mode="json"),
                  "latents": {k: data.meta[k] for k in ("vae", "scale", "shape", "classes")}, "summary": summary}
        export_model(where["model"], ema_state, config)
        log.write(state.log_rows)
        write_json(where["train_metrics"], summary)
    proc.close()
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment id from params.yaml")


def run(args) -> int:
    relaunch_under_torchrun(["train", "--params", args.params, "--experiment", args.experiment])
    summary = train(args.params, args.experiment)
    if summary:
        print(json.dumps(summary))
    return 0
