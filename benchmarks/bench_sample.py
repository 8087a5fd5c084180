"""Sampling time for 50K images, extrapolated from one timed batch of K respaced DDPM steps.

    python benchmarks/bench_sample.py                   # CPU: DiT-S/2, 256px latents, batch 4, K=5, no decode
    python benchmarks/bench_sample.py --vae random-sd-vae
    python benchmarks/bench_sample.py --device cuda --model DiT-XL/2 --batch 256 --cfg-scale 1.5 --dtype bf16 \
        --steps 10 --vae random-sd-vae --vae-dtype bfloat16

The timed code is `diffzoo sample`'s per-part loop (random-init model: speed does not depend on the
weights): per-sample CPU generators, labels and initial noise from them, `objective.sample` with the
guided model function (cfg_scale > 1 runs the model on a 2x batch), then VAE decode + uint8 when
--vae is given (`random-sd-vae`: see bench_latents.load_codec). The respaced sampler runs exactly K
model evaluations, so

    per part = setup + (sampling time / K) x FULL_STEPS + decode,   total = per part x ceil(N / batch)

and with --gpus G each GPU takes ceil(parts / G) parts. `noise_fraction`: share of a sampling step
spent drawing that step's noise from the per-sample CPU generators and moving it to the device
(`randn((batch, *shape), gens, device)`, timed alone: an upper bound, as in the sampler the draw for
step i overlaps the GPU's work on step i-1). `--dtype bf16` wraps sampling in bf16 autocast
(`diffzoo sample` itself runs the model in float32). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bench_latents import load_codec, machine
from diffzoo.diffusion.gaussian_diffusion import randint, randn
from diffzoo.latents import to_uint8
from diffzoo.models import create_model
from diffzoo.diffusion.objective import build_objective
from diffzoo.sampling import sample_generators


def timed(fn, dev: torch.device) -> tuple[float, object]:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="DiT-S/2")
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 = 256px images through the SD-VAE)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast around sampling")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="K respaced steps timed")
    p.add_argument("--full-steps", type=int, default=250, help="steps extrapolated to (the papers' 250)")
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--guidance", default="all", choices=("all", "legacy3"))
    p.add_argument("--vae", default=None, help="also time decode: hub name, local folder or random-sd-vae")
    p.add_argument("--vae-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--no-tf32", action="store_true", help="plain fp32 matmuls (diffzoo sample, like DiT's "
                                                          "sample_ddp.py, turns TF32 on for CUDA)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not args.no_tf32
    model = create_model(args.model, input_size=args.input_size).to(dev).eval()
    shape = (model.in_channels, args.input_size, args.input_size)
    objective = build_objective("ddpm", model.learn_sigma, str(args.steps), "ddpm")
    warm_objective = build_objective("ddpm", model.learn_sigma, "2", "ddpm")
    model_fn = model.guided(args.cfg_scale, args.guidance)
    codec = load_codec(args.vae, args.device, args.vae_dtype) if args.vae else None
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def setup():
        gens = sample_generators(args.seed, range(args.batch))
        labels = randint(model.num_classes, (len(gens),), gens)
        noise = randn((len(gens), *shape), gens)
        return gens, labels.to(dev), noise.to(dev)

    def run(obj, gens, labels, noise):
        with torch.no_grad(), autocast:
            return obj.sample(model_fn, noise, {"y": labels}, generator=gens)

    run(warm_objective, *setup())  # warmup: 2 model evaluations (1 step: IndexError in respacing)
    t_setup, (gens, labels, noise) = timed(setup, dev)
    t_sample, z = timed(lambda: run(objective, gens, labels, noise), dev)
    reps = 5
    t_noise = timed(lambda: [randn((args.batch, *shape), gens, dev) for _ in range(reps)], dev)[0] / reps
    t_decode = 0.0
    if codec is not None:
        with torch.no_grad():
            to_uint8(codec.decode(z))  # warmup
            t_decode = timed(lambda: to_uint8(codec.decode(z)), dev)[0]
    per_step = t_sample / args.steps
    per_part = t_setup + per_step * args.full_steps + t_decode
    parts = math.ceil(args.num_samples / args.batch)
    h = lambda s: round(s / 3600, 3)  # noqa: E731
    print(json.dumps({
        "model": args.model, "input_size": args.input_size, "device": args.device, "dtype": args.dtype,
        "batch": args.batch, "cfg_scale": args.cfg_scale, "model_batch": args.batch * (2 if args.cfg_scale > 1 else 1),
        "steps_timed": args.steps, "vae": args.vae, "vae_dtype": args.vae_dtype if args.vae else None,
        "s_per_step": round(per_step, 4), "s_setup": round(t_setup, 4), "s_decode_batch": round(t_decode, 3),
        "s_noise_per_step": round(t_noise, 5), "noise_fraction": round(t_noise / per_step, 4),
        "decode_fraction": round(t_decode / per_part, 4),
        "extrapolated": {"num_samples": args.num_samples, "steps": args.full_steps, "parts": parts,
                         "hours_1_device": h(per_part * parts), "gpus": args.gpus,
                         f"hours_{args.gpus}_devices": h(per_part * math.ceil(parts / args.gpus))},
        **machine(dev)}))


if __name__ == "__main__":
    main()
