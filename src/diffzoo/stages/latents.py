"""encode the images shards to latents (VAE posterior mean/std, or identity)

`diffzoo latents --params P`: data/<name>/images-R -> data/<name>/latents-R (resumable shard by shard;
diffzoo.latents holds the codecs and the shard format).
"""
from __future__ import annotations

import argparse

from ..params import load_params, paths

CODE = ["latents.py", "data/shards.py", "stages/latents.py"]
GPUS = 1


def params_slice(params, run_id=None) -> dict:
    return {"data": params.data.model_dump(mode="json"), "latents": params.latents.model_dump(mode="json")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def run(args) -> int:
    import torch

    from ..latents import encode_shards

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params(args.params)
    lat, where = params.latents, paths(params)
    meta = encode_shards(where["images"], where["latents"], lat.vae, lat.scale, lat.batch_size, lat.flips, device,
                         lat.dtype, lat.grayscale)
    print(f"latents: {meta['num_images']} images -> {where['latents']} (shape {meta['shape']}, vae {lat.vae})")
    return 0
