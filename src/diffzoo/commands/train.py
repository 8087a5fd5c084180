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
from pathlib import Path

import torch

from ..checkpoints import import_released, load_weights, model_json, read_state_dict, released, resolve_checkpoint
from ..diffusion.objective import build_objective
from ..errors import DiffzooError
from ..flops import active_params, count_macs, count_params
from ..latents import LatentDataset, make_codec
from ..models import create_model
from ..params import load_params, paths
from ..report.figures import data_class_names
from ..runtime import distribute, relaunch_under_torchrun, setup_process
from ..runtime_facts import log_facts
from ..sources import source_files
from ..stages.train import IDENTITY_CODE, RESUMABLE
from ..tracking import Tracker, preview_grid
from ..training import (LOG_HEADER, Checkpointer, LossLog, export_model, full_state, loop_label_dropout,
                        restore_optimizer, resume_or_fresh, train_loop)
from ..utils import PACKAGE, atomic_path, content_hash, sha256_file, write_json


def _released_defaults(run, name: str | None) -> tuple[dict, dict]:
    """(model_args, objective_args) of the run, over what a released file needs to load and sample
    as its authors do (its layout options; its rectified-flow time scale) when `name` is one."""
    spec = released(name) if name else None
    model_args = {**(spec.model_args if spec else {}), **run.model_args}
    objective_args = dict(run.objective_args)
    if run.objective == "rectified_flow" and "time_scale" not in objective_args and spec and spec.time_scale:
        objective_args["time_scale"] = spec.time_scale
    return model_args, objective_args


def model_config(run, latent_meta: dict) -> dict:
    """How to rebuild the experiment's model: registered name, constructor overrides, objective."""
    shape = latent_meta["shape"]
    model_args, objective_args = _released_defaults(run, run.train.init)
    args = {"input_size": shape[-1], "in_channels": shape[0], "num_classes": len(latent_meta["classes"]),
            "learn_sigma": run.objective == "ddpm", **model_args}
    return {"model": run.model, "model_args": args, "objective": run.objective, "objective_args": objective_args}


def import_weights(params, run, where) -> dict:
    """An experiment with `train.checkpoint`: the released file, strictly loaded, as its model
    artifact (model.safetensors + model.json) and a training summary that says so; no training."""
    path = resolve_checkpoint(run.train.checkpoint, run.train.checkpoint_sha256)
    digest = sha256_file(path)
    channels, side = params.latent_shape(run.id)
    model_args, objective_args = _released_defaults(run, run.train.checkpoint)
    model_args = {"input_size": side, "in_channels": channels, **model_args}
    tensors, model_args = import_released(path, run.model, model_args)
    with torch.device("meta"):
        meta_model = create_model(run.model, **model_args)
    summary = {"experiment": run.id, "model": run.model, "objective": run.objective, "released": path.name,
               "sha256": digest, "steps": 0, "global_batch_size": 0, "images_seen": None, "gpu_hours": 0.0,
               "params": count_params(meta_model), "active_params": active_params(meta_model),
               "gflops": round(count_macs(meta_model) / 1e9, 6)}
    config = model_json(run.model, model_args, run.objective, objective_args, run.latents.vae, run.latents.scale,
                        [channels, side, side], model_args.get("num_classes", 1000), experiment=run.id,
                        sample=run.sample.model_dump(mode="json"), source={"checkpoint": path.name, "sha256": digest},
                        summary=summary)
    export_model(where["model"], tensors, config)
    with atomic_path(where["train_log"]) as tmp:
        tmp.write_text(LOG_HEADER + "\n")
    write_json(where["train_metrics"], summary)
    print(f"{run.id}: {path.name} (sha256 {digest}) loads strictly into {run.model}; {len(tensors)} tensors "
          f"-> {where['model']}", file=sys.stderr)
    return summary


def make_tracker(params, run, ema, objective, data, proc, sharded: bool):
    """The run's live tracking (params `track`; diffzoo.tracking), on the main process. Previews sample
    the EMA on this process alone: not for an FSDP-sharded EMA."""
    track, codec = params.track, {}

    def preview(step: int):
        if "codec" not in codec:
            codec["codec"] = make_codec(data.meta["vae"], data.scale, proc.device, run.latents.dtype)
        names = data_class_names(paths(params)["images"] if params.uses_data else None, data.meta["classes"])
        return preview_grid(ema, objective, codec["codec"], data.meta["shape"], names, run.sample,
                            track.preview_per_class, proc.device, f"{run.id}: EMA samples at step {step}")

    return Tracker(run.id, track, enabled=proc.is_main, preview=None if sharded else preview)


def train(params_path: str, exp_id: str) -> dict:
    params = load_params(params_path)
    if exp_id in params.samplings:
        raise DiffzooError(f"{exp_id!r} is a sampling of experiment {params.samplings[exp_id].experiment!r}: "
                           "train that experiment")
    run = params.run(exp_id)
    cfg, where = run.train, paths(params, exp_id)
    if cfg.checkpoint:
        return import_weights(params, run, where)
    proc = setup_process(None, params.resources.train_gpus, "resources.train_gpus")
    if proc.is_main:
        log_facts()
    if cfg.global_batch_size % proc.world:
        raise DiffzooError(f"train.global_batch_size {cfg.global_batch_size} is not divisible by {proc.world} GPUs")

    data = LatentDataset(where["latents"], run.latents.scale, run.latents.posterior)
    mcfg = model_config(run, data.meta)
    torch.manual_seed(cfg.seed)
    model = create_model(mcfg["model"], **mcfg["model_args"]).to(proc.device)
    objective = build_objective(run.objective, mcfg["model_args"]["learn_sigma"], run.sample.sampling_steps,
                                run.sample.sampler, **mcfg["objective_args"])
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    label_dropout = loop_label_dropout(model)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)

    # A checkpoint resumes only a run of the same identity (see Checkpointer). The GPU count and
    # DDP/FSDP are not part of it: a run may resume on another number of GPUs.
    # Keyed by the file's place in the package: a run moved to another folder or clone continues.
    code = {str(Path(f).resolve().relative_to(PACKAGE)): sha256_file(f) for f in source_files(IDENTITY_CODE, run.model)}
    init = resolve_checkpoint(cfg.init) if cfg.init else None
    identity = {"model": mcfg, "train": cfg.model_dump(mode="json", exclude=set(RESUMABLE)),
                "latents": content_hash(data.meta), "scale": data.scale, "posterior": data.posterior, "code": code,
                "init": sha256_file(init) if init else None}
    sharded = proc.world > 1 and cfg.parallel == "fsdp"
    checkpointer = Checkpointer(where["checkpoints"], identity, proc, sharded)
    state = resume_or_fresh(checkpointer, model, ema, cfg.steps)
    if state.step:
        print(f"resuming {exp_id} from step {state.step}", file=sys.stderr)
    elif init is not None:  # fine-tuning: the weights (and so the EMA) start from the file
        load_weights(model, read_state_dict(init), str(init))
        ema.load_state_dict(model.state_dict())
        print(f"fine-tuning {exp_id} from {init}", file=sys.stderr)
    net = distribute(model, ema, proc.world, sharded, proc.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    restore_optimizer(model, opt, state)
    if cfg.compile:
        net = torch.compile(net)
    log = LossLog(where["train_log"], proc)
    tracker = make_tracker(params, run, ema, objective, data, proc, sharded)
    try:
        state = train_loop(model, ema, net, objective, data, cfg, opt, proc, checkpointer, log, state, label_dropout,
                           name=f"train {exp_id}", tracker=tracker)
    finally:
        tracker.close()
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
                  "latents": {**{k: data.meta[k] for k in ("vae", "shape", "classes")}, "scale": data.scale,
                              "posterior": data.posterior, "data_scale": data.meta["data_scale"]},
                  "summary": summary}
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
