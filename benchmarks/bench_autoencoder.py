"""The pipeline's own autoencoder: training step time, and encode / decode throughput, against a peer
measured in the same run (a latent DiT-S/2 training step of the Fashion preset's size), since this
VM's speed varies from day to day.

    python benchmarks/bench_autoencoder.py                    # the preset's (16, 32, 32) and (32, 64, 64)
    python benchmarks/bench_autoencoder.py --threads 2 --repeats 20

The timed code is the autoencoder stage's own: `diffzoo.autoencoder.build_autoencoder` and
`loss_terms` (forward, L1 + KL, backward) with Adam, on Fashion-MNIST-sized inputs (1 x 32 x 32, batch
64); encode and decode at the latents stage's batch (256) in inference mode. The peer is a DiT-S/2
(width 64, depth 4) v-prediction training step on 4 x 8 x 8 latents at batch 64 (the preset's
experiments). Inputs are random: speed does not depend on the pixels. Prints one JSON line per
configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, first-call dispatch)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def dit_step(batch: int):
    from diffzoo.diffusion.objective import build_objective
    from diffzoo.models import create_model

    torch.manual_seed(0)
    model = create_model("DiT-S/2", input_size=8, in_channels=4, num_classes=10, learn_sigma=True, hidden_size=64,
                         depth=4, num_heads=4)
    objective = build_objective("ddpm", True, "ddim25", "ddim", prediction="v")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 4, 8, 8), torch.randint(0, 10, (batch,))

    def step():
        loss = objective.training_losses(model, x, {"y": y})["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def autoencoder_figures(widths: list[int], batch: int, codec_batch: int, repeats: int) -> dict:
    from diffzoo.autoencoder import build_autoencoder, loss_terms

    torch.manual_seed(0)
    cfg = {"block_out_channels": widths, "layers_per_block": 1, "latent_channels": 4, "norm_groups": 8}
    vae = build_autoencoder(cfg, channels=1)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 32, 32) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def train_step():
        loss = loss_terms(vae, x, 1e-6, gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    images = torch.rand(codec_batch, 1, 32, 32) * 2 - 1
    with torch.inference_mode():
        z = vae.encode(images).latent_dist.mean
        encode = timed(lambda: vae.encode(images).latent_dist.mean, repeats)
        decode = timed(lambda: vae.decode(z).sample, repeats)
    return {"params": sum(p.numel() for p in vae.parameters()), "train_step_s": timed(train_step, repeats),
            "encode_images_per_s": codec_batch / encode, "decode_images_per_s": codec_batch / decode,
            "latent_shape": list(z.shape[1:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--codec-batch", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peer = timed(dit_step(args.batch), args.repeats)
    for widths in ([16, 32, 32], [32, 64, 64]):
        figures = autoencoder_figures(widths, args.batch, args.codec_batch, args.repeats)
        print(json.dumps({"autoencoder": widths, **{k: round(v, 4) if isinstance(v, float) else v
                                                     for k, v in figures.items()},
                          "dit_s2_step_s": round(peer, 4),
                          "train_step_vs_dit_step": round(figures["train_step_s"] / peer, 2),
                          "threads": args.threads, "batch": args.batch, "machine": platform.machine(),
                          "load_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
