"""`diffzoo train --experiment ID`: train one experiment's backbone on precomputed latents.

DiT's recipe (AdamW, constant lr, no warmup, no clipping, EMA every step) for any registered backbone
and objective. One command for 1 or N GPUs: with several visible GPUs it re-launches itself under
torchrun (DDP); the global batch and learning rate stay those of params.yaml whatever the GPU count.

Resumable and exact: every `ckpt_every` steps the model, EMA and optimizer state are written
atomically; a rerun resumes from the newest checkpoint of the same configuration. The data order is
a function of (seed, step), and each sample's flip, posterior noise, label dropout, timestep and
noise come from its own generator seeded by (seed, step, position in the global batch). So an
interrupted and resumed run ends with the same weights as an uninterrupted one (on CPU, bit for bit),
and a run on N GPUs draws exactly what a run on one GPU draws: it differs only by the floating-point
order of the gradient all-reduce (tested with 2 processes against 1).
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from .checkpoints import save_checkpoint
from .diffusion.gaussian_diffusion import rand
from .diffusion.objective import create_objective
from .errors import DiffzooError
from .utils import atomic_path, content_hash, remove_tree, write_json

KEEP_CHECKPOINTS = 2


def model_config(exp: dict, latent_meta: dict) -> dict:
    """How to rebuild the experiment's model: registered name + constructor overrides."""
    shape = latent_meta["shape"]
    args = {"input_size": shape[-1], "in_channels": shape[0], "num_classes": len(latent_meta["classes"]),
            "learn_sigma": exp["objective"] == "ddpm"}
    args.update(exp["model_args"])
    return {"model": exp["model"], "model_args": args, "objective": exp["objective"],
            "objective_args": objective_settings(exp)}


def objective_settings(exp: dict) -> dict:
    """The experiment's objective settings that training and sampling must share (kept in model.json):
    ddpm's prediction and noise schedule, with null as the papers' eps and linear."""
    if exp["objective"] != "ddpm":
        return {}
    return {"prediction": exp["train"]["prediction"] or "eps", "noise_schedule": exp["train"]["noise_schedule"] or "linear"}


def build_objective(objective: str, learn_sigma: bool, sample_cfg: dict, pixel_space: bool = False,
                    **objective_args):
    """`objective_args`: objective_settings() of the experiment (model.json "objective_args")."""
    if objective == "ddpm":
        return create_objective("ddpm", learn_sigma=learn_sigma, sampling_steps=sample_cfg["sampling_steps"],
                                sampler=sample_cfg["sampler"], clip_denoised=pixel_space, **objective_args)
    return create_objective(objective, sampling_steps=int(sample_cfg["sampling_steps"]), **objective_args)


def mix_seed(*key: int) -> int:
    """A 64-bit seed from integers (numpy's SeedSequence hash: no collisions between nearby keys)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])


def step_generators(seed: int, step: int, positions) -> list[torch.Generator]:
    """One generator per sample of the global batch at `step`, by its position in that batch."""
    return [torch.Generator().manual_seed(mix_seed(seed, step, int(i))) for i in positions]


def drop_labels(y: torch.Tensor, generators: list[torch.Generator], prob: float, null: int) -> torch.Tensor:
    """Each label replaced by the null class with probability `prob`, drawn from its sample's generator."""
    return torch.where(rand((len(y),), generators) < prob, null, y) if prob > 0 else y


def loop_label_dropout(model: torch.nn.Module) -> tuple[float, int]:
    """Moves classifier-free-guidance label dropout from the model's LabelEmbedder (which draws from
    the global RNG, so its draws depend on how the batch is split over GPUs) to the training loop,
    which draws it from the per-sample generators. Returns (probability, null class)."""
    from .models.layers import LabelEmbedder

    embedders = [m for m in model.modules() if isinstance(m, LabelEmbedder)]
    if not embedders:
        return 0.0, 0
    prob, null = embedders[0].dropout_prob, embedders[0].num_classes
    for m in embedders:
        m.dropout_prob = 0.0
    return prob, null


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Indices of the global batch at `step`: consecutive slices of per-epoch permutations seeded by
    (seed, epoch), so the order is a pure function of the step (resumable, GPU-count independent)."""
    positions = np.arange(step * batch, (step + 1) * batch)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(positions // n):
        sel = positions // n == epoch
        out[sel] = epoch_permutation(seed, int(epoch), n)[positions[sel] % n]
    return out


def _latest_checkpoint(ckpt_dir: Path, run_key: str):
    for path in sorted(ckpt_dir.glob("step-*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a checkpoint that cannot be read is skipped, never half-used
            print(f"warning: ignoring unreadable checkpoint {path}", file=sys.stderr)
            continue
        if state.get("run_key") == run_key:
            return state
    return None


def train(params_path: str, exp_id: str) -> dict:
    from .flops import active_params, count_macs, count_params
    from .latents import LatentDataset
    from .models import create_model
    from .params import experiment, load_params, paths

    params = load_params(params_path)
    exp = experiment(params, exp_id)
    if exp_id in params["samplings"]:
        raise DiffzooError(f"{exp_id!r} is a sampling of experiment {params['samplings'][exp_id]['experiment']!r}: "
                           "train that experiment")
    cfg = exp["train"]
    p = paths(params, exp_id)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg["global_batch_size"] % world:
        raise DiffzooError(f"train.global_batch_size {cfg['global_batch_size']} is not divisible by {world} GPUs")
    local_batch = cfg["global_batch_size"] // world

    data = LatentDataset(p["latents"])
    mcfg = model_config(exp, data.meta)
    torch.manual_seed(cfg["seed"])
    model = create_model(mcfg["model"], **mcfg["model_args"]).to(device)
    objective = build_objective(exp["objective"], mcfg["model_args"]["learn_sigma"], exp["sample"],
                                **mcfg["objective_args"])
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    drop_prob, null_class = loop_label_dropout(model)
    if cfg["grad_checkpointing"]:
        model.set_grad_checkpointing(True)

    # A checkpoint resumes only a run of the same configuration, data and code (a code change that
    # made an engine rerun this stage must not continue weights trained by the old code). The GPU
    # count and DDP/FSDP are not part of it: a run may resume on another number of GPUs.
    from .utils import sha256_file
    from .pipeline import code_files
    code = {f: sha256_file(f) for f in code_files("train", params, exp_id)}
    run_key = content_hash({"model": mcfg, "train": {k: v for k, v in cfg.items() if k not in ("log_every", "ckpt_every", "parallel")},
                            "latents": data.meta, "code": code})
    ckpt_dir = p["checkpoints"]
    start, elapsed, log_rows = 0, 0.0, []  # log rows travel in the checkpoint (engines delete outputs)
    state = _latest_checkpoint(ckpt_dir, run_key) if ckpt_dir.exists() else None
    if state is not None:  # full (unsharded) weights, loaded before any sharding
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        start, elapsed = int(state["step"]), float(state["elapsed"])
        log_rows = list(state["log"])
        print(f"resuming {exp_id} from step {start}", file=sys.stderr)
    elif ckpt_dir.exists() and rank == 0:
        remove_tree(ckpt_dir)  # checkpoints of another configuration
    sharded = world > 1 and cfg["parallel"] == "fsdp"
    net = distribute(model, ema, world, sharded, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if state is not None:
        set_optimizer_state_dict(model, opt, state["opt"], options=StateDictOptions(full_state_dict=True))
    if cfg["compile"]:
        net = torch.compile(net)

    log_path = p["train_log"]
    header = "step\tloss\tmse\tvb\taux\timages_per_s"

    def write_log():
        if rank == 0:
            with atomic_path(log_path) as tmp:
                tmp.write_text("\n".join([header] + log_rows) + "\n")

    def save(step: int):
        if rank != 0 and not sharded:  # gathering sharded state needs every rank
            return
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        states = {"model": get_model_state_dict(model, options=full), "ema": get_model_state_dict(ema, options=full),
                  "opt": get_optimizer_state_dict(model, opt, options=full)}
        if rank != 0:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(ckpt_dir / f"step-{step:07d}.pt") as tmp:
            torch.save({**states, "step": step, "run_key": run_key, "elapsed": elapsed, "log": log_rows}, tmp)
        for old in sorted(ckpt_dir.glob("step-*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink()
        write_log()

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")
    progress = None
    if rank == 0 and sys.stderr.isatty():
        from tqdm.auto import tqdm
        progress = tqdm(total=cfg["steps"], initial=start, desc=f"train {exp_id}")
    window: dict[str, list] = {}
    model.train()
    t_window = time.perf_counter()
    for step in range(start, cfg["steps"]):
        torch.manual_seed(mix_seed(cfg["seed"], step))  # for any op that still draws from the global RNG
        mine = slice(rank * local_batch, (rank + 1) * local_batch)
        gens = step_generators(cfg["seed"], step, range(mine.start, mine.stop))
        idx = global_batch_indices(step, cfg["global_batch_size"], len(data), cfg["seed"])
        x, y = data.batch(idx[mine], gens)
        y = drop_labels(y, gens, drop_prob, null_class)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            terms = objective.training_losses(net, x, {"y": y}, generator=gens)
            loss = terms["loss"].mean()
            aux = model.aux_loss()
            if aux is not None:
                loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(cfg["ema_decay"]).add_(pm.detach(), alpha=1 - cfg["ema_decay"])
        # Detached device tensors: no host sync per step, so the next batch loads while the GPU works.
        for k in ("loss", "mse", "vb"):
            if k in terms:
                window.setdefault(k, []).append(terms[k].detach().mean())
        window.setdefault("aux", []).append(aux.detach() if aux is not None else torch.zeros((), device=device))
        if progress:
            progress.update(1)
        done = step + 1
        if done % cfg["log_every"] == 0 or done == cfg["steps"]:
            now = time.perf_counter()
            n_steps = len(window["loss"])
            elapsed += now - t_window
            ips = n_steps * cfg["global_batch_size"] / max(now - t_window, 1e-9)
            t_window = now
            mean = {k: torch.stack(v).float().mean().item() for k, v in window.items()}
            if world > 1:  # log the global batch's means (equal per-rank batches: mean of rank means)
                import torch.distributed as dist
                keys = sorted(mean)
                vals = torch.tensor([mean[k] for k in keys], dtype=torch.float64, device=device)
                dist.all_reduce(vals)
                mean = dict(zip(keys, (vals / world).tolist(), strict=True))
            log_rows.append(f"{done}\t{mean['loss']:.6f}\t{mean.get('mse', float('nan')):.6f}\t"
                            f"{mean.get('vb', float('nan')):.6f}\t{mean['aux']:.6f}\t{ips:.1f}")
            if progress:
                progress.set_postfix(loss=f"{mean['loss']:.4f}", img_s=f"{ips:.0f}")
            window = {}
        if done % cfg["ckpt_every"] == 0 or done == cfg["steps"]:
            save(done)
    if progress:
        progress.close()
    aux_metrics = model.aux_metrics()  # of the last step's forward (MoE expert load)

    summary = {}
    ema_state = get_model_state_dict(ema, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        rows = [r.split("\t") for r in log_rows]
        with torch.device("meta"):
            meta_model = create_model(mcfg["model"], **mcfg["model_args"])
        gpus = world if device.type == "cuda" else 0
        summary = {
            "experiment": exp_id, "model": mcfg["model"], "objective": exp["objective"],
            "steps": cfg["steps"], "global_batch_size": cfg["global_batch_size"],
            "images_seen": cfg["steps"] * cfg["global_batch_size"],
            "final_loss": float(rows[-1][1]) if rows else float("nan"),
            "train_seconds": round(elapsed, 2),
            "images_per_s": round(cfg["steps"] * cfg["global_batch_size"] / max(elapsed, 1e-9), 1),
            "gpu_hours": round(elapsed * gpus / 3600, 4), "device": device.type, "world_size": world,
            "params": count_params(meta_model), "active_params": active_params(meta_model),
            "gflops": round(count_macs(meta_model) / 1e9, 6), **{f"aux_{k}": v for k, v in aux_metrics.items()},
        }
        config = {**mcfg, "experiment": exp_id, "train": cfg, "sample": exp["sample"], "latents": {
            k: data.meta[k] for k in ("vae", "scale", "shape", "classes")}, "summary": summary}
        save_checkpoint(p["model"], ema_state, config)
        write_log()
        write_json(p["train_metrics"], summary)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    return summary


def distribute(model: torch.nn.Module, ema: torch.nn.Module, world: int, sharded: bool,
               device: torch.device) -> torch.nn.Module:
    """The module the training step calls: the model itself on one process; under torchrun a DDP
    replica, or with `sharded` the model and its EMA sharded in place with FSDP2 (`fully_shard` on
    every repeated block, then on the root), so weights, gradients, EMA and optimizer state are split
    over the GPUs and only one block's full weights are gathered at a time. The EMA update then runs
    shard by shard; checkpoints gather full state dicts, so they load on any GPU count."""
    if world == 1:
        return model
    if not sharded:
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for m in (model, ema):
        for block in m.repeated_blocks():
            fully_shard(block)
        fully_shard(m)
    return model


RENDEZVOUS_PORT = 29500


def launch_command(argv: list[str], env: dict, gpus: int, hostnames=None) -> list[str] | None:
    """The command that runs `diffzoo ARGV` on every GPU it was given, or None where this process is
    the right one (already under torchrun, or a single GPU on a single node).

    One node with several GPUs: torchrun --standalone. Several nodes of a SLURM allocation
    (SLURM_JOB_NUM_NODES > 1): one torchrun per node (started by srun from the batch script, or this
    task inside an srun step of one task per node), meeting at the first node's c10d rendezvous.
    `hostnames()` lists the allocation's nodes (scontrol by default).
    """
    if "LOCAL_RANK" in env:
        return None
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    nodes = int(env.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes > 1:
        if "SLURM_JOB_NODELIST" not in env:
            raise DiffzooError(f"SLURM_JOB_NUM_NODES is {nodes} but SLURM_JOB_NODELIST is not set")
        head = (hostnames or _slurm_hostnames)(env["SLURM_JOB_NODELIST"])[0]
        # From the batch script srun starts one torchrun per node; inside an srun step (one task per
        # node already) this task becomes its node's torchrun.
        srun = [] if "SLURM_STEP_ID" in env else ["srun", f"--nodes={nodes}", "--ntasks-per-node=1"]
        return [*srun, *torchrun, f"--nnodes={nodes}", f"--nproc_per_node={max(gpus, 1)}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={head}:{RENDEZVOUS_PORT}", f"--rdzv_id={env.get('SLURM_JOB_ID', 'diffzoo')}",
                "-m", "diffzoo.cli", *argv]
    if gpus > 1:
        return [*torchrun, "--standalone", f"--nproc_per_node={gpus}", "-m", "diffzoo.cli", *argv]
    return None


def _slurm_hostnames(nodelist: str) -> list[str]:
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise DiffzooError(f"cannot list the nodes of this SLURM allocation ({nodelist!r}) with scontrol: {err}") from None
    return out.stdout.split()


def relaunch_under_torchrun(argv: list[str]) -> None:
    """Replace this process by the launch over every GPU of this machine or allocation, if needed."""
    cmd = launch_command(argv, dict(os.environ), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if cmd:
        print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
        os.execvp(cmd[0], cmd)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment id from params.yaml")


def run(args) -> int:
    relaunch_under_torchrun(["train", "--params", args.params, "--experiment", args.experiment])
    summary = train(args.params, args.experiment)
    if summary:
        print(json.dumps(summary))
    return 0
