"""`diffzoo sample --experiment ID`: N samples from the experiment's EMA model, ADM-format npz + grid.

Sample i's label and all of its noise come from a generator seeded by (seed, i), so the samples do
not depend on the batch size, the number of GPUs or on resumption. Work is split in parts of
`batch_size` samples, each written atomically to `samples.parts-<key>/` (key: the sample settings and
the model weights' hash); a rerun with the same key skips finished parts, and
under torchrun rank r takes parts r, r + W, ... The final `samples.npz` (arr_0 uint8 NHWC, labels)
is assembled atomically, then the parts are removed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .diffusion.gaussian_diffusion import randint, randn
from .errors import DiffzooError
from .utils import atomic_path, content_hash, remove_tree, sha256_file

SEED_STRIDE = 1 << 32


def sample_generators(seed: int, indices, device="cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(seed * SEED_STRIDE + int(i)) for i in indices]


def sample(params_path: str, exp_id: str, device: str | None = None) -> Path:
    from .checkpoints import load_model
    from .latents import make_codec, to_uint8
    from .params import experiment, load_params, paths
    from .report.figures import save_run_grid
    from .train import build_objective

    params = load_params(params_path)
    exp = experiment(params, exp_id)
    cfg = exp["sample"]
    p = paths(params, exp_id)
    if not p["model"].is_file():
        raise DiffzooError(f"{p['model']} does not exist: train experiment {exp_id!r} first")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(device or (f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":  # as the official sample_ddp.py (TF32 matmuls and convolutions)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = load_model(p["model"]).to(device).eval()
    config = json.loads(p["model"].with_suffix(".json").read_text())
    lat = config["latents"]
    objective = build_objective(config["objective"], model.learn_sigma, cfg, pixel_space=lat["vae"] == "identity",
                                **config.get("objective_args", {}))
    codec = make_codec(lat["vae"], lat["scale"], device, params["latents"]["dtype"])
    shape = lat["shape"]
    num_classes = len(lat["classes"])
    model_fn = model.guided(cfg["cfg_scale"], cfg["guidance"])

    # Finished parts are reused only by a run of the same settings and the same model weights.
    key = content_hash({"sample": cfg, "model": sha256_file(p["model"]), "vae_dtype": params["latents"]["dtype"]})
    parts_dir = p["samples"].parent / f"samples.parts-{key}"
    if rank == 0:
        for stale in p["samples"].parent.glob("samples.parts-*"):
            if stale != parts_dir:
                remove_tree(stale)
    parts_dir.mkdir(parents=True, exist_ok=True)
    n, bs = cfg["num_samples"], cfg["batch_size"]
    n_parts = math.ceil(n / bs)
    todo = [k for k in range(rank, n_parts, world) if not (parts_dir / f"part-{k:05d}.npz").exists()]
    progress = None
    if rank == 0 and sys.stderr.isatty():
        from tqdm.auto import tqdm
        progress = tqdm(total=len(todo), desc=f"sample {exp_id}")
    for k in todo:
        idx = range(k * bs, min(n, (k + 1) * bs))
        gens = sample_generators(cfg["seed"], idx)
        labels = randint(num_classes, (len(gens),), gens)
        noise = randn((len(gens), *shape), gens)
        with torch.no_grad():
            z = objective.sample(model_fn, noise.to(device), {"y": labels.to(device)}, generator=gens)
            images = to_uint8(codec.decode(z))
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        with atomic_path(parts_dir / f"part-{k:05d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, arr_0=images, labels=labels.numpy())
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        parts = [np.load(parts_dir / f"part-{k:05d}.npz") for k in range(n_parts)]
        arr = np.concatenate([q["arr_0"] for q in parts])
        labels = np.concatenate([q["labels"] for q in parts])
        with atomic_path(p["samples"]) as tmp, open(tmp, "wb") as f:
            np.savez(f, arr_0=arr, labels=labels)
        save_run_grid(params, exp_id, p["samples"], p["grid"])
        remove_tree(parts_dir)
        print(f"sample: {len(arr)} images {arr.shape[1:]} -> {p['samples']}, grid {p['grid']}")
    return p["samples"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment or sampling id from params.yaml")


def run(args) -> int:
    from .train import relaunch_under_torchrun

    relaunch_under_torchrun(["sample", "--params", args.params, "--experiment", args.experiment])
    sample(args.params, args.experiment)
    return 0
