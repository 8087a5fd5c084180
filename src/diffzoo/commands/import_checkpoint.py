"""verify a released checkpoint and store it as safetensors that `diffzoo sample` runs

`diffzoo import-checkpoint NAME_OR_FILE --out DIR/model.safetensors`: a released name (DiT, DiT-MoE:
checkpoints.RELEASED; downloaded into the cache with a progress bar) or a file in its authors'
format, read with weights_only, checked by sha256 when known (or --sha256), loaded strictly into the
registered model (the authors' layouts mapped) and written with a model.json that `diffzoo sample
--ckpt` and the pipeline read: the model, its objective (and rectified-flow time scale) and latents.
In a params file, `experiments.<id>.train.checkpoint` makes it a pipeline step: `diffzoo
import-checkpoint --params P --experiment ID` (the job Snakemake runs instead of training; DVC's
static train stage runs `diffzoo train`, which does the same for such an experiment).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import hub
from ..checkpoints import import_released, model_json, resolve_checkpoint, save_checkpoint
from ..errors import DiffzooError
from ..params import load_params, paths
from ..released import RELEASED, released
from ..utils import sha256_file
from .train import import_weights

SD_VAE = hub.pin("stabilityai/sd-vae-ft-ema")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?",
                   help=f"a file in its authors' format, or a released name ({', '.join(RELEASED)})")
    p.add_argument("--params", default="params.yaml", help="pipeline form: the params file (default: params.yaml)")
    p.add_argument("--experiment", help="pipeline form: an experiment whose train.checkpoint names the weights")
    p.add_argument("--out", type=Path, help="output .safetensors path (its .json config is written beside)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the file (checked before anything is loaded)")
    p.add_argument("--model", default=None, help="registered model name (default: the released name's)")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: the released name's, else 256)")
    p.add_argument("--input-size", type=int, default=None, help="latent side (default: image size / 8)")
    p.add_argument("--objective", choices=("ddpm", "rectified_flow"), default=None,
                   help="what the file was trained with (default: the released name's, else ddpm)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="rectified flow: the model sees t * this (default: the released name's, else 1000)")
    p.add_argument("--vae", default=SD_VAE, help=f"the VAE of its latents (default {SD_VAE})")


def standalone(args) -> bool:
    """CHECKPOINT --out FILE: no params file, no pipeline artifact (cli._artifact_writer)."""
    return not args.experiment


def run(args) -> int:
    if args.experiment:

        params = load_params(args.params)
        run_ = params.run(args.experiment)
        if not run_.train.checkpoint:
            raise DiffzooError(f"experiment {args.experiment!r} has no train.checkpoint: it trains")
        import_weights(params, run_, paths(params, args.experiment))
        return 0
    if not args.checkpoint or not args.out:
        raise DiffzooError("give CHECKPOINT --out FILE, or --params P --experiment ID")
    spec = released(args.checkpoint)
    src = resolve_checkpoint(args.checkpoint, args.sha256)
    name = args.model or (spec.model if spec else None)
    if not name:
        raise DiffzooError("--model is required for a file that is not a released checkpoint")
    objective = args.objective or (spec.objective if spec else "ddpm")
    side = args.input_size or (args.image_size or (spec.image_size if spec else 256)) // 8
    model_args = {"input_size": side, **(spec.model_args if spec else {})}
    time_scale = args.time_scale or (spec.time_scale if spec else None)
    objective_args = {"time_scale": time_scale} if objective == "rectified_flow" and time_scale else {}
    if objective == "ddpm":
        objective_args = {"prediction": "eps", "noise_schedule": "linear"}
    tensors, model_args = import_released(src, name, model_args)
    digest = sha256_file(src)
    vae = hub.pin_argument(args.vae, "--vae") if hub.is_ref(args.vae) and not Path(args.vae).is_dir() else args.vae
    config = model_json(name, model_args, objective, objective_args, vae, 0.18215, [4, side, side],
                        model_args.get("num_classes", 1000), source={"checkpoint": src.name, "sha256": digest})
    save_checkpoint(args.out, tensors, config)
    print(f"{src.name}: sha256 {digest}, {len(tensors)} tensors, loads strictly into {name}; wrote {args.out}")
    return 0
