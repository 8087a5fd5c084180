"""sample N images of one experiment to an ADM-format npz and a grid PNG

Two forms:
- `diffzoo sample --params P --experiment ID` (an experiment or a sampling, the pipeline): its EMA
  model's samples to data/experiments/<ID>/samples.npz and results/samples/<ID>.png (one row per
  class, the real images beside);
- `diffzoo sample --ckpt FILE --model NAME --image-size 256 --cfg-scale 1.5 --num-sampling-steps 250
  --num-fid-samples 50000 --per-proc-batch-size N --out samples.npz`, DiT's sample_ddp.py for people
  who use no workflow: FILE is a released name or file in its authors' format, or a diffzoo
  model.safetensors.
Samples are seeded by index (diffzoo.sampling): resumable in parts under samples.parts-<key>/ (key:
the sample settings and the model weights' hash), and under torchrun rank r draws parts r, r + W, ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .. import hub
from ..checkpoints import (build_model, import_released, load_checkpoint, load_model, model_json, released,
                           resolve_checkpoint)
from ..diffusion.objective import build_objective
from ..errors import DiffzooError
from ..latents import make_codec
from ..params import SampleConfig, load_params, paths
from ..report.figures import save_run_grid
from ..runtime import relaunch_under_torchrun, setup_process
from ..runtime_facts import log_facts
from ..sampling import assemble, sample_parts
from ..utils import content_hash, remove_tree, sha256_file, stage_lock, write_json


def draw(model, config: dict, cfg: SampleConfig, weights: Path, out: Path, proc, vae_dtype: str = "float32",
         name: str = "sample"):
    """cfg.num_samples samples of `model` (its model.json `config`) into the ADM npz `out`; the parts
    are kept beside it, keyed by the settings and the weights, until the npz is written."""
    lat = config["latents"]
    objective = build_objective(config["objective"], model.learn_sigma, cfg.sampling_steps, cfg.sampler,
                                clip_denoised=lat["vae"] == "identity", **config.get("objective_args", {}))
    codec = make_codec(lat["vae"], lat["scale"], proc.device, vae_dtype)
    # Finished parts are reused only by a run of the same settings and the same model weights.
    key = content_hash({"sample": cfg.model_dump(mode="json"), "model": sha256_file(weights), "vae_dtype": vae_dtype})
    parts_dir = out.parent / f"{out.stem}.parts-{key}"
    if proc.is_main:
        for stale in out.parent.glob(f"{out.stem}.parts-*"):
            if stale != parts_dir:
                remove_tree(stale)
    n_parts = sample_parts(model.guided(cfg.cfg_scale, cfg.guidance), objective, codec, lat["shape"],
                           len(lat["classes"]), cfg, parts_dir, proc, name=name)
    proc.barrier()
    arr = None
    if proc.is_main:
        arr = assemble(parts_dir, n_parts, out)
        remove_tree(parts_dir)
    return arr


def sample(params_path: str, run_id: str, device: str | None = None):
    params = load_params(params_path)
    run = params.run(run_id)
    cfg, where = run.sample, paths(params, run_id)
    if not where["model"].is_file():
        raise DiffzooError(f"{where['model']} does not exist: train experiment {run.trained_by!r} first")
    proc = setup_process(device, params.resources.sample_gpus, "resources.sample_gpus")
    if proc.is_main:
        log_facts()
    model = load_model(where["model"]).to(proc.device).eval()
    config = json.loads(where["model"].with_suffix(".json").read_text())
    arr = draw(model, config, cfg, where["model"], where["samples"], proc, run.latents.dtype, f"sample {run_id}")
    proc.close()
    if proc.is_main:
        images = paths(params)["images"] if params.uses_data else None
        save_run_grid(images, where["samples"], run_id, cfg.grid, where["grid"])
        write_json(where["sample_record"], {"num_samples": len(arr), "sample": cfg.model_dump(mode="json"),
                                            "vae_dtype": run.latents.dtype,
                                            "model_sha256": sha256_file(where["model"])})
        print(f"sample: {len(arr)} images {arr.shape[1:]} -> {where['samples']}, grid {where['grid']}")
    return where["samples"]


def sample_checkpoint(args) -> Path:
    """DiT's sample_ddp.py: the arguments name the weights and the settings, no params file."""
    path = resolve_checkpoint(args.ckpt)
    proc = setup_process(args.device)
    if path.suffix == ".safetensors":  # ours: the model.json beside it says everything
        tensors, config = load_checkpoint(path)
    else:
        spec = released(args.ckpt)
        name = args.model or (spec.model if spec else None)
        if not name:
            raise DiffzooError("--model is required for a file that is not a released checkpoint")
        objective = args.objective or (spec.objective if spec else "ddpm")
        side = args.image_size // 8
        given = {"num_classes": args.num_classes} if args.num_classes else {}
        model_args = {"input_size": side, **given, **(spec.model_args if spec else {})}
        time_scale = args.time_scale or (spec.time_scale if spec else None)
        objective_args = {"time_scale": time_scale} if objective == "rectified_flow" and time_scale else {}
        tensors, model_args = import_released(path, name, model_args)
        vae = f"stabilityai/sd-vae-ft-{args.vae}" if args.vae in ("ema", "mse") else args.vae
        vae = hub.pin_argument(vae, "--vae") if hub.is_ref(vae) and not Path(vae).is_dir() else vae
        config = model_json(name, model_args, objective, objective_args, vae, 0.18215, [4, side, side],
                            model_args.get("num_classes", 1000))
    model = build_model(config, tensors, str(path)).to(proc.device).eval()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    cfg = standalone_settings(args, config.get("sample"), config["objective"])
    out = Path(args.out)
    if proc.is_main:
        print(f"sample: {cfg.num_samples} samples, {cfg.sampling_steps} {cfg.sampler} steps, cfg {cfg.cfg_scale} "
              f"({cfg.guidance}), batch {cfg.batch_size} per process on {proc.device}"
              + ("" if config.get("sample") is None or path.suffix != ".safetensors"
                 else " (the model's own sample settings where no option is given)"), file=sys.stderr)
    arr = draw(model, config, cfg, path, out, proc, name=f"sample {path.name}")
    proc.close()
    if proc.is_main:
        grid = out.with_suffix(".png")
        save_run_grid(None, out, config.get("experiment", path.stem), cfg.grid, grid)
        print(f"sample: {len(arr)} images {arr.shape[1:]} -> {out}, grid {grid}")
    return out


DIT_SAMPLE_DEFAULTS = {"num_samples": 50_000, "batch_size": 32, "sampling_steps": "250", "sampler": "ddpm",
                       "cfg_scale": 1.5, "guidance": "legacy3"}  # sample_ddp.py's, for released weights


def standalone_settings(args, own: dict | None, objective: str = "ddpm") -> SampleConfig:
    """`sample --ckpt`'s settings: each option given, else the model's own (a diffzoo model.json records
    its experiment's sample section), else DiT's sample_ddp.py defaults, with the guidance of the file's
    objective (rectified flow: every channel, as the DiT-MoE authors' RF sampler guides)."""
    given = {"num_samples": args.num_fid_samples, "batch_size": args.per_proc_batch_size,
             "sampling_steps": args.num_sampling_steps, "sampler": args.sampler, "cfg_scale": args.cfg_scale,
             "guidance": args.guidance}
    defaults = {**DIT_SAMPLE_DEFAULTS, "guidance": "all" if objective == "rectified_flow" else "legacy3"}
    base = {**defaults, **{k: v for k, v in (own or {}).items() if k in DIT_SAMPLE_DEFAULTS and v is not None}}
    settings = {k: (v if v is not None else base[k]) for k, v in given.items()}
    return SampleConfig(**settings, seed=args.global_seed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", help="pipeline form: an experiment or sampling id from the params")
    g = p.add_argument_group("without a params file (DiT's sample_ddp.py)")
    g.add_argument("--ckpt", help="a released name, a file in its authors' format, or a diffzoo model.safetensors")
    g.add_argument("--model", help="registered model name (default: the released name's)")
    g.add_argument("--image-size", type=int, default=256, help="pixels (the latents are 1/8 of it)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="(default: what the file's label table holds, else DiT's 1000)")
    g.add_argument("--vae", default="ema", help="ema or mse (stabilityai/sd-vae-ft-<vae>, as DiT), or a diffusers "
                                               "AutoencoderKL repo id or folder")
    g.add_argument("--cfg-scale", type=float, default=None, help="(default: a diffzoo model's own sample "
                                                                 "settings, else DiT's 1.5; likewise below)")
    g.add_argument("--guidance", choices=("legacy3", "all"), default=None,
                   help="legacy3: the official DiT's (channels 0..2), all: every channel")
    g.add_argument("--num-sampling-steps", type=str, default=None, help="(DiT: 250)")
    g.add_argument("--sampler", choices=("ddpm", "ddim"), default=None, help="(DiT: ddpm)")
    g.add_argument("--objective", choices=("ddpm", "rectified_flow"), default=None,
                   help="default: the released name's, else ddpm")
    g.add_argument("--time-scale", type=float, default=None, help="rectified flow's t scale (released: theirs)")
    g.add_argument("--num-fid-samples", type=int, default=None, help="(DiT: 50,000)")
    g.add_argument("--per-proc-batch-size", type=int, default=None, help="(DiT: 32)")
    g.add_argument("--global-seed", type=int, default=0)
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--out", default="samples.npz", help="the ADM npz to write (and a grid of the first "
                                                        "samples as the same name .png)")
    g.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def standalone(args) -> bool:
    """--ckpt FILE: no params file, no pipeline artifact (cli._artifact_writer); it locks its --out."""
    return bool(args.ckpt)


def run(args) -> int:
    if args.ckpt:
        if args.experiment:
            raise DiffzooError("give --experiment (with --params) or --ckpt, not both")
        relaunch_under_torchrun(["sample", *_standalone_argv(args)])
        out = Path(args.out).resolve()
        # One writer per output file (its parts folder is cleared of other settings' parts): a second
        # sampling into the same --out is refused, whatever folder it runs from.
        with stage_lock(f".{out.name}.sample", out.parent):
            sample_checkpoint(args)
        return 0
    if not args.experiment:
        raise DiffzooError("give --experiment ID (the pipeline) or --ckpt FILE (without a params file)")
    relaunch_under_torchrun(["sample", "--params", args.params, "--experiment", args.experiment])
    sample(args.params, args.experiment)
    return 0


def _standalone_argv(args) -> list[str]:
    argv = ["--ckpt", args.ckpt, "--image-size", str(args.image_size), "--vae", args.vae,
            "--global-seed", str(args.global_seed), "--out", args.out,
            "--tf32" if args.tf32 else "--no-tf32"]
    for flag, value in (("--model", args.model), ("--num-classes", args.num_classes), ("--objective", args.objective),
                        ("--time-scale", args.time_scale),
                        ("--cfg-scale", args.cfg_scale), ("--guidance", args.guidance),
                        ("--num-sampling-steps", args.num_sampling_steps), ("--sampler", args.sampler),
                        ("--num-fid-samples", args.num_fid_samples),
                        ("--per-proc-batch-size", args.per_proc_batch_size)):
        if value is not None:
            argv += [flag, str(value)]
    return argv
