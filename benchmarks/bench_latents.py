"""VAE latent precompute: encode images/s in float32 and bfloat16, and how far bf16 moves the posterior.

    python benchmarks/bench_latents.py                  # CPU: batch 2 at 256px, random-init SD-VAE
    python benchmarks/bench_latents.py --device cuda --batch 64 --repeats 10
    python benchmarks/bench_latents.py --device cuda --batch 64 --repeats 10 --vae stabilityai/sd-vae-ft-ema

The timed code is the latents stage's own: `diffzoo.latents.make_codec(vae, scale, device, dtype)` and,
per batch, what `encode_shards` does: encode the images and their horizontal flips, then move
mean/std to the host as float16. `--vae random-sd-vae` (default; no download needed) saves a randomly
initialised AutoencoderKL with the stabilityai/sd-vae-ft-ema architecture to a temp folder and loads it
from there, so speed is the real VAE's, but the bf16-vs-fp32 figures only bound the numerics: the real
VAE's activations and posterior std differ (random init gives std ~ 1; give a real --vae for those).
Inputs: scikit-learn's 8x8 digits (the default pipeline's data), bilinearly upsampled to --resolution,
grey repeated to 3 channels, uint8. TF32 flags stay at PyTorch's defaults, as in the latents stage
(on CUDA, cuDNN convolutions then run in TF32 even for "float32"). Prints one JSON line per dtype;
the bfloat16 line holds the comparison with float32 (same images, both views).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffzoo.latents import make_codec

RANDOM_VAE = "random-sd-vae"
SD_VAE_CONFIG = {  # stabilityai/sd-vae-ft-ema's config.json (diffusers AutoencoderKL argument names)
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 256,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def load_codec(vae: str, device: str, dtype: str, scale: float = 0.18215):
    """The project's codec for `vae` (a hub name or local diffusers folder); `random-sd-vae` is the
    SD-VAE architecture with seeded random weights, saved and loaded through the same from_pretrained."""
    from diffusers.utils import logging

    logging.set_verbosity_error()  # "accelerate not found", "modules to keep in float32: []"
    if vae != RANDOM_VAE:
        return make_codec(vae, scale, device, dtype)
    from diffusers.models import AutoencoderKL

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(folder)
        return make_codec(folder, scale, device, dtype)


def machine(dev: torch.device) -> dict:
    """Where it ran: the device name, torch threads and the 1-minute load average (CPU runs share cores)."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                    platform.processor() or platform.machine())
    return {"threads": torch.get_num_threads(), "load_1min": round(os.getloadavg()[0], 2), "machine": name}


def digit_images(n: int, resolution: int) -> torch.Tensor:
    """n uint8 NCHW 3-channel images: sklearn digits (0..16 on 8x8), bilinear to resolution."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) * (255 / 16)
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)


def encode_views(codec, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What encode_shards computes per batch (flips on): mean/std of the images and of their flips,
    moved to the host as float16 (kept here in float32 for the comparison)."""
    out = {}
    for suffix, view in {"": images, "_flip": images.flip(3)}.items():
        mean, std = codec.encode(view)
        out["mean" + suffix], out["std" + suffix] = mean.half().cpu().float(), std.half().cpu().float()
    return out


def bench(codec, images: torch.Tensor, dev: torch.device, repeats: int, warmup: int) -> tuple[float, dict]:
    for _ in range(warmup):
        encode_views(codec, images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = encode_views(codec, images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return len(images) * repeats / (time.perf_counter() - t0), out


def compare(low: dict, ref: dict, scale: float) -> dict:
    """bf16 vs fp32: max |diff|, relative RMS ||a - b|| / ||b|| of means and stds; and the mean error
    after scaling (the latent the model sees) against the posterior noise training adds (scale * std)."""
    m, m0 = torch.cat([low["mean"], low["mean_flip"]]), torch.cat([ref["mean"], ref["mean_flip"]])
    s, s0 = torch.cat([low["std"], low["std_flip"]]), torch.cat([ref["std"], ref["std_flip"]])
    r = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    return {"mean_max_abs": float((m - m0).abs().max()), "mean_rel_rms": r(m, m0),
            "std_max_abs": float((s - s0).abs().max()), "std_rel_rms": r(s, s0),
            "scaled_mean_abs_diff": scale * float((m - m0).abs().mean()), "scaled_mean_std": scale * float(s0.mean()),
            "abs_diff_over_std": float((m - m0).abs().mean() / s0.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", default=RANDOM_VAE, help=f"hub name or local diffusers folder; {RANDOM_VAE}: random init")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=None, help="images per encode (default: 2 on CPU, 64 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed batches per dtype")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--scale", type=float, default=0.18215)
    args = p.parse_args()
    dev = torch.device(args.device)
    batch = args.batch or (64 if dev.type == "cuda" else 2)
    images = digit_images(batch, args.resolution)
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        codec = load_codec(args.vae, args.device, dtype, args.scale)
        ips, outputs[dtype] = bench(codec, images, dev, args.repeats, args.warmup)
        del codec
        r = {"vae": args.vae, "weights": "random init" if args.vae == RANDOM_VAE else "pretrained",
             "device": args.device, "dtype": dtype, "resolution": args.resolution, "batch": batch,
             "images_per_s": round(ips, 3), "encodes_per_image": 2, "inputs": "sklearn digits, bilinear, 3ch uint8",
             **machine(dev)}
        if dtype == "bfloat16":
            diff = compare(outputs[dtype], outputs["float32"], args.scale)
            r["vs_float32"] = {k: float(f"{v:.4g}") for k, v in diff.items()}
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
