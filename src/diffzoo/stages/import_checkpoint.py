"""verify an official DiT checkpoint and store it as safetensors

`diffzoo import-checkpoint DiT-XL-2-256x256.pt --out DIR/model.safetensors`: the file (downloaded when
given by its official name and the network answers) is read with weights_only, checked by sha256
when known, loaded strictly into the registered model and written as our safetensors + JSON.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoints import OFFICIAL_CHECKPOINTS, download, load_weights, read_state_dict, save_checkpoint, verify_sha256
from ..errors import DiffzooError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=f"path to an official file, or one of {', '.join(OFFICIAL_CHECKPOINTS)} "
                                      "to download")
    p.add_argument("--out", required=True, type=Path,
                   help="output .safetensors path (its .json config is written beside)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the file (checked before anything is loaded)")
    p.add_argument("--model", default=None, help="registered model name (default: from the official file name)")
    p.add_argument("--input-size", type=int, default=None, help="latent side (default: from the official file name)")


def run(args) -> int:
    from ..models import create_model

    src = Path(args.checkpoint)
    known = OFFICIAL_CHECKPOINTS.get(src.name, {})
    if not src.exists():
        if not known:
            raise DiffzooError(f"{src} does not exist and is not an official name ({', '.join(OFFICIAL_CHECKPOINTS)})")
        src = download(known["url"], args.out.parent / src.name, args.sha256 or known["sha256"])
    digest = verify_sha256(src, args.sha256 or known.get("sha256"))
    name = args.model or known.get("model")
    if not name:
        raise DiffzooError("--model is required for a file that is not an official DiT checkpoint")
    model_args = {"input_size": args.input_size or known.get("input_size", 32)}
    sd = read_state_dict(src)
    with torch.device("meta"):
        model = create_model(name, **model_args)
    own = model.state_dict()
    if set(own) != set(sd) or any(own[k].shape != sd[k].shape for k in own):
        load_weights(model, sd, str(src))  # raises with the list of differences
    save_checkpoint(args.out, sd, {"model": name, "model_args": model_args, "source": src.name, "sha256": digest})
    print(f"{src.name}: sha256 {digest}, {len(sd)} tensors, loads strictly into {name}; wrote {args.out}")
    return 0
