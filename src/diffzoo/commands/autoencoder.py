"""train the latent-diffusion autoencoder on the data set's training images (`latents.vae: autoencoder`)

`diffzoo autoencoder --params P` -> data/<name>/autoencoder-R/ (a diffusers AutoencoderKL folder, as
save_pretrained writes it, plus diffzoo.json and the held-out reconstructions), and
results/autoencoder/{metrics.json,reconstructions.png}: the held-out images' reconstruction PSNR and
their metrics as a sample file against the reference (the floor of every latent model's FID), and
originals beside reconstructions. Resumable (checkpoints beside the folder). When no latents setting
uses the autoencoder (DVC runs every stage), it writes a folder that says so and trains nothing.
"""
from __future__ import annotations

import argparse
import sys

from ..autoencoder import RECONSTRUCTIONS, SUMMARY, psnr, reconstruct, train_autoencoder
from ..evaluate.evaluator import evaluate
from ..evaluate.images import ArrayImages, open_images
from ..evaluate.reference import REFERENCE, split_images
from ..params import load_params, paths
from ..report.figures import save_png, save_sources_grid
from ..runtime import setup_process
from ..utils import atomic_dir, write_json
from .evaluate import judge_accuracy_of, pipeline_extractor

UNUSED = "UNUSED.txt"


def run_stage(params, device: str | None = None) -> dict:
    import numpy as np


    where = paths(params)
    out = where["autoencoder"]
    if not params.uses_autoencoder:  # DVC runs every stage: its outputs say so
        from PIL import Image, ImageDraw

        note = "no latents setting uses vae: autoencoder; nothing was trained"
        with atomic_dir(out) as tmp:
            (tmp / UNUSED).write_text(note + "\n")
        write_json(where["autoencoder_metrics"], {"used": False, "note": note})
        image = Image.new("RGB", (560, 40), (255, 255, 255))
        ImageDraw.Draw(image).text((10, 12), note, fill=(0, 0, 0))
        save_png(image, where["autoencoder_grid"])
        return {}
    proc = setup_process(device)
    channels = params.autoencoder_channels
    train, heldout = split_images(where["images"])
    images = train.take(np.arange(train.num_images))
    cfg = params.autoencoder.model_dump()
    side = params.data.resolution // params.autoencoder.downsample
    print(f"autoencoder: {len(images)} training images, {channels} channel(s), {cfg['block_out_channels']} "
          f"-> {side}x{side}x{cfg['latent_channels']} latents", file=sys.stderr)
    vae, summary = train_autoencoder(images, cfg, channels, out.with_name(out.name + ".checkpoints"), proc)
    originals = heldout.take(np.arange(heldout.num_images))
    recon = reconstruct(vae, originals)
    summary["heldout_images"], summary["heldout_psnr"] = len(originals), round(psnr(originals, recon), 3)
    with atomic_dir(out) as tmp:
        vae.save_pretrained(tmp)
        np.savez(tmp / RECONSTRUCTIONS, arr_0=recon, labels=heldout.labels)
        write_json(tmp / SUMMARY, {"autoencoder": cfg, **summary})
    metrics = evaluate_reconstructions(params, out / RECONSTRUCTIONS, device)
    metrics.update(psnr=summary["heldout_psnr"], autoencoder={k: v for k, v in summary.items() if k != "log"})
    write_json(where["autoencoder_metrics"], metrics)
    save_sources_grid(where["images"], {"held-out originals": ArrayImages(originals, heldout.labels),
                                        "reconstructions": ArrayImages(recon, heldout.labels)},
                      params.sample.grid, where["autoencoder_grid"])
    print(f"autoencoder: held-out PSNR {summary['heldout_psnr']:.2f} dB on {len(originals)} images, "
          f"reconstruction FID {metrics['fid']:.2f} -> {out}")
    return metrics


def evaluate_reconstructions(params, samples, device=None) -> dict:
    """The reconstructions as a sample file against the reference stage's statistics (and the judge)."""

    where, ev = paths(params), params.evaluate
    source = open_images(samples)
    metrics = evaluate(source, where["reference"] / REFERENCE, pipeline_extractor(params, device),
                       batch_size=ev.batch_size, distance_dtype=ev.pr_distance_dtype, cache_dir=None)
    judge = judge_accuracy_of(params, source)
    if judge is not None:
        metrics["judge_accuracy"] = judge
    metrics["experiment"] = "autoencoder reconstructions"
    return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def run(args) -> int:
    run_stage(load_params(args.params), args.device)
    return 0
