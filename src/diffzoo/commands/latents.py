"""encode the images shards to latents (VAE posterior mean/std, or identity)

`diffzoo latents --params P [--codec TAG]`: data/<name>/images-R -> data/<name>/latents-R<TAG> (resumable
shard by shard; diffzoo.latents holds the codecs and the shard format). TAG "" (the default) is the
latents section's codec; an experiment whose `latents:` changes the codec has its own (params.codecs).
`vae: autoencoder` encodes with the autoencoder stage's model (data/<name>/autoencoder-R).
"""
from __future__ import annotations

import argparse

import torch

from ..autoencoder import weights_digest
from ..errors import DiffzooError
from ..latents import encode_shards
from ..params import AUTOENCODER, load_params, paths


def vae_location(params, vae: str) -> tuple[str, str | None]:
    """(what make_codec loads, the digest of its weights where the name does not pin them)."""
    if vae != AUTOENCODER:
        return vae, None

    folder = paths(params)["autoencoder"]
    return str(folder), weights_digest(folder)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--codec", default="", help="latents folder suffix of an experiment's own codec (default: the "
                                               "latents section's)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def run(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params(args.params)
    if args.codec not in params.codecs:
        raise DiffzooError(f"--codec {args.codec!r}: no experiment uses it; the params' codecs: "
                           f"{', '.join(repr(c) for c in params.codecs)}")
    codec, where = params.codecs[args.codec], paths(params)
    out = where["latents"].with_name(where["latents"].name + args.codec)
    vae, digest = vae_location(params, codec["vae"])
    meta = encode_shards(where["images"], out, vae, params.latents.batch_size, codec["flips"], device,
                         codec["dtype"], codec["grayscale"], vae_digest=digest)
    print(f"latents: {meta['num_images']} images -> {out} (shape {meta['shape']}, vae {vae}, "
          f"data scale {meta['data_scale']})")
    return 0
